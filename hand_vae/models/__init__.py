"""Plain ``nn.Module`` VAEs over two-hand MANO poses (no Lightning import here)."""

from __future__ import annotations

from hand_vae.models.base import BaseHandVAE, VAEConfig
from hand_vae.models.so3 import SO3HandVAE
from hand_vae.models.standard import StandardHandVAE

MODEL_TYPES = {"standard": StandardHandVAE, "so3": SO3HandVAE}


def build_model(model_type: str = "standard", z_dim: int = 24, hidden: int = 256, **kwargs) -> BaseHandVAE:
    """Build a hand VAE.

    Args:
        model_type: "standard" or "so3".
        z_dim: latent dimension.
        hidden: MLP width.
        **kwargs: other ``VAEConfig`` fields (num_layers, dropout, min_sigma).

    Raises:
        ValueError: unknown model type.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {sorted(MODEL_TYPES)}, got {model_type!r}")
    cfg = VAEConfig(model_type=model_type, z_dim=z_dim, hidden=hidden, **kwargs)
    return MODEL_TYPES[model_type](cfg)


__all__ = ["BaseHandVAE", "VAEConfig", "StandardHandVAE", "SO3HandVAE", "MODEL_TYPES", "build_model"]
