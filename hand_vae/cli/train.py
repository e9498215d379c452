"""``train_hand_vae_lightning.py``: flags -> checks -> (resume merge) -> training -> summary. The checks
run before anything is written or Lightning is imported. Resume rules: docs/design.md §5; exit codes:
``hand_vae.cli.common``."""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import shutil
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from hand_vae.cli.data import SCRIPTS
from hand_vae.errors import UserError
from hand_vae.settings import GROUPS, DataConfig, RunConfig, Settings, VAEConfig, add_flags

log = logging.getLogger("hand_vae")

EPILOG = """examples:
  python train_hand_vae_lightning.py --max_epochs 5 --experiment_name quick_test
  python train_hand_vae_lightning.py --model_type so3 --consolidated_dir test_consolidated
  python train_hand_vae_lightning.py --accelerator gpu --devices 2 --strategy ddp --batch_size 8192
  python train_hand_vae_lightning.py --resume_from_checkpoint checkpoints/quick_test/last.ckpt --max_epochs 10
With neither --consolidated_dir nor --splits_dir, it trains on the embedded SYNTHETIC dataset (for trying
the tool and for tests, not a real hand prior)."""
# A resume may not change these: they shape the model, or choose its data.
MODEL_KEYS = tuple(f.name for f in fields(VAEConfig))
REFUSED = tuple(f.name for c in GROUPS.values() for f in fields(c) if f.metadata.get("resume") == "refuse")
KEPT_ON_RESUME = MODEL_KEYS + REFUSED


def build_parser(with_defaults: bool = True) -> argparse.ArgumentParser:
    """The command's parser (``with_defaults=False``: only the flags typed land in the namespace)."""
    parser = argparse.ArgumentParser(
        prog="train_hand_vae_lightning.py",
        description="Train a hand pose VAE prior (standard or SO(3)) with PyTorch Lightning.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for name, cls in GROUPS.items():
        add_flags(parser.add_argument_group(name), cls, with_defaults)
    return parser


def parse_settings(argv: list[str] | None) -> Settings:
    """The run's settings: the flags (merged with the checkpoint's on a resume), checked; raises UserError
    (a bad flag or resume, a dataset dir that cannot train, or no GPU for ``--accelerator gpu``)."""
    values = vars(build_parser().parse_args(argv))
    given = set(vars(build_parser(with_defaults=False).parse_args(argv)))
    if resume := values["resume_from_checkpoint"]:
        settings = merge_resume(values, given, resume)
    else:
        settings = Settings.from_flags(values)
    import torch  # after the flags parse: --help and a bad flag answer without it

    if settings.run.accelerator.lower() in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError(f"--accelerator {settings.run.accelerator}: no CUDA GPU is available on this machine; "
                        "drop the flag (auto uses the CPU) or run on a GPU machine")  # fmt: skip
    previous = settings.data_meta_sha256, settings.data_counts
    settings.data, settings.data_meta_sha256, settings.data_counts = check_data_source(settings.data)
    if resume and previous[0] and previous[0] != settings.data_meta_sha256:
        log.warning("the dataset changed since %s was saved (meta.json sha256 %s… -> %s…; rows per split %s -> %s); "
                    "the resumed run trains on the data as it is now", resume, previous[0][:12],
                    str(settings.data_meta_sha256)[:12], previous[1], settings.data_counts)  # fmt: skip
    return settings


def merge_resume(values: dict[str, Any], given: set[str], resume: str) -> Settings:
    """The checkpoint's settings with the flags ``given`` applied over them; raises UserError (unreadable
    checkpoint, a ``KEPT_ON_RESUME`` flag that differs from it, ``--max_epochs`` already trained)."""
    from hand_vae.checkpoint import load_checkpoint  # torch and roma: after the flags parse

    ckpt = load_checkpoint(resume)
    saved = Settings.from_hparams(ckpt["hyper_parameters"])
    old = saved.flags()
    changed = [k for k in KEPT_ON_RESUME if k in given and not _same(k, values[k], old[k])]
    if changed:
        what = "a different model shape" if set(changed) & set(MODEL_KEYS) else "other data"
        detail = ", ".join(f"--{k} {values[k]} (checkpoint: {old[k]})" for k in changed)
        raise UserError(f"{resume} was trained with {what}: {detail}; a resumed run keeps its model, data source "
                        "and seed: drop the flag(s), or train a new run under another --experiment_name")  # fmt: skip
    merged = Settings(
        **{g: replace(getattr(saved, g), **{k: values[k] for k in given if k in cls.__dataclass_fields__})
           for g, cls in GROUPS.items()},
        data_meta_sha256=saved.data_meta_sha256,
        data_counts=saved.data_counts,
    )  # fmt: skip
    done = _epochs_done(ckpt)
    if done >= merged.length.max_epochs:
        raise UserError(f"{resume} has already trained {done} epochs (--max_epochs {merged.length.max_epochs}): "
                        f"nothing to resume; to train more, add e.g. --max_epochs {2 * done}")  # fmt: skip
    return merged


def _same(key: str, value: Any, saved: Any) -> bool:
    if key in ("consolidated_dir", "splits_dir") and value and saved:
        return Path(value).resolve() == Path(saved).resolve()
    return value == saved


def _epochs_done(ckpt: dict[str, Any]) -> int:
    """Epochs a checkpoint has completed (Lightning's loop state; else its ``epoch`` + 1)."""
    progress = ckpt.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    return int(progress.get("processed", ckpt.get("epoch", -1) + 1))


def check_data_source(data: DataConfig) -> tuple[DataConfig, str | None, dict[str, int] | None]:
    """The config (with the flag of the layout the dir really holds), the sha256 of its meta.json and its
    rows per split (None, None: synthetic data); raises DatasetError (missing dir, with a "did you mean";
    missing or corrupt meta.json; an empty split)."""
    # torch and roma: after the flags parse
    from hand_vae.data.layouts import META_NAME, SPLITS, DatasetError, read_meta
    from hand_vae.data.npz_io import sha256_file

    path = data.directory
    if not path:
        return data, None, None
    layout = "consolidated" if data.consolidated_dir else "splits"
    if not Path(path).is_dir():
        raise DatasetError(f"--{layout}_dir {path}: dataset dir {path} does not exist{_did_you_mean(Path(path))} "
                           f"(create it with python {SCRIPTS[layout]} --output_dir {path})")  # fmt: skip
    meta = read_meta(path)
    if meta["layout"] != layout:
        log.info("%s holds the %s layout (from %s): reading it as --%s_dir %s", path, meta["layout"],
                 SCRIPTS[meta["layout"]], meta["layout"], path)  # fmt: skip
        data = replace(data, **{"consolidated_dir": None, "splits_dir": None, f"{meta['layout']}_dir": path})
    for split in SPLITS:
        if not (meta.get("counts", {}).get(split) or {}).get("frames"):
            raise DatasetError(
                f"the {split} split of {path} is empty (train, val and test all need poses: val picks the "
                f"checkpoints, test scores the best); rebuild it from more sequences (at least 3), with other "
                f"--split_ratios, or with --split_scheme dirs and your own train/ val/ test/ folders"
            )
    frames = {k: (v or {}).get("frames") for k, v in meta["counts"].items()}
    return data, sha256_file(Path(path) / META_NAME), frames


def _did_you_mean(path: Path) -> str:
    """``"; did you mean X?"`` naming a dataset dir beside ``path`` with a similar name, else ``""``."""
    from hand_vae.data.layouts import META_NAME

    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return ""
    candidates = {p.name: p for p in parent.iterdir() if (p / META_NAME).is_file()}
    close = difflib.get_close_matches(path.name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {candidates[close[0]]}?" if close else ""


def describe_splits(meta: dict[str, Any] | None) -> str:
    """One sentence: what the val and test splits are, and why their losses differ."""
    if meta is None or meta.get("source") == "synthetic":  # embedded, or written to disk by create_*.py
        return ("val and test are two more synthetic subjects (people), each unseen in training and different "
                "from each other, so test/loss differs from val/loss by how unusual each person is")  # fmt: skip
    counts = meta.get("counts", {})
    scheme = (meta.get("args") or {}).get("split_scheme", "the builder's")
    parts = [f"{k} {counts[k]['sequences']} sequences" for k in ("val", "test") if k in counts]
    return (f"{' and '.join(parts)} held out by --split_scheme {scheme}; val picks the checkpoint, test "
            "scores it once, on other sequences, so the two losses differ by how alike those sequences are")  # fmt: skip


def claim_run_dirs(run: RunConfig) -> None:
    """Make sure this run writes into dirs no other run uses: a resume continues in its checkpoint's, a
    fresh run needs both absent or empty, else UserError (``--overwrite`` deletes the earlier run's)."""
    ckpt_dir, log_dir = run.dirs
    resume = run.resume_from_checkpoint
    if resume and Path(resume).resolve().parent == ckpt_dir.resolve():
        return  # continuing the run that owns these dirs
    taken = [d for d in (ckpt_dir, log_dir) if d.is_dir() and any(d.iterdir())]
    if taken and not run.overwrite:
        last = ckpt_dir / "last.ckpt"
        how = f"continue it with --resume_from_checkpoint {last}, " if last.is_file() else ""
        raise UserError(f"--experiment_name {run.experiment_name} is taken: {taken[0]}/ holds an earlier run; "
                        f"{how}choose another --experiment_name, or add --overwrite to delete that run and start again")  # fmt: skip
    for d in taken:
        shutil.rmtree(d)
        log.warning("--overwrite: deleted the earlier run's %s/", d)


def _remove_empty_dirs(*dirs: Path) -> None:
    """Remove each dir if it holds nothing but empty dirs (what a failed start-up leaves)."""
    for d in dirs:
        if d.is_dir() and not any(p.is_file() for p in d.rglob("*")):
            shutil.rmtree(d, ignore_errors=True)


def _is_first_process() -> bool:
    """False in the extra processes of a DDP run (Lightning starts them with these variables set)."""
    return all(os.environ.get(k, "0") == "0" for k in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def format_summary(summary: Any, splits_note: str) -> str:
    """The closing lines: the files this run wrote, the final numbers and what they mean."""
    lines = ["", "Run summary"]
    if summary.interrupted:
        lines.append(f"  INTERRUPTED at epoch {summary.epochs}; resume with:")
        if summary.last:
            lines.append(f"    python train_hand_vae_lightning.py --resume_from_checkpoint {summary.last}")
    lines.append(f"  checkpoints:     {summary.checkpoint_dir}/")
    for key, label in (("best", "best (top-k)"), ("best_model", "best_model"), ("last", "last")):
        if getattr(summary, key):
            lines.append(f"  {label + ':':<17}{getattr(summary, key)}")
    log_dir = Path(summary.log_dir)
    lines.append(f"  TensorBoard:     {log_dir}/   (tensorboard --logdir {log_dir.parent.parent})")
    if summary.plots:
        lines.append(
            f"  plots:           {log_dir / 'plots'}/ ({len(summary.plots)} PNG files from this run)"
        )
    if summary.best_val_loss is not None:
        lines.append(f"  best val/loss:   {summary.best_val_loss:.3f} nats (negative ELBO; lower is better)")
    test = {k.removeprefix("test/"): v for k, v in summary.test.items()}
    if test:
        nats = ", ".join(f"{k} {test.pop(k):.3f}" for k in ("loss", "recon_nll", "kl") if k in test)
        rest = ", ".join(f"{k} {v:.{0 if k == 'active_units' else 3}f}" for k, v in sorted(test.items()))
        lines.append(f"  test (best checkpoint): {nats} nats; {rest}")
    if test or summary.best_val_loss is not None:
        lines.append(f"  splits:          {splits_note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``train_hand_vae_lightning.py``; returns the exit code (``hand_vae.cli.common``)."""
    build_parser().parse_args(argv)  # --help and a bad flag end here, before any heavy import
    # torch, roma, Lightning, matplotlib and TensorBoard: imported once the flags parse.
    import torch
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    from hand_vae import training
    from hand_vae.cli.common import EXIT_DIVERGED, EXIT_PARTIAL, EXIT_USER_ERROR, run_command, setup_logging
    from hand_vae.data.layouts import read_meta
    from hand_vae.reliability import NonFiniteError

    setup_logging()
    threads = torch.get_num_threads()  # restored at the end: main() may run inside another program
    dirs: tuple[Path, ...] = ()

    def body() -> int:
        nonlocal dirs
        settings = parse_settings(argv)
        dirs = settings.run.dirs
        if _is_first_process():
            claim_run_dirs(settings.run)
        try:
            summary = training.run_training(settings)
        except MisconfigurationException as err:  # e.g. --devices 3 on a 2-GPU machine
            raise UserError(str(err).splitlines()[0]) from err
        except NonFiniteError as err:
            log.error("%s", err)
            return EXIT_DIVERGED
        if summary.is_global_zero:
            meta = read_meta(settings.data.directory) if settings.data.directory else None
            print(format_summary(summary, describe_splits(meta)))  # noqa: T201 - the CLI's final summary
        # Shell convention: 128 + signal number.
        code = {"SIGINT": 130, "SIGTERM": 143}.get(summary.interrupted, EXIT_PARTIAL)
        return code if summary.interrupted else 0

    try:
        code = run_command(body)
    finally:
        torch.set_num_threads(threads)
    if code == EXIT_USER_ERROR:
        _remove_empty_dirs(*dirs)
    return code
