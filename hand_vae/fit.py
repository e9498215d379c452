"""``from hand_vae.fit import fit_to_joints`` (README; ``hand_vae.prior.fit``) and ``python -m hand_vae.fit``."""

import sys

from hand_vae.cli.fit import main
from hand_vae.prior.fit import FitResult, fit_to_joints

__all__ = ["FitResult", "fit_to_joints", "main"]

if __name__ == "__main__":
    sys.exit(main())
