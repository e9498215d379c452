"""``create_consolidated_npz.py`` and ``create_datamodule.py``: one parser whose flags are
:class:`hand_vae.settings.BuildConfig`'s fields, with its defaults. Exit codes: ``hand_vae.cli.common``
(1: some input files were skipped; 2: nothing written, one ``error: ...`` line on stderr).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections import Counter
from dataclasses import fields

from hand_vae.cli.common import EXIT_OK, EXIT_PARTIAL, EXIT_USER_ERROR, setup_logging
from hand_vae.errors import UserError
from hand_vae.settings import FORMATS, SCHEMES, BuildConfig

MAX_LISTED = 20
SCRIPTS = {"consolidated": "create_consolidated_npz.py", "splits": "create_datamodule.py"}
DEFAULT_OUT = {"consolidated": "consolidated", "splits": "dataset_splits"}
DESCRIPTIONS = {
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
EPILOG = (
    "Formats (auto-detected from the keys): AMASS SMPL+H *_poses.npz, AMASS SMPL-X *_stageii.npz, GRAB .npz "
    "(pickled: needs --trust_pickle), plain .npy/.npz arrays (N,90) or left_hand_pose + right_hand_pose (N,45). "
    "Files that cannot be used are skipped and listed; exit code 1 if any was skipped, 2 on error."
)


def build_parser(layout: str) -> argparse.ArgumentParser:
    """The parser of ``SCRIPTS[layout]``."""
    D = {f.name: f.default for f in fields(BuildConfig)}  # the defaults live in BuildConfig only
    p = argparse.ArgumentParser(prog=SCRIPTS[layout], description=DESCRIPTIONS[layout], epilog=EPILOG)
    add = p.add_argument
    out, fmt = DEFAULT_OUT[layout], D["format"]
    add("--input_dir", default=None, help="raw data root (scanned recursively); omit for synthetic data")
    add("--output_dir", default=out, help=f"dataset dir to write (default: {out})")
    add("--format", default=fmt, choices=("auto", *FORMATS), help=f"input format (default: {fmt})")
    add("--trust_pickle", action="store_true",
        help="allow pickled files (GRAB); unpickling can run code, use only for files from a trusted source")  # fmt: skip
    add("--target_fps", type=float, default=D["target_fps"],
        help="subsample faster clips to this rate; 0 = keep all")  # fmt: skip
    add("--source_fps", type=float, default=D["source_fps"],
        help="frame rate of files that store none (default: no subsampling)")  # fmt: skip
    add("--split_scheme", default=D["split_scheme"], choices=SCHEMES, help="how sequences are split")
    add("--split_ratios", type=float, nargs=3, default=list(D["split_ratios"]),
        metavar=("TRAIN", "VAL", "TEST"))  # fmt: skip
    add("--seed", type=int, default=D["seed"], help="split seed (and synthetic-data seed)")
    if layout == "consolidated":
        add("--shard_size", type=int, default=D["shard_size"], help="rows per shard file")
    add("--overwrite", action="store_true", help="replace an output dir written earlier by these scripts")
    add("--strict", action="store_true", help="stop at the first file that cannot be used")
    add("--verbose", action="store_true", help="debug logging (every dropped sequence)")
    return p


def format_summary(summary) -> str:
    """Human-readable end-of-run summary (the only thing the command prints to stdout)."""
    from hand_vae.data.build import formats_line  # loaded by the build already; not before parsing

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
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(Counter(x["reason"] for x in summary.dropped).items()))
    lines.append(f"  dropped sequences: {len(summary.dropped)} ({reasons or '-'}); non-finite frames "
                 f"{d['non_finite_frames']}, frames subsampled away {d['subsampled_frames']}")  # fmt: skip
    if summary.ignored:
        lines.append(f"  ignored files: {len(summary.ignored)} (not .npz/.npy, hidden or shape-only)")
    if summary.skipped:
        lines.append(f"  SKIPPED {len(summary.skipped)} files (exit code {EXIT_PARTIAL}):")
        lines += [f"    {s['path']}: {s['reason']}" for s in summary.skipped[:MAX_LISTED]]
        if len(summary.skipped) > MAX_LISTED:
            lines.append(f"    ... {len(summary.skipped) - MAX_LISTED} more in meta.json")
    return "\n".join(lines)


def run(layout: str, argv: list[str] | None = None) -> int:
    """Parse ``argv``, build the dataset in ``layout`` and print the summary; returns the exit code."""
    args = build_parser(layout).parse_args(argv)
    setup_logging(args.verbose)
    # Every flag is a BuildConfig field of the same name (the splits layout has no --shard_size).
    given = {f.name: getattr(args, f.name) for f in fields(BuildConfig) if hasattr(args, f.name)}
    cfg = BuildConfig(**{**given, "layout": layout, "split_ratios": tuple(args.split_ratios)})
    from hand_vae.data.build import build_dataset  # after parsing: --help answers before torch loads

    try:
        summary = build_dataset(cfg, created_by=SCRIPTS[layout])
    except UserError as err:
        sys.stderr.write(f"error: {err}\n")
        return EXIT_USER_ERROR
    except OSError as err:  # e.g. permission denied / disk full on the output dir
        sys.stderr.write(f"error: {err.strerror or err} ({err.filename or cfg.output_dir})\n")
        return EXIT_USER_ERROR
    print(format_summary(summary))  # noqa: T201 - the command's final summary
    return EXIT_PARTIAL if summary.skipped else EXIT_OK


consolidated_main = functools.partial(run, "consolidated")  # create_consolidated_npz.py
splits_main = functools.partial(run, "splits")  # create_datamodule.py
