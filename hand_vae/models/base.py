"""Shared VAE machinery: MLPs, reparameterisation, energy and the IWAE bound.

Subclasses define what the encoder sees and what the decoder's likelihood is; everything a
user calls (``encode``, ``decode``, ``forward``, ``reconstruct``, ``sample``, ``energy``,
``log_prob``) lives here so both models behave the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from hand_vae.losses import kl_per_dim
from hand_vae.models.quantiles import BUFFER, empty_quantiles
from hand_vae.rotations import NUM_JOINTS, POSE_DIM, pose_shape_hint, to_joints

# The model's config is defined with the other settings, in a module free of torch (a CLI's --help
# reads it); re-exported here and in hand_vae.models.
from hand_vae.settings import DEFAULT_MIN_SIGMA, SettingError, VAEConfig  # noqa: F401

ENERGY_CHUNK = 8192  # rows per energy() chunk: keeps the MLP's temporaries in cache


def as_pose_batch(
    x: torch.Tensor | np.ndarray, like: torch.Tensor, dim: int = POSE_DIM, name: str = "hand pose"
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """What a user holds -> a pose batch the model can score, and the way back for the result.

    Accepts a torch tensor (any float dtype, any device) or a numpy array, shaped (B, dim),
    (B, dim/3, 3) or one pose (dim,) / (dim/3, 3). A differentiable cast: gradients reach ``x``.

    Args:
        x: the poses, axis-angle radians.
        like: a tensor of the model (a parameter): its device and dtype are used.
        dim: numbers per pose: 90 (two hands) or 45 (one hand).
        name: what the poses are, for the error message.

    Returns:
        (B, dim) on ``like``'s device and dtype, and ``back(out)``: moves a result (B, ...) to the
        input's device (the CPU for a numpy array, as a tensor) and drops B for a single pose.

    Raises:
        ValueError: any other shape; the message hints at full-body vectors and one-hand arrays.
    """
    t = torch.as_tensor(x)
    shape = tuple(t.shape)
    # The batch size is never compared with a number: torch.export keeps B dynamic.
    single = (t.dim() == 1 and shape[0] == dim) or (t.dim() == 2 and shape[1] == 3 and shape[0] == dim // 3)
    batch = (t.dim() == 2 and shape[1] == dim) or (t.dim() == 3 and shape[1:] == (dim // 3, 3))
    if not single and not batch:
        raise ValueError(
            f"{name} must have shape (B, {dim}) or (B, {dim // 3}, 3), got {shape}{pose_shape_hint(shape)}"
        )
    device = t.device

    def back(out: torch.Tensor) -> torch.Tensor:
        out = out.to(device)
        return out[0] if single else out

    return t.reshape(-1, dim).to(device=like.device, dtype=like.dtype), back


def mlp(d_in: int, hidden: int, d_out: int, num_layers: int, dropout: float) -> nn.Sequential:
    """``num_layers`` × (Linear → SiLU → Dropout), then a Linear head."""
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(num_layers):
        layers += [nn.Linear(d, hidden), nn.SiLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = hidden
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


def floored_log_sigma(raw: torch.Tensor, min_sigma: float) -> torch.Tensor:
    """Smooth floor on a learned scale: ``σ = min_sigma + exp(raw)``, returned as log σ.

    A hard ``clamp`` would zero the gradient below the floor and could trap σ there; this keeps
    σ > min_sigma with a gradient everywhere.
    """
    return torch.logaddexp(raw, torch.full_like(raw, math.log(min_sigma)))  # a fill, not a host copy


class BaseHandVAE(nn.Module):
    """Encoder, reparameterisation and the scoring API shared by both models.

    Subclasses implement ``encoder_input``, ``decode_params``, ``recon_nll`` and ``params_to_pose``.
    """

    def __init__(self, cfg: VAEConfig, encoder_in: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = mlp(encoder_in, cfg.hidden, 2 * cfg.z_dim, cfg.num_layers, cfg.dropout)
        # Validation energies at levels linspace(0, 1, 1001), NaN until calibrated; saved in every
        # checkpoint so plausibility scores are comparable across models (hand_vae.models.quantiles).
        self.register_buffer(BUFFER, empty_quantiles())

    @property
    def model_type(self) -> str:
        return self.cfg.model_type

    @property
    def z_dim(self) -> int:
        return self.cfg.z_dim

    # ---------------------------------------------------------------- whitening
    def _register_whitening(self, scale: float = 1.0) -> None:
        """Buffers of a fixed whitening factor L (90, 90) (covariance L Lᵀ), its inverse and a
        fitted flag: ``scale · I`` until ``fit_whitening`` fills them, then saved in the state_dict."""
        self.register_buffer("white_chol", scale * torch.eye(POSE_DIM))
        self.register_buffer("white_chol_inv", torch.eye(POSE_DIM) / scale)
        self.register_buffer("white_fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def _set_whitening(self, chol: torch.Tensor) -> None:
        """Store a fitted lower Cholesky factor L (90, 90) and its inverse."""
        self.white_chol.copy_(chol)
        self.white_chol_inv.copy_(torch.linalg.inv(chol))
        self.white_fitted.fill_(True)

    # ---------------------------------------------------------------- subclass hooks
    def encoder_input(self, joints: torch.Tensor) -> torch.Tensor:  # (B, 30, 3) -> (B, D_in)
        raise NotImplementedError

    def decode_params(self, z: torch.Tensor) -> torch.Tensor:  # (B, Z) -> decoder output
        raise NotImplementedError

    def recon_nll(self, joints: torch.Tensor, params: torch.Tensor) -> torch.Tensor:  # -> (B,)
        raise NotImplementedError

    def params_to_pose(self, params: torch.Tensor) -> torch.Tensor:  # -> (B, 90)
        raise NotImplementedError

    # ---------------------------------------------------------------- public API
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior q(z|x).

        Args:
            x: (B, 90) or (B, 30, 3) axis-angle poses.

        Returns:
            mu (B, Z) and logvar (B, Z) = log σ² of the diagonal Gaussian posterior.
        """
        h = self.encoder(self.encoder_input(to_joints(x)))  # (B, 2Z)
        mu, logvar = h.float().chunk(2, dim=-1)
        # Bound log σ² so exp() cannot overflow in fp16/bf16 or from an outlier input.
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean pose of p(x|z): z (B, Z) -> (B, 90) axis-angle."""
        return self.params_to_pose(self.decode_params(z))

    def reparameterize(
        self, mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """z = mu + exp(½ logvar) · ε, ε ~ N(0, I); (B, Z)."""
        if generator is None:
            eps = torch.randn_like(mu)  # traceable by torch.compile with dynamic batch sizes
        else:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor, sample: bool = True) -> dict[str, torch.Tensor]:
        """Everything a loss needs for one batch.

        Args:
            x: (B, 90) or (B, 30, 3).
            sample: draw z from q(z|x) (training); False decodes z = mu.

        Returns:
            dict with ``recon_nll`` (B,) nats, ``kl`` (B, Z) per-dimension nats and ``mu`` (B, Z).
            Nothing else: the training step pays for what it returns (``reconstruct`` gives poses).
        """
        joints = to_joints(x)
        mu, logvar = self.encode(joints)
        z = self.reparameterize(mu, logvar) if sample else mu
        return {
            "recon_nll": self.recon_nll(joints, self.decode_params(z)),
            "kl": kl_per_dim(mu, logvar),
            "mu": mu,
        }

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean: (B, 90)/(B, 30, 3) -> (B, 90)."""
        mu, _ = self.encode(x)
        return self.decode(mu)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw n poses from the prior: z ~ N(0, I), decoded to their mean pose, (n, 90)."""
        p = next(self.parameters())
        z = torch.randn((n, self.z_dim), generator=generator, device=p.device, dtype=p.dtype)
        return self.decode(z)

    def energy(self, x: torch.Tensor | np.ndarray, chunk_size: int | None = ENERGY_CHUNK) -> torch.Tensor:
        """Plausibility score: the negative ELBO evaluated at z = mu(x), in nats (lower = better).

        ``energy = recon_nll(x | decode(mu)) + KL(q(z|x) ‖ p(z))``. Deterministic (no sampling;
        call ``.eval()`` so dropout is off), differentiable in x, one value per pose.

        Args:
            x: (B, 90), (B, 30, 3) or one pose (90,) / (30, 3); a tensor of any float dtype on any
                device, or a numpy array (``as_pose_batch``).
            chunk_size: rows per chunk for large batches (faster on CPU, ``bench/bench_energy.py``);
                None = one pass (e.g. for torch.export).

        Returns:
            (B,) nats (a scalar for one pose) in the model's dtype (float32 unless trained with
            64-true), on x's device (the CPU for a numpy array).
        """
        flat, back = as_pose_batch(x, next(self.parameters()))
        if chunk_size is None or flat.shape[0] <= chunk_size:
            return back(self._energy(to_joints(flat)))
        return back(torch.cat([self._energy(to_joints(c)) for c in flat.split(chunk_size)]))

    def _energy(self, joints: torch.Tensor) -> torch.Tensor:  # (B, 30, 3) -> (B,)
        mu, logvar = self.encode(joints)
        return self.recon_nll(joints, self.decode_params(mu)) + kl_per_dim(mu, logvar).sum(-1)

    @torch.no_grad()
    def log_prob(
        self, x: torch.Tensor | np.ndarray, num_samples: int = 100, chunk_size: int = 128
    ) -> torch.Tensor:
        """Importance-weighted lower bound on log p(x) (Burda et al., "Importance Weighted
        Autoencoders", ICLR 2016): ``log 1/K Σ_k p(x|z_k) p(z_k) / q(z_k|x)``, z_k ~ q(z|x).

        Tightens towards log p(x) as K grows; K = 1 is the ELBO in expectation. Samples are
        processed ``chunk_size`` at a time with a running logsumexp, so memory is O(B · chunk).

        Args:
            x: as for ``energy``.
            num_samples: K.
            chunk_size: importance samples per chunk.

        Returns:
            (B,) nats (a log-density, higher = more plausible), as for ``energy``.
        """
        flat, back = as_pose_batch(x, next(self.parameters()))
        joints = to_joints(flat)
        B, Z = joints.shape[0], self.z_dim
        mu, logvar = self.encode(joints)
        std = torch.exp(0.5 * logvar)
        total = torch.full((B,), -math.inf, device=mu.device)
        done = 0
        while done < num_samples:
            k = min(chunk_size, num_samples - done)
            eps = torch.randn((k, B, Z), device=mu.device, dtype=mu.dtype)
            z = mu + std * eps  # (k, B, Z)
            params = self.decode_params(z.reshape(k * B, Z))
            rep = joints.unsqueeze(0).expand(k, *joints.shape).reshape(k * B, NUM_JOINTS, 3)
            log_px_z = -self.recon_nll(rep, params).reshape(k, B)
            # log p(z) − log q(z|x); the ½ log 2π terms cancel.
            log_pz = -0.5 * z.square().sum(-1)
            log_qz = -0.5 * (eps.square() + logvar).sum(-1)
            total = torch.logaddexp(total, torch.logsumexp(log_px_z + log_pz - log_qz, dim=0))
            done += k
        return back(total - math.log(num_samples))
