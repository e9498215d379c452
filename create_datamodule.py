"""Option B: build a splits dataset dir (train/ val/ test/, one .npz per sequence, + meta.json) for
``--splits_dir``, e.g. ``python create_datamodule.py --input_dir RAW --split_scheme dirs``.
"""

from hand_vae.cli.data import splits_main as main

if __name__ == "__main__":
    raise SystemExit(main())
