"""Scoring a trained prior for ``python -m hand_vae.evaluate``: ``metrics``, ``baselines``, ``fit_bench``."""
