"""Forward kinematics of the 15-joint hand chain on ``anatomy``'s generic skeleton (docs/design.md §1).

Pictures and the default forward kinematics of fitting (real keypoints need a MANO layer passed to
``fit_to_joints``, see the README). 21 keypoints per hand: wrist, then finger k at ``1 + 4k .. 4 + 4k``
(three joints base -> tip, then the tip). Differentiable, on the input's device and dtype.
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

MIRROR_X = np.diag([-1.0, 1.0, 1.0])  # conjugation by it maps ω to (x, −y, −z): right <-> left hand
LEFT_DISPLAY_ROTATION = np.diag([-1.0, 1.0, -1.0])  # 180° about y: the left fingers along +x too
LEFT_HAND_OFFSET = np.array([0.0, 0.0, 0.22])  # left wrist beside the right (+z), thumbs facing, metres


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
    """Rest-pose keypoints (21, 3) in metres of the right hand, or with ``mirror`` the left in its own
    (x -> −x reflected) frame."""
    knuckles, bones = _skeleton(mirror)
    joints = knuckles[:, None, :] + np.concatenate([np.zeros((5, 1, 3)), np.cumsum(bones, axis=1)], axis=1)
    return np.concatenate([np.zeros((1, 3)), joints.reshape(-1, 3)])  # (21, 3)


def one_hand_fk(rotvec: torch.Tensor, mirror: bool = False) -> torch.Tensor:
    """Keypoints (B, 21, 3) in metres of one hand in its own frame (wrist at the origin) from (B, 15, 3)
    axis-angle; ``mirror`` uses the left hand's skeleton (the right reflected x -> −x)."""
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
    """Both hands' keypoints (B, 2, 21, 3) in metres, each in its own frame, hand 0 = left, from a
    (B, 90) or (B, 30, 3) pose: the default forward kinematics of fitting (mirrored poses give
    mirror-image keypoints)."""
    hands = to_hands(pose)  # (B, 2, 15, 3)
    return torch.stack([one_hand_fk(hands[:, 0], mirror=True), one_hand_fk(hands[:, 1], mirror=False)], dim=1)


def hand_joint_positions(pose: torch.Tensor | np.ndarray) -> np.ndarray:
    """Both hands' keypoints (B, 2, 21, 3), float64 numpy metres, in one display frame for stick figures.

    ``pose``: (B, 90) or (B, 30, 3), torch or numpy. The right wrist is at the origin (fingers +x,
    palm +y, thumb +z); the left hand is turned to +x too and placed at ``LEFT_HAND_OFFSET``.
    """
    kp = hands_fk(torch.as_tensor(pose).detach().to("cpu", torch.float64)).numpy()  # (B, 2, 21, 3)
    kp[:, 0] = kp[:, 0] @ LEFT_DISPLAY_ROTATION.T + LEFT_HAND_OFFSET
    return kp
