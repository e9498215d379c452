"""Command line of ``hand_vae.fit``: fit two-hand poses to 3D keypoints stored in ``.npy`` files.

    python -m hand_vae.fit --checkpoint CKPT --joints joints.npy [--mask mask.npy] --output fitted.npz

``--joints`` is (T, 2, 21, 3) float, metres, hand 0 = left, keypoints in the order of
``hand_vae.kinematics.KEYPOINT_NAMES``; NaN marks a hidden keypoint and a hand with none visible
is absent. ``--mask`` (T, 2, 21) marks visible keypoints (nonzero). The output ``.npz`` holds
every field of ``fit.FitResult`` (poses (T, 90), global_orient and transl (T, 2, 3), scale (T, 2),
joints (T, 2, 21, 3), joint_error_mm, energy, converged (T,), hand_present (T, 2)) plus
``plausibility`` (T,) when the checkpoint is calibrated. Mistakes give one line and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from hand_vae.fit import FitResult, fit_to_joints
from hand_vae.kinematics import NUM_KEYPOINTS
from hand_vae.preflight import cpu_threads
from hand_vae.rotations import NUM_HANDS

log = logging.getLogger("hand_vae.fit")


class FitError(Exception):
    """A user mistake; reported as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hand_vae.fit",
        description="Fit two-hand poses to 3D keypoints with a trained hand prior.",
    )
    p.add_argument(
        "--checkpoint", required=True, help="trained prior (e.g. checkpoints/NAME/best_model.ckpt)"
    )
    p.add_argument(
        "--joints", required=True, help="(T, 2, 21, 3) float .npy, metres, hand 0 = left; NaN = hidden"
    )
    p.add_argument("--mask", help="(T, 2, 21) .npy, nonzero = visible")
    p.add_argument("--output", required=True, help="output .npz")
    p.add_argument("--prior_weight", type=float, default=1.0, help="weight of the prior's energy")
    p.add_argument("--joint_sigma", type=float, default=0.002, help="keypoint noise σ, metres")
    p.add_argument("--steps", type=int, default=300, help="optimisation steps")
    p.add_argument(
        "--space", default="pose", choices=("pose", "latent"), help="optimise the pose or the latent"
    )
    p.add_argument("--fit_scale", action="store_true", help="also fit a scale per hand")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads; 0 = auto (1 below 4096 frames)")
    return p


def _load_array(path: str, flag: str) -> np.ndarray:
    if not Path(path).is_file():
        raise FitError(f"{flag}: no such file: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise FitError(f"{flag}: {path} is not a readable .npy array ({err})") from err
    if not isinstance(arr, np.ndarray) or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise FitError(f"{flag}: {path} must hold one numeric array")
    return arr


def run(args: argparse.Namespace) -> FitResult:
    """Load, check, fit, write ``args.output``; returns the result."""
    from hand_vae.prior import load_prior

    joints = _load_array(args.joints, "--joints")
    if joints.ndim != 4 or joints.shape[1:] != (NUM_HANDS, NUM_KEYPOINTS, 3) or joints.shape[0] == 0:
        raise FitError(f"--joints: expected shape (T, 2, {NUM_KEYPOINTS}, 3) in metres, got {joints.shape}")
    mask = _load_array(args.mask, "--mask") if args.mask else None
    if mask is not None and mask.shape != joints.shape[:3]:
        raise FitError(f"--mask: expected shape {joints.shape[:3]} (T, 2, 21), got {mask.shape}")
    visible = np.isfinite(joints).all(-1) & (mask != 0 if mask is not None else True)
    if not visible.any():
        raise FitError("no visible keypoint in any frame (all NaN or masked)")
    if np.nanmedian(np.abs(joints - joints[:, :, :1])[visible]) > 0.5:
        raise FitError(
            "--joints look like millimetres (hands wider than 0.5 m); pass metres (divide by 1000)"
        )
    if args.steps < 1 or not args.joint_sigma > 0 or args.prior_weight < 0:
        raise FitError("need --steps >= 1, --joint_sigma > 0 and --prior_weight >= 0")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise FitError("--device cuda: no CUDA GPU is available")
    try:
        prior = load_prior(args.checkpoint, map_location=args.device)
    except (FileNotFoundError, ValueError) as err:
        raise FitError(f"--checkpoint: {err}") from err
    if args.device == "cpu":  # small per-step matmuls: extra threads mostly wait for each other
        torch.set_num_threads(cpu_threads(args.threads, joints.shape[0]))
    y = torch.as_tensor(joints, dtype=torch.float32, device=args.device)
    m = None if mask is None else torch.as_tensor(mask != 0, device=args.device)
    res = fit_to_joints(
        prior,
        y,
        m,
        None,
        args.prior_weight,
        args.steps,
        "mean",
        args.space,
        args.joint_sigma,
        fit_scale=args.fit_scale,
    )
    out = {k: getattr(res, k).cpu().numpy() for k in FitResult.__dataclass_fields__}
    from hand_vae.calibration import is_calibrated, plausibility_from_quantiles

    if is_calibrated(prior.energy_quantiles):
        out["plausibility"] = plausibility_from_quantiles(res.energy, prior.energy_quantiles).cpu().numpy()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.output, **out)
    return res


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m hand_vae.fit``; returns the exit code."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    threads = torch.get_num_threads()
    try:
        res = run(args)
    except FitError as err:
        log.error("%s", err)
        return 2
    finally:
        torch.set_num_threads(threads)  # run() may lower it; callers in-process keep theirs
    print(  # noqa: T201 - the CLI's summary
        f"fitted {res.poses.shape[0]} frames ({int(res.hand_present.sum())} hands present): mean keypoint error "
        f"{float(res.joint_error_mm.nanmean()):.2f} mm, {int(res.converged.sum())} converged -> {args.output}"
    )
    return 0
