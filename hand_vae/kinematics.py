"""Forward kinematics of the 15-joint axis-angle hand chain on the generic skeleton of ``anatomy``.

Used for pictures and as the default forward kinematics of fitting (``hand_vae.fit``). The
skeleton is ``anatomy``'s approximate adult hand, not MANO's template, and no MANO model file is
read: to fit real keypoints, pass a MANO layer to ``fit_to_joints`` instead (see the README).
Everything here is differentiable and runs on the input's device and dtype.

Keypoints (21 per hand, the usual hand-keypoint count, in MANO finger order):
  0 = wrist, then per finger (index, middle, pinky, ring, thumb) its three joints base -> tip and
  the fingertip, i.e. finger k occupies keypoints ``1 + 4k .. 4 + 4k``.

Chain: the wrist carries no rotation (no global orientation). Joint j of a finger sits at the end
of bone j-1 (joint 1 at the knuckle offset) and rotates everything distal to it; its world rotation
is ``R_1 @ ... @ R_j`` (each axis-angle is relative to its parent, docs/design.md §1), and bone j has rest
vector ``BONE_LENGTHS[f][j] * BONE_DIRECTION[f]``.

Left hand: ``anatomy`` defines the right hand; the left-hand axis-angle is the right's mirrored with
(x, y, z) -> (x, −y, −z) (docs/design.md §1). For a reflection M (det −1), ``M R(ω) M = R(−M ω)``, so that
per-joint mirror is exactly conjugation by M = diag(−1, 1, 1): the left hand's own skeleton is the
right one reflected x -> −x (fingers along −x), and ``fk(ω_L, left skeleton) = M fk(mirror ω_L,
right skeleton)`` (tested). For display, the left hand is then turned 180° about y (a rigid
rotation, so still the same left hand), giving fingers along +x like the right hand, palms facing
+y, thumb on the −z side; it is shifted by ``LEFT_HAND_OFFSET`` so the two hands sit side by side
with their thumbs towards each other.
"""

from __future__ import annotations

import numpy as np
import torch

from hand_vae import anatomy
from hand_vae.anatomy import JOINTS_PER_FINGER, NUM_KEYPOINTS, POINTS_PER_FINGER  # noqa: F401 (re-exported)
from hand_vae.rotations import JOINTS_PER_HAND, axis_angle_to_matrix, to_hands

KEYPOINT_NAMES: tuple[str, ...] = ("wrist",) + tuple(
    f"{f}{i}" if i <= JOINTS_PER_FINGER else f"{f}_tip" for f in anatomy.FINGERS for i in (1, 2, 3, 4)
)
# (parent, child) keypoint pairs: wrist -> knuckle -> joint 2 -> joint 3 -> tip for each finger.
BONES: tuple[tuple[int, int], ...] = tuple(
    (0 if i == 0 else 1 + POINTS_PER_FINGER * k + i - 1, 1 + POINTS_PER_FINGER * k + i)
    for k in range(len(anatomy.FINGERS))
    for i in range(POINTS_PER_FINGER)
)

# Reflection that relates a right hand to its mirror (conjugation by it maps ω to (x, −y, −z)).
MIRROR_X = np.diag([-1.0, 1.0, 1.0])
# Display rotation of the left hand: 180° about y, so its fingers point along +x like the right's.
LEFT_DISPLAY_ROTATION = np.diag([-1.0, 1.0, -1.0])
# Where the left wrist is drawn relative to the right wrist, metres: beside it on the +z side, so
# that both thumbs (right +z, left −z after the display rotation) point towards each other.
LEFT_HAND_OFFSET = np.array([0.0, 0.0, 0.22])


def _skeleton(mirror: bool) -> tuple[np.ndarray, np.ndarray]:
    """Knuckle offsets (5, 3) and bone rest vectors (5, 3, 3) in metres, right or mirrored (left)."""
    knuckles = np.stack([anatomy.KNUCKLE_OFFSETS[f] for f in anatomy.FINGERS])  # (5, 3)
    bones = np.stack(
        [np.outer(anatomy.BONE_LENGTHS[f], anatomy.BONE_DIRECTION[f]) for f in anatomy.FINGERS]
    )  # (5, 3 bones, 3)
    if mirror:
        knuckles, bones = knuckles @ MIRROR_X.T, bones @ MIRROR_X.T
    return knuckles, bones


def template_keypoints(mirror: bool = False) -> np.ndarray:
    """Rest-pose (all-zero axis-angle) keypoints of one hand in its own frame.

    Args:
        mirror: False for the right hand, True for the left hand's own (x -> −x reflected) frame.

    Returns:
        (21, 3) metres, keypoint order as in ``KEYPOINT_NAMES``.
    """
    knuckles, bones = _skeleton(mirror)
    joints = knuckles[:, None, :] + np.concatenate([np.zeros((5, 1, 3)), np.cumsum(bones, axis=1)], axis=1)
    return np.concatenate([np.zeros((1, 3)), joints.reshape(-1, 3)])  # (21, 3)


def one_hand_fk(rotvec: torch.Tensor, mirror: bool = False) -> torch.Tensor:
    """Forward kinematics of one hand in its own frame (wrist at the origin, no global rotation).

    Args:
        rotvec: (B, 15, 3) axis-angle in radians, MANO joint order, each relative to its parent.
        mirror: False = right-hand skeleton; True = the left hand's skeleton (right reflected x -> −x).

    Returns:
        (B, 21, 3) keypoints in metres, order as in ``KEYPOINT_NAMES``.

    Raises:
        ValueError: if rotvec is not (B, 15, 3).
    """
    if rotvec.dim() != 3 or rotvec.shape[1:] != (JOINTS_PER_HAND, 3):
        raise ValueError(f"rotvec must be (B, {JOINTS_PER_HAND}, 3), got {tuple(rotvec.shape)}")
    B, F = rotvec.shape[0], len(anatomy.FINGERS)
    knuckles_np, bones_np = _skeleton(mirror)
    knuckles = torch.as_tensor(knuckles_np, dtype=rotvec.dtype, device=rotvec.device)  # (F, 3)
    bones = torch.as_tensor(bones_np, dtype=rotvec.dtype, device=rotvec.device)  # (F, 3, 3)
    R = axis_angle_to_matrix(rotvec).reshape(B, F, JOINTS_PER_FINGER, 3, 3)  # (B, F, 3, 3, 3)
    world = R[:, :, 0]  # (B, F, 3, 3) world rotation of joint 1
    point = knuckles.expand(B, F, 3)  # (B, F, 3) joint 1 position
    points = [point]
    for j in range(JOINTS_PER_FINGER):
        if j > 0:
            world = world @ R[:, :, j]  # child rotation composes on the right of its parent's
        point = point + (world @ bones[:, j, :, None]).squeeze(-1)  # (B, F, 3) next joint / tip
        points.append(point)
    fingers = torch.stack(points, dim=2)  # (B, F, 4, 3)
    wrist = rotvec.new_zeros(B, 1, 3)
    return torch.cat([wrist, fingers.reshape(B, F * POINTS_PER_FINGER, 3)], dim=1)  # (B, 21, 3)


def hands_fk(pose: torch.Tensor) -> torch.Tensor:
    """Both hands' keypoints, each in its own frame (wrist at the origin, no global rotation).

    The default forward kinematics of fitting: the left hand uses its own mirrored skeleton (see
    the module docstring), so a left and a right hand in mirrored poses give mirror-image keypoints.

    Args:
        pose: (B, 90) ``[left 45 | right 45]`` or (B, 30, 3) axis-angle, radians.

    Returns:
        (B, 2, 21, 3) keypoints in metres, hand 0 = left; differentiable in ``pose``.
    """
    hands = to_hands(pose)  # (B, 2, 15, 3)
    return torch.stack([one_hand_fk(hands[:, 0], mirror=True), one_hand_fk(hands[:, 1], mirror=False)], dim=1)


def hand_joint_positions(pose: torch.Tensor | np.ndarray) -> np.ndarray:
    """Both hands' keypoints in one display frame, for stick-figure plots.

    Args:
        pose: (B, 90) ``[left 45 | right 45]`` or (B, 30, 3) axis-angle in radians, torch or numpy.

    Returns:
        (B, 2, 21, 3) float64 numpy keypoints in metres; hand 0 = left, 1 = right. The right wrist
        is at the origin (fingers +x, palm facing +y, thumb +z); the left hand is its mirror image,
        turned to point along +x too and placed at ``LEFT_HAND_OFFSET`` (see the module docstring).

    Raises:
        ValueError: for any other shape.
    """
    x = torch.as_tensor(pose).detach().to("cpu", torch.float64)
    hands = to_hands(x)  # (B, 2, 15, 3), raises ValueError for a bad shape
    left = one_hand_fk(hands[:, 0], mirror=True).numpy()  # (B, 21, 3) left hand's own frame
    right = one_hand_fk(hands[:, 1], mirror=False).numpy()  # (B, 21, 3)
    left = left @ LEFT_DISPLAY_ROTATION.T + LEFT_HAND_OFFSET
    return np.stack([left, right], axis=1)  # (B, NUM_HANDS = 2, 21, 3)
