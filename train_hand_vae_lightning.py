#!/usr/bin/env python
"""Train a hand pose VAE prior with PyTorch Lightning.

    python train_hand_vae_lightning.py --help

``HandVAELightningModule`` is re-exported here so the README's loading example works:
``from train_hand_vae_lightning import HandVAELightningModule``.
"""

import sys

from hand_vae.lightning_module import HandVAELightningModule
from hand_vae.train import main

__all__ = ["HandVAELightningModule", "main"]

if __name__ == "__main__":
    sys.exit(main())
