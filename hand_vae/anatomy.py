"""Pose layout and an approximate adult hand (not MANO's template) for synthetic data and pictures.

Right-hand frame (about MANO's): fingers along +x, palm facing +y, thumb on +z; the left hand is the
mirror image, (x, y, z) -> (x, −y, −z) per joint (docs/design.md §1). No torch here (fast --help).
"""

from __future__ import annotations

import numpy as np

# Two-hand pose layout: (B, 90) = [left 45 | right 45], or (B, 30, 3) (docs/design.md §1).
NUM_HANDS = 2
JOINTS_PER_HAND = 15
NUM_JOINTS = NUM_HANDS * JOINTS_PER_HAND  # 30
HAND_DIM = JOINTS_PER_HAND * 3  # 45
POSE_DIM = NUM_JOINTS * 3  # 90

ACCEPTED_SHAPES = f"(B, {POSE_DIM}) or (B, {NUM_JOINTS}, 3)"
# Where the two hands sit in the full-body pose vectors users bring (AMASS stores both).
BODY_HAND_SLICES = {156: ("SMPL+H", 66, 156), 165: ("SMPL-X", 75, 165)}


def pose_shape_hint(shape: tuple[int, ...]) -> str:
    """What to do with a pose array of the wrong ``shape``, e.g. (B, 156) ("" if no idea)."""
    last = shape[-1] if shape else None
    if last in BODY_HAND_SLICES:
        body, a, b = BODY_HAND_SLICES[last]
        return f"; a full {body} body pose? its hands are [:, {a}:{b}]"
    if last == HAND_DIM:
        return "; one hand (45 numbers)? use energy_one_hand / log_prob_one_hand with side='left' or 'right'"
    return ""


# MANO joint order inside one hand (15 joints, 3 per finger, base -> tip).
FINGERS = ("index", "middle", "pinky", "ring", "thumb")
JOINT_NAMES = tuple(f"{f}{i}" for f in FINGERS for i in (1, 2, 3))
FINGER_JOINTS = {f: (3 * k, 3 * k + 1, 3 * k + 2) for k, f in enumerate(FINGERS)}
JOINTS_PER_FINGER = 3
POINTS_PER_FINGER = JOINTS_PER_FINGER + 1  # three joints + the fingertip
NUM_KEYPOINTS = 1 + len(FINGERS) * POINTS_PER_FINGER  # 21: the wrist + 4 points per finger

# Rotation axes in the right hand's frame (unit vectors).
FLEX_AXIS = np.array([0.0, 0.0, 1.0])  # curls a finger along +x towards the palm (+y)
SPREAD_AXIS = np.array([0.0, 1.0, 0.0])  # positive = away from the thumb (towards −z)
THUMB_FLEX_AXIS = np.array([-1.0, 0.0, 1.0]) / np.sqrt(2.0)  # curls the thumb towards the palm
THUMB_OPPOSITION_AXIS = np.array([-1.0, 0.0, 0.0])  # swings the thumb in front of the palm

# Signed spread direction per non-thumb finger: index spreads towards the thumb.
SPREAD_SIGN = {"index": -0.25, "middle": 0.0, "ring": 0.2, "pinky": 0.4}

# Right-hand skeleton for forward kinematics, metres. Knuckle (joint 1) positions relative to
# the wrist, and the bone length after each of the three joints of a finger (approximate).
KNUCKLE_OFFSETS = {
    "index": np.array([0.095, 0.0, 0.025]),
    "middle": np.array([0.095, 0.0, 0.0]),
    "ring": np.array([0.088, 0.0, -0.022]),
    "pinky": np.array([0.080, 0.0, -0.042]),
    "thumb": np.array([0.025, 0.005, 0.030]),
}
BONE_LENGTHS = {
    "index": (0.040, 0.025, 0.022),
    "middle": (0.045, 0.028, 0.024),
    "ring": (0.042, 0.027, 0.023),
    "pinky": (0.033, 0.020, 0.019),
    "thumb": (0.040, 0.032, 0.027),
}
# Rest direction of each finger's bones (right hand): +x, the thumb's towards +x+z.
BONE_DIRECTION = {f: np.array([1.0, 0.0, 0.0]) for f in FINGERS} | {
    "thumb": np.array([1.0, 0.0, 1.0]) / np.sqrt(2.0)
}
