"""Reading a training checkpoint: the one place that opens a ``.ckpt`` written by this project.

Used by resume (``hand_vae.train``), by ``hand_vae.prior.load_prior`` and by
``python -m hand_vae.evaluate``. A checkpoint is data, never code: it is read with
``torch.load(weights_only=True)``, so a file carrying a pickled object that could run code is
refused. Every failure is a :class:`CheckpointError` with one line saying which of three things
went wrong:

* ``no such checkpoint: PATH`` (also a ``FileNotFoundError``);
* ``PATH is not a readable checkpoint (...)``: truncated, not a torch file, or a pickle payload;
* ``PATH is not a hand VAE checkpoint (...)``: a torch file without this project's keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

REQUIRED_KEYS = ("hyper_parameters", "state_dict")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line naming the file and the reason."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist."""


def _first_line(err: BaseException, limit: int = 160) -> str:
    """``TypeName: first line of the message``, cut to ``limit`` characters (torch's are long)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint written by ``train_hand_vae_lightning.py``.

    Args:
        path: the ``.ckpt`` file (e.g. ``checkpoints/NAME/best_model.ckpt``).
        map_location: device the tensors are loaded onto.

    Returns:
        The checkpoint dict; it has at least ``hyper_parameters`` (model settings plus ``run``, the
        training run's settings) and ``state_dict`` (``model.*`` weights).

    Raises:
        CheckpointNotFoundError: no such file.
        CheckpointError: the file is unreadable or is not a hand VAE checkpoint.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointNotFoundError(f"no such checkpoint: {p}")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated, not a zip/pickle, or a pickle with code in it
        raise CheckpointError(f"{p} is not a readable checkpoint ({_first_line(err)})") from err
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        raise CheckpointError(f"{p} is not a hand VAE checkpoint (no hyper_parameters / state_dict)")
    if not isinstance(ckpt["hyper_parameters"], dict) or "model_type" not in ckpt["hyper_parameters"]:
        raise CheckpointError(f"{p} is not a hand VAE checkpoint (no model_type in its hyper_parameters)")
    return ckpt


def run_settings(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The training run's settings saved in a checkpoint (data source, seed, experiment name, ...)."""
    return dict(ckpt["hyper_parameters"].get("run") or {})
