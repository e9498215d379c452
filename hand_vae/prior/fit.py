"""Fit two-hand poses to 3D keypoints with a pose prior: ``fit_to_joints``.

From the command line: ``python -m hand_vae.fit --checkpoint CKPT --joints joints.npy --output fitted.npz``.

Per frame t and hand h (independently, batched over frames), the fit solves

    min  Σ_visible ‖ s_h R_h FK(x)_h,j + t_h − y_h,j ‖² / (2 σ²)  +  w · energy(x)

over the articulated pose x (90 axis-angle numbers, or the VAE latent z with x = decode(z)) and a
free global wrist rotation R_h, translation t_h (and optionally scale s_h) per hand. With σ the
keypoint noise in metres and w = 1 this is a MAP estimate with the prior's energy standing in for
−log p(x). Keypoints y are (T, 2, 21, 3) metres, hand 0 = left, in the order of
``hand_vae.kinematics.KEYPOINT_NAMES`` (wrist, then index, middle, pinky, ring, thumb: three joints
and the tip each). Hidden keypoints are masked (or NaN); a hand with no visible keypoint is absent
and its pose is filled in by the prior alone.

Forward kinematics: by default this package's approximate skeleton (``kinematics.hands_fk``). With
MANO, pass a function ``(T, 90) poses -> (T, 2, 21, 3)`` keypoints built on a MANO layer (manotorch
or smplx), each hand in its own frame; the README shows one. Rotation, translation and scale are
applied on top of it, so the layer's own global orientation and translation stay at zero.

Pose space or latent space: optimising the 90 pose numbers with the energy as the prior term
fitted better than optimising z with x = decode(z) on every corruption of the fitting benchmark
(``python -m hand_vae.evaluate --task fit``, numbers in the README): the decoder's mean poses
smooth away per-person detail, so a latent fit misses even visible keypoints. So ``space="pose"``
is the default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import roma
import torch
from torch import nn

from hand_vae.kinematics import NUM_KEYPOINTS, hands_fk
from hand_vae.models import BaseHandVAE
from hand_vae.prior.api import as_vae
from hand_vae.rotations import NUM_HANDS, POSE_DIM, axis_angle_to_matrix, matrix_to_axis_angle

ForwardKinematics = Callable[[torch.Tensor], torch.Tensor]  # (T, 90) -> (T, 2, 21, 3) metres
# Share of the steps at the end (where the cosine schedule's step size is below 10% of lr) over
# which a frame's objective must settle to count as converged.
CONVERGENCE_TAIL = 0.2


@dataclass
class FitResult:
    """Output of ``fit_to_joints`` (float32 tensors on the device of ``joints``, detached; CPU for numpy).

    Attributes:
        poses: (T, 90) fitted axis-angle, radians, ``[left 45 | right 45]``; an absent hand's pose
            comes from the prior alone (the init pose without one).
        global_orient: (T, 2, 3) wrist rotation per hand, axis-angle radians (R_h).
        transl: (T, 2, 3) translation per hand, metres (t_h).
        scale: (T, 2) scale per hand (1 unless ``fit_scale``).
        joints: (T, 2, 21, 3) fitted keypoints, metres; NaN for an absent hand.
        joint_error_mm: (T,) mean distance fitted-to-target over the visible keypoints, mm.
        energy: (T,) the prior's energy of the fitted pose, nats (NaN without a prior).
        converged: (T,) no fitted keypoint of the frame (absent hands included) moved by more
            than ``tol · joint_sigma`` over the last 20% of the steps (``CONVERGENCE_TAIL``).
        hand_present: (T, 2) the hand has at least one visible keypoint.
    """

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
        raise ValueError(
            f"joints must have shape (T, 2, {NUM_KEYPOINTS}, 3) metres, got {tuple(joints.shape)}"
        )
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
    """Weighted rigid alignment R src + t ≈ dst per row (Kabsch, by ``roma.rigid_points_registration``).

    Args:
        src, dst: (N, K, 3); w: (N, K) weights (0 = ignore).

    Returns:
        R (N, 3, 3) and t (N, 3), float32. Rows with fewer than 3 weighted points keep R = I (a
        rotation is not determined) and only match centroids (t = 0 with no point).
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
    """Fit poses (and a rigid transform per hand) to 3D keypoints under a pose prior.

    Minimises ``Σ_visible ‖ŷ − y‖²/(2 joint_sigma²) + prior_weight · energy(x)`` per frame with
    Adam (every frame independently, batched); the per-hand rotation and translation start from a
    Kabsch alignment of the init pose's keypoints to the visible targets. ``space="latent"``
    optimises z with x = decode(z) and the latent prior ½‖z‖² in place of the energy (VPoser
    style): poses stay on the decoder's manifold, which helps when little is visible but cannot
    fit details the decoder smooths away. Runs on the hand VAE's device (on that of ``joints``
    for another prior); the result comes back on the device of ``joints``.

    Args:
        prior: a hand VAE (``load_prior``), a ``HandVAELightningModule``, any object with a
            differentiable ``energy(x) -> (T,)``, or None (plain inverse kinematics).
        joints: (T, 2, 21, 3) target keypoints, metres; NaN = hidden. A tensor of any float dtype
            and device, or a numpy array (e.g. float64).
        mask: optional (T, 2, 21), nonzero = visible.
        forward_kinematics: (T, 90) -> (T, 2, 21, 3) metres, each hand in its own frame; default
            ``kinematics.hands_fk``.
        prior_weight: w, the weight of the energy (or of ½‖z‖² in latent space).
        steps: Adam steps.
        init: "mean" (the VAE's decode(0); zeros without a VAE), "zeros", or (T, 90)/(1, 90) poses.
        space: "pose" or "latent" (needs a VAE).
        joint_sigma: σ of the keypoint noise, metres.
        lr: Adam step size for the pose (radians) and rotations; translations use lr / 10 metres.
        fit_scale: also fit a scale per hand (e.g. for a skeleton of another size).
        tol: largest keypoint movement over the last 20% of the steps that counts as converged,
            as a fraction of ``joint_sigma``.

    Returns:
        A ``FitResult``.

    Raises:
        ValueError: bad shapes or settings.
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
        local0 = fk(x0).float()  # (T, 2, 21, 3)
        R0, t0 = _rigid_start(
            local0.reshape(-1, NUM_KEYPOINTS, 3),
            y.reshape(-1, NUM_KEYPOINTS, 3),
            w.reshape(-1, NUM_KEYPOINTS),
        )
        R0, t0 = R0.reshape(T, NUM_HANDS, 3, 3), t0.reshape(T, NUM_HANDS, 3)

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

    def evaluate(with_prior: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pose = vae.decode(var).float() if space == "latent" else var
        R = R0 @ axis_angle_to_matrix(d_rot)  # (T, 2, 3, 3)
        local = fk(pose).float()  # (T, 2, 21, 3)
        pred = log_s.exp()[..., None, None] * local @ R.transpose(-1, -2) + (t0 + d_t)[:, :, None]
        data = (w * (pred - y).square().sum(-1)).sum((1, 2)) / (2 * joint_sigma**2)  # (T,)
        if not with_prior or prior_weight == 0:
            return data, pose, pred
        if space == "latent":
            return data + prior_weight * 0.5 * var.square().sum(-1), pose, pred
        if energy_fn is None:
            return data, pose, pred
        return data + prior_weight * energy_fn(pose).float(), pose, pred

    tail_start, pred_tail = int((1.0 - CONVERGENCE_TAIL) * steps), None
    with torch.enable_grad():
        for step in range(steps):
            objective, _, pred = evaluate()
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
        _, pose, pred = evaluate()
        err = ((pred - y).norm(dim=-1) * w).sum((1, 2)) / w.sum((1, 2)).clamp_min(1) * 1000.0
        energy = energy_fn(pose).float() if energy_fn is not None else torch.full((T,), float("nan"))
        if pred_tail is not None and steps >= 5:
            moved = (pred - pred_tail).norm(dim=-1).amax((1, 2))  # (T,) metres
            converged = moved <= tol * joint_sigma
        else:
            converged = torch.zeros(T, dtype=torch.bool, device=y.device)
        R = R0 @ axis_angle_to_matrix(d_rot)
    result = FitResult(
        poses=pose,
        global_orient=matrix_to_axis_angle(R),
        transl=t0 + d_t,
        scale=log_s.exp(),
        joints=torch.where(present[..., None, None], pred, torch.full_like(pred, float("nan"))),
        joint_error_mm=torch.where(w.sum((1, 2)) > 0, err, torch.full_like(err, float("nan"))),
        energy=energy.to(y.device),
        converged=converged,
        hand_present=present,
    )
    for f in fields(FitResult):
        setattr(result, f.name, getattr(result, f.name).detach().to(out_device))
    return result
