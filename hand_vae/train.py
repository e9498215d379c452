"""The training run behind ``train_hand_vae_lightning.py``: settings -> checks -> Trainer -> fit -> test.

Outputs, one run per experiment name (``hand_vae.preflight`` refuses a second fresh run under a
taken name unless ``--overwrite``):
  * ``{checkpoint_dir}/{experiment_name}/hand_vae_epoch_XX_val_loss_Y.YYY.ckpt`` (top-k on val/loss;
    val/loss is a negative ELBO in nats and may be negative, e.g. ``..._val_loss_-93.512.ckpt``),
    ``last.ckpt`` and ``best_model.ckpt`` (a copy of the best, written when fit ends);
  * ``{log_dir}/hand-vae-prior/{experiment_name}/``: TensorBoard events, hparams, ``plots/*.png``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException

from hand_vae.checkpoint import CheckpointError, load_checkpoint
from hand_vae.config import (
    HARDWARE_KEYS,
    MODEL_KEYS,
    MODULE_KEYS,
    SETTINGS,
    SETTINGS_BY_NAME,
    build_parser,
    parse_number,
)
from hand_vae.data.datamodule import HandPoseDataModule
from hand_vae.data.layouts import DatasetError
from hand_vae.lightning_module import HandVAELightningModule
from hand_vae.models import VAEConfig
from hand_vae.preflight import (
    LOGGER_NAME,
    UserError,
    check_data_source,
    claim_run_dirs,
    cpu_threads,
    data_fingerprint,
    describe_splits,
    remove_empty_dirs,
    run_dirs,
)
from hand_vae.reliability import (
    AtomicCheckpointIO,
    InterruptCheckpoint,
    LatestCheckpoint,
    NonFiniteError,
    cleanup_stale_temp_files,
)
from hand_vae.run_report import SamplesPerSecondBar, format_summary, quiet_lightning

log = logging.getLogger("hand_vae")

CKPT_PATTERN = "hand_vae_epoch_{epoch:02d}_val_loss_{val/loss:.3f}"
DEFAULT_BATCH = {"standard": 8192, "so3": 4096}
VAE_FIELDS = tuple(f.name for f in dataclasses.fields(VAEConfig))
# Flags about this invocation only: never saved in a checkpoint, never restored on resume.
PER_INVOCATION = ("overwrite", "verbose")


# --------------------------------------------------------------------------- settings


def resolve_settings(argv: list[str] | None) -> dict[str, Any]:
    """Parse the command line; on resume, fill every unset flag from the checkpoint.

    Returns:
        Every setting in ``config.SETTINGS`` plus ``resume_from_checkpoint``.

    Raises:
        UserError: a model-shape flag contradicts the checkpoint, or the checkpoint is unusable.
    """
    settings = vars(build_parser().parse_args(argv))
    explicit = vars(build_parser(suppress_defaults=True).parse_args(argv))
    resume = settings["resume_from_checkpoint"]
    if resume:
        try:
            hp = load_checkpoint(resume)["hyper_parameters"]
        except CheckpointError as err:
            raise UserError(f"--resume_from_checkpoint: {err}") from err
        saved = {**(hp.get("run") or {}), **{k: hp[k] for k in MODULE_KEYS if k in hp}}
        saved = {k: v for k, v in saved.items() if k not in PER_INVOCATION}
        conflicts = [k for k in MODEL_KEYS if k in explicit and k in saved and explicit[k] != saved[k]]
        if conflicts:
            detail = ", ".join(f"--{k} {explicit[k]} (checkpoint: {saved[k]})" for k in conflicts)
            raise UserError(f"{resume} was trained with a different model shape: {detail}; drop the flag(s)")
        for key, value in saved.items():
            setting = SETTINGS_BY_NAME.get(key)
            if setting is None or key not in explicit:
                settings[key] = value
            elif explicit[key] != value and setting.group in ("optim", "data") and key not in HARDWARE_KEYS:
                log.warning(
                    "--%s %s ignored: the resumed run keeps its checkpoint value %s",
                    key,
                    explicit[key],
                    value,
                )
                settings[key] = value
    if settings["batch_size"] is None:
        settings["batch_size"] = DEFAULT_BATCH[settings["model_type"]]
    # VAEConfig resolves what depends on other settings (the σ floor's units, SO(3) ignoring whiten).
    settings.update(VAEConfig(**{k: settings[k] for k in VAE_FIELDS}).to_dict())
    _validate(settings)
    meta = check_data_source(settings)
    settings["_splits_note"] = describe_splits(settings, meta)
    previous = (settings.get("data_meta_sha256"), settings.get("data_counts"))
    settings["data_meta_sha256"], settings["data_counts"] = data_fingerprint(settings, meta)
    if resume and previous[0] and previous[0] != settings["data_meta_sha256"]:
        log.warning(
            "the dataset changed since %s was saved (meta.json sha256 %s… -> %s…; rows per split %s -> %s); "
            "the resumed run trains on the data as it is now",
            resume,
            previous[0][:12],
            str(settings["data_meta_sha256"])[:12],
            previous[1],
            settings["data_counts"],
        )
    return settings


def _validate(s: dict[str, Any]) -> None:
    name = s["experiment_name"]
    if not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        raise UserError(f"--experiment_name {name!r} must be a plain name (no '/', '\\' or leading '.')")
    if s["consolidated_dir"] and s["splits_dir"]:
        raise UserError("give --consolidated_dir or --splits_dir, not both")
    for key in ("z_dim", "hidden", "num_layers", "batch_size", "max_epochs"):
        if s[key] < 1:
            raise UserError(f"--{key} must be >= 1, got {s[key]}")
    if str(s["accelerator"]).lower() in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError(
            f"--accelerator {s['accelerator']}: no CUDA GPU is available on this machine; "
            "drop the flag (auto uses the CPU) or run on a GPU machine"
        )
    if s["min_sigma"] <= 0:
        raise UserError(f"--min_sigma must be > 0, got {s['min_sigma']}")
    if s["min_sigma"] >= 1 and (s["whiten"] or s["model_type"] == "so3"):
        raise UserError(
            f"--min_sigma {s['min_sigma']} is in whitened units (a fraction of the data's spread) and must be "
            "< 1; for a floor in radians use the standard model with --no-whiten"
        )
    if not 0.0 <= s["dropout"] < 1.0:
        raise UserError(f"--dropout must be in [0, 1), got {s['dropout']}")
    if s["threads"] < 0:
        raise UserError(f"--threads must be >= 0 (0 = auto), got {s['threads']}")


def _devices(value: str) -> int | str | list[int]:
    if value.isdigit():
        return int(value)
    if "," in value:
        return [int(v) for v in value.split(",") if v.strip()]
    return value


# --------------------------------------------------------------------------- run


def build_run(
    s: dict[str, Any],
) -> tuple[pl.Trainer, HandVAELightningModule, HandPoseDataModule, ModelCheckpoint]:
    """Construct the module, data module and Trainer for resolved settings ``s``."""
    run = {x.name: s[x.name] for x in SETTINGS if x.name not in MODULE_KEYS + PER_INVOCATION}
    run.update(data_meta_sha256=s.get("data_meta_sha256"), data_counts=s.get("data_counts"))
    module = HandVAELightningModule(**{k: s[k] for k in MODULE_KEYS}, run=run)
    datamodule = HandPoseDataModule(
        consolidated_dir=s["consolidated_dir"],
        splits_dir=s["splits_dir"],
        batch_size=s["batch_size"],
        model_type=s["model_type"],
        num_workers=s["num_workers"],
        seed=s["seed"],
        mirror_augment=s["mirror_augment"],
        data_on_device=s["data_on_device"],
        verify=s["verify_data"],
    )
    ckpt_dir, _ = run_dirs(s)
    checkpoint = LatestCheckpoint(
        dirpath=ckpt_dir,
        filename=CKPT_PATTERN,
        auto_insert_metric_name=False,
        monitor="val/loss",
        mode="min",
        save_top_k=s["save_top_k"],
        save_last=True,
    )
    callbacks: list[pl.Callback] = [checkpoint, InterruptCheckpoint(ckpt_dir / "last.ckpt")]
    if not s["no_progress_bar"]:
        callbacks.append(SamplesPerSecondBar())
    if s["early_stopping_patience"] > 0:
        callbacks.append(EarlyStopping(monitor="val/loss", mode="min", patience=s["early_stopping_patience"]))
    if not s["no_plots"]:
        from hand_vae.viz.callback import PlotCallback

        callbacks.append(PlotCallback(every_n_epochs=s["plot_every_n_epochs"]))
    logger = TensorBoardLogger(
        save_dir=s["log_dir"], name=LOGGER_NAME, version=s["experiment_name"], default_hp_metric=False
    )
    trainer = pl.Trainer(
        accelerator=s["accelerator"],
        devices=_devices(str(s["devices"])),
        num_nodes=s["num_nodes"],
        strategy=s["strategy"],
        precision=s["precision"],
        max_epochs=s["max_epochs"],
        callbacks=callbacks,
        logger=logger,
        # No gradient_clip_val here: the module clips in its own step (run["gradient_clip_val"]).
        log_every_n_steps=s["log_every_n_steps"],
        limit_train_batches=parse_number(s["limit_train_batches"]),
        limit_val_batches=parse_number(s["limit_val_batches"]),
        use_distributed_sampler=False,  # our IndexBatchSampler shards by rank itself
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=not s["no_progress_bar"],
        enable_model_summary=bool(s.get("verbose")),
    )
    return trainer, module, datamodule, checkpoint


def _copy_atomic(src: str, dst: Path) -> None:
    tmp = dst.with_suffix(".ckpt.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _set_threads(s: dict[str, Any], trainer: pl.Trainer) -> int:
    """Apply ``--threads`` (auto on the CPU, torch's default on a GPU unless given); returns the count."""
    if s["threads"] > 0 or trainer.strategy.root_device.type == "cpu":
        torch.set_num_threads(cpu_threads(s["threads"], s["batch_size"], trainer.num_devices))
    return torch.get_num_threads()


def run_training(s: dict[str, Any]) -> dict[str, Any]:
    """Fit (or resume), copy the best checkpoint to best_model.ckpt, test it.

    Returns:
        A summary dict: the files this run wrote and the final metrics.
    """
    pl.seed_everything(s["seed"], workers=True, verbose=False)
    trainer, module, datamodule, checkpoint = build_run(s)
    threads = _set_threads(s, trainer)
    ckpt_dir, log_dir = run_dirs(s)
    if trainer.is_global_zero:
        what = "Resuming" if s["resume_from_checkpoint"] else "Training"
        log.info(
            "%s a %s hand VAE on the %s (CPU threads: %d)", what, s["model_type"], datamodule.source, threads
        )
        log.info("This run writes %s/ and %s/", ckpt_dir, log_dir)
    if trainer.is_global_zero and ckpt_dir.is_dir():
        cleanup_stale_temp_files(ckpt_dir)
    interrupted = False
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=s["resume_from_checkpoint"], weights_only=True)
    except (KeyboardInterrupt, SIGTERMException, SystemExit) as err:
        # Lightning turns Ctrl+C into SystemExit(1) after its graceful shutdown; InterruptCheckpoint
        # has saved last.ckpt by then.
        if isinstance(err, SystemExit) and not trainer.interrupted:
            raise
        interrupted = "SIGTERM" if isinstance(err, SIGTERMException) else "SIGINT"
    summary: dict[str, Any] = {
        "checkpoint_dir": str(checkpoint.dirpath),
        "log_dir": str(trainer.logger.log_dir),
        "interrupted": interrupted or trainer.interrupted,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "splits_note": s.get("_splits_note"),
    }
    best = checkpoint.best_model_path
    if best:
        best_copy = Path(checkpoint.dirpath) / "best_model.ckpt"
        if trainer.is_global_zero:
            _copy_atomic(best, best_copy)
        summary.update(best=best, best_model=str(best_copy), best_val_loss=float(checkpoint.best_model_score))
    # The file this run last wrote: Ctrl+C's save, else ModelCheckpoint's (which may be last-vN.ckpt).
    saved = [cb.last_path for cb in trainer.callbacks if isinstance(cb, InterruptCheckpoint) and cb.saved]
    last = saved[0] if saved else checkpoint.last_model_path
    if last and Path(last).exists():
        summary["last"] = str(last)
    if best and not summary["interrupted"]:
        trainer.strategy.barrier()
        results = trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
        summary["test"] = {k: float(v) for k, v in (results[0] if results else {}).items()}
    plots = [cb for cb in trainer.callbacks if hasattr(cb, "written")]
    if plots:
        summary["plots"] = [str(p) for p in plots[0].written]
    summary["is_global_zero"] = trainer.is_global_zero
    return summary


def _drop_matmul_precision_notice(record: logging.LogRecord) -> bool:
    """A logging filter: drops Lightning's "set `torch.set_float32_matmul_precision`" notice (see main)."""
    return "set_float32_matmul_precision" not in record.getMessage()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``train_hand_vae_lightning.py``; returns the process exit code."""
    # Lightning's advice on per-step logging does not apply (we log epoch means), and a
    # deprecation inside Lightning itself is not actionable for our users.
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    # Lightning's "does not have many workers" advice does not apply: a batch is an index tensor
    # gathered from a split already in memory (on the GPU when it fits), so worker processes
    # would have nothing to do but copy it.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # Lightning's notice (a log record) to set `torch.set_float32_matmul_precision`: TF32 matmuls stay
    # off until they are shown to keep the default proxy's NLL within 0.1 nats of fp32
    # (bench/prior_quality.py); that is unmeasured, so the numerics stay fp32 and the notice is dropped.
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_drop_matmul_precision_notice)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    quiet_lightning()
    threads = torch.get_num_threads()  # restored at the end: main() may run inside another program
    dirs: tuple[Path, ...] = ()
    try:
        settings = resolve_settings(argv)
        dirs = run_dirs(settings)
        if _is_first_process():
            claim_run_dirs(settings)
        summary = run_training(settings)
    except (UserError, DatasetError, MisconfigurationException) as err:
        log.error("%s", err)
        remove_empty_dirs(*dirs)
        return 2
    except NonFiniteError as err:
        log.error("%s", err)
        return 3
    finally:
        torch.set_num_threads(threads)
    if summary["is_global_zero"]:
        print(format_summary(summary))  # noqa: T201 - the CLI's final summary
    # Shell convention: 128 + signal number.
    return {"SIGINT": 130, "SIGTERM": 143}.get(summary["interrupted"], 1 if summary["interrupted"] else 0)


def _is_first_process() -> bool:
    """False in the extra processes of a DDP run (Lightning starts them with these variables set)."""
    return all(os.environ.get(k, "0") == "0" for k in ("LOCAL_RANK", "NODE_RANK", "RANK"))
