"""Evaluation metrics of a hand VAE, each defined once, and an on-device running mean for logging."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hand_vae.losses import ACTIVE_UNIT_NATS
from hand_vae.rotations import geodesic_angle_axis_angle, to_joints

# Std (rad) of the i.i.d. noise evaluation and plots put on each of the 90 numbers: 0.02 is what a
# diagonal-σ VAE failed to detect on real data, 0.1 is clearly visible in a picture.
NOISE_LEVELS = (0.02, 0.05, 0.1)


def neg_elbo(out: dict[str, torch.Tensor]) -> torch.Tensor:
    """−ELBO per pose from a model's ``forward`` output: ``recon_nll + Σ_z KL``, (B,) nats.

    With ``forward(x, sample=True)`` this is the usual one-sample estimate; β = 1, no free bits.
    """
    return out["recon_nll"] + out["kl"].sum(-1)


def geodesic_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Per-joint geodesic angle (B, 30) in [0, π] rad between two (B, 90) or (B, 30, 3) poses: the
    reconstruction error of both model types, whatever their likelihood."""
    return geodesic_angle_axis_angle(to_joints(x), to_joints(x_hat))


def reconstruction_error(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:func:`geodesic_error` between x (B, 90)/(B, 30, 3) and ``model.reconstruct(x)``: (B, 30) radians."""
    return geodesic_error(x, model.reconstruct(x))


def active_units(kl_per_dim: torch.Tensor, threshold: float = ACTIVE_UNIT_NATS) -> torch.Tensor:
    """Latent dimensions whose mean KL (Z,) over a data set exceeds ``threshold`` nats: a 0-d float
    tensor on the input's device (no host sync). A variant of Burda et al., ICLR 2016 (IWAE), who
    threshold the variance of the posterior mean at 0.01; the mean KL is already computed, in nats."""
    return (kl_per_dim > threshold).sum().float()


def subsample(poses: torch.Tensor, max_rows: int | None, seed: int = 0) -> torch.Tensor:
    """At most ``max_rows`` rows of ``poses`` (N, ...) in their original order, the same seeded subset
    on every call; None keeps every row."""
    if max_rows is None or poses.shape[0] <= max_rows:
        return poses
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(poses.shape[0], generator=g)[:max_rows].sort().values
    return poses[idx]


class RunningMean:
    """Batch-size-weighted means of K named scalars (``names``, in ``update``'s order), on the device.

    ``update`` is one in-place multiply-add with no host read; it replaces K ``torchmetrics.MeanMetric``s
    (each a host-to-device weight copy and a call per scalar per step).
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.total: torch.Tensor | None = None
        self.count = 0

    def update(self, values: torch.Tensor, weight: int) -> None:
        """Add ``weight`` × values (K,) (detached) to the running sums."""
        values = values.detach()
        if self.total is None:
            self.total = values * weight
        else:
            self.total.add_(values, alpha=weight)
        self.count += weight

    def sums(self) -> tuple[torch.Tensor, int] | None:
        """(K,) weighted sums and the total weight, or None before the first update."""
        return None if self.total is None else (self.total, self.count)

    def compute(self) -> dict[str, torch.Tensor]:
        """{name: 0-dim mean} on the device; empty before the first update."""
        if self.total is None:
            return {}
        means = self.total / max(self.count, 1)
        return dict(zip(self.names, means.unbind(), strict=True))

    def reset(self) -> None:
        self.total, self.count = None, 0
