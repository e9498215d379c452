"""``python -m hand_vae.calibration``: write the plausibility calibration into a checkpoint.

The quantile maths lives in ``hand_vae.models.quantiles`` (re-exported here for old imports). For a
checkpoint written before checkpoints carried the calibration:

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

from hand_vae.models.quantiles import (  # noqa: F401 - re-exported until the callers import models.quantiles
    BUFFER,
    CALIBRATE_HINT,
    NOT_CALIBRATED,
    NUM_QUANTILES,
    QUANTILE_LEVELS,
    STATE_KEY,
    NotCalibratedError,
    calibrate,
    empty_quantiles,
    energy_quantiles,
    is_calibrated,
    plausibility_from_quantiles,
    threshold_at,
)

log = logging.getLogger(__name__)


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
    from hand_vae.checkpoint import load_checkpoint, run_settings, vae_from_checkpoint
    from hand_vae.evaluate import EvalError, load_splits

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    path = Path(args.checkpoint)
    try:
        ckpt = load_checkpoint(path)  # read once: rewritten below with the quantiles
        model = vae_from_checkpoint(ckpt, path)
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
