"""``python -m hand_vae.evaluate --checkpoint CKPT [--baselines | --task fit]``: score a prior on held-out poses
(default: the checkpoint's own data source); writes ``evaluation.json`` and figures (``--task fit``:
``fit_benchmark.json`` / ``.md``) into ``--output_dir``, prints the table, verdicts and files written."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from hand_vae.cli.common import add_dataset_source, load_splits, read_poses, run_command, setup_logging
from hand_vae.errors import UserError, atomic_write
from hand_vae.settings import cpu_threads

log = logging.getLogger("hand_vae.evaluate")

REPORT = {"score": "evaluation.json", "fit": "fit_benchmark.json"}  # the file each --task writes


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m hand_vae.evaluate``."""
    p = argparse.ArgumentParser(
        prog="python -m hand_vae.evaluate",
        description="Evaluate a hand VAE prior on held-out poses, optionally against classic priors.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="Lightning checkpoint (e.g. best_model.ckpt)")
    src = add_dataset_source(p)
    src.add_argument("--poses", help="(N, 90) float .npy file of axis-angle poses, radians")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split to score")
    p.add_argument("--baselines", action="store_true", help="also score Gaussian, Student-t, GMM4/8, NN")
    p.add_argument("--output_dir", default="evaluation", help="where the JSON and figures go")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier result in --output_dir")
    p.add_argument("--num_samples", type=int, default=1000, help="importance samples K of the IWAE NLL")
    p.add_argument("--seed", type=int, default=0, help="seed of corruptions, sampling and subsets")
    p.add_argument("--max_poses", type=int, help="score a seeded subset of N poses (--task fit: 256 fitted)")
    p.add_argument("--energy", default="elbo", choices=("elbo", "iwae"), help="VAE energy for AUC/top-1")
    p.add_argument("--energy_samples", type=int, default=100, help="K of --energy iwae")
    p.add_argument("--hypothesis_noise", type=float, default=0.02, help="σ (rad) of noise decoys")
    p.add_argument("--no_figures", action="store_true", help="skip the energy histograms")
    p.add_argument("--task", default="score", choices=("score", "fit"), help="fit: the fitting benchmark")
    p.add_argument("--fit_steps", type=int, default=300, help="--task fit: optimisation steps per fit")
    return p


def _check(args: argparse.Namespace) -> None:
    for name in ("num_samples", "energy_samples", "fit_steps"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.max_poses is not None and args.max_poses < 2:
        raise UserError(f"--max_poses must be >= 2, got {args.max_poses}")
    if args.hypothesis_noise <= 0:
        raise UserError(f"--hypothesis_noise must be > 0 rad, got {args.hypothesis_noise}")
    report = Path(args.output_dir) / REPORT[args.task]
    if report.exists() and not args.overwrite:
        raise UserError(
            f"--output_dir {args.output_dir} already holds {report.name} from an earlier run; "
            "add --overwrite to replace it, or choose another --output_dir"
        )


def _load(args: argparse.Namespace, need_splits: bool) -> tuple:
    """The model, {split: (N, 90)} and its description, the held-out poses (N, 90) and what they are."""
    from hand_vae.checkpoint import load_vae  # start-up: the models load after parsing

    model, run = load_vae(args.checkpoint)
    splits, source = load_splits(args.consolidated_dir, args.splits_dir, run) if need_splits else ({}, "")
    if args.poses:
        poses, what = torch.from_numpy(read_poses(args.poses)), f"file {args.poses}"
    else:
        poses, what = splits[args.split], f"{args.split} split of the {source}"
    if not torch.isfinite(poses).all():
        raise UserError(f"the poses to score ({what}) contain NaN or inf")
    return model, splits, source, poses, what


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write((text + "\n").encode()))


def score(args: argparse.Namespace) -> int:
    """``--task score``: load, score, write the JSON and figures, print the table and verdicts."""
    # sklearn and matplotlib load after parsing, so --help stays fast
    from hand_vae.evaluation.metrics import evaluate, markdown_table, verdicts
    from hand_vae.metrics import subsample

    model, splits, source, poses, what = _load(args, need_splits=args.baselines or not args.poses)
    poses = subsample(poses, args.max_poses, args.seed)
    if poses.shape[0] < 2:
        raise UserError(f"need at least 2 poses to score, the {what} has {poses.shape[0]}")
    baselines = None
    if args.baselines:
        from hand_vae.evaluation.baselines import fit_baselines  # start-up, as above

        t0, train = time.perf_counter(), splits["train"]
        # Each density's floor and scale are chosen on the validation split, as the VAE's settings are.
        baselines = fit_baselines(train, seed=args.seed, val=splits.get("val"))
        log.info("Fitted baselines on %d training poses in %.1f s", len(train), time.perf_counter() - t0)
    log.info("Scoring %d poses (%s)", poses.shape[0], what)
    settings = ("num_samples", "seed", "energy", "energy_samples", "hypothesis_noise", "max_poses")
    results, energies = evaluate(
        model, poses, baselines, **{k: getattr(args, k) for k in settings if k != "max_poses"}
    )
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    if not args.no_figures:
        from hand_vae.viz.eval_figures import save_evaluation_figures  # start-up, as above

        figures = [str(p) for p in save_evaluation_figures(energies, results, out_dir)]
    report = {
        "checkpoint": str(args.checkpoint),
        "model_type": getattr(model, "model_type", None),
        "data": what,
        "num_poses": int(poses.shape[0]),
        "baselines_fitted_on": f"train split of the {source} ({len(train)} poses)" if baselines else None,
        "settings": {k: getattr(args, k) for k in settings},
        "units": {"neg_elbo": "nats/pose", "nll": "nats/pose", "geodesic_deg": "degrees"},
        # Floor (rad²) and scale of each baseline density, chosen on the validation split.
        "baseline_settings": {k: getattr(p, "settings", None) for k, p in (baselines or {}).items()},
        "results": results,
        "verdicts": verdicts(results),
        "figures": figures,
    }
    _write(path := out_dir / REPORT["score"], json.dumps(report, indent=2))
    lines = [f"\n{what}, {report['num_poses']} poses, checkpoint {args.checkpoint}", markdown_table(results)]
    if report["verdicts"]:
        lines += ["", "Verdict, per metric (the VAE against the best baseline on that metric):"]
        lines += [f"  {v}" for v in report["verdicts"]]
    elif not args.baselines:
        lines += ["", "No verdict: add --baselines to compare the VAE with classic priors."]
    lines += ["", f"Wrote {1 + len(figures)} files to {out_dir}/:", *(f"  {f}" for f in [path, *figures])]
    print("\n".join(lines))  # noqa: T201 - the CLI's summary
    return 0


def fit(args: argparse.Namespace) -> int:
    """``--task fit``: the fitting benchmark; writes ``fit_benchmark.json`` and ``.md``, prints the table."""
    from hand_vae.evaluation.fit_bench import NUM_POSES, markdown_table, run_fit_benchmark  # start-up

    model, splits, _, poses, what = _load(args, need_splits=True)
    threads = torch.get_num_threads()
    # Hundreds of small steps: one thread, as training does for small batches (extra threads wait).
    torch.set_num_threads(cpu_threads(0, args.max_poses or NUM_POSES))
    try:
        report = run_fit_benchmark(model, poses, splits, args.max_poses, args.fit_steps, args.seed)
    finally:
        torch.set_num_threads(threads)  # in-process callers keep theirs
    report = {"checkpoint": str(args.checkpoint), "data": what, **report}
    out_dir, table = Path(args.output_dir), markdown_table(report["fit"])
    _write(out_dir / REPORT["fit"], json.dumps(report, indent=2))
    _write(out_dir / "fit_benchmark.md", table)
    rates = ", ".join(f"{k} {v:.3f}" for k, v in report["plausibility_pass_0.99"].items())
    aucs = ", ".join(f"{k} {v:.3f}" for k, v in report["auc_noise_0.02"].items())
    print(  # noqa: T201 - the CLI's summary
        f"\n{what}, {report['num_poses']} poses, checkpoint {args.checkpoint}\n{table}\n"
        f"\nshare passing the 0.99 plausibility level: {rates}\nAUC real vs noise 0.02 rad: {aucs}\n"
        f"written: {out_dir / REPORT['fit']}, {out_dir / 'fit_benchmark.md'}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m hand_vae.evaluate``; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging()

    def body() -> int:
        _check(args)
        return (fit if args.task == "fit" else score)(args)

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
