"""The command-line layer: every command of the project, and nothing below imports from here.

``train`` (``train_hand_vae_lightning.py``), ``data`` (``create_consolidated_npz.py`` and
``create_datamodule.py``), ``evaluate``, ``fit`` and ``calibrate`` (``python -m hand_vae.<name>``)
each parse their flags, call into the package and print a final summary; ``common`` holds what they
share (logging, exit codes, the dataset-source flags, reading a poses file).
"""
