"""Calibrated plausibility: the validation-energy quantiles every checkpoint carries (docs/design.md §9).

``energy_quantiles`` (1001,) holds the validation energies at ``QUANTILE_LEVELS`` (NaN while
uncalibrated); plausibility(x) is the share of validation poses with a higher energy.
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
    """(N,) validation energies (nats) -> (1001,) float32 quantiles at ``QUANTILE_LEVELS``, same device,
    linear between order statistics; NaN dropped (ValueError if all are), +inf kept (least plausible)."""
    e = energies.detach().reshape(-1).double()
    e = e[~torch.isnan(e)]
    if e.numel() == 0:
        raise ValueError("need at least one non-NaN energy to calibrate")
    # torch.quantile refuses inputs above 2^24 elements; sorting and indexing has no such limit.
    e = e.sort().values
    pos = QUANTILE_LEVELS.to(e.device) * (e.numel() - 1)
    lo, hi = pos.floor().long(), pos.ceil().long()
    frac = pos - lo
    return torch.where(frac > 0, e[lo] + frac * (e[hi] - e[lo]), e[lo]).float()  # no inf - inf


def is_calibrated(quantiles: torch.Tensor) -> bool:
    """True when the buffer holds quantiles (no NaN)."""
    return not bool(torch.isnan(quantiles).any())


def plausibility_from_quantiles(energy: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """``1 − F(energy)``, F the validation CDF linear between quantiles: (B,) float32 in [0, 1], monotone;
    1 below the lowest validation energy, 0 above the highest and for NaN. NotCalibratedError if NaN."""
    if not is_calibrated(quantiles):
        raise NotCalibratedError(NOT_CALIBRATED)
    q = quantiles.to(device=energy.device, dtype=torch.float64)  # (Q,)
    e = energy.detach().double()
    levels = QUANTILE_LEVELS.to(e.device)
    n = q.numel()
    # Last knot <= e; a flat run of equal quantiles resolves to its right end (its highest level).
    idx = torch.searchsorted(q, e.contiguous(), right=True)  # (B,) in [0, n]
    i0 = (idx - 1).clamp(0, n - 2)
    q0, q1 = q[i0], q[i0 + 1]
    span = (q1 - q0).clamp_min(torch.finfo(torch.float64).tiny)
    frac = ((e - q0) / span).clamp(0.0, 1.0)
    cdf = levels[i0] + frac * (levels[i0 + 1] - levels[i0])
    cdf = torch.where(idx == 0, 0.0, cdf)  # below every validation energy
    cdf = torch.where((idx >= n) | e.isnan(), 1.0, cdf)  # at or above the highest, or NaN
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
    """Fill and return ``model.energy_quantiles`` from the energies of (N, 90) / (N, 30, 3) val poses."""
    buffer = getattr(model, BUFFER)
    q = energy_quantiles(model.energy(poses))  # energy() chunks large N itself
    buffer.copy_(q.to(buffer.device))
    return q
