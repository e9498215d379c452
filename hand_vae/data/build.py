"""The build behind ``create_consolidated_npz.py`` and ``create_datamodule.py``: scan -> import -> clean
-> split -> write (docs/design.md §2-3). Input files are only read; each ends up in one ``meta.json``
list: ``sources`` (kept), ``dropped`` (by cleaning), ``skipped`` (unusable: exit code 1, ``strict``
stops before writing) or ``ignored`` (not ``.npz``/``.npy``, hidden, AMASS shape files).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hand_vae.data import layouts, synthetic
from hand_vae.data.layouts import SPLITS, DatasetError
from hand_vae.data.sources import EXTENSIONS, SourceError, is_side_file, read_file
from hand_vae.data.splits import assign_splits, check_ratios, dirs_split_of, empty_advice
from hand_vae.rotations import HAND_DIM, POSE_DIM
from hand_vae.settings import FORMATS, BuildConfig

logger = logging.getLogger(__name__)

# Fewer training poses than this get a warning: a prior fitted to so few will not generalise.
MIN_TRAIN_POSES = 1_000
# Radians: a hand whose largest per-dimension std is below it never moves (AMASS subsets without fingers).
CONSTANT_HAND_STD = 1e-4
_INDEX_EPS = 1e-9  # fps ratios such as 100/30 are not exact in binary


@dataclass
class DropCounts:
    """What cleaning removed, per reason (``subsampled_frames`` is expected, not a data problem)."""

    subsampled_frames: int = 0
    non_finite_frames: int = 0
    constant_hand_sequences: int = 0
    empty_sequences: int = 0


@dataclass(frozen=True)
class CleanResult:
    """Outcome of :func:`clean_sequence`: ``poses`` (T', 90) float32 at ``fps``, or None with
    ``drop_reason`` (``"constant_hand"`` or ``"empty"``) and a human-readable ``detail``."""

    poses: np.ndarray | None
    fps: float | None
    drop_reason: str | None = None
    detail: str = ""


def subsample_indices(num_frames: int, source_fps: float | None, target_fps: float | None) -> np.ndarray:
    """(T',) int64 frames resampling ``num_frames`` from ``source_fps`` to ``target_fps``: frame k is
    ``floor(k * source_fps / target_fps)`` (120 -> 30 fps: every 4th from 0); a clip not faster than the
    target, or of unknown rate (None), is kept whole."""
    if source_fps is None or target_fps is None or source_fps <= target_fps:
        return np.arange(num_frames)
    step = source_fps / target_fps
    count = int(np.ceil(num_frames / step - _INDEX_EPS))
    return np.floor(np.arange(count) * step + _INDEX_EPS).astype(np.int64)


def constant_hands(poses: np.ndarray, threshold: float = CONSTANT_HAND_STD) -> list[str]:
    """Names of the hands (``"left"``, ``"right"``) of a (T, 90) clip whose largest per-dimension std
    over time is below ``threshold`` radians."""
    std = poses.astype(np.float64).std(axis=0) if len(poses) else np.zeros(POSE_DIM)  # (90,)
    hands = (("left", slice(0, HAND_DIM)), ("right", slice(HAND_DIM, POSE_DIM)))
    return [name for name, cols in hands if float(std[cols].max()) < threshold]


def clean_sequence(
    poses: np.ndarray, source_fps: float | None, target_fps: float | None, counts: DropCounts
) -> CleanResult:
    """Subsample a (T, 90) clip, drop non-finite frames, reject constant hands; updates ``counts``.
    Subsampling first, on the original time grid: a bad frame never shifts which frames are kept."""
    idx = subsample_indices(len(poses), source_fps, target_fps)
    counts.subsampled_frames += len(poses) - len(idx)
    fps = target_fps if len(idx) < len(poses) else source_fps
    kept = poses[idx]
    finite = np.isfinite(kept).all(axis=1)  # (T',)
    bad = int((~finite).sum())
    counts.non_finite_frames += bad
    kept = kept[finite]
    if len(kept) == 0:
        counts.empty_sequences += 1
        return CleanResult(None, fps, "empty", f"no frames left ({bad} non-finite)" if bad else "no frames")
    if still := constant_hands(kept):
        counts.constant_hand_sequences += 1
        detail = f"{' and '.join(still)} hand constant (per-dim std < {CONSTANT_HAND_STD:g} rad)"
        return CleanResult(None, fps, "constant_hand", detail)
    return CleanResult(np.ascontiguousarray(kept, dtype=np.float32), fps)


@dataclass
class BuildSummary:
    """What a build did (also stored in ``meta.json``)."""

    output_dir: Path
    layout: str
    synthetic: bool
    meta: dict[str, Any]
    skipped: list[dict[str, str]] = field(default_factory=list)
    dropped: list[dict[str, str]] = field(default_factory=list)
    ignored: list[dict[str, str]] = field(default_factory=list)

    @property
    def files_written(self) -> list[str]:
        """Data files relative to ``output_dir`` (meta.json last)."""
        splits = [self.meta["splits"][split] for split in SPLITS]
        return [e["file"] for s in splits for e in s.get("shards", s["sequences"])] + ["meta.json"]


def _validate(cfg: BuildConfig) -> None:
    if cfg.layout not in layouts.LAYOUTS:
        raise DatasetError(f"unknown layout {cfg.layout!r}")
    if cfg.format != "auto" and cfg.format not in FORMATS:
        raise DatasetError(f"--format must be auto or one of {', '.join(FORMATS)}, got {cfg.format!r}")
    if cfg.target_fps is not None and not cfg.target_fps >= 0:
        raise DatasetError(f"--target_fps must be a frame rate > 0 or 0 (every frame), got {cfg.target_fps}")
    if cfg.source_fps is not None and not cfg.source_fps > 0:
        raise DatasetError(f"--source_fps must be a positive frame rate, got {cfg.source_fps}")
    if cfg.shard_size < 1:
        raise DatasetError(f"--shard_size must be >= 1, got {cfg.shard_size}")
    cfg.split_ratios = check_ratios(cfg.split_ratios)
    layouts.check_output_dir(cfg.output_dir, cfg.overwrite)  # fail before a long import, not after
    if cfg.input_dir is None:
        return
    src, out = Path(cfg.input_dir).resolve(), Path(cfg.output_dir).resolve()
    if not src.is_dir():
        raise DatasetError(f"--input_dir {cfg.input_dir} is not a directory")
    if out == src or src in out.parents or out in src.parents:
        raise DatasetError(f"--output_dir {cfg.output_dir} must not contain or be inside --input_dir")


def _scan(cfg: BuildConfig) -> tuple[dict[str, str], list[dict[str, str]], list[dict[str, str]]]:
    """Sequence name -> candidate file (relative POSIX path), in path order, plus skipped (before
    reading) and ignored entries. The name is the path without extension (and split folder)."""
    root = Path(cfg.input_dir)  # type: ignore[arg-type]
    candidates, skipped, ignored = [], [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            ignored.append({"path": rel, "reason": "hidden file"})
        elif path.suffix not in EXTENSIONS:
            ignored.append({"path": rel, "reason": f"not .npz/.npy ({path.suffix or 'no extension'})"})
        elif is_side_file(path):
            ignored.append({"path": rel, "reason": "AMASS body-shape file, no poses"})
        elif cfg.split_scheme == "dirs" and dirs_split_of(rel) is None:
            skipped.append({"path": rel, "reason": "not under train/, val/ or test/ (--split_scheme dirs)"})
        else:
            stem = rel[: -len(path.suffix)]
            name = stem.split("/", 1)[1] if cfg.split_scheme == "dirs" else stem
            candidates.append((name, rel))
    if not candidates and not skipped:
        raise DatasetError(
            f"--input_dir {cfg.input_dir} holds no .npz/.npy files"
            + (f" ({len(ignored)} other files ignored, e.g. {ignored[0]['path']})" if ignored else "")
        )
    if ignored:
        e = ignored[0]["path"]
        logger.warning("ignored %d files (not .npz/.npy, hidden or shape-only), e.g. %s", len(ignored), e)
    taken: dict[str, str] = {}
    for name, rel in candidates:
        if name in taken:
            skipped.append({"path": rel, "reason": f"duplicate sequence name {name!r} (also {taken[name]})"})
        else:
            taken[name] = rel
    return taken, skipped, ignored


def _skip(cfg: BuildConfig, skipped: list[dict[str, str]], rel: str, reason: str) -> None:
    logger.warning("skipping %s: %s", rel, reason)
    skipped.append({"path": rel, "reason": reason})
    if cfg.strict:
        raise DatasetError(f"{rel}: {reason} (--strict: stopped, nothing written)")


def _rate(source_fps: float | None, fps: float | None) -> str:
    if source_fps is None:
        return "no frame rate stored: every frame kept; set --source_fps"
    if fps is None or fps == source_fps:
        return f"{source_fps:g} fps"
    return f"{source_fps:g} -> {fps:g} fps"


def formats_line(sources: list[dict[str, Any]]) -> str:
    """``"amass_smplh 3 files (120 -> 30 fps), array 2 files (...)"``: the formats and frame rates
    found in meta.json's ``sources`` entries."""
    groups = Counter((s["format"], _rate(s.get("source_fps"), s.get("fps"))) for s in sources)
    parts = [f"{fmt} {n} file{'s' if n > 1 else ''} ({rate})" for (fmt, rate), n in sorted(groups.items())]
    return ", ".join(parts)


def _import_all(cfg: BuildConfig) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    from tqdm.auto import tqdm  # a Lightning dependency, imported only when files are read

    candidates, scan_skipped, ignored = _scan(cfg)
    skipped: list[dict[str, str]] = []
    for s in scan_skipped:
        _skip(cfg, skipped, s["path"], s["reason"])
    target = cfg.target_fps or None
    counts = DropCounts()
    kept: dict[str, synthetic.PoseSequence] = {}
    sources, dropped = [], []
    digests: dict[str, str] = {}  # sha256 of the imported frames -> first file holding them
    copies: list[tuple[str, str]] = []
    for name, rel in tqdm(candidates.items(), desc="reading", unit="file", disable=None, leave=False):
        try:
            raw = read_file(Path(cfg.input_dir) / rel, cfg.format, cfg.trust_pickle)  # type: ignore[arg-type]
        except SourceError as err:
            _skip(cfg, skipped, rel, str(err))
            continue
        digest = hashlib.sha256(np.ascontiguousarray(raw.poses, np.float32)).hexdigest()
        if digest in digests:
            copies.append((digests[digest], rel))
            continue
        digests[digest] = rel
        fps = raw.fps if raw.fps is not None else cfg.source_fps
        res = clean_sequence(raw.poses, fps, target, counts)
        if res.poses is None:
            logger.debug("dropping %s: %s", rel, res.detail)
            dropped.append({"path": rel, "name": name, "reason": res.drop_reason, "detail": res.detail})
            continue
        kept[name] = synthetic.PoseSequence(name, name.rpartition("/")[0], res.poses, res.fps)
        sources.append({"path": rel, "name": name, "format": raw.format, "source_fps": fps, "fps": res.fps,
                        "frames_read": len(raw.poses), "frames_kept": len(res.poses)})  # fmt: skip
    if copies:
        more = f" (and {len(copies) - 1} more identical pairs)" if len(copies) > 1 else ""
        raise DatasetError(
            f"{copies[0][0]} and {copies[0][1]} hold identical poses{more}: a copy would leak between splits "
            "or count twice; remove one copy; nothing written"
        )
    if sources:
        logger.info("read %s", formats_line(sources))
    paths = {e["name"]: e["path"] for e in sources}
    names = assign_splits(paths, cfg.split_scheme, cfg.split_ratios, cfg.seed)
    if any(names.values()) and (advice := empty_advice(names, cfg.split_scheme, cfg.split_ratios)):
        raise DatasetError(f"{advice}; nothing written")
    split_of = {n: s for s, ns in names.items() for n in ns}
    for entry in sources:
        entry["split"] = split_of[entry["name"]]
    splits = {s: [kept[n] for n in ns] for s, ns in names.items()}
    extra = {"source": "files", "sources": sources, "skipped": skipped, "dropped": dropped,
             "ignored": ignored, "drops": asdict(counts)}  # fmt: skip
    return splits, extra


def _size_warnings(splits: dict[str, list[Any]]) -> list[str]:
    """One-line warnings for a train split that is smaller than val or than :data:`MIN_TRAIN_POSES`."""
    train, val = (sum(len(s.poses) for s in splits[name]) for name in ("train", "val"))
    fix = "add sequences, or give your own split with --split_scheme dirs"
    if train < val:
        return [f"train has fewer poses ({train}) than val ({val}): the split put the longest clips in val; "
                f"try another --seed, {fix}"]  # fmt: skip
    if train < MIN_TRAIN_POSES:
        return [f"train has only {train} poses (< {MIN_TRAIN_POSES}): a prior fitted to so few will not "
                "generalise; add sequences"]  # fmt: skip
    return []


def _args(cfg: BuildConfig) -> dict[str, Any]:
    """Settings recorded in meta.json; the output location and --overwrite are left out so two runs
    on the same input give byte-identical meta.json wherever they write."""
    unused = ("output_dir", "overwrite", "layout") + (() if cfg.layout == "consolidated" else ("shard_size",))
    args = {k: v for k, v in asdict(cfg).items() if k not in unused}
    return {**args, "split_ratios": list(cfg.split_ratios)}


def build_dataset(cfg: BuildConfig, created_by: str = "hand_vae.data.build") -> BuildSummary:
    """Run the whole pipeline and write ``cfg.output_dir`` in ``cfg.layout``; ``created_by`` (the script
    name) is recorded in meta.json. A non-empty ``skipped`` in the summary means some input was unusable.

    Raises:
        DatasetError: bad settings, no usable input, identical files, a skipped file under ``strict``,
            or an output dir that cannot be written (exists without ``overwrite``, ...).
    """
    _validate(cfg)
    if cfg.input_dir is None:
        logger.warning(
            "no --input_dir: writing the embedded SYNTHETIC two-hand dataset (seed %d, split by subject) "
            "to %s; it is for trying the tool and for tests, not captured data",
            cfg.seed,
            cfg.output_dir,
        )
        splits = synthetic.default_splits(cfg.seed)
        extra: dict[str, Any] = {"source": "synthetic", "sources": [], "skipped": [], "dropped": [],
                                 "ignored": [], "drops": asdict(DropCounts())}  # fmt: skip
        fps = splits["train"][0].fps
    else:
        logger.info("scanning %s", cfg.input_dir)
        splits, extra = _import_all(cfg)
        fps = cfg.target_fps or None
        if not any(splits.values()):
            raise DatasetError(
                f"no usable sequence under {cfg.input_dir}: {len(extra['skipped'])} files skipped, "
                f"{len(extra['dropped'])} dropped by cleaning (see the warnings above); nothing written"
            )
    extra["warnings"] = _size_warnings(splits)
    for line in extra["warnings"]:
        logger.warning("%s", line)
    extra = {"created_by": created_by, "fps": fps, **extra, "args": _args(cfg)}
    if cfg.layout == "consolidated":
        meta = layouts.write_consolidated(cfg.output_dir, splits, extra, cfg.shard_size, cfg.overwrite)
    else:
        meta = layouts.write_splits_dir(cfg.output_dir, splits, extra, cfg.overwrite)
    lists = (extra["skipped"], extra["dropped"], extra["ignored"])
    return BuildSummary(Path(cfg.output_dir), cfg.layout, cfg.input_dir is None, meta, *lists)
