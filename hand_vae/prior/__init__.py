"""Using a trained hand VAE as a pose prior: the public API (README "Using the prior").

    from hand_vae.prior import load_prior, energy, plausibility, fit_to_joints, ...

``api`` loads, scores, ranks, denoises, samples and exports; ``one_hand`` scores one hand with the
other marginalised out; ``fit`` fits poses to 3D keypoints. Every function takes what users hold:
numpy arrays or tensors of any float dtype on any device, (B, 90), (B, 30, 3) or one pose.
"""

from __future__ import annotations

from hand_vae.models.quantiles import NotCalibratedError, calibrate
from hand_vae.prior.api import (
    EnergyFunction,
    energy,
    export_energy,
    is_plausible,
    load_prior,
    log_prob,
    plausibility,
    project_to_prior,
    rank_hypotheses,
    sample_poses,
)
from hand_vae.prior.fit import FitResult, fit_to_joints
from hand_vae.prior.one_hand import energy_one_hand, log_prob_one_hand

__all__ = [
    "EnergyFunction",
    "FitResult",
    "NotCalibratedError",
    "calibrate",
    "energy",
    "energy_one_hand",
    "export_energy",
    "fit_to_joints",
    "is_plausible",
    "load_prior",
    "log_prob",
    "log_prob_one_hand",
    "plausibility",
    "project_to_prior",
    "rank_hypotheses",
    "sample_poses",
]
