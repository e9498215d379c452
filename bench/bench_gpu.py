"""GPU training throughput (issue 9, item 3): epoch time, samples/s and 100-epoch projection.

    python bench/bench_gpu.py                 # 10M synthetic poses, batch 8192, accelerator gpu
    python bench/bench_gpu.py --smoke         # tiny sizes on the CPU with --data_on_device always

For each model (standard, so3) and precision (32-true, bf16-mixed) it runs, in one process:
  * project: ``hand_vae.train.build_run`` as the CLI builds it (GPU-resident split with
    ``--data_on_device auto``, index batches, fused/foreach AdamW), 2 epochs, the second timed;
  * naive: the same LightningModule and Trainer fed by ``TensorDataset`` + ``DataLoader(shuffle=True)``
    from host memory, ``--naive_batches`` batches of a second epoch timed (a full naive epoch over
    10M rows would take minutes); its rate gives its projected epoch time.
Validation, logging, checkpoints and plots are off: this is training throughput. The projection is
100 × the timed epoch. Lines ``gpu_<model>_<precision>_...`` are meant for scripts.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import matmul_gflops, quiet_lightning, run_naive, run_project, synthetic_poses  # noqa: E402

MODEL_TYPES = ("standard", "so3")
PRECISIONS = ("32-true", "bf16-mixed")


def cli_argv(model_type: str, precision: str, args: argparse.Namespace, workdir: str) -> list[str]:
    return [
        "--model_type", model_type, "--batch_size", str(args.batch_size), "--precision", precision,
        "--accelerator", args.accelerator, "--devices", "1", "--data_on_device", args.data_on_device,
        "--no_plots", "--limit_val_batches", "0",
        "--checkpoint_dir", f"{workdir}/ckpt", "--log_dir", f"{workdir}/logs",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--batch_size", type=int, default=8192)
    parser.add_argument("--accelerator", default="gpu")
    parser.add_argument("--data_on_device", default="auto", choices=("auto", "always", "never"))
    parser.add_argument("--naive_batches", type=int, default=200, help="timed batches of the naive path")
    parser.add_argument("--models", nargs="+", default=list(MODEL_TYPES), choices=MODEL_TYPES)
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU for the test suite")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.batch_size, args.naive_batches = 4096, 512, 4
        args.accelerator, args.data_on_device = "cpu", "always"
        torch.set_num_threads(1)
    quiet_lightning()
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        print("no CUDA device: run with --smoke (or --accelerator cpu) on this machine")
        return 2
    cuda = args.accelerator == "gpu"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 in the "32-true" rows
        print(f"device: {torch.cuda.get_device_name(0)}")
        peaks = {"32-true": matmul_gflops(8192, device="cuda"),
                 "bf16-mixed": matmul_gflops(8192, device="cuda", dtype=torch.bfloat16)}  # fmt: skip
        print("matmul 8192^2 peak: " + ", ".join(f"{k} {v / 1e3:.1f} TFLOP/s" for k, v in peaks.items()))
    train = synthetic_poses(args.rows)
    val = train[:1024]
    print(
        f"rows {args.rows:,}, batch {args.batch_size}, accelerator {args.accelerator}, data_on_device {args.data_on_device}"
    )
    with tempfile.TemporaryDirectory() as workdir:
        for model_type in args.models:
            for precision in args.precisions:
                argv_cli = cli_argv(model_type, precision, args, workdir)
                seconds, samples = run_project(argv_cli, train, val, epochs=2).epochs[-1]
                rate = samples / seconds
                naive_argv = argv_cli + ["--limit_train_batches", str(args.naive_batches)]
                n_seconds, n_samples = run_naive(naive_argv, train, epochs=2, pin_memory=cuda).epochs[-1]
                naive_rate = n_samples / n_seconds
                key = f"gpu_{model_type}_{precision.replace('-', '_')}"
                print(f"{model_type:>8} {precision:>10}: epoch {seconds:7.2f} s  {rate:>12,.0f} samples/s  "
                      f"naive {naive_rate:>10,.0f} samples/s (epoch {args.rows / naive_rate:8.1f} s)")  # fmt: skip
                print(f"{key}_epoch_s = {seconds:.3f}")
                print(f"{key}_samples_per_s = {rate:.0f}")
                print(f"{key}_project/naive = {rate / naive_rate:.2f}")
                print(f"{key}_projected_100_epochs_min = {100 * seconds / 60:.2f}")
                if cuda:
                    torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
