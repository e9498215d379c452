"""Option A: build a consolidated dataset dir (uncompressed shards + meta.json) for ``--consolidated_dir``.

    python create_consolidated_npz.py                                  # synthetic data -> consolidated/
    python create_consolidated_npz.py --output_dir test_consolidated   # the README quick test's dir
    python create_consolidated_npz.py --input_dir AMASS --split_scheme amass --output_dir consolidated

See ``python create_consolidated_npz.py --help`` and ``hand_vae/data/build.py``.
"""

import sys

from hand_vae.cli.data import consolidated_main as main

if __name__ == "__main__":
    sys.exit(main())
