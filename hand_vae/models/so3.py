"""SO(3) VAE: the encoder sees rotations in 6D form, the decoder emits a rotation per joint."""

from __future__ import annotations

import math

import torch
from torch import nn

from hand_vae.losses import geodesic_nll
from hand_vae.models.base import BaseHandVAE, VAEConfig, floored_log_sigma, mlp
from hand_vae.rotations import (
    NUM_JOINTS,
    POSE_DIM,
    axis_angle_to_6d,
    axis_angle_to_matrix,
    geodesic_angle,
    matrix_to_axis_angle,
    rot6d_to_matrix,
)

D6 = 6


class SO3HandVAE(BaseHandVAE):
    """p(R|z): per joint, an isotropic tangent-space Gaussian around the decoded rotation.

    The encoder input is the continuous 6D form of each joint's rotation (Zhou et al. 2019), so
    2π-equivalent axis-angle inputs encode identically. The decoder emits 6D per joint, mapped
    to a rotation by Gram-Schmidt. The likelihood uses the geodesic angle θ_j between input and
    decoded rotation, with a learned σ_j per joint in radians (see ``losses.geodesic_nll``).
    """

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__(cfg, encoder_in=NUM_JOINTS * D6)
        self.decoder = mlp(cfg.z_dim, cfg.hidden, NUM_JOINTS * D6, cfg.num_layers, cfg.dropout)
        self.raw_log_sigma = nn.Parameter(torch.full((NUM_JOINTS,), math.log(0.2)))

    @property
    def log_sigma(self) -> torch.Tensor:
        """(30,) log σ per joint (radians), floor included."""
        return floored_log_sigma(self.raw_log_sigma, self.cfg.min_sigma)

    def encoder_input(self, joints: torch.Tensor) -> torch.Tensor:
        B = joints.shape[0]
        return axis_angle_to_6d(joints).reshape(B, NUM_JOINTS * D6)  # (B, 180)

    def decode_params(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, Z) -> decoded rotations (B, 30, 3, 3)."""
        B = z.shape[0]
        d6 = self.decoder(z).float().reshape(B, NUM_JOINTS, D6)  # (B, 30, 6)
        return rot6d_to_matrix(d6)  # (B, 30, 3, 3)

    def decode_matrices(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, Z) -> (B, 30, 3, 3) rotation matrices."""
        return self.decode_params(z)

    def recon_nll(self, joints: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        angle = geodesic_angle(axis_angle_to_matrix(joints.float()), params)  # (B, 30)
        return geodesic_nll(angle, self.log_sigma)

    def params_to_pose(self, params: torch.Tensor) -> torch.Tensor:
        B = params.shape[0]
        return matrix_to_axis_angle(params).reshape(B, POSE_DIM)

    def side_log_likelihood(self, x_side: torch.Tensor, side: str, params: torch.Tensor) -> torch.Tensor:
        """log p(x_side | z) of one hand ("left"/"right", (B, 45)), the other integrated out: (B,) nats.

        Exact: the per-joint likelihood is independent across joints, so the side's joints alone.
        """
        B, J = x_side.shape[0], NUM_JOINTS // 2
        s = slice(0, J) if side == "left" else slice(J, NUM_JOINTS)
        angle = geodesic_angle(axis_angle_to_matrix(x_side.reshape(B, J, 3).float()), params[:, s])  # (B, 15)
        return -geodesic_nll(angle, self.log_sigma[s])
