"""Hand VAE Prior: variational autoencoder priors over MANO two-hand poses.

Where each concern lives, one file per row: ``docs/design.md`` §8. Imports only go down: ``cli``
(every command) → ``evaluation`` / ``training`` → ``prior`` / ``lightning_module`` → ``checkpoint``
→ ``data``, ``models``, ``viz`` → the maths (``rotations``, ``losses``, ``gaussian``, ``student_t``).
"""

__version__ = "0.1.0"
