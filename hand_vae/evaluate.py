"""``python -m hand_vae.evaluate``: score a trained hand VAE, and classic priors, on held-out poses.

    python -m hand_vae.evaluate --checkpoint checkpoints/NAME/best_model.ckpt --baselines
    python -m hand_vae.evaluate --checkpoint CKPT --consolidated_dir D --split test --output_dir eval
    python -m hand_vae.evaluate --checkpoint CKPT --poses held_out.npy --max_poses 2000

Data: ``--consolidated_dir`` / ``--splits_dir`` give the ``--split`` to score and the
training split the baselines are fitted on; ``--poses`` scores an (N, 90) ``.npy`` file. With none
of them, the checkpoint's own training source is used: its dataset directory, or the embedded
synthetic set with the run's seed, the same split the model was trained on. Metrics are defined in
``hand_vae.eval_metrics``. Output: ``{output_dir}/evaluation.json``; per corruption kind a figure of
the VAE's energies beside every method's ROC curve (``energy_histogram_{noise,backbend,swap}.png``)
and ``summary.png`` (``hand_vae.viz.eval_figures``); on stdout a markdown table, a one-line verdict
per metric (the VAE against the best baseline) and every file written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hand_vae.checkpoint import CheckpointError, load_checkpoint, run_settings
from hand_vae.eval_metrics import evaluate, markdown_table
from hand_vae.rotations import POSE_DIM
from hand_vae.viz.report import subsample

log = logging.getLogger("hand_vae.evaluate")


class EvalError(Exception):
    """A user mistake (missing file, bad shape, ...); reported as one line, exit code 2."""


def add_dataset_source(p: argparse.ArgumentParser) -> argparse._MutuallyExclusiveGroup:
    """``--consolidated_dir`` / ``--splits_dir`` (one of them; neither = the checkpoint's own data)."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--consolidated_dir", help="directory written by create_consolidated_npz.py")
    src.add_argument("--splits_dir", help="directory written by create_datamodule.py")
    return src


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hand_vae.evaluate",
        description="Evaluate a hand VAE prior on held-out poses, optionally against classic priors.",
    )
    p.add_argument("--checkpoint", required=True, help="Lightning checkpoint (e.g. best_model.ckpt)")
    src = add_dataset_source(p)
    src.add_argument("--poses", help="(N, 90) float .npy file of axis-angle poses, radians")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split to score")
    p.add_argument("--baselines", action="store_true", help="also fit and score Gaussian, GMM4/8, NN")
    p.add_argument("--output_dir", default="evaluation", help="where the JSON and figures go")
    p.add_argument("--num_samples", type=int, default=1000, help="importance samples K of the IWAE NLL")
    p.add_argument("--seed", type=int, default=0, help="seed of corruptions, sampling and subsets")
    p.add_argument("--max_poses", type=int, default=None, help="score a seeded subset of N poses")
    p.add_argument("--energy", default="elbo", choices=("elbo", "iwae"), help="VAE energy for AUC/top-1")
    p.add_argument("--energy_samples", type=int, default=100, help="K of --energy iwae")
    p.add_argument("--hypothesis_noise", type=float, default=0.02, help="σ (rad) of noise decoys")
    p.add_argument("--no_figures", action="store_true", help="skip the energy histograms")
    p.add_argument("--task", default="score", choices=("score", "fit"), help="fit: the fitting benchmark")
    return p


# Metrics the VAE and the baselines share, and which direction is better.
LOWER_IS_BETTER = ("nll",)


def load_model(path: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The plain VAE of a training checkpoint (CPU, eval mode) and the run's settings."""
    from hand_vae.prior import prior_from_checkpoint

    try:
        ckpt = load_checkpoint(path)  # read once: the model and the run's settings
    except CheckpointError as err:
        raise EvalError(f"--checkpoint: {err}") from err
    return prior_from_checkpoint(ckpt, path), run_settings(ckpt)


def verdicts(results: dict[str, dict[str, float | None]]) -> list[str]:
    """One line per metric that the VAE and at least one baseline both have: better or worse, by how much.

    Args:
        results: method -> {metric: value or None}; "vae" plus the baselines.

    Returns:
        Lines such as ``"auc_swap       VAE 0.981 vs gmm8 0.954: VAE better by 0.027"``.
    """
    lines = []
    for metric, value in results.get("vae", {}).items():
        others = {m: r[metric] for m, r in results.items() if m != "vae" and r.get(metric) is not None}
        if value is None or not others:
            continue
        lower = metric in LOWER_IS_BETTER
        best = min(others, key=others.get) if lower else max(others, key=others.get)
        gap = (others[best] - value) if lower else (value - others[best])  # > 0: the VAE is better
        unit = " nats/pose" if metric == "nll" else ""
        tol = 0.05 if metric == "nll" else 0.0005
        word = "level with" if abs(gap) < tol else ("better" if gap > 0 else "WORSE")
        tail = "" if word == "level with" else f" by {abs(gap):.3f}{unit}"
        lines.append(f"{metric:<16} VAE {value:.3f} vs {best} {others[best]:.3f}: VAE {word}{tail}")
    return lines


def load_splits(args: argparse.Namespace, run: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """{split: (N, 90) float32} of the chosen source, and a description of it."""
    from hand_vae.data.layouts import DatasetError, load_dataset_dir
    from hand_vae.data.synthetic import default_splits, pose_tensors

    directory = args.consolidated_dir or args.splits_dir
    if directory is None and not args.poses:
        directory = run.get("consolidated_dir") or run.get("splits_dir")
    if directory:
        try:
            arrays = load_dataset_dir(Path(directory))
        except (DatasetError, OSError, ValueError) as err:
            raise EvalError(f"cannot read dataset {directory}: {err}") from err
        return {k: torch.from_numpy(v[0]) for k, v in arrays.items()}, f"dataset {directory}"
    seed = int(run.get("seed", 0))
    splits = pose_tensors(default_splits(seed=seed))
    return splits, f"embedded synthetic dataset (seed {seed})"


def load_poses_file(path: str) -> torch.Tensor:
    """(N, 90) float32 from a .npy file, or a clear error."""
    if not Path(path).is_file():
        raise EvalError(f"--poses: no such file: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise EvalError(f"--poses: {path} is not a readable .npy array ({err})") from err
    if arr.ndim == 3 and arr.shape[1:] == (POSE_DIM // 3, 3):
        arr = arr.reshape(arr.shape[0], POSE_DIM)
    if arr.ndim != 2 or arr.shape[1] != POSE_DIM or not np.issubdtype(arr.dtype, np.number):
        raise EvalError(f"--poses: expected an (N, {POSE_DIM}) numeric array, got {arr.shape} {arr.dtype}")
    return torch.from_numpy(arr.astype(np.float32))


def _validate(args: argparse.Namespace) -> None:
    for name in ("num_samples", "energy_samples"):
        if getattr(args, name) < 1:
            raise EvalError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.max_poses is not None and args.max_poses < 2:
        raise EvalError(f"--max_poses must be >= 2, got {args.max_poses}")
    if args.hypothesis_noise <= 0:
        raise EvalError(f"--hypothesis_noise must be > 0 rad, got {args.hypothesis_noise}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load, score, write the JSON and figures; returns the report dict."""
    _validate(args)
    model, run_settings = load_model(args.checkpoint)
    need_splits = args.baselines or not args.poses
    splits, source = load_splits(args, run_settings) if need_splits else ({}, "")
    if args.poses:
        poses, what = load_poses_file(args.poses), f"file {args.poses}"
    else:
        poses, what = splits[args.split], f"{args.split} split of the {source}"
    if not torch.isfinite(poses).all():
        raise EvalError(f"the poses to score ({what}) contain NaN or inf")
    poses = subsample(poses, args.max_poses, args.seed)
    if poses.shape[0] < 2:
        raise EvalError(f"need at least 2 poses to score, the {what} has {poses.shape[0]}")
    baselines = None
    if args.baselines:
        from hand_vae.baselines import fit_baselines

        t0 = time.perf_counter()
        # Each density's floor and scale are chosen on the validation split, as the VAE's settings are.
        baselines = fit_baselines(splits["train"], seed=args.seed, val=splits.get("val"))
        log.info(
            "Fitted baselines on %d training poses in %.1f s", len(splits["train"]), time.perf_counter() - t0
        )
    log.info("Scoring %d poses (%s)", poses.shape[0], what)
    results, energies = evaluate(
        model,
        poses,
        baselines,
        num_samples=args.num_samples,
        seed=args.seed,
        energy=args.energy,
        energy_samples=args.energy_samples,
        hypothesis_noise=args.hypothesis_noise,
    )
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    if not args.no_figures:
        from hand_vae.viz.eval_figures import save_evaluation_figures

        figures = [str(p) for p in save_evaluation_figures(energies, results, out_dir)]
    report = {
        "checkpoint": str(args.checkpoint),
        "model_type": getattr(model, "model_type", None),
        "data": what,
        "num_poses": int(poses.shape[0]),
        "baselines_fitted_on": f"train split of the {source} ({len(splits['train'])} poses)"
        if args.baselines
        else None,
        "settings": {
            k: getattr(args, k)
            for k in ("num_samples", "seed", "energy", "energy_samples", "hypothesis_noise", "max_poses")
        },
        "units": {"neg_elbo": "nats/pose", "nll": "nats/pose", "geodesic_deg": "degrees"},
        # Floor (rad²) and scale of each baseline density, chosen on the validation split.
        "baseline_settings": {k: getattr(p, "settings", None) for k, p in (baselines or {}).items()},
        "results": results,
        "verdicts": verdicts(results),
        "figures": figures,
    }
    (out_dir / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m hand_vae.evaluate``; returns the exit code."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.task == "fit":
        from hand_vae.fit_bench import run_fit_task

        return run_fit_task(args)
    try:
        report = run(args)
    except EvalError as err:
        log.error("%s", err)
        return 2
    out_dir = Path(args.output_dir)
    lines = [f"\n{report['data']}, {report['num_poses']} poses, checkpoint {report['checkpoint']}"]
    lines.append(markdown_table(report["results"]))
    if report["verdicts"]:
        lines += ["", "Verdict, per metric (the VAE against the best baseline on that metric):"]
        lines += [f"  {v}" for v in report["verdicts"]]
    elif not args.baselines:
        lines += ["", "No verdict: add --baselines to compare the VAE with classic priors."]
    lines += [
        "",
        f"Wrote {1 + len(report['figures'])} files to {out_dir}/:",
        f"  {out_dir / 'evaluation.json'}",
    ]
    lines += [f"  {f}" for f in report["figures"]]
    print("\n".join(lines))  # noqa: T201 - the CLI's summary
    return 0


if __name__ == "__main__":
    sys.exit(main())
