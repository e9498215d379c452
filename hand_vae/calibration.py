"""``python -m hand_vae.calibration``: the command lives in ``hand_vae.cli.calibrate``,
the quantile maths in ``hand_vae.models.quantiles``."""

import sys

from hand_vae.cli.calibrate import main

if __name__ == "__main__":
    sys.exit(main())
