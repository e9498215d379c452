"""``python -m hand_vae.calibration``: the command is ``hand_vae.cli.calibrate``."""

from hand_vae.cli.calibrate import main

if __name__ == "__main__":
    raise SystemExit(main())
