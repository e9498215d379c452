"""Calibrated plausibility: validation-energy quantiles stored in every checkpoint.

An energy in nats has no fixed scale: it depends on the data, the model and its training. To say
"implausible" we compare a pose's energy with the energies of held-out (validation) poses. Each
model carries a buffer ``energy_quantiles`` (1001,) float32: the validation energies at quantile
levels ``QUANTILE_LEVELS = linspace(0, 1, 1001)`` (all NaN while uncalibrated). From it,

    plausibility(x) = share of validation poses whose energy is higher than energy(x)  ∈ [0, 1]

(1 − the empirical CDF, linearly interpolated between the stored quantiles). A pose scoring 0.5
is as plausible as the median validation pose; 0.01 means 99% of validation poses score better.
``is_plausible(x, level=0.99)`` is ``energy(x) <= quantile(level)``, so 99% of validation poses
pass it by construction.

Training fills the buffer at every validation epoch, so each checkpoint carries its own epoch's
calibration. A checkpoint written before that existed gets it from ``python -m hand_vae.calibration``.
"""

from __future__ import annotations

import torch
from torch import nn

from hand_vae.errors import UserError

NUM_QUANTILES = 1001
QUANTILE_LEVELS = torch.linspace(0.0, 1.0, NUM_QUANTILES, dtype=torch.float64)  # (1001,)
BUFFER = "energy_quantiles"  # name of the buffer on BaseHandVAE
STATE_KEY = "model." + BUFFER  # its key in a Lightning checkpoint's state_dict
CALIBRATE_HINT = (
    "python -m hand_vae.calibration --checkpoint CKPT [--consolidated_dir DIR | --splits_dir DIR]"
)
NOT_CALIBRATED = (
    "this model carries no energy calibration (its energy_quantiles are NaN, as in checkpoints written "
    f"before calibration was stored); add it with {CALIBRATE_HINT}"
)


class NotCalibratedError(UserError, RuntimeError):
    """The model carries no validation-energy quantiles (a checkpoint from before calibration)."""


def empty_quantiles() -> torch.Tensor:
    """The uncalibrated value of the buffer: (1001,) float32 NaN."""
    return torch.full((NUM_QUANTILES,), float("nan"))


def energy_quantiles(energies: torch.Tensor) -> torch.Tensor:
    """Quantiles of validation energies at ``QUANTILE_LEVELS``.

    NaN energies are dropped; +inf ones are kept (they are the least plausible poses).

    Args:
        energies: (N,) energies of validation poses, nats, any device and float dtype.

    Returns:
        (1001,) float32 on the same device, non-decreasing (linear interpolation).

    Raises:
        ValueError: no non-NaN energy.
    """
    e = energies.detach().reshape(-1).double()
    e = e[~torch.isnan(e)]
    if e.numel() == 0:
        raise ValueError("need at least one non-NaN energy to calibrate")
    # torch.quantile refuses inputs above 2^24 elements; sorting and indexing has no such limit.
    e = e.sort().values
    pos = QUANTILE_LEVELS.to(e.device) * (e.numel() - 1)
    lo, hi = pos.floor().long(), pos.ceil().long()
    frac = pos - lo
    lo_v, hi_v = e[lo], e[hi]
    q = torch.where(frac > 0, lo_v + frac * (hi_v - lo_v), lo_v)  # inf - inf stays out of the way
    return q.float()


def is_calibrated(quantiles: torch.Tensor) -> bool:
    """True when the buffer holds quantiles (no NaN)."""
    return not bool(torch.isnan(quantiles).any())


def plausibility_from_quantiles(energy: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """Share of validation poses with a higher energy, from the stored quantiles.

    ``1 − F(e)`` with F the validation energies' CDF, linear between consecutive quantiles, 0 below
    the lowest validation energy and 1 above the highest. Monotone non-increasing in the energy.
    A NaN energy gives 0 (never plausible).

    Args:
        energy: (B,) nats.
        quantiles: (1001,) non-decreasing, as from ``energy_quantiles``.

    Returns:
        (B,) float32 in [0, 1], on the device of ``energy``.

    Raises:
        NotCalibratedError: the quantiles are NaN (uncalibrated model).
    """
    if not is_calibrated(quantiles):
        raise NotCalibratedError(NOT_CALIBRATED)
    q = quantiles.to(device=energy.device, dtype=torch.float64)  # (Q,)
    e = energy.detach().double()
    levels = QUANTILE_LEVELS.to(e.device)
    n = q.numel()
    # Index of the last knot <= e; flat runs of equal quantiles resolve to their right end, so the
    # CDF at a repeated value is the highest level holding it.
    idx = torch.searchsorted(q, e.contiguous(), right=True)  # (B,) in [0, n]
    i0 = (idx - 1).clamp(0, n - 2)
    q0, q1 = q[i0], q[i0 + 1]
    span = (q1 - q0).clamp_min(torch.finfo(torch.float64).tiny)
    frac = ((e - q0) / span).clamp(0.0, 1.0)
    cdf = levels[i0] + frac * (levels[i0 + 1] - levels[i0])
    cdf = torch.where(idx == 0, torch.zeros_like(cdf), cdf)  # below every validation energy
    cdf = torch.where(idx >= n, torch.ones_like(cdf), cdf)  # at or above the highest
    cdf = torch.where(torch.isnan(e), torch.ones_like(cdf), cdf)
    return (1.0 - cdf).float()


def threshold_at(quantiles: torch.Tensor, level: float) -> float:
    """Energy of the ``level`` quantile (linear between stored knots), nats."""
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"level must be in [0, 1], got {level}")
    if not is_calibrated(quantiles):
        raise NotCalibratedError(NOT_CALIBRATED)
    pos = level * (NUM_QUANTILES - 1)
    i = min(int(pos), NUM_QUANTILES - 2)
    q = quantiles.double().cpu()
    return float(q[i] + (pos - i) * (q[i + 1] - q[i]))


@torch.no_grad()
def calibrate(model: nn.Module, poses: torch.Tensor) -> torch.Tensor:
    """Fill ``model.energy_quantiles`` from the energies of validation poses; returns it.

    Args:
        model: a hand VAE (``BaseHandVAE``) in eval mode.
        poses: (N, 90) or (N, 30, 3) validation poses, any float dtype and device.

    Returns:
        (1001,) float32 quantiles (also written into the model's buffer).
    """
    buffer = getattr(model, BUFFER)
    q = energy_quantiles(model.energy(poses))  # energy() chunks large N itself
    buffer.copy_(q.to(buffer.device))
    return q
