"""Pictures of a hand pose prior: forward kinematics, pure figure functions, a Lightning callback.

``figures`` imports no Lightning (forward kinematics: ``hand_vae.kinematics``); the callback lives in ``hand_vae.viz.callback``.
"""

from hand_vae.kinematics import KEYPOINT_NAMES, hand_joint_positions
from hand_vae.viz.figures import (
    ACTIVE_UNIT_THRESHOLD,
    beta_sensitivity,
    energy_histogram,
    hand_skeletons,
    latent_scatter,
    loss_breakdown,
    per_joint_geodesic_error,
    save_figure,
)

__all__ = [
    "ACTIVE_UNIT_THRESHOLD",
    "KEYPOINT_NAMES",
    "beta_sensitivity",
    "energy_histogram",
    "hand_joint_positions",
    "hand_skeletons",
    "latent_scatter",
    "loss_breakdown",
    "per_joint_geodesic_error",
    "save_figure",
]
