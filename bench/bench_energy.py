"""Energy scoring throughput : poses/s at batch 65,536 for both models, as % of peak.

    python bench/bench_energy.py            # batch 65,536, 2 threads, median of 5 timed calls per model
    python bench/bench_energy.py --smoke    # tiny sizes (used by the test suite)

``model.energy(x)`` in eval mode under ``torch.inference_mode``, the way a fitting loop or a
hypothesis ranker scores poses. Its matmul FLOPs (encoder + decoder at z = mu) are counted by
``FlopCounterMode``; the peak is a 4096² fp32 matmul timed in between, so both see the same load.
The last lines are ``energy_<model>_poses_per_s = N`` and ``energy_<model>_percent_of_matmul_peak = XX``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import forward_flops_per_sample, matmul_gflops, model_layout, synthetic_poses  # noqa: E402

from hand_vae.models import build_model  # noqa: E402

MODEL_TYPES = ("standard", "so3")


def time_energy(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Seconds for one ``model.energy(x)``."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        model.energy(x)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch_size", type=int, default=65_536)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per model, interleaved")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes for the test suite")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch_size, args.repeats, args.threads = 1024, 2, 1
    torch.set_num_threads(args.threads)
    x = synthetic_poses(args.batch_size)
    models, inputs, flops = {}, {}, {}
    for t in MODEL_TYPES:
        models[t] = build_model(t).eval()
        inputs[t] = model_layout(x, t)
        flops[t] = forward_flops_per_sample(models[t], inputs[t][:1024], energy=True)
        time_energy(models[t], inputs[t])  # warm-up
    seconds: dict[str, list[float]] = {t: [] for t in MODEL_TYPES}
    peaks = []
    for _ in range(args.repeats):
        for t in MODEL_TYPES:
            seconds[t].append(time_energy(models[t], inputs[t]))
        peaks.append(matmul_gflops(1024 if args.smoke else 4096, repeats=2))
    peak = statistics.median(peaks)
    print(
        f"batch {args.batch_size:,}, fp32, {args.threads} threads, median of {args.repeats}; matmul peak {peak:.1f} GFLOP/s"
    )
    lines = []
    for t in MODEL_TYPES:
        rate = args.batch_size / statistics.median(seconds[t])
        gflops = rate * flops[t] / 1e9
        print(f"{t:>8}: {rate:>12,.0f} poses/s  {flops[t] / 1e6:.3f} MFLOP/pose  {gflops:6.1f} GFLOP/s")
        lines += [
            f"energy_{t}_poses_per_s = {rate:.0f}",
            f"energy_{t}_percent_of_matmul_peak = {100 * gflops / peak:.0f}",
        ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
