"""Option B: build a splits dataset dir (``train/ val/ test/`` with one .npz per sequence + meta.json)
for ``--splits_dir``.

    python create_datamodule.py                                        # synthetic data -> dataset_splits/
    python create_datamodule.py --input_dir RAW --split_scheme dirs    # RAW/train, RAW/val, RAW/test

See ``python create_datamodule.py --help`` and ``hand_vae/data/build.py``.
"""

from __future__ import annotations

import sys

from hand_vae.data.cli import run


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 some files skipped, 2 error)."""
    return run("splits", argv, prog="create_datamodule.py")


if __name__ == "__main__":
    sys.exit(main())
