"""Rotation maths and two-hand pose layouts.

Conventions:
  * Axis-angle ("rotation vector") in radians, one per joint, relative to the parent joint.
  * Rotation matrices act on column vectors: ``v' = R @ v``.
  * 6D representation (Zhou et al., "On the Continuity of Rotation Representations in Neural
    Networks", CVPR 2019): the first two **columns** of R, stored as ``[c0 | c1]`` in a
    ``(..., 6)`` tensor.
  * One hand = 15 joints in MANO order (index1-3, middle1-3, pinky1-3, ring1-3, thumb1-3).
  * Two hands = ``(B, 90)`` flat ``[left 45 | right 45]``, or ``(B, 30, 3)`` with joints 0-14 left
    and 15-29 right, or ``(B, 2, 15, 3)`` with hand 0 = left.

All functions are pure and work on arbitrary leading batch dimensions. They are tested against
scipy and against ``roma`` (whose conversions they match to float rounding) in ``tests/``. The
ones on the training path (axis-angle -> matrix, 6D -> matrix, geodesic angle) are written with
few, whole-tensor kernels and no per-element indexing, whose backward would allocate and sum one
full-size gradient per index.
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


# --------------------------------------------------------------------------- layouts


def to_joints(x: torch.Tensor) -> torch.Tensor:
    """Any accepted two-hand pose layout -> per-joint axis-angle.

    Args:
        x: (B, 90) flat ``[left 45 | right 45]`` or (B, 30, 3).

    Returns:
        (B, 30, 3) axis-angle, joints 0-14 left, 15-29 right (a view when possible).

    Raises:
        ValueError: for any other shape.
    """
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


# --------------------------------------------------------------------------- conversions


_SMALL_ANGLE = 1e-6  # rad; below it sin θ/θ and (1 − cos θ)/θ² are their limits to float precision


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3) -> rotation matrix (..., 3, 3), by Rodrigues' formula.

    ``R = cos θ I + (sin θ/θ) [r]× + ((1 − cos θ)/θ²) r rᵀ`` for r = θ·axis, with
    ``(1 − cos θ)/θ² = 2 sin²(θ/2)/θ²`` (no cancellation for small θ). θ is clamped to 1e-6 rad
    inside the two ratios, which are then at their limits 1 and 1/2, so the map and its gradient
    are finite at the zero rotation (the norm's subgradient there is 0).
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


# Markley's variant of Shepperd's method (F. L. Markley, "Unit quaternion from rotation matrix",
# J. Guidance, Control, and Dynamics 31(2), 2008), as roma computes it: the four candidate vectors
# x⁽ⁱ⁾ = 4 q_i q (XYZW) are affine in the entries of R, so all 16 numbers are one matrix product
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

    The quaternion is Markley's: of the four candidates x⁽ⁱ⁾ ∝ q, the one with the largest 4 q_i²
    (no data-dependent indexing: a gather). Then r = 2·atan2(|v|, |w|)·sign(w)·v / (|x| sin(θ/2))
    for x = (v, w), with roma's Taylor-safe θ/2 / sin(θ/2), so the map and its gradient are finite
    at the identity. Same numbers as ``roma.rotmat_to_rotvec``, at half its cost.
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
    """6D (..., 6) -> rotation matrix (..., 3, 3) by Gram-Schmidt (Zhou et al. 2019).

    Any input whose two 3-vectors are not collinear gives a proper rotation (det = +1, RᵀR = I).
    The epsilon keeps the normalisation finite for a degenerate (zero) network output.
    """
    _check_last(d6, (6,), "d6")
    a, b = d6.unflatten(-1, (2, 3)).unbind(-2)  # (..., 3) each; unbind's backward is one stack
    x = a / torch.linalg.vector_norm(a, dim=-1, keepdim=True).clamp_min(1e-8)
    y = b - (x * b).sum(-1, keepdim=True) * x
    y = y / torch.linalg.vector_norm(y, dim=-1, keepdim=True).clamp_min(1e-8)
    return torch.stack((x, y, torch.linalg.cross(x, y, dim=-1)), dim=-1)  # columns x, y, x × y


def axis_angle_to_6d(rotvec: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3) -> 6D (..., 6)."""
    return matrix_to_6d(axis_angle_to_matrix(rotvec))


def geodesic_angle(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """Angle of the relative rotation R1ᵀR2, in radians in [0, π].

    Uses ``θ = atan2(‖vee(R − Rᵀ)‖ / 2, (tr R − 1) / 2)`` with ``R = R1ᵀR2``. Unlike
    ``acos(clamp(cos θ, −1, 1))`` (VPoser) its gradient is finite at θ = 0 (the norm's subgradient
    there is 0) and near π (d atan2 = (x dy − y dx)/(x² + y²) with x ≈ −1). roma's
    ``rotmat_geodesic_distance`` uses asin, whose gradient blows up as θ → π, so we do not use it.

    Args:
        R1, R2: (..., 3, 3) rotation matrices.

    Returns:
        (...) angles in radians.
    """
    _check_last(R1, (3, 3), "R1")
    _check_last(R2, (3, 3), "R2")
    # Without forming R: with rows p_k of R1 and q_k of R2, vee(R − Rᵀ) = Σ_k q_k × p_k and
    # tr R = Σ_ij R1_ij R2_ij; a few whole-tensor kernels instead of a batched 3×3 matmul and nine
    # element reads (each of which costs a full-size gradient buffer in backward).
    vee = torch.linalg.cross(R2, R1, dim=-1).sum(-2)  # (..., 3) = 2 sin θ · axis
    sin = 0.5 * torch.linalg.vector_norm(vee, dim=-1)
    cos = 0.5 * ((R1 * R2).sum((-2, -1)) - 1.0)
    return torch.atan2(sin, cos)


def geodesic_angle_axis_angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-joint geodesic angle between two axis-angle tensors (..., 3) -> (...), radians."""
    return geodesic_angle(axis_angle_to_matrix(a), axis_angle_to_matrix(b))


# --------------------------------------------------------------------------- mirroring


def mirror_axis_angle(rotvec: torch.Tensor) -> torch.Tensor:
    """Mirror per-joint axis-angle through the hand's sagittal (y-z) plane: (x, y, z) -> (x, −y, −z).

    This maps a left-hand pose onto the equivalent right-hand pose and back (MANO
    convention). It is an involution.

    Args:
        rotvec: (..., 3).
    """
    _check_last(rotvec, (3,), "rotvec")
    # cat rather than a multiply by a (1, −1, −1) constant: building that constant from Python
    # data would copy it to the GPU on every call.
    return torch.cat([rotvec[..., :1], -rotvec[..., 1:]], dim=-1)


def swap_and_mirror_hands(x: torch.Tensor) -> torch.Tensor:
    """Swap left and right hands and mirror each, keeping the input layout.

    The result is the pose of the mirror-image person: a valid two-hand pose whenever x is.

    Args:
        x: (B, 90) or (B, 30, 3).

    Returns:
        Same shape as x.
    """
    hands = to_hands(x)  # (B, 2, 15, 3)
    out = mirror_axis_angle(hands.flip(1))
    return out.reshape(x.shape)
