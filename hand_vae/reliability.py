"""Fault tolerance: atomic checkpoint files, a clean save on SIGINT/SIGTERM, a non-finite guard, and a
``last.ckpt`` rewritten after every validation (docs/design.md §5)."""

from __future__ import annotations

import io
import logging
import signal
import threading
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException
from typing_extensions import override

from hand_vae.errors import atomic_write

log = logging.getLogger("hand_vae")


class NonFiniteError(RuntimeError):
    """Training produced NaN/inf; raised before any checkpoint of the poisoned state is written."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Every checkpoint written through ``hand_vae.errors.atomic_write`` (temp file, fsync, rename)."""

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        atomic_write(target, lambda f: f.write(buf.getbuffer()))  # the whole file in one write


def cleanup_stale_temp_files(directory: str | Path) -> None:
    """Remove the ``.*.tmp-*`` leftovers of checkpoint writes killed mid-way (none if no such dir)."""
    for p in Path(directory).glob(".*.tmp-*"):
        p.unlink(missing_ok=True)


class InterruptCheckpoint(pl.Callback):
    """On SIGINT/SIGTERM save ``last.ckpt`` (mid-epoch state) and log the resume command; after any other
    exception save nothing, so a run that failed on NaNs keeps its good ``last.ckpt``. Under DDP our SIGTERM
    handler only sets a flag, reduced over ranks every ``check_every`` steps (Lightning's broadcasts inside
    the handler, which deadlocks while another rank is in a gradient all-reduce)."""

    def __init__(self, last_path: str | Path, check_every: int = 10) -> None:
        self.last_path = Path(last_path)
        self.saved = False
        self.check_every = check_every
        self._sigterm = False

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1 and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._sigterm = True

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx
    ) -> None:
        if trainer.world_size <= 1 or (trainer.global_step % self.check_every):
            return
        flag = torch.tensor(float(self._sigterm), device=pl_module.device)
        if trainer.strategy.reduce(flag, reduce_op="max").item() > 0:
            raise SIGTERMException()

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)) or trainer.state.fn != "fit":
            return
        if not all(torch.isfinite(p).all() for p in pl_module.parameters()):
            log.error("Interrupted, but the weights are not finite: keeping the previous %s", self.last_path)
            return
        trainer.save_checkpoint(self.last_path)
        self.saved = True
        if trainer.is_global_zero:
            what = "Ctrl+C" if isinstance(exception, KeyboardInterrupt) else "SIGTERM"
            log.warning("%s at epoch %d, step %d: saved %s. Resume with:\n  python train_hand_vae_lightning.py "
                        "--resume_from_checkpoint %s", what, trainer.current_epoch, trainer.global_step,
                        self.last_path, self.last_path)  # fmt: skip


class NonFiniteGuard(pl.Callback):
    """Stop training with ``NonFiniteError`` (on every rank) once a training loss or a weight is NaN/inf: per
    step a device flag (the first global step with a non-finite loss, −1 for none), all-reduced when
    validation starts and when the epoch ends, before ModelCheckpoint (run last) can save the poisoned weights.
    """

    def __init__(self) -> None:
        self._first_bad: torch.Tensor | None = None  # 0-dim int64 on the module's device
        self._step = 0

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx
    ) -> None:
        self._step = trainer.global_step  # the step this batch's loss belongs to

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, dtype=torch.long, device=loss.device)
        hit = ~torch.isfinite(loss.detach()) & (self._first_bad < 0)
        self._first_bad.copy_(torch.where(hit, self._step, self._first_bad))

    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Raise ``NonFiniteError`` if any rank saw a non-finite loss or holds a non-finite weight."""
        if self._first_bad is None:
            return
        bad_weights = torch.stack([~torch.isfinite(p).all() for p in pl_module.parameters()]).any()
        flag = torch.maximum(self._first_bad, torch.where(bad_weights, 0, -1))
        if trainer.strategy.reduce(flag.float(), reduce_op="max").item() < 0:
            return
        step = int(self._first_bad.item())
        where = f"step {step}" if step >= 0 else "a weight update"
        raise NonFiniteError(
            f"non-finite training loss at epoch {trainer.current_epoch}, {where}: stopped before saving, so "
            "last.ckpt still holds the previous good state. Try a lower --learning_rate or "
            "--gradient_clip_val, or resume from last.ckpt."
        )

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self.check(trainer, pl_module)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(trainer, pl_module)


class LatestCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that also saves the starting model and rewrites ``last.ckpt`` after every validation.

    A fresh run validates its start (the val-tuned classic prior) before the first step, at step 0, as a
    top-k candidate named ``epoch_00``, so the best checkpoint is never worse than the start. Lightning 2.5+
    writes ``last.ckpt`` only with a top-k one: a plateaued ``val/loss`` would leave it stale for a resume.
    """

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if trainer.global_step > 0 or not trainer.limit_val_batches or trainer.fast_dev_run:
            return
        # The loop Lightning runs at an epoch's end, entered the way its epoch loop enters it.
        trainer.validating = True
        trainer.fit_loop.epoch_loop.val_loop.run()
        trainer.training = True
        candidates = self._monitor_candidates(trainer)
        if self.monitor in candidates:
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)

    def _save_last_if_stale(self, trainer: pl.Trainer) -> None:
        # Skipped (sanity check, not fitting, already saved at this step) exactly as Lightning skips.
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    # Lightning saves in one of the two hooks (train-epoch end when validation runs every epoch,
    # which in Lightning 2.x comes after validation); top up in the same one.
    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_stale(trainer)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_stale(trainer)
