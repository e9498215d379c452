"""Likelihoods, KL divergence, free bits and the β warm-up schedule.

Everything is in nats. Per-sample terms keep the batch dimension so that callers decide how to
reduce (training averages; ``energy`` keeps one value per pose).
"""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2.0 * math.pi)
ACTIVE_UNIT_NATS = 0.01  # a latent dimension with mean KL above this is "active" (in use)


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """Negative log-density of a diagonal Gaussian, summed over the last dimension.

    ``nll = Σ_d [(x_d − μ_d)² / (2σ_d²) + log σ_d + ½ log 2π]``.

    Args:
        x: (B, D) observations.
        mean: (B, D) decoder means.
        log_sigma: (D,) or (B, D) log standard deviations.

    Returns:
        (B,) nats.
    """
    z = (x - mean) * torch.exp(-log_sigma)
    return (0.5 * z.square() + log_sigma).sum(-1) + 0.5 * LOG_2PI * x.shape[-1]


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Analytic KL(N(mu, exp(logvar)) ‖ N(0, 1)) per latent dimension.

    See Appendix B of Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014:
    ``KL = ½ (mu² + σ² − 1 − log σ²)``.

    Args:
        mu: (B, Z) posterior means.
        logvar: (B, Z) posterior log variances (log σ², not log σ).

    Returns:
        (B, Z) nats.
    """
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)


def free_bits_kl(kl: torch.Tensor, free_bits: float) -> torch.Tensor:
    """KL with free bits (Kingma et al., "Improved Variational Inference with Inverse
    Autoregressive Flow", NeurIPS 2016, §C.8): ``Σ_i max(λ, mean_batch KL_i)``.

    Each latent dimension is charged at least λ nats, so the optimiser gains nothing by pushing a
    dimension's KL below λ, which counters posterior collapse. With λ = 0 this is the plain KL.

    Args:
        kl: (B, Z) per-dimension KL, nats.
        free_bits: λ, nats per dimension.

    Returns:
        Scalar: the batch-mean KL after the floor.
    """
    per_dim = kl.mean(0)  # (Z,)
    if free_bits > 0:
        per_dim = per_dim.clamp_min(free_bits)
    return per_dim.sum()


def beta_schedule(step: int, beta_max: float, warmup_epochs: float, steps_per_epoch: int) -> float:
    """Linear KL warm-up per optimiser step (Bowman et al., "Generating Sentences from a Continuous
    Space", CoNLL 2016): ``β = β_max · min(1, step / (warmup_epochs · steps_per_epoch))``.

    Args:
        step: global optimiser step (0-based).
        beta_max: final β.
        warmup_epochs: epochs to reach β_max; 0 disables the warm-up.
        steps_per_epoch: optimiser steps per epoch (≥ 1).

    Returns:
        β for this step.
    """
    warmup_steps = warmup_epochs * max(1, steps_per_epoch)
    if warmup_steps <= 0:
        return float(beta_max)
    return float(beta_max) * min(1.0, step / warmup_steps)
