"""``python -m hand_vae.evaluate``: the command is ``hand_vae.cli.evaluate``."""

from hand_vae.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
