"""Using a trained hand VAE as a pose prior (README "Using the prior"): ``api`` loads, scores, ranks,
denoises, samples and exports; ``one_hand`` scores one hand; ``fit`` fits poses to 3D keypoints."""

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

__all__ = ["EnergyFunction", "FitResult", "NotCalibratedError", "calibrate", "energy", "energy_one_hand",
           "export_energy", "fit_to_joints", "is_plausible", "load_prior", "log_prob", "log_prob_one_hand",
           "plausibility", "project_to_prior", "rank_hypotheses", "sample_poses"]  # fmt: skip
