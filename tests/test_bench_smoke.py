"""The benchmarks run end to end in smoke mode, so they cannot rot (their real numbers go in notes)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NUMBER = r"-?[\d.]+"

CASES = {
    "bench_train.py": ["--smoke"],
    "bench_energy.py": ["--smoke"],
    "bench_gpu.py": ["--smoke"],
    "bench_ddp.py": ["--cpu", "--smoke"],
}
KEY_LINES = {
    "bench_train.py": [r"project/bare", r"project/naive", r"percent_of_matmul_peak"],
    "bench_energy.py": [
        r"energy_standard_poses_per_s",
        r"energy_standard_percent_of_matmul_peak",
        r"energy_so3_poses_per_s",
        r"energy_so3_percent_of_matmul_peak",
    ],
    "bench_gpu.py": [
        *(
            rf"gpu_{m}_{c}_{k}"
            for m in ("standard", "so3")
            for c in ("32_true", "32_true_graphs", "bf16_mixed")
            for k in (
                "step_ms",
                "samples_per_s",
                "projected_100_epochs_min",
                "gpu_busy_ms_per_step",
                "h2d_copies_per_step",
                "syncs_per_step",
                "launches_per_step",
            )
        ),
        r"gpu_naive_standard_32_true_samples_per_s",
        *(rf"cli_graphs_auto_{k}" for k in ("startup_s", "epoch_with_validation_s", "wall_s", "peak_rss_gb")),
    ],
    "bench_ddp.py": [r"ddp_speedup", r"ddp_scaling_efficiency"],
}


def run_bench(script: str, args: list[str]) -> str:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("script", list(CASES))
def test_bench_smoke_prints_key_lines(script):
    out = run_bench(script, CASES[script])
    for key in KEY_LINES[script]:
        assert re.search(rf"^{key} = {NUMBER}$", out, re.M), f"{script}: no '{key} = N' line in:\n{out}"
    if script == "bench_train.py":  # scripts read these three lines, in this order, at the very end
        last = [line.split(" = ")[0] for line in out.strip().splitlines()[-3:]]
        assert last == KEY_LINES[script]


def test_bench_ddp_skips_cleanly_without_gpus():
    import torch

    if torch.cuda.device_count() >= 2:
        pytest.skip("several GPUs: the skip path does not apply")
    out = run_bench("bench_ddp.py", [])
    assert out.startswith("SKIP:")


@pytest.mark.slow
def test_prior_quality_smoke_trains_through_the_cli_and_reports_the_latent(tmp_path):
    out = run_bench("prior_quality.py", ["--smoke", "--proxy", "small", "--out", str(tmp_path / "pq.jsonl")])
    row = re.search(
        r"^\| vae:defaults \| (\S+) \|.*\| (\S+) \| (\S+) \| (\d+) \| CLI defaults \|$", out, re.M
    )
    assert row, out
    nll, kl, nll_z0 = (float(v) for v in row.groups()[:3])
    assert kl >= 0.0 and nll < 0.0 and nll_z0 < 0.0  # nats per pose of a density fitted to radians
    assert (tmp_path / "pq.jsonl").read_text().count('"proxy": "small"') == 1
