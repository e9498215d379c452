"""Checkpoint loading: a ``.ckpt`` of this project -> the plain model, read with ``weights_only=True``; every
failure is a one-line :class:`CheckpointError` naming the file (docs/design.md §9)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from hand_vae.errors import UserError
from hand_vae.models import BaseHandVAE, build_model
from hand_vae.models.quantiles import BUFFER, CALIBRATE_HINT, empty_quantiles
from hand_vae.settings import saved_model_settings

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("hyper_parameters", "state_dict")
STATE_PREFIX = "model."  # HandVAELightningModule keeps the plain VAE as ``self.model``
PREFERRED = ("best_model.ckpt", "last.ckpt")  # listed first when a run directory is given


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used; the message is one line naming the file and the reason."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist."""


def _first_line(err: BaseException, limit: int = 160) -> str:
    """``TypeName: first line of the message``, cut to ``limit`` characters (torch's are long)."""
    text = (str(err).strip().splitlines() or [""])[0]
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint of ``train_hand_vae_lightning.py``: a dict with at least ``hyper_parameters``
    (model settings plus ``run``, the run's settings) and ``state_dict`` (``model.*`` weights).

    Raises:
        CheckpointNotFoundError: no such file.
        CheckpointError: a directory, an unreadable file or not a hand VAE checkpoint.
    """
    p = Path(path)
    if p.is_dir():
        rank = {name: i for i, name in enumerate(PREFERRED)}
        found = ", ".join(
            map(str, sorted(p.glob("*.ckpt"), key=lambda f: (rank.get(f.name, len(rank)), f.name)))
        )
        if not found:
            raise CheckpointError(f"{p} is a directory with no .ckpt file in it; give a checkpoint file")
        raise CheckpointError(f"{p} is a run directory; give one of its checkpoints: {found}")
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


def vae_from_checkpoint(ckpt: dict[str, Any], source: str | Path = "checkpoint") -> BaseHandVAE:
    """The plain hand VAE of a ``load_checkpoint`` dict, in eval mode, on the weights' device.

    A checkpoint without energy calibration loads with NaN quantiles; one trained on the embedded
    synthetic data warns. ``source`` names the file in messages. Raises ``CheckpointError`` when the
    weights do not match the checkpoint's hyper_parameters.
    """
    hp = ckpt["hyper_parameters"]
    state = {k[len(STATE_PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(STATE_PREFIX)}
    device = next(iter(state.values())).device if state else torch.device("cpu")
    model = build_model(**saved_model_settings(hp)).to(device)
    if BUFFER not in state:  # written before checkpoints carried the energy calibration
        state[BUFFER] = empty_quantiles()
        log.info("%s has no energy calibration; plausibility() needs: %s", source, CALIBRATE_HINT)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(
            f"{source}: weights do not match its hyper_parameters ({_first_line(err)})"
        ) from err
    run = run_settings(ckpt)  # {} when unknown: no warning
    if run and not run.get("consolidated_dir") and not run.get("splits_dir"):
        log.warning("%s: this prior was trained on the embedded SYNTHETIC dataset (a demo, not a hand prior); "
                    "train on your data with --consolidated_dir", source)  # fmt: skip
    log.info("Loaded a %s hand VAE (z_dim %d) from %s", model.model_type, model.z_dim, source)
    return model.eval()


def load_vae(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[BaseHandVAE, dict[str, Any]]:
    """The plain hand VAE of a checkpoint file (eval mode) and its run settings; raises as ``load_checkpoint``
    and ``vae_from_checkpoint``."""
    ckpt = load_checkpoint(path, map_location)
    return vae_from_checkpoint(ckpt, path), run_settings(ckpt)
