"""Hand VAE Prior: variational autoencoder priors over MANO two-hand poses.

Where each concern lives, one file per row: ``docs/design.md`` §8. Imports only go down: ``cli``
(every command) → ``training`` → ``viz`` → ``evaluation`` → ``prior`` → ``lightning_module`` /
``checkpoint`` → ``models`` → ``data`` → the maths (``rotations``, ``losses``, ``gaussian``, ...).
"""

__version__ = "0.1.0"
