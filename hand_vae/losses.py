"""Likelihoods, KL divergence, free bits and the β warm-up schedule, in nats (docs/design.md §4).

Per-sample terms keep the batch dimension: callers reduce (training averages, ``energy`` does not).
"""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2.0 * math.pi)
ACTIVE_UNIT_NATS = 0.01  # a latent dimension with mean KL above this is "active" (in use)


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """``Σ_d [(x_d − μ_d)²/(2σ_d²) + log σ_d + ½ log 2π]`` (B,) nats for x, mean (B, D) and log σ (D,)
    or (B, D): the diagonal Gaussian's negative log-density."""
    z = (x - mean) * torch.exp(-log_sigma)
    return (0.5 * z.square() + log_sigma).sum(-1) + 0.5 * LOG_2PI * x.shape[-1]


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) ‖ N(0, 1)) = ½ (mu² + σ² − 1 − log σ²) per latent dimension, (B, Z) nats.

    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014, App. B; logvar is log σ².
    """
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)


def free_bits_kl(kl: torch.Tensor, free_bits: float) -> torch.Tensor:
    """Batch-mean KL with free bits λ nats, ``Σ_i max(λ, mean_batch KL_i)`` of kl (B, Z): a scalar.

    Kingma et al., "Improved Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016,
    §C.8: a dimension gains nothing below λ, which counters posterior collapse; λ = 0 is the plain KL.
    """
    per_dim = kl.mean(0)  # (Z,)
    if free_bits > 0:
        per_dim = per_dim.clamp_min(free_bits)
    return per_dim.sum()


def beta_schedule(step: int, beta_max: float, warmup_epochs: float, steps_per_epoch: int) -> float:
    """β at 0-based optimiser ``step``: ``β_max · min(1, step / (warmup_epochs · steps_per_epoch))``,
    β_max throughout for warmup_epochs = 0 (Bowman et al., "Generating Sentences from a Continuous
    Space", CoNLL 2016)."""
    warmup_steps = warmup_epochs * max(1, steps_per_epoch)
    if warmup_steps <= 0:
        return float(beta_max)
    return float(beta_max) * min(1.0, step / warmup_steps)
