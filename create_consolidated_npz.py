"""Option A: build a consolidated dataset dir (uncompressed shards + meta.json) for ``--consolidated_dir``.

    python create_consolidated_npz.py                                  # synthetic data -> consolidated/
    python create_consolidated_npz.py --output_dir test_consolidated   # the README quick test's dir
    python create_consolidated_npz.py --input_dir AMASS --split_scheme amass --output_dir consolidated

See ``python create_consolidated_npz.py --help`` and ``hand_vae/data/build.py``.
"""

from __future__ import annotations

import sys

from hand_vae.data.cli import run


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 some files skipped, 2 error)."""
    return run("consolidated", argv, prog="create_consolidated_npz.py")


if __name__ == "__main__":
    sys.exit(main())
