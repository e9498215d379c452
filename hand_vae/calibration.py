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
calibration. For a checkpoint written before that existed, add it with:

    python -m hand_vae.calibration --checkpoint CKPT [--consolidated_dir DIR | --splits_dir DIR]

(no data flag: the run's own data source, e.g. the embedded synthetic set). The checkpoint is
rewritten in place (atomically) unless ``--output`` names another file.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch
from torch import nn

NUM_QUANTILES = 1001
QUANTILE_LEVELS = torch.linspace(0.0, 1.0, NUM_QUANTILES, dtype=torch.float64)  # (1001,)
BUFFER = "energy_quantiles"  # name of the buffer on BaseHandVAE
STATE_KEY = "model." + BUFFER  # its key in a Lightning checkpoint's state_dict
CALIBRATE_HINT = (
    "python -m hand_vae.calibration --checkpoint CKPT [--consolidated_dir DIR | --splits_dir DIR]"
)

log = logging.getLogger(__name__)


NOT_CALIBRATED = (
    "this model carries no energy calibration (its energy_quantiles are NaN, as in checkpoints written "
    f"before calibration was stored); add it with {CALIBRATE_HINT}"
)


class NotCalibratedError(RuntimeError):
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
        (1001,) float32 on the same device, non-decreasing (torch.quantile, linear interpolation).

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
    lo = pos.floor().long()
    hi = pos.ceil().long()
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
        (B,) float32 in [0, 1].

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
def calibrate(model: nn.Module, poses: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """Fill ``model.energy_quantiles`` from the energies of validation poses; returns it.

    Args:
        model: a hand VAE (``BaseHandVAE``) in eval mode.
        poses: (N, 90) or (N, 30, 3) validation poses.
        batch_size: poses per energy pass.

    Returns:
        (1001,) float32 quantiles (also written into the model's buffer).
    """
    p = next(model.parameters())
    energies = torch.cat([model.energy(c.to(p.device, p.dtype)) for c in poses.split(batch_size)])
    q = energy_quantiles(energies)
    getattr(model, BUFFER).copy_(q.to(getattr(model, BUFFER).device))
    return q


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    from hand_vae.evaluate import add_dataset_source  # not at import: training imports this module

    p = argparse.ArgumentParser(
        prog="python -m hand_vae.calibration",
        description="Write validation-energy quantiles (the plausibility calibration) into a checkpoint.",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint to calibrate (e.g. best_model.ckpt)")
    add_dataset_source(p)
    p.add_argument("--split", default="val", choices=("train", "val", "test"), help="split to calibrate on")
    p.add_argument("--output", help="write here instead of rewriting --checkpoint in place")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m hand_vae.calibration``; returns the exit code."""
    from hand_vae.checkpoint import load_checkpoint, run_settings
    from hand_vae.evaluate import EvalError, load_splits
    from hand_vae.prior import prior_from_checkpoint

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    path = Path(args.checkpoint)
    try:
        ckpt = load_checkpoint(path)  # read once: rewritten below with the quantiles
        model = prior_from_checkpoint(ckpt, path)
        args.poses = None
        splits, source = load_splits(args, run_settings(ckpt))
        poses = splits.get(args.split)
        if poses is None or poses.shape[0] == 0:
            raise EvalError(f"the {args.split} split of the {source} is empty")
    except (FileNotFoundError, ValueError, EvalError) as err:
        log.error("%s", err)
        return 2
    q = calibrate(model, poses)
    ckpt["state_dict"][STATE_KEY] = q.cpu()
    out = Path(args.output) if args.output else path
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, out)  # atomic: an interrupted run never leaves a half-written checkpoint
    print(  # noqa: T201 - the CLI's summary
        f"calibrated on {poses.shape[0]} poses ({args.split} split of the {source}): "
        f"median energy {float(q[500]):.2f} nats, 0.99 level {float(q[990]):.2f} nats -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
