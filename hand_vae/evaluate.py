"""``python -m hand_vae.evaluate``: the command lives in ``hand_vae.cli.evaluate``,
the metrics and the fitting benchmark in ``hand_vae.evaluation``."""

import sys

from hand_vae.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
