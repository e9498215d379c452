"""Plain ``nn.Module`` VAEs over two-hand MANO poses (no Lightning import here)."""

from __future__ import annotations

from hand_vae.models.base import BaseHandVAE, VAEConfig
from hand_vae.models.so3 import SO3HandVAE
from hand_vae.models.standard import StandardHandVAE

MODEL_TYPES = {"standard": StandardHandVAE, "so3": SO3HandVAE}


def build_model(model_type: str = "standard", **kwargs) -> BaseHandVAE:
    """Build a hand VAE from ``VAEConfig`` fields (defaults: ``VAEConfig``'s).

    Args:
        model_type: "standard" or "so3".
        **kwargs: other ``VAEConfig`` fields (z_dim, hidden, num_layers, whiten, min_sigma, ...).

    Raises:
        ValueError: unknown model type.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {sorted(MODEL_TYPES)}, got {model_type!r}")
    cfg = VAEConfig(model_type=model_type, **kwargs)
    return MODEL_TYPES[model_type](cfg)


__all__ = ["BaseHandVAE", "VAEConfig", "StandardHandVAE", "SO3HandVAE", "MODEL_TYPES", "build_model"]
