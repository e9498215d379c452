"""``python -m hand_vae.train``: the training command (``hand_vae.cli.train``), as ``train_hand_vae_lightning.py``."""

import sys

from hand_vae.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
