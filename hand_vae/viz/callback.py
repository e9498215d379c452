"""``PlotCallback``: the validation figures (``viz.report.make_figures``) every few epochs and the test figures,
rank zero only; what it writes, when and its timing logs: docs/design.md §5."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from pytorch_lightning.utilities import rank_zero_only
from typing_extensions import override

from hand_vae.metrics import subsample
from hand_vae.viz.report import make_figures

log = logging.getLogger(__name__)

# Metrics copied from ``trainer.callback_metrics`` into the per-epoch history (loss breakdown).
HISTORY_KEYS = ("val/loss", "val/recon_nll", "val/kl",
                "train/loss", "train/recon_nll", "train/kl", "train/beta")  # fmt: skip
PNG_DPI = 110


class PlotCallback(pl.Callback):
    """Validation and test figures into TensorBoard and PNG files (rank zero only).

    Expects ``pl_module.model`` to be a hand VAE and ``trainer.datamodule.split_tensor(stage)`` to
    return the split as (N, 90) float32.

    Args:
        every_n_epochs: plot on validation epochs with ``(epoch + 1) % every_n_epochs == 0``.
        out_dir: PNG folder; default ``<logger.log_dir>/plots`` (``<default_root_dir>/plots`` without one).
        num_plot_samples: at most this many poses (a fixed seeded subset) are evaluated.
        seed: seed of the subset, the noise and the prior samples (same every epoch).
    """

    def __init__(
        self,
        every_n_epochs: int = 5,
        out_dir: str | Path | None = None,
        num_plot_samples: int = 2048,
        seed: int = 0,
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if num_plot_samples < 1:
            raise ValueError(f"num_plot_samples must be >= 1, got {num_plot_samples}")
        self.every_n_epochs = every_n_epochs
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.num_plot_samples = num_plot_samples
        self.seed = seed
        self.history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}
        self.epochs: list[int] = []
        self._val_row: dict[str, float] | None = None
        self._epoch_start: float | None = None
        self._train_seconds = 0.0  # of the epochs since the last validation plot
        self.plot_seconds: dict[str, float] = {}  # "epoch004" / "test" -> seconds
        self.written: list[Path] = []  # PNG files this callback wrote, in order
        # name -> (sha256 of the pixels, file) of the latest validation plot, to skip identical test copies
        self._last_val: dict[str, tuple[str, Path]] = {}

    @override
    def state_dict(self) -> dict:  # resuming keeps the history
        return {"history": self.history, "epochs": self.epochs}

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        self.history = {k: list(state_dict["history"].get(k, [])) for k in HISTORY_KEYS}
        self.epochs = list(state_dict["epochs"])

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Not on_validation_epoch_end: callbacks run that hook before the module logs its epoch metrics.
        if not trainer.sanity_checking:
            self._val_row = _metrics(trainer, "val/")

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Validation ran inside this epoch, before its train/* metrics existed: the row is complete only now.
        epoch_seconds = time.perf_counter() - self._epoch_start if self._epoch_start is not None else math.nan
        if self._val_row is None:  # no validation this epoch
            return
        row, self._val_row = {**self._val_row, **_metrics(trainer, "train/")}, None
        epoch = trainer.current_epoch
        self.epochs.append(epoch)
        for key in HISTORY_KEYS:
            self.history[key].append(row.get(key, math.nan))
        self._train_seconds += epoch_seconds
        if (epoch + 1) % self.every_n_epochs == 0:
            self._plot(trainer, pl_module, "val", epoch, epoch_seconds)
            self._slow_down(self.plot_seconds.get(f"epoch{epoch:03d}", 0.0))

    def _slow_down(self, plot_seconds: float) -> None:
        """Plot less often when plotting takes longer than the epochs between plots (tiny data)."""
        trained, self._train_seconds = self._train_seconds, 0.0
        if plot_seconds <= trained or not trained > 0:
            return
        self.every_n_epochs *= math.ceil(plot_seconds / trained)
        log.info("plots took %.1f s, the epochs since the last ones %.1f s: plotting every %d epochs from "
                 "now on (--plot_every_n_epochs; --no_plots turns them off)", plot_seconds, trained,
                 self.every_n_epochs)  # fmt: skip

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._plot(trainer, pl_module, "test", trainer.current_epoch, None)

    @rank_zero_only
    def _plot(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, epoch: int,
              epoch_seconds: float | None) -> None:  # fmt: skip
        datamodule = getattr(trainer, "datamodule", None)
        if not hasattr(datamodule, "split_tensor"):
            log.warning("PlotCallback: trainer has no datamodule with split_tensor(); no %s plots", stage)
            return
        start = time.perf_counter()
        poses = subsample(datamodule.split_tensor(stage), self.num_plot_samples, self.seed)
        model = pl_module.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                history = {k: v for k, v in self.history.items() if v and not np.all(np.isnan(v))}
                figs = make_figures(model, poses, history, self.epochs, seed=self.seed, split=stage)
        finally:
            model.train(was_training)
        key = "test" if stage == "test" else f"epoch{epoch:03d}"
        log_dir = getattr(trainer.logger, "log_dir", None)
        out_dir = self.out_dir or Path(log_dir if log_dir is not None else trainer.default_root_dir) / "plots"
        repeated = []
        for name, fig in figs.items():
            path = out_dir / (f"test_{name}.png" if stage == "test" else f"{name}_epoch{epoch:03d}.png")
            same_as = self._last_val.get(name) if stage == "test" else None
            digest = _write(fig, path, trainer, f"{stage}_plots/{name}", epoch, skip_if=same_as)
            if digest is None:
                repeated.append(same_as[1].name)
                continue
            self.written.append(path)
            if stage == "val":
                self._last_val[name] = (digest, path)
        seconds = self.plot_seconds[key] = time.perf_counter() - start
        if epoch_seconds is None:
            same = f" ({len(repeated)} not repeated, same as {', '.join(repeated)})" if repeated else ""
            log.info("test plots: %d figures for %d poses in %.2f s -> %s%s", len(figs) - len(repeated),
                     len(poses), seconds, out_dir, same)  # fmt: skip
            return
        log.info("epoch %d plots: %d figures for %d poses in %.2f s (training epoch incl. validation took "
                 "%.2f s)", epoch, len(figs), len(poses), seconds, epoch_seconds)  # fmt: skip
        experiment = getattr(trainer.logger, "experiment", None)
        if hasattr(experiment, "add_scalar"):
            experiment.add_scalar("time/plot_seconds", seconds, epoch)
            experiment.add_scalar("time/train_epoch_seconds", epoch_seconds, epoch)


def _metrics(trainer: pl.Trainer, prefix: str) -> dict[str, float]:
    """The history keys with ``prefix`` that are currently in ``trainer.callback_metrics``."""
    return {
        k: float(v) for k, v in trainer.callback_metrics.items() if k in HISTORY_KEYS and k.startswith(prefix)
    }


def _write(
    fig: Figure, path: Path, trainer: pl.Trainer, tag: str, step: int, skip_if: tuple[str, Path] | None = None
) -> str | None:
    """Render ``fig`` once, save it as a PNG, add it to TensorBoard (if any) and close it; returns the sha256
    of the rendered pixels, or None when they equal ``skip_if``'s (nothing written)."""
    # pyplot only where a figure is closed: importing it picks a backend (figures are made without it)
    import matplotlib.pyplot as plt
    from matplotlib.image import imsave

    fig.set_dpi(PNG_DPI)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())  # (H, W, 4) uint8
    digest = hashlib.sha256(rgba.tobytes()).hexdigest()
    plt.close(fig)  # the pixels stay valid: the canvas still owns its buffer
    if skip_if is not None and skip_if[0] == digest:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(path, rgba, format="png")
    experiment = getattr(trainer.logger, "experiment", None)
    if hasattr(experiment, "add_image"):  # the pixels of add_figure, without drawing the figure again
        experiment.add_image(tag, rgba[..., :3], step, dataformats="HWC")
    return digest
