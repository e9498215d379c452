"""Hand VAE Prior: variational autoencoder priors over MANO two-hand poses.

Modules: ``rotations`` (roma-based maths and pose layouts), ``models`` (plain nn.Module VAEs),
``losses``, ``data`` (synthetic default, importers, on-disk layouts, DataModule),
``lightning_module``, ``train`` (the CLI behind train_hand_vae_lightning.py), ``prior`` (using a
trained prior; ``calibration`` for plausibility, ``one_hand`` for one-hand scores), ``fit`` /
``fit_cli`` / ``fit_bench`` (fitting poses to 3D keypoints, ``kinematics`` the default skeleton), ``evaluate`` / ``baselines`` (comparison with classic priors), ``viz`` (figures)
and ``reliability`` (atomic checkpoints, signals, non-finite guards).
"""

__version__ = "0.1.0"
