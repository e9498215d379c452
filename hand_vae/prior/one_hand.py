"""One hand scored with the two-hand prior, the other marginalised out (docs/design.md §9): p(x_s | z) is exact
(``model.side_log_likelihood``); z is importance-sampled from q(z | x̃), x̃ = the hand plus its mirror image."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from hand_vae.losses import kl_per_dim
from hand_vae.models import BaseHandVAE
from hand_vae.models.base import as_pose_batch
from hand_vae.prior.api import as_vae
from hand_vae.rotations import HAND_DIM, JOINTS_PER_HAND, mirror_axis_angle

SIDES = ("left", "right")


def stand_in(x: torch.Tensor, side: str) -> torch.Tensor:
    """(B, 45) hand of ``side`` -> (B, 90) ``[left 45 | right 45]`` with its mirror as the other hand."""
    mirrored = mirror_axis_angle(x.reshape(-1, JOINTS_PER_HAND, 3)).reshape(-1, HAND_DIM)
    return torch.cat([x, mirrored] if side == "left" else [mirrored, x], dim=1)


def _inputs(
    prior: nn.Module, pose45: torch.Tensor | np.ndarray, side: str
) -> tuple[BaseHandVAE, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """-> the VAE, the hand as (B, 45) on its device and dtype, and the way back for a result."""
    if side not in SIDES:
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    vae = as_vae(prior)
    x, back = as_pose_batch(pose45, next(vae.parameters()), dim=HAND_DIM, name="one-hand pose")
    return vae, x, back


def energy_one_hand(prior: nn.Module, pose45: torch.Tensor | np.ndarray, side: str) -> torch.Tensor:
    """``−log p(x_s | z = μ(x̃)) + KL(q(z|x̃) ‖ N(0, I))``: (B,) nats, deterministic, differentiable.

    ``prior``: a hand VAE (``load_prior``) or a ``HandVAELightningModule``; ``pose45``: the ``side``
    ("left" or "right") hand, (B, 45), (B, 15, 3) or one hand, axis-angle radians (numpy or any tensor).
    """
    vae, x, back = _inputs(prior, pose45, side)
    mu, logvar = vae.encode(stand_in(x, side))
    return back(-vae.side_log_likelihood(x, side, vae.decode_params(mu)) + kl_per_dim(mu, logvar).sum(-1))


@torch.no_grad()
def log_prob_one_hand(
    prior: nn.Module,
    pose45: torch.Tensor | np.ndarray,
    side: str,
    num_samples: int = 100,
    chunk_size: int = 128,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``log 1/K Σ_k p(x_s|z_k) p(z_k) / q(z_k|x̃)``, z_k ~ q(z|x̃): (B,) nats, consistent in K.

    Inputs as for ``energy_one_hand``; K = ``num_samples``, drawn ``chunk_size`` at a time (memory
    O(B · chunk_size)); ``generator`` on the model's device makes it reproducible.
    """
    vae, x, back = _inputs(prior, pose45, side)
    if num_samples < 1 or chunk_size < 1:
        raise ValueError(f"num_samples and chunk_size must be >= 1, got {num_samples}, {chunk_size}")
    mu, logvar = vae.encode(stand_in(x, side))
    B, Z = mu.shape
    std = torch.exp(0.5 * logvar)
    total = torch.full((B,), -math.inf, device=mu.device, dtype=torch.float64)
    for done in range(0, num_samples, chunk_size):
        k = min(chunk_size, num_samples - done)
        eps = torch.randn((k, B, Z), generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + std * eps  # (k, B, Z)
        rep = x.expand(k, B, HAND_DIM).reshape(k * B, HAND_DIM)
        log_px_z = vae.side_log_likelihood(rep, side, vae.decode_params(z.reshape(k * B, Z))).reshape(k, B)
        # log p(z) − log q(z|x̃); the ½ log 2π terms cancel.
        log_w = log_px_z - 0.5 * z.square().sum(-1) + 0.5 * (eps.square() + logvar).sum(-1)
        total = torch.logaddexp(total, torch.logsumexp(log_w.double(), dim=0))
    return back((total - math.log(num_samples)).float())
