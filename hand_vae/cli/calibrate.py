"""``python -m hand_vae.calibration --checkpoint CKPT [--consolidated_dir DIR | --splits_dir DIR]``: validation
energy quantiles into a checkpoint from before they were stored (in place, atomically, unless ``--output``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from hand_vae.cli.common import add_dataset_source, load_splits, run_command, setup_logging
from hand_vae.errors import UserError, atomic_write


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m hand_vae.calibration``."""
    p = argparse.ArgumentParser(
        prog="python -m hand_vae.calibration",
        description="Write validation-energy quantiles (the plausibility calibration) into a checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint to calibrate (e.g. best_model.ckpt)")
    add_dataset_source(p)
    p.add_argument("--split", default="val", choices=("train", "val", "test"), help="split to calibrate on")
    p.add_argument("--output", help="write here instead of rewriting --checkpoint in place")
    return p


def run(args: argparse.Namespace) -> int:
    """Calibrate on the chosen split, rewrite the checkpoint, print the summary."""
    from hand_vae.checkpoint import load_checkpoint, run_settings, vae_from_checkpoint
    from hand_vae.models.quantiles import STATE_KEY, calibrate  # after parsing: --help stays fast

    ckpt = load_checkpoint(args.checkpoint)  # read once: rewritten below with the quantiles
    model = vae_from_checkpoint(ckpt, args.checkpoint)
    splits, source = load_splits(args.consolidated_dir, args.splits_dir, run_settings(ckpt))
    poses = splits.get(args.split)
    if poses is None or poses.shape[0] == 0:
        raise UserError(f"the {args.split} split of the {source} is empty")
    q = calibrate(model, poses)
    ckpt["state_dict"][STATE_KEY] = q.cpu()
    out = Path(args.output or args.checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda f: torch.save(ckpt, f))  # never a half-written checkpoint
    print(  # noqa: T201 - the CLI's summary
        f"calibrated on {poses.shape[0]} poses ({args.split} split of the {source}): "
        f"median energy {float(q[500]):.2f} nats, 0.99 level {float(q[990]):.2f} nats -> {out}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m hand_vae.calibration``; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging()
    return run_command(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
