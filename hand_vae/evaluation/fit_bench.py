"""Fitting benchmark of ``python -m hand_vae.evaluate --task fit`` (protocol: docs/design.md §9): held-out
poses -> keypoints under a random rigid transform per hand -> hidden or noised -> fitted from the training
mean pose with no prior, the training Gaussian and the VAE (pose and latent space)."""

from __future__ import annotations

import logging
import time
from functools import partial

import numpy as np
import roma
import torch
from torch import nn

from hand_vae.evaluation.baselines import GaussianPrior
from hand_vae.evaluation.metrics import auc, corrupted_sets, scores
from hand_vae.gaussian import gaussian_log_prob
from hand_vae.kinematics import NUM_KEYPOINTS, POINTS_PER_FINGER, hands_fk
from hand_vae.metrics import subsample
from hand_vae.models.quantiles import BUFFER, CALIBRATE_HINT, calibrate, is_calibrated, threshold_at
from hand_vae.prior import energy_one_hand, fit_to_joints, log_prob_one_hand
from hand_vae.rotations import HAND_DIM, NUM_HANDS, geodesic_angle_axis_angle, to_joints

log = logging.getLogger(__name__)

NOISE_MM = (2, 5, 10)
CORRUPTIONS = ("sparse", "partial", "tips") + tuple(f"noisy_{n}mm" for n in NOISE_MM)
PRIORS = ("none", "gaussian", "vae", "vae_latent")
NUM_POSES = 256  # poses fitted per corruption and prior unless max_poses says otherwise
EXACT_SIGMA = 0.002  # keypoint σ (m) assumed where the visible keypoints are exact
TIPS = (0,) + tuple(POINTS_PER_FINGER * (k + 1) for k in range(5))  # wrist + 5 fingertips
COLUMNS = ("mpjpe_visible_mm", "mpjpe_hidden_mm", "mpjpe_all_mm", "geodesic_deg", "plausible_0.99")


class GaussianEnergy(nn.Module):
    """The Gaussian baseline as a fitting prior: differentiable ``energy(x)`` = −log N(x), (B,) nats."""

    def __init__(self, prior: GaussianPrior) -> None:
        super().__init__()
        self.register_buffer("mean", prior.mean.clone())
        self.register_buffer("chol", prior.chol * prior.scale)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return -gaussian_log_prob(x.reshape(x.shape[0], -1).double(), self.mean, self.chol).float()


def make_targets(poses: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Clean keypoints (N, 2, 21, 3) metres: FK of each hand, random rotation and translation."""
    N = poses.shape[0]
    quat = torch.nn.functional.normalize(torch.randn(N, NUM_HANDS, 4, generator=g), dim=-1)  # uniform
    R = roma.unitquat_to_rotmat(quat)  # (N, 2, 3, 3)
    t = 0.3 * torch.randn(N, NUM_HANDS, 1, 3, generator=g)
    return hands_fk(poses) @ R.transpose(-1, -2) + t


def corrupt(clean: torch.Tensor, kind: str, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Observed keypoints, visibility (N, 2, 21) bool and the keypoint σ (m) to fit with."""
    N = clean.shape[0]
    visible = torch.ones(N, NUM_HANDS, NUM_KEYPOINTS, dtype=torch.bool)
    if kind == "sparse":  # 8 of 21 visible per hand
        order = torch.rand(N, NUM_HANDS, NUM_KEYPOINTS, generator=g).argsort(-1)
        visible = order < NUM_KEYPOINTS - 13
    elif kind == "partial":  # two of five fingers hidden per hand
        fingers = torch.rand(N, NUM_HANDS, 5, generator=g).argsort(-1)[..., :2]  # (N, 2, 2)
        # the finger of each keypoint, -1 for the wrist
        finger_of = (torch.arange(NUM_KEYPOINTS) - 1).div(POINTS_PER_FINGER, rounding_mode="floor")
        visible = ~(finger_of[None, None, :, None] == fingers[:, :, None, :]).any(-1)
    elif kind == "tips":
        visible = torch.zeros_like(visible)
        visible[..., list(TIPS)] = True
    elif kind.startswith("noisy_"):
        sigma = float(kind[len("noisy_") : -2]) / 1000.0
        return clean + sigma * torch.randn(clean.shape, generator=g), visible, sigma
    else:
        raise ValueError(f"unknown corruption {kind!r}")
    return torch.where(visible[..., None], clean, torch.full_like(clean, float("nan"))), visible, EXACT_SIGMA


def _metrics(res, energy, clean, visible, poses, thr: float | None) -> dict[str, float | None]:
    d = (res.joints - clean).norm(dim=-1) * 1000.0  # (N, 2, 21) mm
    hidden = ~visible
    geo = geodesic_angle_axis_angle(to_joints(res.poses), to_joints(poses)).mean()
    return {
        "mpjpe_visible_mm": float(d[visible].mean()),
        "mpjpe_hidden_mm": float(d[hidden].mean()) if hidden.any() else None,
        "mpjpe_all_mm": float(d.mean()),
        "geodesic_deg": float(torch.rad2deg(geo)),
        "plausible_0.99": None if thr is None else float((energy <= thr).float().mean()),
        "converged": float(res.converged.float().mean()),
    }


def fit_benchmark(
    vae: nn.Module, poses: torch.Tensor, train: torch.Tensor, steps: int = 300, seed: int = 0
) -> dict[str, dict[str, dict]]:
    """{corruption: {prior: {metric: value or None}}} of fits to the keypoints of ``poses`` (N, 90).

    ``train`` (M, 90) gives the Gaussian prior and the initial (mean) pose; the VAE's stored
    calibration gives the plausibility column (None without one).
    """
    vae = vae.eval()
    thr = threshold_at(getattr(vae, BUFFER), 0.99) if is_calibrated(getattr(vae, BUFFER)) else None
    gauss = GaussianEnergy(GaussianPrior().fit(train))
    init = train.mean(0, keepdim=True)  # (1, 90): every prior starts from the same pose
    g = torch.Generator().manual_seed(seed)
    clean = make_targets(poses, g)
    out: dict[str, dict[str, dict]] = {}
    for kind in CORRUPTIONS:
        observed, visible, sigma = corrupt(clean, kind, g)
        out[kind] = {}
        for name in PRIORS:
            prior = {"none": None, "gaussian": gauss}.get(name, vae)
            space = "latent" if name == "vae_latent" else "pose"
            t0 = time.perf_counter()
            res = fit_to_joints(
                prior, observed, visible, joint_sigma=sigma, steps=steps, init=init, space=space
            )
            with torch.no_grad():
                energy = vae.energy(res.poses)  # (N,) the VAE's, whatever prior was fitted with
            out[kind][name] = _metrics(res, energy, clean, visible, poses, thr)
            log.info("fit %-10s %-10s %.1f s: %s", kind, name, time.perf_counter() - t0, out[kind][name])
    return out


@torch.no_grad()
def plausibility_pass_rates(vae: nn.Module, poses: torch.Tensor, seed: int = 0, level: float = 0.99) -> dict:
    """Share of clean and corrupted held-out poses (N, 90) whose energy passes the ``level`` quantile."""
    thr = threshold_at(getattr(vae, BUFFER), level)
    sets = {"clean": poses}
    sets.update({k: v for k, v in corrupted_sets(poses, seed, 0.02).items() if not k.startswith("decoys")})
    return {k: float((vae.energy(v) <= thr).float().mean()) for k, v in sets.items()}


@torch.no_grad()
def one_hand_auc(vae: nn.Module, poses: torch.Tensor, seed: int = 0, sigma: float = 0.02) -> dict[str, float]:
    """AUC of real vs noised (``metrics``' ``noise_{σ}`` set) held-out poses, from two hands and from each
    hand's 45 numbers alone (``*_iwae``: −log p with K = 100)."""
    noisy = corrupted_sets(poses, seed, sigma)[f"noise_{sigma:g}"]
    gen = torch.Generator().manual_seed(seed)

    def pair(fn, cols: slice = slice(None)) -> float:  # in blocks: one-hand scores don't chunk
        return auc(*(np.concatenate([scores(fn, c) for c in x[:, cols].split(2048)]) for x in (poses, noisy)))

    out = {"two_hands": pair(vae.energy)}
    for side, cols in (("left", slice(0, HAND_DIM)), ("right", slice(HAND_DIM, 2 * HAND_DIM))):
        out[f"one_hand_{side}"] = pair(partial(energy_one_hand, vae, side=side), cols)
        out[f"one_hand_{side}_iwae"] = pair(
            lambda x, side=side: -log_prob_one_hand(vae, x, side, num_samples=100, generator=gen), cols
        )
    return out


def run_fit_benchmark(
    vae: nn.Module,
    poses: torch.Tensor,
    splits: dict[str, torch.Tensor],
    max_poses: int | None = None,
    steps: int = 300,
    seed: int = 0,
) -> dict:
    """The ``--task fit`` report on held-out ``poses`` (N, 90): the fits, pass rates and one-hand AUCs.

    An uncalibrated ``vae`` is calibrated on ``splits["val"]``. ``max_poses`` (default ``NUM_POSES``)
    poses are fitted; when given, the pass rates and AUCs use that seeded subset too.
    """
    note = "stored in the checkpoint"
    if not is_calibrated(getattr(vae, BUFFER)):
        calibrate(vae, splits["val"])
        note = f"none in the checkpoint: computed here from the val split ({CALIBRATE_HINT} stores it)"
        log.warning("checkpoint has no energy calibration; using the val split")
    subset = subsample(poses, max_poses or NUM_POSES, seed)
    scored = subsample(poses, max_poses, seed)
    log.info("Fitting %d poses x %d corruptions x %d priors", len(subset), len(CORRUPTIONS), len(PRIORS))
    return {
        "num_poses": len(subset),
        "steps": steps,
        "seed": seed,
        "calibration": note,
        "units": {"mpjpe": "mm", "geodesic_deg": "degrees", "plausible_0.99": "share of fitted poses"},
        "fit": fit_benchmark(vae, subset, splits["train"], steps=steps, seed=seed),
        "plausibility_pass_0.99": plausibility_pass_rates(vae, scored, seed),
        "auc_noise_0.02": one_hand_auc(vae, scored, seed),
    }


def markdown_table(results: dict[str, dict[str, dict]]) -> str:
    """One row per (corruption, prior); numbers in mm / degrees / share."""
    lines = ["| corruption | prior | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 2)]
    for kind, rows in results.items():
        for name, row in rows.items():
            cells = [
                "–" if row[c] is None else (f"{row[c]:.2f}" if "plausible" in c else f"{row[c]:.1f}")
                for c in COLUMNS
            ]
            lines.append(f"| {kind} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
