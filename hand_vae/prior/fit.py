"""Fit two-hand poses to 3D keypoints with a pose prior: ``fit_to_joints`` (docs/design.md §9).

Per frame and hand: ``min Σ_visible ‖s R FK(x) + t − y‖² / (2σ²) + w · energy(x)`` over the pose x
(or z with x = decode(z)) and a free wrist rotation R, translation t (and scale s) per hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import roma
import torch
from torch import nn

from hand_vae.kinematics import NUM_KEYPOINTS, hands_fk
from hand_vae.models import BaseHandVAE
from hand_vae.prior.api import as_vae
from hand_vae.rotations import NUM_HANDS, POSE_DIM, axis_angle_to_matrix, matrix_to_axis_angle

ForwardKinematics = Callable[[torch.Tensor], torch.Tensor]  # (T, 90) -> (T, 2, 21, 3) metres
# Share of the steps at the end (cosine step size below 10% of lr) over which a frame must settle.
CONVERGENCE_TAIL = 0.2


@dataclass
class FitResult:
    """Output of ``fit_to_joints``: detached float32 on the device of ``joints`` (CPU for numpy); shapes and
    units as the table of ``python -m hand_vae.fit --help`` (``hand_vae.cli.fit.OUTPUT_KEYS``). An absent
    hand's pose comes from the prior alone; ``energy`` is NaN without a prior; ``converged``: no fitted
    keypoint moved more than ``tol · joint_sigma`` over the last ``CONVERGENCE_TAIL`` of the steps."""

    poses: torch.Tensor
    global_orient: torch.Tensor
    transl: torch.Tensor
    scale: torch.Tensor
    joints: torch.Tensor
    joint_error_mm: torch.Tensor
    energy: torch.Tensor
    converged: torch.Tensor
    hand_present: torch.Tensor


def _check_inputs(
    joints: torch.Tensor, mask: torch.Tensor | None, device: torch.device | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> float32 targets (T, 2, 21, 3) with NaN zeroed and visibility (T, 2, 21) bool, on ``device``."""
    joints = torch.as_tensor(joints)
    if joints.dim() != 4 or joints.shape[1:] != (NUM_HANDS, NUM_KEYPOINTS, 3) or joints.shape[0] == 0:
        raise ValueError(f"joints must be (T, 2, {NUM_KEYPOINTS}, 3) metres, got {tuple(joints.shape)}")
    joints = joints.to(device=device or joints.device, dtype=torch.float32)
    visible = torch.isfinite(joints).all(-1)  # (T, 2, 21)
    if mask is not None:
        mask = torch.as_tensor(mask, device=joints.device)
        if tuple(mask.shape) != tuple(joints.shape[:3]):
            raise ValueError(
                f"mask must have shape {tuple(joints.shape[:3])} (T, 2, 21), got {tuple(mask.shape)}"
            )
        visible = visible & (mask != 0)
    return torch.where(visible[..., None], joints, torch.zeros_like(joints)), visible


def _rigid_start(src: torch.Tensor, dst: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted Kabsch R src + t ≈ dst per row: src, dst (N, K, 3), w (N, K) -> R (N, 3, 3), t (N, 3).

    Rows with fewer than 3 weighted points keep R = I and only match centroids.
    """
    src, dst, w = src.double(), dst.double(), w.double()
    enough = (w > 0).sum(-1) >= 3  # (N,)
    R, t = roma.rigid_points_registration(src, dst, weights=torch.where(enough[:, None], w, 1.0))
    shift = (w[..., None] * (dst - src)).sum(1) / w.sum(-1, keepdim=True).clamp_min(1e-12)  # (N, 3)
    R = torch.where(enough[:, None, None], R, torch.eye(3, dtype=R.dtype, device=R.device))
    return R.float(), torch.where(enough[:, None], t, shift).float()


def _prior_parts(prior: nn.Module | object | None) -> tuple[BaseHandVAE | None, Callable | None]:
    """(vae or None, energy function or None) of whatever was passed as the prior."""
    if prior is None:
        return None, None
    try:
        vae = as_vae(prior)
    except TypeError:
        if not callable(getattr(prior, "energy", None)):
            raise TypeError(
                "prior must be a hand VAE, a HandVAELightningModule, None, or have energy(x)"
            ) from None
        return None, prior.energy
    return vae, vae.energy


def _init_pose(init, vae: BaseHandVAE | None, T: int, like: torch.Tensor) -> torch.Tensor:
    if isinstance(init, torch.Tensor | np.ndarray):
        x0 = torch.as_tensor(init).to(like).reshape(-1, POSE_DIM)
        return x0.expand(T, POSE_DIM).clone() if x0.shape[0] == 1 else x0.clone()
    if init == "zeros" or (init == "mean" and vae is None):
        return like.new_zeros(T, POSE_DIM)
    if init == "mean":  # the decoder's pose at the latent origin: the prior's most typical pose
        with torch.no_grad():
            return vae.decode(like.new_zeros(1, vae.z_dim)).to(like).expand(T, POSE_DIM).clone()
    raise ValueError(f"init must be 'zeros', 'mean' or a (T, 90) tensor, got {init!r}")


def fit_to_joints(
    prior: nn.Module | object | None,
    joints: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray | None = None,
    forward_kinematics: ForwardKinematics | None = None,
    prior_weight: float = 1.0,
    steps: int = 300,
    init: str | torch.Tensor = "mean",
    space: str = "pose",
    joint_sigma: float = 0.002,
    lr: float = 0.03,
    fit_scale: bool = False,
    tol: float = 0.5,
) -> FitResult:
    """Fit poses and a rigid transform per hand to 3D keypoints under a pose prior (Adam, batched).

    Minimises ``Σ_visible ‖ŷ − y‖²/(2 joint_sigma²) + prior_weight · energy(x)`` per frame from a
    Kabsch alignment of the init pose. ``space="latent"`` optimises z, x = decode(z), with ½‖z‖² as
    the prior. Runs on the hand VAE's device (that of ``joints`` for another prior).

    Args:
        prior: a hand VAE, a ``HandVAELightningModule``, any object with a differentiable
            ``energy(x) -> (T,)``, or None (plain inverse kinematics).
        joints: (T, 2, 21, 3) metres, hand 0 = left, NaN = hidden; a tensor or numpy array.
        mask: optional (T, 2, 21), nonzero = visible.
        forward_kinematics: (T, 90) -> (T, 2, 21, 3) metres, each hand in its own frame
            (default ``kinematics.hands_fk``).
        init: "mean" (the VAE's decode(0); zeros without a VAE), "zeros", or (T, 90)/(1, 90) poses.
        joint_sigma: keypoint noise σ, metres.
        lr: Adam step for pose and rotations; translations use lr / 10 metres.
        tol: converged threshold, as a fraction of ``joint_sigma``.
    """
    vae, energy_fn = _prior_parts(prior)
    out_device = torch.as_tensor(joints).device
    y, visible = _check_inputs(joints, mask, None if vae is None else next(vae.parameters()).device)
    if space not in ("pose", "latent"):
        raise ValueError(f"space must be 'pose' or 'latent', got {space!r}")
    if steps < 0 or not joint_sigma > 0 or not lr > 0 or prior_weight < 0:
        raise ValueError("need steps >= 0, joint_sigma > 0, lr > 0 and prior_weight >= 0")
    if space == "latent" and vae is None:
        raise ValueError("space='latent' needs a hand VAE as the prior")
    fk = forward_kinematics or hands_fk
    T = y.shape[0]
    w = visible.float()  # (T, 2, 21)
    present = visible.any(-1)  # (T, 2)
    x0 = _init_pose(init, vae, T, y)  # (T, 90)

    with torch.no_grad():  # rigid start: align the init pose's keypoints to the visible targets
        R0, t0 = _rigid_start(fk(x0).float().flatten(0, 1), y.flatten(0, 1), w.flatten(0, 1))
        R0, t0 = R0.unflatten(0, (T, NUM_HANDS)), t0.unflatten(0, (T, NUM_HANDS))

    if space == "latent":
        with torch.no_grad():
            var = vae.encode(x0)[0].detach().clone().requires_grad_(True)  # (T, Z)
    else:
        var = x0.clone().requires_grad_(True)  # (T, 90)
    d_rot = torch.zeros(T, NUM_HANDS, 3, device=y.device, requires_grad=True)
    d_t = torch.zeros(T, NUM_HANDS, 3, device=y.device, requires_grad=True)
    log_s = torch.zeros(T, NUM_HANDS, device=y.device, requires_grad=fit_scale)
    groups = [{"params": [var, d_rot], "lr": lr}, {"params": [d_t], "lr": lr / 10}]
    if fit_scale:
        groups.append({"params": [log_s], "lr": lr / 3})
    opt = torch.optim.Adam(groups)
    params = [p for group in groups for p in group["params"]]
    # Cosine decay to 1% of lr: large steps to get close, small ones for sub-millimetre accuracy.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1), eta_min=0.01 * lr)

    def evaluate(with_prior: bool = True) -> tuple[torch.Tensor, ...]:
        """-> objective (T,), pose (T, 90), keypoints (T, 2, 21, 3), wrist rotations (T, 2, 3, 3)."""
        pose = vae.decode(var).float() if space == "latent" else var
        R = R0 @ axis_angle_to_matrix(d_rot)
        pred = log_s.exp()[..., None, None] * fk(pose).float() @ R.transpose(-1, -2) + (t0 + d_t)[:, :, None]
        objective = (w * (pred - y).square().sum(-1)).sum((1, 2)) / (2 * joint_sigma**2)
        if with_prior and prior_weight > 0 and space == "latent":
            objective = objective + prior_weight * 0.5 * var.square().sum(-1)
        elif with_prior and prior_weight > 0 and energy_fn is not None:
            objective = objective + prior_weight * energy_fn(pose).float()
        return objective, pose, pred, R

    tail_start, pred_tail = int((1.0 - CONVERGENCE_TAIL) * steps), None
    with torch.enable_grad():
        for step in range(steps):
            objective, _, pred, _ = evaluate()
            if step == tail_start:
                pred_tail = pred.detach()
            # A sum over frames: Adam is per coordinate, so every frame is optimised independently.
            # autograd.grad (not backward) leaves the prior's own .grad untouched.
            grads = torch.autograd.grad(objective.sum(), params, allow_unused=True)
            for p, g in zip(params, grads, strict=True):
                p.grad = torch.zeros_like(p) if g is None else g
            opt.step()
            sched.step()
    with torch.no_grad():
        _, pose, pred, R = evaluate(with_prior=False)
        err = ((pred - y).norm(dim=-1) * w).sum((1, 2)) / w.sum((1, 2)).clamp_min(1) * 1000.0
        energy = energy_fn(pose).float() if energy_fn is not None else torch.full((T,), float("nan"))
        converged = torch.zeros(T, dtype=torch.bool, device=y.device)
        if pred_tail is not None and steps >= 5:
            converged = (pred - pred_tail).norm(dim=-1).amax((1, 2)) <= tol * joint_sigma
    result = {
        "poses": pose,
        "global_orient": matrix_to_axis_angle(R),
        "transl": t0 + d_t,
        "scale": log_s.exp(),
        "joints": pred.masked_fill(~present[..., None, None], float("nan")),
        "joint_error_mm": err.masked_fill(w.sum((1, 2)) == 0, float("nan")),
        "energy": energy,
        "converged": converged,
        "hand_present": present,
    }
    return FitResult(**{k: v.detach().to(out_device) for k, v in result.items()})
