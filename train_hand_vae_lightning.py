#!/usr/bin/env python
"""Train a hand pose VAE prior with PyTorch Lightning: ``python train_hand_vae_lightning.py --help``.

``from train_hand_vae_lightning import HandVAELightningModule`` (README) imports Lightning then (PEP 562).
"""

from hand_vae.cli.train import main

__all__ = ["HandVAELightningModule", "main"]  # noqa: F822 - HandVAELightningModule: __getattr__ below


def __getattr__(name: str):
    if name == "HandVAELightningModule":
        from hand_vae.lightning_module import HandVAELightningModule

        return HandVAELightningModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    raise SystemExit(main())
