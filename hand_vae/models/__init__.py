"""Plain ``nn.Module`` VAEs over two-hand MANO poses (no Lightning import here)."""

from __future__ import annotations

from hand_vae.models.base import BaseHandVAE, VAEConfig
from hand_vae.models.so3 import SO3HandVAE
from hand_vae.models.standard import StandardHandVAE

MODEL_TYPES = {"standard": StandardHandVAE, "so3": SO3HandVAE}


def build_model(model_type: str = "standard", **kwargs) -> BaseHandVAE:
    """Build a "standard" or "so3" hand VAE from other ``VAEConfig`` fields (z_dim, hidden, whiten, ...);
    ValueError for an unknown model type."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {sorted(MODEL_TYPES)}, got {model_type!r}")
    cfg = VAEConfig(model_type=model_type, **kwargs)
    return MODEL_TYPES[model_type](cfg)


__all__ = ["BaseHandVAE", "VAEConfig", "StandardHandVAE", "SO3HandVAE", "MODEL_TYPES", "build_model"]
