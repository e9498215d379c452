#!/usr/bin/env python
"""Train a hand pose VAE prior with PyTorch Lightning: ``python train_hand_vae_lightning.py --help``.

``from train_hand_vae_lightning import HandVAELightningModule`` works as the README shows; Lightning
is imported only then (PEP 562), so ``--help`` answers without it.
"""

import sys

from hand_vae.cli.train import main

__all__ = ["HandVAELightningModule", "main"]  # noqa: F822 - HandVAELightningModule: __getattr__ below


def __getattr__(name: str):
    if name == "HandVAELightningModule":
        from hand_vae.lightning_module import HandVAELightningModule  # Lightning: only when asked for

        return HandVAELightningModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    sys.exit(main())
