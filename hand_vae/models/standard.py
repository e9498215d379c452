"""Standard VAE: a diagonal Gaussian likelihood on the flat (B, 90) axis-angle vector."""

from __future__ import annotations

import math

import torch
from torch import nn

from hand_vae.losses import gaussian_nll
from hand_vae.models.base import BaseHandVAE, VAEConfig, floored_log_sigma, mlp
from hand_vae.rotations import POSE_DIM


class StandardHandVAE(BaseHandVAE):
    """p(x|z) = N(decoder(z), diag σ²) on the 90 axis-angle numbers, σ learned per dimension.

    σ has a smooth floor ``cfg.min_sigma`` (radians): σ = min_sigma + exp(raw).
    """

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__(cfg, encoder_in=POSE_DIM)
        self.decoder = mlp(cfg.z_dim, cfg.hidden, POSE_DIM, cfg.num_layers, cfg.dropout)
        # Start at σ ≈ 0.1 rad, the scale of pose noise we care about.
        self.raw_log_sigma = nn.Parameter(torch.full((POSE_DIM,), math.log(0.1)))

    @property
    def log_sigma(self) -> torch.Tensor:
        """(90,) log σ of the likelihood, floor included."""
        return floored_log_sigma(self.raw_log_sigma, self.cfg.min_sigma)

    def encoder_input(self, joints: torch.Tensor) -> torch.Tensor:
        B = joints.shape[0]
        return joints.reshape(B, POSE_DIM)  # (B, 90)

    def decode_params(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).float()  # (B, 90) mean; losses in fp32 under autocast

    def recon_nll(self, joints: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        B = joints.shape[0]
        return gaussian_nll(joints.reshape(B, POSE_DIM).float(), params, self.log_sigma)

    def params_to_pose(self, params: torch.Tensor) -> torch.Tensor:
        return params
