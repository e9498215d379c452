"""Option B: build a splits dataset dir (``train/ val/ test/`` with one .npz per sequence + meta.json)
for ``--splits_dir``.

    python create_datamodule.py                                        # synthetic data -> dataset_splits/
    python create_datamodule.py --input_dir RAW --split_scheme dirs    # RAW/train, RAW/val, RAW/test

See ``python create_datamodule.py --help`` and ``hand_vae/data/build.py``.
"""

import sys

from hand_vae.cli.data import splits_main as main

if __name__ == "__main__":
    sys.exit(main())
