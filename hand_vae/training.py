"""A training run from typed settings (``hand_vae.cli.train`` parses the flags): data -> whitening -> Trainer
-> fit -> best checkpoint -> test; what a run writes: docs/design.md §5."""

from __future__ import annotations

import logging
import math
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException
from typing_extensions import override

from hand_vae.data.build import MIN_TRAIN_POSES
from hand_vae.data.datamodule import HandPoseDataModule
from hand_vae.errors import atomic_write
from hand_vae.lightning_module import HandVAELightningModule
from hand_vae.models.quantiles import energy_quantiles
from hand_vae.reliability import (
    AtomicCheckpointIO,
    InterruptCheckpoint,
    LatestCheckpoint,
    NonFiniteGuard,
    cleanup_stale_temp_files,
)
from hand_vae.settings import LOGGER_NAME, Settings, cpu_threads
from hand_vae.viz.callback import PlotCallback

log = logging.getLogger("hand_vae")

CKPT_PATTERN = "hand_vae_epoch_{epoch:02d}_val_loss_{val/loss:.3f}"
# Lightning warnings that do not apply here.
NOT_APPLICABLE = (
    ".*smaller than the logging interval.*",  # we log epoch means, not per-step values
    ".*isinstance\\(treespec, LeafSpec\\).*",  # a deprecation inside Lightning itself
    ".*does not have many workers.*",  # a batch is an index into a split already in memory
    "Checkpoint directory .* exists and is not empty.*",  # hand_vae.cli.train claims the run's dirs
)
# Lightning's cloud-logger advert, and its TF32 advice: the numerics stay fp32 until TF32 is shown to keep
# the proxy's NLL (bench/prior_quality.py).
DROPPED_RECORDS = ("litlogger", "set_float32_matmul_precision")


def _keep_record(record: logging.LogRecord) -> bool:
    return not any(text in record.getMessage() for text in DROPPED_RECORDS)


def quiet_lightning() -> None:
    """Silence Lightning's warnings and notices that do not apply here (idempotent)."""
    for pattern in NOT_APPLICABLE:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_keep_record)  # a filter already there is not added again


class SamplesPerSecondBar(TQDMProgressBar):
    """Lightning's tqdm bar, plus training throughput in samples/s (all processes together)."""

    @override
    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        bar = getattr(self, "_train_progress_bar", None)
        # Lightning's bar uses no smoothing, so tqdm's own rate is n / elapsed for this epoch.
        fd = bar.format_dict if bar is not None else {}
        rate = fd.get("n", 0) / fd["elapsed"] if fd.get("elapsed") else 0.0
        if rate and trainer.datamodule is not None:
            items["samples/s"] = f"{rate * trainer.datamodule.cfg.batch_size * trainer.world_size:,.0f}"
        return items


class EnergyQuantiles(pl.Callback):
    """Each validation epoch, the quantiles of every process's validation energies go into the model's
    ``energy_quantiles`` buffer, so every checkpoint carries its own epoch's calibration."""

    def __init__(self) -> None:
        self.energies: list[torch.Tensor] = []

    @override
    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self.energies.append(outputs)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        local = torch.cat(self.energies) if self.energies else pl_module.beta.new_empty((0,))  # (n,)
        self.energies = []
        if trainer.sanity_checking:
            return
        world = trainer.world_size
        if world > 1:  # processes may hold different counts: pad with NaN, gather, unpad
            sizes = pl_module.all_gather(local.new_full((1,), local.numel(), dtype=torch.long)).reshape(world)
            padded = local.new_full((int(sizes.max()),), float("nan"))
            padded[: local.numel()] = local
            everything = pl_module.all_gather(padded)  # (world, max size)
            local = torch.cat([everything[r, : int(sizes[r])] for r in range(world)])
        if local.numel():
            pl_module.model.energy_quantiles.copy_(energy_quantiles(local))


def fit_whitening(module: HandVAELightningModule, datamodule: HandPoseDataModule) -> None:
    """Start the model at the validation-tuned classic prior (a full-covariance Gaussian, or a Student-t
    with ``--likelihood student_t``) of the distribution it trains on (loads the data)."""
    if not hasattr(module.model, "fit_whitening"):
        return
    chosen = module.model.fit_whitening(*datamodule.training_distribution())
    what = ", ".join(f"{k} {v:.3g}" for k, v in chosen.items())
    heavy = math.isfinite(chosen.get("nu", math.inf))
    family = f"multivariate Student-t (nu {chosen['nu']:.3g})" if heavy else "full-covariance Gaussian"
    log.info("starting from the val-tuned %s: %s", family, what)


def warn_small_data(counts: dict[str, int]) -> None:
    """One warning line when train has fewer poses than val, or fewer than ``MIN_TRAIN_POSES``."""
    train, val = counts["train"], counts["val"]
    if train < val:
        log.warning("train has fewer poses (%d) than val (%d): a prior learns little from so few; rebuild the "
                    "dataset with another --seed or --split_scheme dirs", train, val)  # fmt: skip
    elif train < MIN_TRAIN_POSES:
        log.warning("train has only %d poses (< %d): a prior fitted to so few will not generalise; add "
                    "sequences", train, MIN_TRAIN_POSES)  # fmt: skip


def build_run(s: Settings) -> tuple[pl.Trainer, HandVAELightningModule, HandPoseDataModule, LatestCheckpoint]:
    """The Trainer (with its callbacks), module, datamodule and checkpoint callback for settings ``s``."""
    module = HandVAELightningModule(run=s.run_hparams(), **s.module_hparams())
    datamodule = HandPoseDataModule(model_type=s.model.model_type, seed=s.run.seed, **asdict(s.data))
    ckpt_dir, _ = s.run.dirs
    checkpoint = LatestCheckpoint(dirpath=ckpt_dir, filename=CKPT_PATTERN, auto_insert_metric_name=False,
                                  monitor="val/loss", mode="min", save_top_k=s.run.save_top_k, save_last=True)  # fmt: skip
    callbacks = [checkpoint, InterruptCheckpoint(ckpt_dir / "last.ckpt"), NonFiniteGuard(), EnergyQuantiles()]
    if not s.run.no_progress_bar:
        callbacks.append(SamplesPerSecondBar())
    if patience := s.length.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor="val/loss", mode="min", patience=patience))
    if not s.run.no_plots:
        callbacks.append(PlotCallback(every_n_epochs=s.run.plot_every_n_epochs))
    trainer = pl.Trainer(
        accelerator=s.run.accelerator,
        devices=s.run.device_list,
        num_nodes=s.run.num_nodes,
        strategy=s.run.strategy,
        precision=s.run.precision,
        max_epochs=s.length.max_epochs,
        callbacks=callbacks,
        logger=TensorBoardLogger(s.run.log_dir, LOGGER_NAME, s.run.experiment_name, default_hp_metric=False),
        # No gradient_clip_val here: the module clips in its own step.
        log_every_n_steps=s.run.log_every_n_steps,
        limit_train_batches=s.length.limit_train_batches,
        limit_val_batches=s.length.limit_val_batches,
        use_distributed_sampler=False,  # our IndexBatchSampler shards by rank itself
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=not s.run.no_progress_bar,
        enable_model_summary=s.run.verbose,
    )
    datamodule.trainer = trainer  # where the data is kept depends on the trainer's device
    return trainer, module, datamodule, checkpoint


@dataclass
class Summary:
    """What a run did: the files it wrote and the final metrics."""

    checkpoint_dir: str
    log_dir: str
    interrupted: str | bool
    epochs: int
    is_global_zero: bool
    best: str | None = None
    best_model: str | None = None
    best_val_loss: float | None = None
    last: str | None = None
    test: dict[str, float] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)


def run_training(s: Settings) -> Summary:
    """Fit (or resume) the run of ``s``, copy its best checkpoint to best_model.ckpt and test that."""
    quiet_lightning()
    pl.seed_everything(s.run.seed, workers=True, verbose=False)
    trainer, module, datamodule, checkpoint = build_run(s)
    if s.run.threads > 0 or trainer.strategy.root_device.type == "cpu":
        torch.set_num_threads(cpu_threads(s.run.threads, s.data.batch_size, trainer.num_devices))
    resume = s.run.resume_from_checkpoint
    ckpt_dir, log_dir = s.run.dirs
    datamodule.setup("fit")
    if trainer.is_global_zero:
        what = "Resuming" if resume else "Training"
        log.info("%s a %s hand VAE on the %s (CPU threads: %d)", what, s.model.model_type, datamodule.source,
                 torch.get_num_threads())  # fmt: skip
        log.info("This run writes %s/ and %s/", ckpt_dir, log_dir)
        warn_small_data({k: len(v) for k, v in datamodule.tensors.items()})
        cleanup_stale_temp_files(ckpt_dir)
    if not resume:  # a resumed model carries its whitening
        fit_whitening(module, datamodule)
    interrupted: str | bool = False
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    except (KeyboardInterrupt, SIGTERMException, SystemExit) as err:
        # Lightning turns Ctrl+C into SystemExit(1) after its graceful shutdown (last.ckpt saved by then).
        if isinstance(err, SystemExit) and not trainer.interrupted:
            raise
        interrupted = "SIGTERM" if isinstance(err, SIGTERMException) else "SIGINT"
    summary = Summary(str(checkpoint.dirpath), str(trainer.logger.log_dir), interrupted or trainer.interrupted,
                      trainer.current_epoch, trainer.is_global_zero)  # fmt: skip
    if best := checkpoint.best_model_path:
        best_copy = Path(checkpoint.dirpath) / "best_model.ckpt"
        if trainer.is_global_zero:
            with open(best, "rb") as src:
                atomic_write(best_copy, lambda dst: shutil.copyfileobj(src, dst))
        summary.best, summary.best_model = best, str(best_copy)
        summary.best_val_loss = float(checkpoint.best_model_score)
    # The file this run last wrote: Ctrl+C's save, else ModelCheckpoint's (which may be last-vN.ckpt).
    saved = [cb.last_path for cb in trainer.callbacks if isinstance(cb, InterruptCheckpoint) and cb.saved]
    last = saved[0] if saved else checkpoint.last_model_path
    if last and Path(last).exists():
        summary.last = str(last)
    if best and not summary.interrupted:
        trainer.strategy.barrier()
        results = trainer.test(
            module, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True
        )
        summary.test = {k: float(v) for k, v in (results[0] if results else {}).items()}
    summary.plots = [str(p) for cb in trainer.callbacks if isinstance(cb, PlotCallback) for p in cb.written]
    return summary
