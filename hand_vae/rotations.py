"""Rotation maths and two-hand pose layouts (conventions: docs/design.md §1).

Axis-angle in radians relative to the parent joint; matrices act on column vectors; 6D = the first
two columns of R (Zhou et al., CVPR 2019). Pure functions on any leading batch dims, tested against
scipy and roma. The training-path ones use few whole-tensor kernels and no per-element indexing
(whose backward allocates one full-size gradient per index).
"""

from __future__ import annotations

import functools

import roma
import torch

# The pose layout lives with the anatomy (no torch there, so command lines parse fast); re-exported.
from hand_vae.anatomy import (  # noqa: F401
    ACCEPTED_SHAPES,
    BODY_HAND_SLICES,
    HAND_DIM,
    JOINTS_PER_HAND,
    NUM_HANDS,
    NUM_JOINTS,
    POSE_DIM,
    pose_shape_hint,
)


def _check_last(x: torch.Tensor, shape: tuple[int, ...], name: str) -> None:
    if x.shape[-len(shape) :] != torch.Size(shape):
        raise ValueError(f"{name} must have trailing shape {shape}, got {tuple(x.shape)}")


def to_joints(x: torch.Tensor) -> torch.Tensor:
    """(B, 90) ``[left 45 | right 45]`` or (B, 30, 3) -> (B, 30, 3), joints 0-14 left (a view when
    possible); ValueError for any other shape."""
    if x.dim() == 2 and x.shape[1] == POSE_DIM:
        return x.reshape(x.shape[0], NUM_JOINTS, 3)  # (B, 30, 3)
    if x.dim() == 3 and x.shape[1:] == (NUM_JOINTS, 3):
        return x
    shape = tuple(x.shape)
    raise ValueError(f"hand pose must have shape {ACCEPTED_SHAPES}, got {shape}{pose_shape_hint(shape)}")


def to_flat(x: torch.Tensor) -> torch.Tensor:
    """Any accepted two-hand pose layout -> (B, 90) ``[left 45 | right 45]``."""
    return to_joints(x).reshape(x.shape[0], POSE_DIM)


def to_hands(x: torch.Tensor) -> torch.Tensor:
    """Any accepted two-hand pose layout -> (B, 2, 15, 3), hand 0 = left."""
    return to_joints(x).reshape(x.shape[0], NUM_HANDS, JOINTS_PER_HAND, 3)


_SMALL_ANGLE = 1e-6  # rad; below it sin θ/θ and (1 − cos θ)/θ² are their limits to float precision


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3) -> rotation matrix (..., 3, 3), by Rodrigues' formula.

    ``R = cos θ I + (sin θ/θ) [r]× + (2 sin²(θ/2)/θ²) r rᵀ`` (no cancellation for small θ). θ is
    clamped to 1e-6 rad inside the ratios (then at their limits), so the map and its gradient are
    finite at the zero rotation (the norm's subgradient there is 0).
    """
    _check_last(rotvec, (3,), "rotvec")
    theta = torch.linalg.vector_norm(rotvec, dim=-1, keepdim=True)  # (..., 1)
    t = theta.clamp_min(_SMALL_ANGLE)
    half_sinc = torch.sin(0.5 * t) / t
    ar = (torch.sin(t) / t) * rotvec  # (..., 3) sin θ · axis
    br = (2.0 * half_sinc * half_sinc) * rotvec  # (..., 3) (1 − cos θ)/θ² · r
    c = torch.cos(theta)[..., 0]
    x, y, z = ar.unbind(-1)
    cos_and_skew = torch.stack([c, -z, y, z, c, -x, -y, x, c], dim=-1).unflatten(-1, (3, 3))
    return torch.addcmul(cos_and_skew, br[..., :, None], rotvec[..., None, :])  # + b r rᵀ


# Markley's variant of Shepperd's method (J. Guidance, Control, and Dynamics 31(2), 2008), as roma
# computes it: the candidates x⁽ⁱ⁾ = 4 q_i q (XYZW) are affine in R, so all 16 numbers are one product
# c + vec(R) T. Entry (constant, {flat index 3k + l of R_kl: coefficient}), row by row.
_MARKLEY = (
    (1, {0: 1, 4: -1, 8: -1}), (0, {1: 1, 3: 1}), (0, {2: 1, 6: 1}), (0, {7: 1, 5: -1}),
    (0, {1: 1, 3: 1}), (1, {4: 1, 8: -1, 0: -1}), (0, {5: 1, 7: 1}), (0, {2: 1, 6: -1}),
    (0, {2: 1, 6: 1}), (0, {5: 1, 7: 1}), (1, {8: 1, 0: -1, 4: -1}), (0, {3: 1, 1: -1}),
    (0, {7: 1, 5: -1}), (0, {2: 1, 6: -1}), (0, {3: 1, 1: -1}), (1, {0: 1, 4: 1, 8: 1}),
)  # fmt: skip


@functools.cache
def _markley_map(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(c (16,), T (9, 16)) of ``_MARKLEY``, made once per device and dtype (not a copy per call)."""
    c = torch.tensor([const for const, _ in _MARKLEY], dtype=dtype)
    T = torch.zeros(9, 16, dtype=dtype)
    for col, (_, terms) in enumerate(_MARKLEY):
        for row, coef in terms.items():
            T[row, col] = coef
    return c.to(device), T.to(device)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrix (..., 3, 3) -> axis-angle (..., 3) with angle in [0, π].

    Markley's quaternion: the candidate x⁽ⁱ⁾ ∝ q with the largest 4 q_i² (a gather), then
    r = 2·atan2(|v|, |w|)·sign(w)·v / (|x| sin(θ/2)) for x = (v, w) with roma's Taylor-safe
    inv_sinc, finite with its gradient at the identity; roma.rotmat_to_rotvec's numbers at half its cost.
    """
    _check_last(R, (3, 3), "R")
    c, T = _markley_map(R.device, R.dtype)
    with torch.autocast(R.device.type, enabled=False):  # a 16-bit product would lose the small angles
        X = torch.addmm(c, R.reshape(-1, 9), T).reshape(*R.shape[:-2], 4, 4)  # rows x⁽ⁱ⁾ = 4 q_i q
    diag = R.diagonal(dim1=-2, dim2=-1)  # (..., 3)
    tr = diag.sum(-1, keepdim=True)
    i = torch.cat([2.0 * diag - tr, tr], dim=-1).argmax(-1)  # argmax of 4 q_i² − 1
    x = torch.gather(X, -2, i[..., None, None].expand(*i.shape, 1, 4))[..., 0, :]  # (..., 4) ∝ q
    v, w = x[..., :3], x[..., 3]
    half = torch.atan2(torch.linalg.vector_norm(v, dim=-1), w.abs())  # θ/2 in [0, π/2]
    scale = 2.0 * roma.mappings.inv_sinc(half) * torch.where(w < 0, -1.0, 1.0)
    return (scale / torch.linalg.vector_norm(x, dim=-1))[..., None] * v


def matrix_to_6d(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrix (..., 3, 3) -> 6D (..., 6): first column then second column (Zhou et al. 2019)."""
    _check_last(R, (3, 3), "R")
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)  # (..., 6)


def rot6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """6D (..., 6) -> rotation matrix (..., 3, 3) by Gram-Schmidt (Zhou et al. 2019): a proper rotation
    for any non-collinear pair; the epsilon keeps a zero network output finite."""
    _check_last(d6, (6,), "d6")
    a, b = d6.unflatten(-1, (2, 3)).unbind(-2)  # (..., 3) each; unbind's backward is one stack
    x = a / torch.linalg.vector_norm(a, dim=-1, keepdim=True).clamp_min(1e-8)
    y = b - (x * b).sum(-1, keepdim=True) * x
    y = y / torch.linalg.vector_norm(y, dim=-1, keepdim=True).clamp_min(1e-8)
    return torch.stack((x, y, torch.linalg.cross(x, y, dim=-1)), dim=-1)  # columns x, y, x × y


def geodesic_angle(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """Angle (...) in [0, π] rad of R = R1ᵀR2 for (..., 3, 3) rotations: atan2(‖vee(R − Rᵀ)‖/2, (tr R − 1)/2).

    Unlike VPoser's acos of a clamped cosine, its gradient is finite at θ = 0 (the norm's subgradient
    is 0) and near π (x ≈ −1 in atan2's derivative); roma's asin form blows up as θ → π.
    """
    _check_last(R1, (3, 3), "R1")
    _check_last(R2, (3, 3), "R2")
    # Without forming R (rows p_k of R1, q_k of R2): vee(R − Rᵀ) = Σ_k q_k × p_k, tr R = Σ R1_ij R2_ij
    vee = torch.linalg.cross(R2, R1, dim=-1).sum(-2)  # (..., 3) = 2 sin θ · axis
    sin = 0.5 * torch.linalg.vector_norm(vee, dim=-1)
    cos = 0.5 * ((R1 * R2).sum((-2, -1)) - 1.0)
    return torch.atan2(sin, cos)


def geodesic_angle_axis_angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-joint geodesic angle between two axis-angle tensors (..., 3) -> (...), radians."""
    return geodesic_angle(axis_angle_to_matrix(a), axis_angle_to_matrix(b))


def mirror_axis_angle(rotvec: torch.Tensor) -> torch.Tensor:
    """Left <-> right hand per-joint axis-angle (..., 3): (x, y, z) -> (x, −y, −z), an involution."""
    _check_last(rotvec, (3,), "rotvec")
    # cat, not a multiply by a (1, −1, −1) constant that would be copied to the GPU on every call
    return torch.cat([rotvec[..., :1], -rotvec[..., 1:]], dim=-1)


def swap_and_mirror_hands(x: torch.Tensor) -> torch.Tensor:
    """The mirror-image person's pose: hands swapped and each mirrored, (B, 90) or (B, 30, 3) as given."""
    return mirror_axis_angle(to_hands(x).flip(1)).reshape(x.shape)
