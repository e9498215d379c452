"""Evaluation metrics of a hand VAE, each defined once, and an on-device running mean for logging.

* :func:`neg_elbo`: the negative ELBO of each pose for one z ~ q(z|x), nats.
* :func:`geodesic_error`: per-joint angle between two poses, radians (the reconstruction error of
  both model types, whatever their likelihood).
* :func:`reconstruction_error`: :func:`geodesic_error` between poses and their reconstruction at
  z = μ(x).
* :func:`active_units`: latent dimensions whose mean KL exceeds ``losses.ACTIVE_UNIT_NATS``. A
  variant of the count of Burda et al., "Importance Weighted Autoencoders", ICLR 2016, who
  threshold the variance of the posterior mean at 0.01; the mean KL per dimension is what the KL
  term already computes, and it is in nats.
* :class:`RunningMean`: batch-weighted means of several scalars, summed on the device, so a
  training step never waits for the host.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hand_vae.losses import ACTIVE_UNIT_NATS
from hand_vae.rotations import geodesic_angle_axis_angle, to_joints

# Axis-angle noise levels (std of i.i.d. Gaussian noise on each of the 90 numbers, radians) that
# evaluation and the plots corrupt poses with: 0.02 rad is the level a diagonal-σ VAE failed to
# detect on real data; 0.1 rad is clearly visible in a picture.
NOISE_LEVELS = (0.02, 0.05, 0.1)


def neg_elbo(out: dict[str, torch.Tensor]) -> torch.Tensor:
    """−ELBO per pose from a model's ``forward`` output: ``recon_nll + Σ_z KL``, (B,) nats.

    With ``forward(x, sample=True)`` this is the usual one-sample estimate; β = 1, no free bits.
    """
    return out["recon_nll"] + out["kl"].sum(-1)


def geodesic_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Per-joint geodesic angle between two poses.

    Args:
        x, x_hat: (B, 90) or (B, 30, 3) axis-angle, radians.

    Returns:
        (B, 30) radians in [0, π].
    """
    return geodesic_angle_axis_angle(to_joints(x), to_joints(x_hat))


def reconstruction_error(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:func:`geodesic_error` between x (B, 90)/(B, 30, 3) and ``model.reconstruct(x)``: (B, 30) radians."""
    return geodesic_error(x, model.reconstruct(x))


def active_units(kl_per_dim: torch.Tensor, threshold: float = ACTIVE_UNIT_NATS) -> torch.Tensor:
    """Number of latent dimensions in use.

    Args:
        kl_per_dim: (Z,) mean KL of each latent dimension over a data set, nats.
        threshold: a dimension with more mean KL than this (nats) is active.

    Returns:
        0-dim float tensor on the input's device (no host sync).
    """
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
    """Batch-size-weighted means of K named scalars, accumulated on the device.

    ``update`` is one in-place multiply-add and never reads a value on the host; ``compute``
    returns the means as device tensors. One such object replaces K ``torchmetrics.MeanMetric``s,
    which would each need a weight tensor per update (a host-to-device copy when the batch size is
    a Python int) and cost one metric call per scalar per step.

    Args:
        names: the K scalar names, in the order of ``update``'s values.
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
