"""``python -m hand_vae.fit --checkpoint CKPT --joints joints.npy [--mask mask.npy] --output fitted.npz``:
``--joints`` (T, 2, 21, 3) metres in ``kinematics.KEYPOINT_NAMES`` order, NaN = hidden."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from hand_vae.anatomy import NUM_HANDS, NUM_KEYPOINTS
from hand_vae.cli.common import read_array, run_command, setup_logging
from hand_vae.errors import UserError, atomic_write
from hand_vae.settings import cpu_threads

OUTPUT_KEYS = """\
The output .npz holds, per frame t (T frames) and hand (2, hand 0 = left):
  poses           (T, 90)        fitted axis-angle, radians, [left 45 | right 45]
  global_orient   (T, 2, 3)      wrist rotation per hand, axis-angle radians
  transl          (T, 2, 3)      translation per hand, metres
  scale           (T, 2)         scale per hand (1 unless --fit_scale)
  joints          (T, 2, 21, 3)  fitted keypoints, metres (NaN for an absent hand)
  joint_error_mm  (T,)           mean fitted-to-target distance over the visible keypoints, mm
  energy          (T,)           the prior's energy of the fitted pose, nats
  converged       (T,)           the fit settled (else: try more --steps)
  hand_present    (T, 2)         the hand had at least one visible keypoint
  plausibility    (T,)           share of validation poses less plausible (calibrated checkpoints only)"""

# Median hand extent (diagonal of its visible keypoints' box) above which they cannot be metres.
UNITS = ((50.0, "millimetres", 1000), (1.0, "centimetres", 100))


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every flag's default shown; the epilog's table kept as written."""


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m hand_vae.fit``; the epilog lists the output keys."""
    p = argparse.ArgumentParser(
        prog="python -m hand_vae.fit",
        description="Fit two-hand poses to 3D keypoints with a trained hand prior.",
        epilog=OUTPUT_KEYS,
        formatter_class=_Help,
    )
    p.add_argument("--checkpoint", required=True, help="trained prior, e.g. checkpoints/NAME/best_model.ckpt")
    p.add_argument("--joints", required=True, help="(T, 2, 21, 3) .npy, metres, hand 0 = left; NaN = hidden")
    p.add_argument("--mask", help="(T, 2, 21) .npy, nonzero = visible")
    p.add_argument("--output", required=True, help="output .npz (keys below)")
    p.add_argument("--prior_weight", type=float, default=1.0, help="weight of the prior's energy")
    p.add_argument("--joint_sigma", type=float, default=0.002, help="keypoint noise σ, metres")
    p.add_argument("--steps", type=int, default=300, help="optimisation steps")
    p.add_argument("--space", default="pose", choices=("pose", "latent"), help="optimise the pose or z")
    p.add_argument("--fit_scale", action="store_true", help="also fit a scale per hand")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads; 0 = auto (1 below 4096 frames)")
    return p


def read_keypoints(joints_path: str, mask_path: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """``--joints`` (T, 2, 21, 3) metres and ``--mask`` (T, 2, 21) bool or None; UserError when wrong."""
    joints = read_array(joints_path, "--joints")
    if joints.ndim != 4 or joints.shape[1:] != (NUM_HANDS, NUM_KEYPOINTS, 3) or joints.shape[0] == 0:
        raise UserError(f"--joints: expected shape (T, 2, {NUM_KEYPOINTS}, 3) in metres, got {joints.shape}")
    mask = read_array(mask_path, "--mask") != 0 if mask_path else None
    if mask is not None and mask.shape != joints.shape[:3]:
        raise UserError(f"--mask: expected shape {joints.shape[:3]} (T, 2, 21), got {mask.shape}")
    visible = np.isfinite(joints).all(-1) & (mask if mask is not None else True)  # (T, 2, 21)
    if not visible.any():
        raise UserError("no visible keypoint in any frame (all NaN or masked)")
    seen = np.where(visible[..., None], joints, np.nan)  # fmax / fmin: NaN for an absent hand, no warning
    extent = np.linalg.norm(np.fmax.reduce(seen, 2) - np.fmin.reduce(seen, 2), axis=-1)  # (T, 2)
    span = float(np.nanmedian(extent))
    for above, unit, factor in UNITS:
        if span > above:
            raise UserError(
                f"--joints look like {unit} (median hand span {span:.3g}; a hand spans ~0.1-0.2 m); "
                f"pass metres (divide by {factor})"
            )
    return joints, mask


def run(args: argparse.Namespace) -> int:
    """Check, load, fit, write ``--output``, print the summary (and advice when frames did not converge)."""
    if args.steps < 1 or not args.joint_sigma > 0 or args.prior_weight < 0:
        raise UserError("need --steps >= 1, --joint_sigma > 0 and --prior_weight >= 0")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is available")
    joints, mask = read_keypoints(args.joints, args.mask)
    from hand_vae.models.quantiles import is_calibrated, plausibility_from_quantiles  # after parsing
    from hand_vae.prior import fit_to_joints, load_prior

    try:
        prior = load_prior(args.checkpoint, map_location=args.device)
    except UserError as err:
        raise UserError(f"--checkpoint: {err}") from err
    if args.device == "cpu":  # small per-step matmuls: extra threads mostly wait for each other
        torch.set_num_threads(cpu_threads(args.threads, joints.shape[0]))
    y = torch.as_tensor(joints, dtype=torch.float32, device=args.device)
    m = None if mask is None else torch.as_tensor(mask, device=args.device)
    res = fit_to_joints(
        prior, y, m, prior_weight=args.prior_weight, steps=args.steps, space=args.space,
        joint_sigma=args.joint_sigma, fit_scale=args.fit_scale,
    )  # fmt: skip
    out = {k: v.cpu().numpy() for k, v in vars(res).items()}
    if is_calibrated(prior.energy_quantiles):
        out["plausibility"] = plausibility_from_quantiles(res.energy, prior.energy_quantiles).cpu().numpy()
    path = Path(args.output if args.output.endswith(".npz") else args.output + ".npz")  # as np.savez names it
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, **out))
    frames, converged = res.poses.shape[0], int(res.converged.sum())
    print(  # noqa: T201 - the CLI's summary
        f"fitted {frames} frames ({int(res.hand_present.sum())} hands present): mean keypoint error "
        f"{float(res.joint_error_mm.nanmean()):.2f} mm, {converged} converged -> {path}"
    )
    if converged < frames:
        print(f"{frames - converged} of {frames} frames did not converge: try --steps {2 * args.steps}")  # noqa: T201
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m hand_vae.fit``; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging()
    threads = torch.get_num_threads()
    try:
        return run_command(lambda: run(args))
    finally:
        torch.set_num_threads(threads)  # run() may lower it; callers in-process keep theirs


if __name__ == "__main__":
    sys.exit(main())
