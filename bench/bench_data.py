"""Data pipeline benchmark: build throughput of both scripts and load time of both layouts.

    python bench/bench_data.py            # 1,000 AMASS SMPL+H files x 1,000 frames @ 120 fps, 1e7-row load
    python bench/bench_data.py --smoke    # tiny sizes, a few seconds (used by the test suite)

Everything is written under a temporary dir (``--workdir`` to choose where), deleted at the end
unless ``--keep``. Load times are measured with the files in the OS page cache (just written), i.e.
the steady state of repeated training runs, not a cold disk. The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import create_consolidated_npz  # noqa: E402
import create_datamodule  # noqa: E402
from hand_vae.data.layouts import load_dataset_dir, write_consolidated  # noqa: E402
from hand_vae.data.synthetic import PoseSequence  # noqa: E402

SUBSETS = ("CMU", "BMLmovi", "KIT", "HumanEva", "SSM_synced", "MPI_HDM05", "Eyes_Japan", "ACCAD")


def make_raw_tree(root: Path, files: int, frames: int, fps: float, seed: int = 0) -> int:
    """AMASS SMPL+H-style ``*_poses.npz`` files (float64, as AMASS ships them); returns total frames."""
    rng = np.random.default_rng(seed)
    for i in range(files):
        poses = np.zeros((frames, 156))
        poses[:, 66:] = np.cumsum(rng.normal(0.0, 0.01, size=(frames, 90)), axis=0)  # moving hands
        path = root / SUBSETS[i % len(SUBSETS)] / f"s{i // 50:02d}" / f"clip{i:05d}_poses.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, poses=poses, mocap_framerate=np.array(fps), trans=np.zeros((frames, 3)),
                 betas=np.zeros(16), gender=np.array("male"))  # fmt: skip
    return files * frames


def timed(fn, *args, **kwargs) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def bench_big_load(work: Path, rows: int, seq_len: int = 1000) -> dict[str, float]:
    """Write a ``rows``-row consolidated set (train only) and time ``load_dataset_dir`` on it."""
    block = np.random.default_rng(1).normal(0.0, 0.5, size=(min(rows, 100_000), 90)).astype(np.float32)
    big = np.tile(block, (-(-rows // len(block)), 1))[:rows]  # (rows, 90)
    seqs = [
        PoseSequence(f"seq{k:07d}", "", big[s : s + seq_len], 30.0)
        for k, s in enumerate(range(0, rows, seq_len))
    ]
    _, t_write = timed(write_consolidated, work / "big", {"train": seqs}, {"bench": True})
    del big, seqs
    gc.collect()
    loaded, t_load = timed(load_dataset_dir, work / "big")
    if loaded["train"][0].shape != (rows, 90):
        raise RuntimeError("big set loaded with the wrong shape")
    del loaded
    gc.collect()
    shard = work / "big" / "train_000.npz"
    _, t_np = timed(lambda: np.load(shard)["hand_pose"])
    shard_rows = min(rows, 1_000_000)
    return {
        "rows": rows,
        "write_s": t_write,
        "load_s": t_load,
        "np_load_one_shard_s": t_np,
        "shard_rows": shard_rows,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--fps", type=float, default=120.0)
    p.add_argument(
        "--big_rows", type=int, default=10_000_000, help="rows of the large consolidated load test"
    )
    p.add_argument("--workdir", default=None, help="where to write (default: a fresh temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    args = p.parse_args(argv)
    if args.smoke:
        args.files, args.frames, args.big_rows = 16, 200, 50_000
    logging.basicConfig(level=logging.WARNING)
    tmp = tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench_data_")
    work = Path(tmp.name)
    results: dict[str, object] = {"files": args.files, "frames_per_file": args.frames, "fps": args.fps}
    try:
        frames, t_gen = timed(make_raw_tree, work / "raw", args.files, args.frames, args.fps)
        print(
            f"raw tree: {args.files} files x {args.frames} frames @ {args.fps:g} fps written in {t_gen:.1f} s"
        )
        for name, script, out in (
            ("create_consolidated_npz", create_consolidated_npz, "consolidated"),
            ("create_datamodule", create_datamodule, "dataset_splits"),
        ):
            argv_s = ["--input_dir", str(work / "raw"), "--output_dir", str(work / out)]
            with contextlib.redirect_stdout(io.StringIO()):  # the scripts' own summaries
                rc, t = timed(script.main, argv_s)
            if rc != 0:
                raise RuntimeError(f"{name} exited with {rc}")
            loaded, t_load = timed(load_dataset_dir, work / out)
            rows = sum(len(v[0]) for v in loaded.values())
            results[name] = {"build_s": t, "files_per_s": args.files / t, "frames_per_s": frames / t,
                             "load_s": t_load, "rows": rows}  # fmt: skip
            print(f"{name}: {args.files / t:8.1f} files/s  {frames / t:12,.0f} raw frames/s  ({t:.2f} s)")
            print(f"  load_dataset_dir({out}): {rows:,} rows in {t_load * 1e3:.1f} ms")
        big = bench_big_load(work, args.big_rows)
        results["big"] = big
        print(
            f"load_dataset_dir of a {big['rows']:,}-row consolidated set: {big['load_s']:.2f} s "
            f"(goal <= 2 s; write took {big['write_s']:.1f} s); np.load of one {big['shard_rows']:,}-row "
            f"shard for reference: {big['np_load_one_shard_s']:.2f} s"
        )
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            tmp.cleanup()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
