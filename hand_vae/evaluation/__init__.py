"""Scoring a trained prior: ``metrics`` (corruptions, AUC / top-1, VAE and baseline scores, tables,
verdicts) for ``python -m hand_vae.evaluate``, and ``fit_bench`` (the keypoint-fitting benchmark of
``--task fit``). Imports the prior, the models and the data; the command lines live in ``hand_vae.cli``."""
