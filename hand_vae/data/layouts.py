"""The two on-disk dataset layouts of docs/design.md §3 (consolidated shards, one file per sequence):
crash-safe writers and checked readers. Per split, sequences are sorted by name and ``sequence_index``
is a frame's position in that list, so both layouts give identical rows.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import struct
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hand_vae.data.npz_io import read_npz_into, sha256_file, write_npz
from hand_vae.errors import UserError, atomic_write
from hand_vae.rotations import POSE_DIM
from hand_vae.settings import DEFAULT_SHARD_SIZE

FORMAT_VERSION = 1
LAYOUTS = ("consolidated", "splits")
SPLITS = ("train", "val", "test")
META_NAME = "meta.json"
POSE_LAYOUT = "axis-angle radians, [left 45 | right 45], MANO joint order, full pose (flat hand = 0)"
_FIX = "re-create it with create_consolidated_npz.py / create_datamodule.py --output_dir {path} --overwrite"
# What numpy / zipfile raise for a truncated or corrupt .npz.
READ_ERRORS = (OSError, ValueError, EOFError, struct.error, zipfile.BadZipFile)

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]


class DatasetError(UserError, ValueError):
    """A dataset cannot be built, written or read (bad flags, bad input, damaged dir); one actionable line."""


class Sequence(Protocol):
    """What the writers need from a clip (``hand_vae.data.synthetic.PoseSequence`` fits)."""

    name: str
    poses: np.ndarray  # (T, 90) float32
    fps: float | None


def write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    """Write ``obj`` as indented JSON through :func:`hand_vae.errors.atomic_write`."""
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


def check_output_dir(out_dir: str | Path, overwrite: bool) -> None:
    """Refuse a file, a non-empty dir without ``overwrite``, or (even with it) a non-empty dir this
    tool did not write (no ``meta.json``), raising :class:`DatasetError` with the fix."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--output_dir {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DatasetError(
                f"--output_dir {out} already holds data; pass --overwrite to replace it or pick another dir"
            )
        if not (out / META_NAME).is_file():
            raise DatasetError(
                f"--output_dir {out} is not empty and has no {META_NAME}, so it was not written by this tool; "
                "refusing to delete it with --overwrite: remove it yourself or pick another dir"
            )


@contextmanager
def staging_dir(out_dir: str | Path, overwrite: bool) -> Iterator[Path]:
    """Yield a hidden temporary sibling dir; on success swap it into ``out_dir``, on failure delete it,
    so an interrupted run never leaves a directory the readers accept."""
    out = Path(out_dir).resolve()
    check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()  # not mkdtemp: the dir keeps the umask's permissions, not 0o700, once renamed
    try:
        yield tmp
        old = None
        if out.is_dir():  # move the old dir away, then swap
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "data")
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_splits(splits: dict[str, list[Sequence]]) -> dict[str, list[Sequence]]:
    """Validate names / shapes and sort each split by name."""
    if unknown := set(splits) - set(SPLITS):
        raise ValueError(f"unknown split(s) {sorted(unknown)}; expected {SPLITS}")
    seen: set[str] = set()
    out = {}
    for split in SPLITS:
        out[split] = sorted(splits.get(split, []), key=lambda s: s.name)
        for s in out[split]:
            if s.name in seen:
                raise ValueError(f"sequence name {s.name!r} occurs twice")
            if s.name.startswith("/") or "\\" in s.name or {"", ".", ".."} & set(s.name.split("/")):
                raise ValueError(f"sequence name {s.name!r} is not a safe relative path")
            if s.poses.ndim != 2 or s.poses.shape[1] != POSE_DIM:
                raise ValueError(f"sequence {s.name!r} has shape {s.poses.shape}, expected (T, {POSE_DIM})")
            seen.add(s.name)
    return out


def stack_poses(sequences: list[Sequence]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate clips -> (poses (N, 90) float32, sequence_index (N,) int32)."""
    poses = np.concatenate([s.poses for s in sequences]) if sequences else np.zeros((0, POSE_DIM))
    index = np.repeat(np.arange(len(sequences), dtype=np.int32), [len(s.poses) for s in sequences])
    return poses.astype(np.float32, copy=False), index


def _file_entry(path: Path, rel: str, rows: int) -> dict[str, Any]:
    return {"file": rel, "rows": rows, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _write(
    out_dir: str | Path,
    layout: str,
    splits: dict[str, list[Sequence]],
    meta_extra: dict[str, Any],
    overwrite: bool,
    write_split: Callable[[Path, str, list[Sequence]], dict[str, Any]],
) -> dict[str, Any]:
    """Stage the dir, write each split with ``write_split(tmp, split, seqs) -> meta entry``, then
    meta.json last (its presence marks the dir complete)."""
    splits = _check_splits(splits)
    counts = {s: {"sequences": len(q), "frames": sum(len(x.poses) for x in q)} for s, q in splits.items()}
    meta: dict[str, Any] = {"format_version": FORMAT_VERSION, "layout": layout, "pose_dim": POSE_DIM,
                            "pose_layout": POSE_LAYOUT, "counts": counts}  # fmt: skip
    if clash := (set(meta) | {"splits"}) & set(meta_extra):
        raise ValueError(f"meta_extra may not set reserved keys {sorted(clash)}")
    with staging_dir(out_dir, overwrite) as tmp:
        meta["splits"] = {split: write_split(tmp, split, seqs) for split, seqs in splits.items()}
        meta.update(meta_extra)
        write_json_atomic(tmp / META_NAME, meta)
    return meta


def write_consolidated(
    out_dir: str | Path,
    splits: dict[str, list[Sequence]],
    meta_extra: dict[str, Any],
    shard_size: int = DEFAULT_SHARD_SIZE,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the consolidated layout to ``out_dir`` (absent or empty unless ``overwrite``, which replaces
    a dir this tool wrote): per split, uncompressed shards of at most ``shard_size`` rows. ``splits``:
    split -> clips with unique names (written sorted by name); ``meta_extra``: JSON-able entries added
    to ``meta.json``. Returns the ``meta.json`` content; raises DatasetError (output dir not usable) or
    ValueError (bad clips or ``shard_size``)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")

    def write_split(tmp: Path, split: str, seqs: list[Sequence]) -> dict[str, Any]:
        poses, index = stack_poses(seqs)
        shards = []
        for k, start in enumerate(range(0, len(poses), shard_size)):
            name, rows = f"{split}_{k:03d}.npz", slice(start, start + shard_size)
            write_npz(tmp / name, {"hand_pose": poses[rows], "sequence_index": index[rows]})
            shards.append(_file_entry(tmp / name, name, len(poses[rows])))
        sequences = [{"name": s.name, "frames": len(s.poses), "fps": s.fps} for s in seqs]
        return {"shards": shards, "sequences": sequences}

    return _write(out_dir, "consolidated", splits, meta_extra, overwrite, write_split)


def write_splits_dir(
    out_dir: str | Path,
    splits: dict[str, list[Sequence]],
    meta_extra: dict[str, Any],
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the splits layout, ``<split>/<sequence name>.npz`` holding ``hand_pose`` (T, 90) float32;
    otherwise as :func:`write_consolidated`."""

    def write_split(tmp: Path, split: str, seqs: list[Sequence]) -> dict[str, Any]:
        (tmp / split).mkdir()
        entries = []
        for s in seqs:
            rel = f"{split}/{s.name}.npz"
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            write_npz(tmp / rel, {"hand_pose": s.poses.astype(np.float32, copy=False)})
            entries.append({"name": s.name, "fps": s.fps, **_file_entry(tmp / rel, rel, len(s.poses))})
        return {"sequences": entries}

    return _write(out_dir, "splits", splits, meta_extra, overwrite, write_split)


def read_meta(path: str | Path) -> dict[str, Any]:
    """Read and sanity-check ``meta.json`` of a dataset dir; raises DatasetError (dir missing, no or
    corrupt ``meta.json``, unknown layout or newer format)."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(
            f"dataset dir {path} does not exist; create it with create_consolidated_npz.py --output_dir {path} "
            f"(or create_datamodule.py --output_dir {path})"
        )
    meta_path, fix = path / META_NAME, _FIX.format(path=path)
    if not meta_path.is_file():
        raise DatasetError(
            f"{path} has no {META_NAME}, so it is incomplete (interrupted run?) or not a dataset; remove it and "
            f"re-run create_consolidated_npz.py --output_dir {path} (or create_datamodule.py)"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{meta_path} is unreadable ({err}); {fix}") from None
    if not isinstance(meta, dict) or meta.get("layout") not in LAYOUTS or "splits" not in meta:
        raise DatasetError(f"{meta_path} is not a dataset meta.json (no valid 'layout'); {fix}")
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


def unreadable(file: Path, root: Path, err: BaseException) -> DatasetError:
    """The error for a data file of dataset dir ``root`` that cannot be read."""
    return DatasetError(f"{file} is unreadable ({type(err).__name__}: {err}); {_FIX.format(path=root)}")


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


def load_dataset_dir(path: str | Path, verify: bool = False, layout: str | None = None) -> Arrays:
    """split -> (hand_pose (N, 90) float32, sequence_index (N,) int32) of a dataset dir, rows sorted by
    sequence name, each file read once straight into the result. Sizes are always checked, sha256 too
    with ``verify`` (reads the data twice); ``layout``: the one it must have (None: either). Raises
    DatasetError: missing, incomplete or damaged dir, or the wrong layout."""
    path = Path(path)
    meta = read_meta(path)
    if layout is not None and meta["layout"] != layout:
        flag = "--consolidated_dir" if meta["layout"] == "consolidated" else "--splits_dir"
        raise DatasetError(f"{path} holds the {meta['layout']} layout, not {layout}; pass it as {flag}")
    out: Arrays = {}
    for split, files in split_files(path, verify).items():
        rows = [n for _, n in files]
        poses = np.empty((sum(rows), POSE_DIM), np.float32)  # (N, 90)
        index = np.repeat(np.arange(len(files), dtype=np.int32), rows)  # (N,): one file per sequence
        start = 0
        for file, n in files:
            dest = {"hand_pose": poses[start : start + n]}
            if meta["layout"] == "consolidated":
                dest["sequence_index"] = index[start : start + n]
            try:
                read_npz_into(file, dest)
            except READ_ERRORS as err:
                raise unreadable(file, path, err) from None
            start += n
        out[split] = (poses, index)
    return out


# load_dataset_dir of a dir that must hold that layout.
load_consolidated = functools.partial(load_dataset_dir, layout="consolidated")
load_splits_dir = functools.partial(load_dataset_dir, layout="splits")
