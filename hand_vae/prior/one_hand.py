"""Scoring one hand with the two-hand prior: the absent hand is marginalised out.

The VAE models p(x_L, x_R) = ∫ p(x_L, x_R | z) p(z) dz. With only one hand x_s observed, the
score we want is the marginal

    p(x_s) = ∫ p(x_s | z) p(z) dz,   p(x_s | z) = ∫ p(x_L, x_R | z) dx_other,

and both integrals are handled separately:

* **Over the absent hand, exactly.** Each model gives p(x_s | z) in closed form through
  ``model.side_log_likelihood(x_side, side, params)``: for the standard (Gaussian) decoder the
  marginal of a Gaussian is its block (mean block and covariance block, whatever the
  parametrisation: diagonal, low rank + diagonal, whitened); for the SO(3) decoder, the side's
  45×45 block of the tangent-residual covariance L diag(σ²) Lᵀ.
* **Over z, by importance sampling** with the proposal q(z | x̃), the encoder fed a stand-in
  two-hand pose x̃: the present hand plus its mirror image as the absent hand (mirroring,
  (x, y, z) -> (x, −y, −z) per joint, maps a left pose onto a right one; hands often move alike).

``log_prob_one_hand`` is ``log 1/K Σ_k p(x_s|z_k) p(z_k) / q(z_k|x̃)``, z_k ~ q(z|x̃). The average
inside the log is an unbiased estimate of p(x_s) for any proposal that covers the posterior
(E_q[p(x_s|z) p(z)/q(z)] = p(x_s)); its log is biased low by about Var(w)/(2K E[w]²) (Jensen)
and converges to log p(x_s) as K grows. The variance trade-off is the proposal's: q(z|x̃) is
sharp, so when the absent hand really resembles the mirrored present one (bimanual, symmetric
grasps) few samples suffice, but when the hands differ it can sit away from p(z|x_s), the weights
spread, and more samples are needed (the prior N(0, I) as proposal is never far off but needs
many samples in a large latent space). ``energy_one_hand`` is the cheap deterministic score in
the image of ``energy``: the negative ELBO with the same proposal evaluated at its mean,
``−log p(x_s | z = μ(x̃)) + KL(q(z|x̃) ‖ p(z))``, differentiable in x_s.
"""

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
    """Two-hand stand-in: the present hand plus its mirror as the absent one.

    Args:
        x: (B, 45) axis-angle of the present hand, radians.
        side: which hand it is, "left" or "right".

    Returns:
        (B, 90) ``[left 45 | right 45]``.
    """
    B = x.shape[0]
    mirrored = mirror_axis_angle(x.reshape(B, JOINTS_PER_HAND, 3)).reshape(B, HAND_DIM)
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
    """One-hand energy: −ELBO of p(x_s) at the stand-in proposal's mean, nats (lower = better).

    ``−log p(x_s | z = μ(x̃)) + KL(q(z|x̃) ‖ N(0, I))`` with x̃ = the present hand plus its mirror
    (see the module docstring). Deterministic (eval mode) and differentiable in ``pose45``; the
    absent hand is integrated out exactly in p(x_s | z).

    Args:
        prior: a hand VAE (``load_prior``) or a ``HandVAELightningModule``.
        pose45: (B, 45), (B, 15, 3) or one hand (45,) / (15, 3): axis-angle, radians, MANO order;
            a tensor of any float dtype and device, or a numpy array.
        side: "left" or "right".

    Returns:
        (B,) nats on the input's device.
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
    """Importance-sampled log p(x_s) of one hand, the other marginalised out.

    ``log 1/K Σ_k p(x_s|z_k) p(z_k) / q(z_k|x̃)`` with z_k ~ q(z|x̃), x̃ = the present hand plus
    its mirror. Unbiased for p(x_s) inside the log, consistent for log p(x_s) (biased low by about
    Var(w)/(2K E[w]²)); see the module docstring for the proposal's variance trade-off. Samples are
    drawn ``chunk_size`` at a time with a running logsumexp, so memory is O(B · chunk_size).

    Args:
        prior: a hand VAE (``load_prior``) or a ``HandVAELightningModule``.
        pose45: as for ``energy_one_hand``.
        side: "left" or "right".
        num_samples: K (>= 1).
        chunk_size: samples per chunk.
        generator: a ``torch.Generator`` on the model's device, for reproducible estimates.

    Returns:
        (B,) float32 nats (a log-density, higher = more plausible), on the input's device.
    """
    vae, x, back = _inputs(prior, pose45, side)
    if num_samples < 1 or chunk_size < 1:
        raise ValueError(f"num_samples and chunk_size must be >= 1, got {num_samples}, {chunk_size}")
    mu, logvar = vae.encode(stand_in(x, side))
    B, Z = mu.shape
    std = torch.exp(0.5 * logvar)
    total = torch.full((B,), -math.inf, device=mu.device, dtype=torch.float64)
    done = 0
    while done < num_samples:
        k = min(chunk_size, num_samples - done)
        eps = torch.randn((k, B, Z), generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + std * eps  # (k, B, Z)
        params = vae.decode_params(z.reshape(k * B, Z))
        rep = x.unsqueeze(0).expand(k, B, HAND_DIM).reshape(k * B, HAND_DIM)
        log_px_z = vae.side_log_likelihood(rep, side, params).reshape(k, B)
        # log p(z) − log q(z|x̃); the ½ log 2π terms cancel.
        log_w = log_px_z - 0.5 * z.square().sum(-1) + 0.5 * (eps.square() + logvar).sum(-1)
        total = torch.logaddexp(total, torch.logsumexp(log_w.double(), dim=0))
        done += k
    return back((total - math.log(num_samples)).float())
