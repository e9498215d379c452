"""GPU training throughput, GPU-busy time, host copies per step and the CLI end to end, in one command.

    python bench/bench_gpu.py                 # 10M synthetic poses, CLI defaults, on the GPU (< 6 min on an H100)
    python bench/bench_gpu.py --smoke         # tiny sizes on the CPU (the test suite runs this)

1. Steps. For each model (standard, so3) and configuration (``32_true`` eager, ``32_true_graphs``
   = ``--cuda_graphs on``, ``bf16_mixed``) it builds the run as the CLI does
   (``hand_vae.training.build_run`` with the CLI defaults, data on the GPU, index batches, the
   whitening fitted from the datamodule) on
   ``--step_rows`` rows (default: just enough for the window at the largest batch size) and trains
   one epoch cut to ``--warmup + --steps + --profile_steps`` batches:
     * ``step_ms``: wall time per step over ``--steps`` steps after ``--warmup`` (CUDA synchronised
       at both ends only), and from it samples/s and the projection to 100 epochs of ``--rows``;
     * over the next ``--profile_steps`` steps, under ``torch.profiler``: ``gpu_busy_ms_per_step``
       (kernel, memcpy and memset time), ``h2d_copies_per_step`` (host-to-device memcpys),
       ``syncs_per_step`` (cudaStreamSynchronize / cudaDeviceSynchronize / cudaEventSynchronize /
       blocking cudaMemcpy calls) and ``launches_per_step`` (kernel and graph launches).
   The naive path (``TensorDataset`` + ``DataLoader(shuffle=True)``, standard fp32) is timed the same
   way over ``--naive_steps`` steps.
2. CLI end to end: a consolidated dir of ``--rows`` rows (80/10/10 %) is written, then
   ``train_hand_vae_lightning.py --consolidated_dir DIR --max_epochs --cli_epochs`` runs in a child
   process with the CLI defaults (validation, checkpoints, test and its plots), once per
   ``--cli_graphs`` value: start-up (launch to the first training batch), each epoch's time including
   validation, the whole wall time and the child's peak RSS against the data size; also the child's
   RSS before the data is read (after imports and, on a GPU, the CUDA context) and its peak above
   that baseline, as a ratio to the data size (the data lives on the GPU, so the host need not
   hold it all).
Lines ``gpu_...`` and ``cli_...`` are ``key = value`` for scripts; a section that fails prints
``FAILED`` and the command exits 1 after the others ran.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import pytorch_lightning as pl
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[1]

CONFIGS = {
    "32_true": ("32-true", "off"),
    "32_true_graphs": ("32-true", "on"),
    "bf16_mixed": ("bf16-mixed", "off"),
}
DEFAULT_BATCH = {"standard": 8192, "so3": 4096}  # the CLI's defaults
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")
LAUNCH_CALLS = ("cudaLaunchKernel", "cuLaunchKernel", "cudaGraphLaunch", "cudaLaunchKernelExC")


class StepWindow(pl.Callback):
    """Times steps [warmup, warmup + steps) and profiles the next ``profile`` steps."""

    def __init__(self, warmup: int, steps: int, profile: int) -> None:
        self.warmup, self.steps, self.profile = warmup, steps, profile
        self.seconds = float("nan")
        self.samples = 0
        self.prof = None
        self.profiled = None  # the finished profile
        self._t0 = 0.0

    def _sync(self, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self._sync(pl_module)
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.warmup <= batch_idx < self.warmup + self.steps:
            self.samples += batch.shape[0]
        if self.prof is not None and batch_idx == self.warmup + self.steps + self.profile - 1:
            self._stop_profile(pl_module)
        if batch_idx == self.warmup + self.steps - 1:
            self._sync(pl_module)
            self.seconds = time.perf_counter() - self._t0
            if self.profile:
                activities = [ProfilerActivity.CPU]
                if pl_module.device.type == "cuda":
                    activities.append(ProfilerActivity.CUDA)
                self.prof = profile(activities=activities)
                self.prof.__enter__()

    def _stop_profile(self, pl_module: pl.LightningModule) -> None:
        self._sync(pl_module)
        self.prof.__exit__(None, None, None)
        self.profiled, self.prof = self.prof, None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.prof is not None:
            self._stop_profile(pl_module)


def profile_counts(prof, steps: int) -> dict[str, float]:
    """Per-step GPU-busy ms, host-to-device copies, syncs and launches from a profiler's events."""
    busy_us, h2d, syncs, launches = 0.0, 0, 0, 0
    for e in prof.events():
        name = e.name
        if e.device_type == torch.autograd.DeviceType.CUDA:
            busy_us += e.time_range.elapsed_us()
            h2d += "HtoD" in name
        else:
            syncs += name.startswith(SYNC_CALLS) and not name.startswith("cudaMemcpyAsync")
            launches += name.startswith(LAUNCH_CALLS)
    n = max(steps, 1)
    return {"gpu_busy_ms_per_step": busy_us / 1e3 / n, "h2d_copies_per_step": h2d / n,
            "syncs_per_step": syncs / n, "launches_per_step": launches / n}  # fmt: skip


def cli_argv(
    model_type: str, precision: str, graphs: str, args: argparse.Namespace, workdir: str
) -> list[str]:
    return [
        "--model_type", model_type, "--batch_size", str(args.batch_size or DEFAULT_BATCH[model_type]),
        "--precision", precision,
        "--cuda_graphs", graphs, "--accelerator", args.accelerator, "--devices", "1",
        "--data_on_device", args.data_on_device, "--no_plots", "--limit_val_batches", "0", "--max_epochs", "1",
        "--experiment_name", f"{model_type}_{precision}_{graphs}",
        "--checkpoint_dir", f"{workdir}/ckpt", "--log_dir", f"{workdir}/logs",
    ]  # fmt: skip


def run_steps(argv: list[str], train: torch.Tensor, args: argparse.Namespace, naive: bool = False) -> dict:
    from bench_train import NaiveModule, bench_trainer, fit_like_cli, fit_whitening_like_cli, project_run

    steps = args.naive_steps if naive else args.steps
    profile = 0 if naive else args.profile_steps
    total = args.warmup + steps + profile
    kwargs, module, datamodule = project_run(
        argv + ["--limit_train_batches", str(total)], train, train[:4096]
    )
    window = StepWindow(args.warmup, steps, profile)
    trainer = bench_trainer(kwargs, window)
    if naive:
        from torch.utils.data import DataLoader, TensorDataset

        loader = DataLoader(TensorDataset(train), batch_size=datamodule.hparams.batch_size, shuffle=True,
                            pin_memory=torch.cuda.is_available())  # fmt: skip
        naive_module = NaiveModule(**dict(module.hparams))
        naive_module.mirror = datamodule.hparams.mirror_augment
        fit_whitening_like_cli(naive_module.model, train, train[:4096], naive_module.mirror)
        trainer.fit(naive_module, train_dataloaders=loader)
    else:
        fit_like_cli(trainer, module, datamodule)
    if window.seconds != window.seconds:  # NaN: the epoch ended before the timed steps did
        raise RuntimeError(
            f"the epoch had {trainer.num_training_batches} batches, fewer than the {total} of the window "
            "(--warmup + --steps + --profile_steps): raise --step_rows or shorten the window"
        )
    out = {"step_ms": 1e3 * window.seconds / steps, "samples_per_s": window.samples / window.seconds}
    if window.profiled is not None:
        out.update(profile_counts(window.profiled, profile))
    if not naive:
        out["cuda_graph_captured"] = bool(
            getattr(module, "_graph_step", None) and module._graph_step.captured
        )
    return out


def window_rows(args: argparse.Namespace) -> int:
    """Rows that give every timed configuration its whole window of batches (and the naive path its own)."""
    window = args.warmup + args.steps + args.profile_steps
    rows = [window * (args.batch_size or DEFAULT_BATCH[m]) for m in args.models]
    rows.append((args.warmup + args.naive_steps) * (args.batch_size or DEFAULT_BATCH["standard"]))
    return max(rows)


def section_steps(args: argparse.Namespace, workdir: str) -> None:
    from bench_train import synthetic_poses

    train = synthetic_poses(args.step_rows)  # per-step cost does not depend on the row count
    print(f"step timings on {args.step_rows:,} rows, projected to {args.rows:,}; accelerator {args.accelerator}, "
          f"data_on_device {args.data_on_device}", flush=True)  # fmt: skip
    for model_type in args.models:
        for config in args.configs:
            precision, graphs = CONFIGS[config]
            key = f"gpu_{model_type}_{config}"
            try:
                r = run_steps(cli_argv(model_type, precision, graphs, args, workdir), train, args)
            except Exception:  # noqa: BLE001 - report and go on to the next configuration
                print(f"{key}: FAILED\n{traceback.format_exc()}", flush=True)
                args.failed = True
                continue
            batches = -(-args.rows // (args.batch_size or DEFAULT_BATCH[model_type]))
            r["projected_100_epochs_min"] = 100 * batches * r["step_ms"] / 1e3 / 60
            for name, value in r.items():
                print(
                    f"{key}_{name} = {value:.3f}"
                    if isinstance(value, float)
                    else f"{key}_{name} = {int(value)}"
                )
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            sys.stdout.flush()
    try:
        argv = cli_argv("standard", "32-true", "off", args, workdir)
        r = run_steps(argv, train, args, naive=True)
        print(f"gpu_naive_standard_32_true_step_ms = {r['step_ms']:.3f}")
        print(f"gpu_naive_standard_32_true_samples_per_s = {r['samples_per_s']:.0f}", flush=True)
    except Exception:  # noqa: BLE001
        print(f"naive: FAILED\n{traceback.format_exc()}", flush=True)
        args.failed = True


# --------------------------------------------------------------------------- CLI end to end


def write_dataset(rows: int, out_dir: Path) -> int:
    """A consolidated dir of ``rows`` synthetic poses (80/10/10 %, 1M-row sequences); returns its bytes."""
    from bench_train import synthetic_poses

    from hand_vae.data.layouts import write_consolidated

    poses = synthetic_poses(rows).numpy()
    cuts = [0, int(0.8 * rows), int(0.9 * rows), rows]
    seqs = {}
    for split, lo, hi in zip(("train", "val", "test"), cuts[:-1], cuts[1:], strict=True):
        starts = range(lo, hi, 1_000_000)
        seqs[split] = [SimpleNamespace(name=f"{split}{i:03d}", poses=poses[s : min(s + 1_000_000, hi)], fps=30.0)
                       for i, s in enumerate(starts)]  # fmt: skip
    write_consolidated(out_dir, seqs, {})
    return rows * poses.shape[1] * 4


def rss_bytes(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from /proc/self/status; elsewhere the peak
    (``ru_maxrss``), which before the data is read is an upper bound of the baseline."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, kB on Linux


def cli_child(argv: list[str]) -> int:
    """Run the CLI with a timing callback; print one JSON line of timings, the RSS before the data is
    read and the peak RSS."""
    from bench_train import quiet_lightning
    from pytorch_lightning import Callback

    from hand_vae import training
    from hand_vae.cli.train import main as train_main

    quiet_lightning()
    marks: dict = {"epochs": []}

    class Timing(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            marks.setdefault("first_batch", time.time())

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            marks["t0"] = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:  # after this epoch's validation
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            marks["epochs"].append(time.perf_counter() - marks["t0"])

    build = training.build_run

    def build_with_timing(s):
        trainer, module, datamodule, checkpoint = build(s)
        trainer.callbacks.append(Timing())
        return trainer, module, datamodule, checkpoint

    training.build_run = build_with_timing  # run_training looks it up in hand_vae.training
    accelerator = argv[argv.index("--accelerator") + 1] if "--accelerator" in argv else "auto"
    if torch.cuda.is_available() and accelerator != "cpu":
        torch.zeros(1, device="cuda")  # the CUDA context's host memory belongs to the baseline, not the data
    marks["rss_before_data_bytes"] = rss_bytes("VmRSS")
    code = train_main(argv)
    marks["peak_rss_bytes"] = rss_bytes("VmHWM")
    print("CLI_TIMING " + json.dumps({k: v for k, v in marks.items() if k != "t0"}), flush=True)
    return code


def section_cli(args: argparse.Namespace, workdir: str) -> None:
    data_dir = Path(workdir) / "consolidated"
    t0 = time.perf_counter()
    nbytes = write_dataset(args.rows, data_dir)
    print(
        f"cli: wrote {args.rows:,} rows ({nbytes / 1e9:.2f} GB) in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    for graphs in args.cli_graphs:
        argv = ["--consolidated_dir", str(data_dir), "--max_epochs", str(args.cli_epochs), "--accelerator",
                args.accelerator, "--devices", "1", "--cuda_graphs", graphs, "--no_progress_bar",
                "--experiment_name", f"e2e_{graphs}", "--checkpoint_dir", f"{workdir}/ckpt",
                "--log_dir", f"{workdir}/logs"]  # fmt: skip
        cmd = [sys.executable, str(Path(__file__).resolve()), "--cli_child", "--", *argv]
        launched = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, check=False,
                              env=dict(os.environ, PYTHONWARNINGS="ignore"))  # fmt: skip
        wall = time.time() - launched
        line = next((x for x in proc.stdout.splitlines() if x.startswith("CLI_TIMING ")), None)
        key = f"cli_graphs_{graphs}"
        if proc.returncode != 0 or line is None:
            print(
                f"{key}: FAILED (exit {proc.returncode})\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}",
                flush=True,
            )
            args.failed = True
            continue
        m = json.loads(line[len("CLI_TIMING ") :])
        epochs = m["epochs"]
        print(f"{key}: epochs incl. validation " + ", ".join(f"{e:.2f}" for e in epochs) + " s")
        print(f"{key}_startup_s = {m['first_batch'] - launched:.2f}")
        print(f"{key}_epoch_with_validation_s = {min(epochs[1:] or epochs):.3f}")
        print(f"{key}_wall_s = {wall:.1f}")
        print(f"{key}_peak_rss_gb = {m['peak_rss_bytes'] / 1e9:.2f}")
        print(f"{key}_rss_over_data = {m['peak_rss_bytes'] / nbytes:.2f}")
        above = m["peak_rss_bytes"] - m["rss_before_data_bytes"]
        print(f"{key}_rss_before_data_gb = {m['rss_before_data_bytes'] / 1e9:.2f}")
        print(f"{key}_peak_rss_above_baseline_gb = {above / 1e9:.2f}")
        print(f"{key}_peak_rss_above_baseline_over_data = {above / nbytes:.2f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--cli_child":
        return cli_child(argv[2:] if argv[1:2] == ["--"] else argv[1:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, default=10_000_000, help="dataset size of the projection and the CLI run"
    )
    parser.add_argument(
        "--step_rows", type=int, default=None,
        help="rows in memory while timing steps; default: (--warmup + --steps + --profile_steps) batches "
        "of the largest batch size, so every window is filled",
    )  # fmt: skip
    parser.add_argument(
        "--batch_size", type=int, default=None, help="default: the CLI's (8192 standard, 4096 so3)"
    )
    parser.add_argument("--accelerator", default="gpu")
    parser.add_argument("--data_on_device", default="auto", choices=("auto", "always", "never"))
    parser.add_argument("--models", nargs="+", default=["standard", "so3"], choices=("standard", "so3"))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--warmup", type=int, default=30, help="untimed steps (graph capture happens here)")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per configuration")
    parser.add_argument("--profile_steps", type=int, default=20, help="profiled steps after the timed ones")
    parser.add_argument("--naive_steps", type=int, default=60, help="timed steps of the naive path")
    parser.add_argument("--cli_epochs", type=int, default=3)
    parser.add_argument("--cli_graphs", nargs="*", default=["off", "on"], choices=("auto", "off", "on"))
    parser.add_argument("--skip_steps", action="store_true", help="only the CLI end to end")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU for the test suite")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.step_rows, args.batch_size = 16_384, 16_384, 512
        args.warmup, args.steps, args.profile_steps, args.naive_steps = 2, 3, 2, 2
        args.accelerator, args.data_on_device, args.cli_epochs, args.cli_graphs = "cpu", "always", 1, ["auto"]
        torch.set_num_threads(1)
    needed = window_rows(args)
    if args.step_rows is None:
        args.step_rows = needed
    elif not args.skip_steps and args.step_rows < needed:
        parser.error(
            f"--step_rows {args.step_rows:,} gives fewer batches than the timing window; need >= {needed:,}"
        )
    args.failed = False
    from bench_train import matmul_gflops, quiet_lightning

    quiet_lightning()
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        print("no CUDA device: run with --smoke (or --accelerator cpu) on this machine")
        return 2
    if torch.cuda.is_available() and args.accelerator == "gpu":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 in the "32_true" rows
        print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
        peaks = {"fp32": matmul_gflops(8192, device="cuda"),
                 "bf16": matmul_gflops(8192, device="cuda", dtype=torch.bfloat16)}  # fmt: skip
        print(
            "matmul 8192^2 peak: " + ", ".join(f"{k} {v / 1e3:.1f} TFLOP/s" for k, v in peaks.items()),
            flush=True,
        )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        if not args.skip_steps:
            section_steps(args, workdir)
        print(f"steps section done at {time.perf_counter() - start:.0f} s", flush=True)
        try:
            section_cli(args, workdir)
        except Exception:  # noqa: BLE001
            print(f"cli: FAILED\n{traceback.format_exc()}", flush=True)
            args.failed = True
    print(f"bench_gpu_total_s = {time.perf_counter() - start:.1f}")
    return 1 if args.failed else 0


if __name__ == "__main__":
    sys.exit(main())
