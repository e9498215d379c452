"""Command-line front end shared by ``create_consolidated_npz.py`` and ``create_datamodule.py``.

One parser definition for both scripts; the flag
names and defaults are those of :class:`hand_vae.data.build.BuildConfig`.

Exit codes: 0 = written, nothing skipped; 1 = written, but some input files were skipped (listed in
the summary and in meta.json); 2 = error, nothing written (bad flags, no usable input, output dir
already holds data, ``--strict`` stopped at a bad file).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from dataclasses import fields

from hand_vae.data.build import BuildConfig, BuildError, BuildSummary, build_dataset, formats_line
from hand_vae.data.layouts import DatasetError
from hand_vae.data.sources import FORMATS
from hand_vae.data.splits import SCHEMES, SplitError

EXIT_OK, EXIT_SKIPPED, EXIT_ERROR = 0, 1, 2
_MAX_LISTED = 20

_DESCRIPTIONS = {
    "consolidated": (
        "Build a consolidated dataset dir (train_000.npz ..., uncompressed shards of hand_pose (N,90) float32 "
        "+ sequence_index (N,) int32, and meta.json) for --consolidated_dir. Without --input_dir it writes "
        "the embedded SYNTHETIC dataset; e.g. `python create_consolidated_npz.py --output_dir "
        "test_consolidated` makes the dir used by the README's quick test."
    ),
    "splits": (
        "Build a splits dataset dir (train/<sequence>.npz, val/..., test/..., each hand_pose (T,90) float32, "
        "and meta.json) for --splits_dir. Without --input_dir it writes the embedded SYNTHETIC dataset."
    ),
}
_EPILOG = (
    "Formats (auto-detected from the keys): AMASS SMPL+H *_poses.npz, AMASS SMPL-X *_stageii.npz, GRAB .npz "
    "(pickled: needs --trust_pickle), plain .npy/.npz arrays (N,90) or left_hand_pose + right_hand_pose (N,45). "
    "Files that cannot be used are skipped and listed; exit code 1 if any was skipped, 2 on error."
)


def build_parser(layout: str, prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of one of the two data scripts.

    Args:
        layout: ``"consolidated"`` (create_consolidated_npz.py) or ``"splits"`` (create_datamodule.py).
        prog: program name shown in ``--help``.
    """
    default_out = "consolidated" if layout == "consolidated" else "dataset_splits"
    D = {f.name: f.default for f in fields(BuildConfig)}  # the defaults live in BuildConfig only
    p = argparse.ArgumentParser(prog=prog, description=_DESCRIPTIONS[layout], epilog=_EPILOG)
    p.add_argument(
        "--input_dir", default=None, help="raw data root (scanned recursively); omit for synthetic data"
    )
    p.add_argument("--output_dir", default=default_out, help=f"dataset dir to write (default: {default_out})")
    p.add_argument(
        "--format",
        default=D["format"],
        choices=("auto", *FORMATS),
        help=f"input format (default: {D['format']})",
    )
    p.add_argument(
        "--trust_pickle",
        action="store_true",
        help="allow pickled files (GRAB); unpickling can run code, use only for files from a trusted source",
    )
    p.add_argument(
        "--target_fps",
        type=float,
        default=D["target_fps"],
        help="subsample faster clips to this rate; 0 = keep all",
    )
    p.add_argument(
        "--source_fps",
        type=float,
        default=D["source_fps"],
        help="frame rate of files that store none (default: no subsampling)",
    )
    p.add_argument(
        "--split_scheme", default=D["split_scheme"], choices=SCHEMES, help="how sequences are split"
    )
    p.add_argument(
        "--split_ratios",
        type=float,
        nargs=3,
        default=list(D["split_ratios"]),
        metavar=("TRAIN", "VAL", "TEST"),
    )
    p.add_argument("--seed", type=int, default=D["seed"], help="split seed (and synthetic-data seed)")
    if layout == "consolidated":
        p.add_argument("--shard_size", type=int, default=D["shard_size"], help="rows per shard file")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an output dir written earlier by these scripts"
    )
    p.add_argument("--strict", action="store_true", help="stop at the first file that cannot be used")
    p.add_argument("--verbose", action="store_true", help="debug logging (every dropped sequence)")
    return p


def format_summary(summary: BuildSummary) -> str:
    """Human-readable end-of-run summary (the only thing the CLI prints to stdout)."""
    meta = summary.meta
    origin = "the embedded SYNTHETIC dataset" if summary.synthetic else f"{len(meta['sources'])} files"
    lines = [f"Wrote {summary.layout} dataset {summary.output_dir}/ from {origin}:"]
    for split, c in meta["counts"].items():
        lines.append(f"  {split:5s}: {c['sequences']:6d} sequences {c['frames']:10d} frames")
    if meta.get("sources"):
        lines.append("  formats: " + formats_line(meta["sources"]))
    files = summary.files_written
    shown = files if len(files) <= 8 else files[:6] + [f"... ({len(files) - 7} more)", files[-1]]
    lines.append(f"  files: {', '.join(shown)}")
    d = meta["drops"]
    reasons = Counter(x["reason"] for x in summary.dropped)
    lines.append(
        f"  dropped sequences: {len(summary.dropped)} ({', '.join(f'{k} {v}' for k, v in sorted(reasons.items())) or '-'}); "
        f"non-finite frames {d['non_finite_frames']}, frames subsampled away {d['subsampled_frames']}"
    )
    if summary.ignored:
        lines.append(f"  ignored files: {len(summary.ignored)} (not .npz/.npy, hidden or shape-only)")
    if summary.skipped:
        lines.append(f"  SKIPPED {len(summary.skipped)} files (exit code {EXIT_SKIPPED}):")
        lines += [f"    {s['path']}: {s['reason']}" for s in summary.skipped[:_MAX_LISTED]]
        if len(summary.skipped) > _MAX_LISTED:
            lines.append(f"    ... {len(summary.skipped) - _MAX_LISTED} more in meta.json")
    return "\n".join(lines)


def run(layout: str, argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv``, build the dataset and print the summary.

    Returns:
        The exit code (see the module docstring).
    """
    args = build_parser(layout, prog).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s: %(message)s"
    )
    # Every flag is a BuildConfig field of the same name (the splits layout has no --shard_size).
    given = {f.name: getattr(args, f.name) for f in fields(BuildConfig) if hasattr(args, f.name)}
    cfg = BuildConfig(**{**given, "layout": layout, "split_ratios": tuple(args.split_ratios)})
    created_by = prog or (
        "create_consolidated_npz.py" if layout == "consolidated" else "create_datamodule.py"
    )
    try:
        summary = build_dataset(cfg, created_by=created_by)
    except (BuildError, DatasetError, SplitError) as err:
        sys.stderr.write(f"error: {err}\n")
        return EXIT_ERROR
    except OSError as err:  # e.g. permission denied / disk full on the output dir
        sys.stderr.write(f"error: {err.strerror or err} ({err.filename or cfg.output_dir})\n")
        return EXIT_ERROR
    print(format_summary(summary))  # noqa: T201 - the CLI's final summary
    return EXIT_SKIPPED if summary.skipped else EXIT_OK
