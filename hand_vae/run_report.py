"""What a training run tells its user: throughput on the progress bar, a quiet start, a closing summary.

* ``SamplesPerSecondBar``: Lightning's tqdm bar plus samples/s.
* ``quiet_lightning``: drops Lightning's advert for a cloud logger (the model table is off unless
  ``--verbose``, in ``hand_vae.train``).
* ``format_summary``: the last lines of ``train_hand_vae_lightning.py``: the files this run wrote, the
  best val/loss, the test scores of the best checkpoint and what the val and test splits are.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar


class SamplesPerSecondBar(TQDMProgressBar):
    """Lightning's tqdm bar, plus training throughput in samples/s (all processes together)."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        bar = getattr(self, "_train_progress_bar", None)
        dm = trainer.datamodule
        # Lightning's bar uses no smoothing, so tqdm's own rate is n / elapsed for this epoch.
        fd = bar.format_dict if bar is not None else {}
        rate = fd.get("n", 0) / fd["elapsed"] if fd.get("elapsed") else 0.0
        if rate and dm is not None:
            items["samples/s"] = f"{rate * dm.hparams.batch_size * trainer.world_size:,.0f}"
        return items


class _DropAdverts(logging.Filter):
    """Drops Lightning's start-up advert for a cloud logger (not actionable for our users)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet_lightning() -> None:
    """Filter Lightning's start-up advert out of its log (idempotent)."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropAdverts) for f in logger.filters):
            logger.addFilter(_DropAdverts())


def format_summary(summary: dict[str, Any]) -> str:
    """The CLI's closing lines: the files this run wrote, the final numbers and what they mean."""
    lines = ["", "Run summary"]
    if summary.get("interrupted"):
        lines.append(f"  INTERRUPTED at epoch {summary['epochs']}; resume with:")
        if "last" in summary:
            lines.append(f"    python train_hand_vae_lightning.py --resume_from_checkpoint {summary['last']}")
    lines.append(f"  checkpoints:     {summary['checkpoint_dir']}/")
    for key, label in (("best", "best (top-k)"), ("best_model", "best_model"), ("last", "last")):
        if key in summary:
            lines.append(f"  {label + ':':<17}{summary[key]}")
    log_dir = Path(summary["log_dir"])
    lines.append(f"  TensorBoard:     {log_dir}/   (tensorboard --logdir {log_dir.parent.parent})")
    if summary.get("plots"):
        lines.append(
            f"  plots:           {log_dir / 'plots'}/ ({len(summary['plots'])} PNG files from this run)"
        )
    if "best_val_loss" in summary:
        lines.append(
            f"  best val/loss:   {summary['best_val_loss']:.3f} nats (negative ELBO; lower is better)"
        )
    test = {k.removeprefix("test/"): v for k, v in (summary.get("test") or {}).items()}
    if test:
        nats = ", ".join(f"{k} {test.pop(k):.3f}" for k in ("loss", "recon_nll", "kl") if k in test)
        rest = ", ".join(
            f"{k} {v:.0f}" if k == "active_units" else f"{k} {v:.3f}" for k, v in sorted(test.items())
        )
        lines.append(f"  test (best checkpoint): {nats} nats; {rest}")
    if summary.get("splits_note") and (test or "best_val_loss" in summary):
        lines.append(f"  splits:          {summary['splits_note']}")
    return "\n".join(lines)
