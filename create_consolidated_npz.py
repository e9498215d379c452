"""Option A: build a consolidated dataset dir (uncompressed shards + meta.json) for ``--consolidated_dir``.

python create_consolidated_npz.py --output_dir test_consolidated   # synthetic: the README quick test's dir
python create_consolidated_npz.py --input_dir AMASS --split_scheme amass --output_dir consolidated
"""

from hand_vae.cli.data import consolidated_main as main

if __name__ == "__main__":
    raise SystemExit(main())
