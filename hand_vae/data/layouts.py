"""The two on-disk dataset layouts of docs/design.md §3: writers and readers.

``consolidated`` (``create_consolidated_npz.py``)::

    train_000.npz, train_001.npz, ..., val_000.npz, test_000.npz   # hand_pose (N,90) f4, sequence_index (N,) i4
    meta.json

``splits`` (``create_datamodule.py``)::

    train/<sequence>.npz, val/..., test/...                        # hand_pose (T,90) f4, one file per sequence
    meta.json

Both layouts hold, per split, the sequences sorted by name; ``sequence_index`` is the position of a
frame's sequence in that sorted list. Built from the same clips, both readers therefore return
identical arrays. ``meta.json`` (counts, file names with byte sizes and sha256, sequences, plus the
builder's sources / skipped files / drop counts / args) is written last and atomically, and the whole
directory is built under a temporary name and renamed into place, so an interrupted run never leaves
a directory that the readers accept.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hand_vae.data.npz_io import read_npz_into, sha256_file, write_npz
from hand_vae.data.staging import META_NAME, DatasetError, staging_dir, write_json_atomic
from hand_vae.rotations import POSE_DIM

FORMAT_VERSION = 1
LAYOUTS = ("consolidated", "splits")
SPLITS = ("train", "val", "test")
DEFAULT_SHARD_SIZE = 1_000_000
POSE_LAYOUT = "axis-angle radians, [left 45 | right 45], MANO joint order, full pose (flat hand = 0)"
_FIX = "re-create it with create_consolidated_npz.py / create_datamodule.py --output_dir {path} --overwrite"

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]


class Sequence(Protocol):
    """What the writers need from a clip (``hand_vae.data.synthetic.PoseSequence`` fits)."""

    name: str
    poses: np.ndarray  # (T, 90) float32
    fps: float | None


# --------------------------------------------------------------------------- writing


def _check_splits(splits: dict[str, list[Sequence]]) -> dict[str, list[Sequence]]:
    """Validate names / shapes and sort each split by name."""
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; expected {SPLITS}")
    seen: set[str] = set()
    out = {}
    for split in SPLITS:
        seqs = sorted(splits.get(split, []), key=lambda s: s.name)
        for s in seqs:
            parts = s.name.split("/")
            if s.name in seen:
                raise ValueError(f"sequence name {s.name!r} occurs twice")
            if s.name.startswith("/") or "\\" in s.name or any(p in ("", ".", "..") for p in parts):
                raise ValueError(f"sequence name {s.name!r} is not a safe relative path")
            if s.poses.ndim != 2 or s.poses.shape[1] != POSE_DIM:
                raise ValueError(f"sequence {s.name!r} has shape {s.poses.shape}, expected (T, {POSE_DIM})")
            seen.add(s.name)
        out[split] = seqs
    return out


def _file_entry(path: Path, rel: str, rows: int) -> dict[str, Any]:
    return {"file": rel, "rows": rows, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _meta(layout: str, splits: dict[str, list[Sequence]], per_split: dict, extra: dict) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "layout": layout,
        "pose_dim": POSE_DIM,
        "pose_layout": POSE_LAYOUT,
        "counts": {
            s: {"sequences": len(seqs), "frames": int(sum(len(q.poses) for q in seqs))}
            for s, seqs in splits.items()
        },
        "splits": per_split,
    }
    clash = set(meta) & set(extra)
    if clash:
        raise ValueError(f"meta_extra may not set reserved keys {sorted(clash)}")
    return {**meta, **extra}


def write_consolidated(
    out_dir: str | Path,
    splits: dict[str, list[Sequence]],
    meta_extra: dict[str, Any],
    shard_size: int = DEFAULT_SHARD_SIZE,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the consolidated layout: per split, uncompressed shards of at most ``shard_size`` rows.

    Args:
        out_dir: destination; must be absent or empty unless ``overwrite``.
        splits: split -> clips (any order; written sorted by name). Names must be unique.
        meta_extra: JSON-able entries added to ``meta.json`` (sources, skipped, drops, args, fps, ...).
        shard_size: rows per shard file (>= 1).
        overwrite: replace a directory previously written by this tool.

    Returns:
        The ``meta.json`` content.

    Raises:
        DatasetError: output dir not usable. ValueError: bad clips or ``shard_size``.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    splits = _check_splits(splits)
    with staging_dir(out_dir, overwrite) as tmp:
        per_split = {}
        for split, seqs in splits.items():
            lengths = [len(s.poses) for s in seqs]
            poses = np.concatenate([s.poses for s in seqs]) if seqs else np.zeros((0, POSE_DIM))
            poses = poses.astype(np.float32, copy=False)  # (N, 90)
            index = np.repeat(np.arange(len(seqs), dtype=np.int32), lengths)  # (N,)
            shards = []
            for k, start in enumerate(range(0, len(poses), shard_size)):
                name = f"{split}_{k:03d}.npz"
                stop = start + shard_size
                write_npz(tmp / name, {"hand_pose": poses[start:stop], "sequence_index": index[start:stop]})
                shards.append(_file_entry(tmp / name, name, len(poses[start:stop])))
            per_split[split] = {
                "shards": shards,
                "sequences": [{"name": s.name, "frames": len(s.poses), "fps": s.fps} for s in seqs],
            }
        meta = _meta("consolidated", splits, per_split, meta_extra)
        write_json_atomic(tmp / META_NAME, meta)  # last: its presence marks the dir complete
    return meta


def write_splits_dir(
    out_dir: str | Path,
    splits: dict[str, list[Sequence]],
    meta_extra: dict[str, Any],
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the splits layout: ``<split>/<sequence name>.npz`` holding ``hand_pose`` (T, 90) float32.

    Args and Returns: as :func:`write_consolidated` (no sharding).
    """
    splits = _check_splits(splits)
    with staging_dir(out_dir, overwrite) as tmp:
        per_split = {}
        for split, seqs in splits.items():
            (tmp / split).mkdir()
            entries = []
            for s in seqs:
                rel = f"{split}/{s.name}.npz"
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                write_npz(tmp / rel, {"hand_pose": s.poses.astype(np.float32, copy=False)})
                entries.append({"name": s.name, "fps": s.fps, **_file_entry(tmp / rel, rel, len(s.poses))})
            per_split[split] = {"sequences": entries}
        meta = _meta("splits", splits, per_split, meta_extra)
        write_json_atomic(tmp / META_NAME, meta)  # last: its presence marks the dir complete
    return meta


# --------------------------------------------------------------------------- reading


def read_meta(path: str | Path) -> dict[str, Any]:
    """Read and sanity-check ``meta.json`` of a dataset dir.

    Raises:
        DatasetError: dir missing, no / corrupt ``meta.json``, unknown layout or newer format.
    """
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(
            f"dataset dir {path} does not exist; create it with create_consolidated_npz.py --output_dir {path} "
            f"(or create_datamodule.py --output_dir {path})"
        )
    meta_path = path / META_NAME
    if not meta_path.is_file():
        raise DatasetError(
            f"{path} has no {META_NAME}, so it is incomplete (interrupted run?) or not a dataset; remove it and "
            f"re-run create_consolidated_npz.py --output_dir {path} (or create_datamodule.py)"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{meta_path} is unreadable ({err}); {_FIX.format(path=path)}") from None
    if not isinstance(meta, dict) or meta.get("layout") not in LAYOUTS or "splits" not in meta:
        raise DatasetError(
            f"{meta_path} is not a dataset meta.json (no valid 'layout'); {_FIX.format(path=path)}"
        )
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise DatasetError(
            f"{path} has format_version {meta['format_version']}, newer than this code "
            f"({FORMAT_VERSION}); update hand_vae or re-create the dir"
        )
    return meta


def _check_file(root: Path, entry: dict[str, Any], verify: bool) -> Path:
    path = root / entry["file"]
    fix = _FIX.format(path=root)
    if not path.is_file():
        raise DatasetError(f"{path} is listed in meta.json but missing; {fix}")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise DatasetError(f"{path} is {size} bytes but meta.json says {entry['bytes']}; {fix}")
    if verify and sha256_file(path) != entry["sha256"]:
        raise DatasetError(f"{path} does not match its sha256 in meta.json (corrupt); {fix}")
    return path


def _read_into(path: Path, dest: dict[str, np.ndarray], root: Path) -> None:
    try:
        read_npz_into(path, dest)
    except (OSError, ValueError, EOFError, struct.error, zipfile.BadZipFile) as err:
        raise DatasetError(
            f"{path} is unreadable ({type(err).__name__}: {err}); {_FIX.format(path=root)}"
        ) from None


def _expect_layout(meta: dict[str, Any], path: Path, layout: str) -> None:
    if meta["layout"] != layout:
        flag = "--consolidated_dir" if meta["layout"] == "consolidated" else "--splits_dir"
        raise DatasetError(f"{path} holds the {meta['layout']} layout, not {layout}; pass it as {flag}")


def load_consolidated(path: str | Path, verify: bool = False) -> Arrays:
    """Load a consolidated dir.

    Args:
        path: the dir written by :func:`write_consolidated`.
        verify: also check every shard's sha256 (reads the data twice); sizes are always checked.

    Returns:
        split -> (hand_pose (N, 90) float32, sequence_index (N,) int32), for train / val / test.

    Raises:
        DatasetError: missing / incomplete / damaged dir or wrong layout.
    """
    path = Path(path)
    meta = read_meta(path)
    _expect_layout(meta, path, "consolidated")
    out: Arrays = {}
    for split in SPLITS:
        shards = meta["splits"].get(split, {}).get("shards", [])
        total = sum(int(s["rows"]) for s in shards)
        poses = np.empty((total, POSE_DIM), np.float32)  # (N, 90)
        index = np.empty((total,), np.int32)  # (N,)
        start = 0
        for shard in shards:
            file = _check_file(path, shard, verify)
            stop = start + int(shard["rows"])
            _read_into(file, {"hand_pose": poses[start:stop], "sequence_index": index[start:stop]}, path)
            start = stop
        out[split] = (poses, index)
    return out


def load_splits_dir(path: str | Path, verify: bool = False) -> Arrays:
    """Load a splits dir (every file read once). Same arguments and return value as
    :func:`load_consolidated`; rows come in meta.json's order (sorted by sequence name)."""
    path = Path(path)
    meta = read_meta(path)
    _expect_layout(meta, path, "splits")
    out: Arrays = {}
    for split in SPLITS:
        entries = meta["splits"].get(split, {}).get("sequences", [])
        lengths = [int(e["rows"]) for e in entries]
        poses = np.empty((sum(lengths), POSE_DIM), np.float32)  # (N, 90)
        start = 0
        for entry, n in zip(entries, lengths, strict=True):
            file = _check_file(path, entry, verify)
            _read_into(file, {"hand_pose": poses[start : start + n]}, path)
            start += n
        out[split] = (poses, np.repeat(np.arange(len(entries), dtype=np.int32), lengths))
    return out


def split_files(path: str | Path, verify: bool = False) -> dict[str, list[tuple[Path, int]]]:
    """Per split, its ``.npz`` files (member ``hand_pose``) in row order with their row counts, for
    readers that stream rows (e.g. straight into a GPU tensor) instead of loading whole splits.
    Sizes are checked, sha256 too with ``verify``; raises ``DatasetError`` as the loaders do."""
    path = Path(path)
    meta = read_meta(path)
    entries = "shards" if meta["layout"] == "consolidated" else "sequences"
    return {
        split: [
            (_check_file(path, e, verify), int(e["rows"]))
            for e in meta["splits"].get(split, {}).get(entries, [])
        ]
        for split in SPLITS
    }


def load_dataset_dir(path: str | Path, verify: bool = False) -> Arrays:
    """Load either layout, chosen by ``meta.json``'s ``layout`` field. See :func:`load_consolidated`."""
    meta = read_meta(path)
    loader = load_consolidated if meta["layout"] == "consolidated" else load_splits_dir
    return loader(path, verify=verify)
