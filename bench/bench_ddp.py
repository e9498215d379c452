"""DDP scaling of the project's training path.

    python bench/bench_ddp.py                 # 1 GPU, then all visible GPUs (skips with < 2 GPUs)
    python bench/bench_ddp.py --devices 4     # 1 GPU, then 4
    python bench/bench_ddp.py --cpu --smoke   # 1 process, then 2 gloo processes on the CPU (test suite)

Each configuration runs in its own subprocess (``--worker``), which builds and fits the run as the CLI
does (``hand_vae.training.build_run``, the whitening fitted from the datamodule before ``fit``) with
``--strategy ddp --devices N``; Lightning launches the other ranks by re-running this script, so
every rank builds the same seeded synthetic data. ``--batch_size`` is per process, as on the CLI;
each rank trains on its own 1/N of every epoch. Two epochs, the second timed on rank zero; all
ranks step in lockstep (the gradient all-reduce), so rank zero's time is the run's. Validation,
logging, checkpoints and plots are off. The last line is ``ddp_scaling_efficiency = X.XX``
(samples/s on N devices ÷ (N × samples/s on 1)).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULT = re.compile(r"^RESULT devices=(\d+) seconds=([\d.e+-]+) samples_per_s=([\d.e+-]+)$", re.M)


def worker(args: argparse.Namespace) -> int:
    """One training run on ``args.devices`` devices; rank zero prints a RESULT line."""
    # Imported here so that the driver (and its SKIP path) does not pay for Lightning's import.
    from bench_train import (
        EpochTimer,
        bench_trainer,
        fit_like_cli,
        project_run,
        quiet_lightning,
        synthetic_poses,
    )

    quiet_lightning()
    if args.cpu:
        torch.set_num_threads(max(1, args.threads // args.devices))
    train = synthetic_poses(args.rows)
    with tempfile.TemporaryDirectory() as workdir:
        argv = [
            "--model_type", args.model_type, "--batch_size", str(args.batch_size), "--precision", args.precision,
            "--accelerator", "cpu" if args.cpu else "gpu", "--devices", str(args.devices),
            "--strategy", "ddp" if args.devices > 1 else "auto",
            "--no_plots", "--limit_val_batches", "0",
            "--checkpoint_dir", f"{workdir}/ckpt", "--log_dir", f"{workdir}/logs",
        ]  # fmt: skip
        kwargs, module, datamodule = project_run(argv, train, train[:1024])
        timer = EpochTimer()
        trainer = bench_trainer(kwargs, timer, epochs=2)
        fit_like_cli(trainer, module, datamodule)
        if trainer.is_global_zero:
            seconds, samples = timer.epochs[-1]
            rate = samples * trainer.world_size / seconds
            print(
                f"RESULT devices={trainer.world_size} seconds={seconds:.4f} samples_per_s={rate:.1f}",
                flush=True,
            )
    return 0


def run_worker(args: argparse.Namespace, devices: int) -> tuple[float, float]:
    """Run one configuration in a fresh process; returns (epoch seconds, samples/s)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--devices", str(devices)]
    cmd += ["--rows", str(args.rows), "--batch_size", str(args.batch_size), "--model_type", args.model_type]
    cmd += ["--precision", args.precision, "--threads", str(args.threads)] + (["--cpu"] if args.cpu else [])
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    match = RESULT.search(proc.stdout)
    if proc.returncode != 0 or match is None:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise RuntimeError(f"worker on {devices} device(s) failed with exit code {proc.returncode}")
    return float(match.group(2)), float(match.group(3))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=0, help="DDP size (default: every visible GPU)")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--batch_size", type=int, default=8192, help="per process, as on the CLI")
    parser.add_argument("--model_type", choices=("standard", "so3"), default="standard")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--cpu", action="store_true", help="gloo processes on the CPU instead of GPUs")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads shared by the --cpu processes")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (use with --cpu in the test suite)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.batch_size = 4096, 256
    if args.worker:
        return worker(args)
    if args.cpu:
        n = args.devices or 2
    else:
        gpus = torch.cuda.device_count()
        n = args.devices or gpus
        if gpus < 2 or n < 2:
            print(f"SKIP: DDP scaling needs at least 2 GPUs (found {gpus}); `--cpu` runs 2 gloo processes")
            return 0
        n = min(n, gpus)
    where = "CPU (gloo)" if args.cpu else torch.cuda.get_device_name(0)
    print(
        f"{args.model_type}, rows {args.rows:,}, batch {args.batch_size}/process, {args.precision}, {where}"
    )
    one_s, one_rate = run_worker(args, 1)
    n_s, n_rate = run_worker(args, n)
    print(f"1 device : epoch {one_s:8.3f} s  {one_rate:>12,.0f} samples/s")
    print(f"{n} devices: epoch {n_s:8.3f} s  {n_rate:>12,.0f} samples/s")
    print(f"ddp_speedup = {n_rate / one_rate:.2f}")
    print(f"ddp_scaling_efficiency = {n_rate / (n * one_rate):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
