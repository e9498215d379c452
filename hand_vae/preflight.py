"""Checks made before a training run starts, so that a mistake costs one line and no files.

* **One name, one run.** ``checkpoints/NAME/`` and ``logs/hand-vae-prior/NAME/`` belong to a
  single run. A fresh run whose name is taken stops with one line naming the three ways on
  (resume it, a new name, ``--overwrite``), instead of writing a second run's files beside the first
  run's (``last-v1.ckpt``, extra event files, an ``hparams.yaml`` describing the wrong run).
* **A dataset dir that can train.** It exists (with a "did you mean" for a typo), it has a
  ``meta.json``, and its train, val and test splits are all non-empty. A dir of the other layout is
  accepted and reported as the layout it is.
* **CPU threads.** How many intra-op threads torch uses on the CPU (``--threads``).
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from hand_vae.data.layouts import SPLITS, DatasetError, read_meta
from hand_vae.data.staging import META_NAME

log = logging.getLogger("hand_vae")

LOGGER_NAME = "hand-vae-prior"
# Below this many rows per batch, a second intra-op thread costs more in synchronisation than it
# gains on the small MLP matmuls (measured: README "Slow Training").
SMALL_BATCH_ROWS = 4096
_FLAGS = {"consolidated": "--consolidated_dir", "splits": "--splits_dir"}
_SCRIPTS = {"consolidated": "create_consolidated_npz.py", "splits": "create_datamodule.py"}


class UserError(Exception):
    """A mistake in what the user asked for; reported as one line, exit code 2."""


# --------------------------------------------------------------------------- run directories


def run_dirs(s: dict[str, Any]) -> tuple[Path, Path]:
    """(checkpoint dir, TensorBoard log dir) of the run named ``s["experiment_name"]``."""
    name = s["experiment_name"]
    return Path(s["checkpoint_dir"]) / name, Path(s["log_dir"]) / LOGGER_NAME / name


def _non_empty(d: Path) -> bool:
    return d.is_dir() and any(d.iterdir())


def claim_run_dirs(s: dict[str, Any]) -> None:
    """Make sure this run writes into directories no other run uses.

    A resumed run continues in the directory of its checkpoint. A fresh run needs both dirs absent
    or empty; with ``s["overwrite"]`` an earlier run's dirs are deleted first.

    Raises:
        UserError: the name is taken by another run and ``--overwrite`` was not given.
    """
    ckpt_dir, log_dir = run_dirs(s)
    resume = s.get("resume_from_checkpoint")
    if resume and Path(resume).resolve().parent == ckpt_dir.resolve():
        return  # continuing the run that owns these dirs
    taken = [d for d in (ckpt_dir, log_dir) if _non_empty(d)]
    if not taken:
        return
    name = s["experiment_name"]
    if not s.get("overwrite"):
        last = ckpt_dir / "last.ckpt"
        how = f"continue it with --resume_from_checkpoint {last}, " if last.is_file() else ""
        raise UserError(
            f"--experiment_name {name} is taken: {taken[0]}/ holds an earlier run; "
            f"{how}choose another --experiment_name, or add --overwrite to delete that run and start again"
        )
    for d in taken:
        shutil.rmtree(d)
        log.warning("--overwrite: deleted the earlier run's %s/", d)


def remove_empty_dirs(*dirs: Path) -> None:
    """Remove each dir if it holds nothing but empty dirs (what a failed start-up leaves)."""
    for d in dirs:
        if d.is_dir() and not any(p.is_file() for p in d.rglob("*")):
            shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------- dataset dir


def _did_you_mean(path: Path) -> str:
    """``"; did you mean X?"`` naming a dataset dir beside ``path`` with a similar name, else ``""``."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return ""
    candidates = {p.name: p for p in parent.iterdir() if (p / META_NAME).is_file()}
    close = difflib.get_close_matches(path.name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {candidates[close[0]]}?" if close else ""


def check_data_source(s: dict[str, Any]) -> dict[str, Any] | None:
    """Check the dataset dir of ``s`` before any file is written; returns its meta.json (None: synthetic).

    A dir given with the flag of the other layout is accepted: ``s`` is changed to the right flag,
    so it is logged, saved in the checkpoint and resumed as what it is.

    Raises:
        DatasetError: missing dir (with a "did you mean"), missing/corrupt meta.json, or an empty split.
    """
    flag = "--consolidated_dir" if s.get("consolidated_dir") else "--splits_dir"
    path = s.get("consolidated_dir") or s.get("splits_dir")
    if not path:
        return None
    p = Path(path)
    layout = "consolidated" if flag == "--consolidated_dir" else "splits"
    if not p.is_dir():
        raise DatasetError(
            f"{flag} {path}: dataset dir {path} does not exist{_did_you_mean(p)} "
            f"(create it with python {_SCRIPTS[layout]} --output_dir {path})"
        )
    meta = read_meta(p)
    if meta["layout"] != layout:
        right = _FLAGS[meta["layout"]]
        log.info("%s holds the %s layout (from %s): reading it as %s %s", path, meta["layout"],
                 _SCRIPTS[meta["layout"]], right, path)  # fmt: skip
        s["consolidated_dir"], s["splits_dir"] = (
            (path, None) if meta["layout"] == "consolidated" else (None, path)
        )
    counts = meta.get("counts", {})
    for split in SPLITS:
        c = counts.get(split) or {}
        if not c.get("frames"):
            raise DatasetError(
                f"the {split} split of {path} is empty (train, val and test all need poses: val picks the "
                f"checkpoints, test scores the best); rebuild it from more sequences (at least 3), with other "
                f"--split_ratios, or with --split_scheme dirs and your own train/ val/ test/ folders"
            )
    return meta


def data_fingerprint(s: dict[str, Any], meta: dict[str, Any] | None) -> tuple[str | None, dict | None]:
    """(sha256 of the dataset dir's meta.json, rows per split), or (None, None) for synthetic data."""
    path = s["consolidated_dir"] or s["splits_dir"]
    if not path or meta is None:
        return None, None
    digest = hashlib.sha256((Path(path) / "meta.json").read_bytes()).hexdigest()
    counts = meta.get("counts", {})
    return digest, {k: v.get("frames") if isinstance(v, dict) else v for k, v in counts.items()}


def describe_splits(s: dict[str, Any], meta: dict[str, Any] | None) -> str:
    """One sentence: what the val and test splits are, and why their losses differ."""
    if meta is None or meta.get("source") == "synthetic":  # embedded, or written to disk by create_*.py
        return (
            "val and test are two more synthetic subjects (people), each unseen in training and different "
            "from each other, so test/loss differs from val/loss by how unusual each person is"
        )
    counts = meta.get("counts", {})
    scheme = (meta.get("args") or {}).get("split_scheme", "the builder's")
    parts = [f"{k} {counts[k]['sequences']} sequences" for k in ("val", "test") if k in counts]
    return (
        f"{' and '.join(parts)} held out by --split_scheme {scheme}; val picks the checkpoint, test "
        "scores it once, on other sequences, so the two losses differ by how alike those sequences are"
    )


# --------------------------------------------------------------------------- threads


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cpu_threads(requested: int, batch_size: int, processes: int = 1) -> int:
    """Intra-op threads for training on the CPU.

    Args:
        requested: ``--threads``; > 0 is used as given, 0 means choose.
        batch_size: rows per batch.
        processes: training processes on this machine (CPU DDP shares the cores).

    Returns:
        ``requested`` if > 0; else 1 for batches under ``SMALL_BATCH_ROWS`` rows (thread
        synchronisation costs more than it saves on small matmuls, and far more when another
        program is busy), else every core but one, shared between the processes.
    """
    if requested > 0:
        return requested
    if batch_size < SMALL_BATCH_ROWS:
        return 1
    return max(1, (available_cores() - 1) // max(1, processes))
