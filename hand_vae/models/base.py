"""Shared VAE machinery: configuration, MLPs, reparameterisation, energy and the IWAE bound.

Subclasses define what the encoder sees and what the decoder's likelihood is; everything a
user calls (``encode``, ``decode``, ``forward``, ``reconstruct``, ``sample``, ``energy``,
``log_prob``) lives here so both models behave the same way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from hand_vae.losses import kl_per_dim
from hand_vae.rotations import NUM_JOINTS, POSE_DIM, to_joints

ENERGY_CHUNK = 8192  # rows per energy() chunk: keeps the MLP's temporaries in cache


def _setting(default, help: str, group: str = "model", **extra):
    """A dataclass field that also defines its CLI flag (``hand_vae.config`` reads the metadata)."""
    return field(default=default, metadata={"help": help, "group": group, **extra})


@dataclass
class VAEConfig:
    """A hand VAE: the one definition of every model setting and its default.

    The training CLI derives its model flags (help, group, default) from these fields, the
    LightningModule saves the ones it was given as hyperparameters, and ``build_model`` builds from
    them. Plain types only, so they live in a checkpoint. Group ``model`` shapes the network (a resume
    may not change it); group ``optim`` regularises it (a resume keeps the checkpoint's value).
    ``min_sigma=None`` resolves to the measured default for the likelihood's units, see
    ``DEFAULT_MIN_SIGMA``; ``whiten`` and ``cov_rank`` only apply to the standard model.
    """

    model_type: str = _setting(
        "standard",
        "standard: Gaussian on (B,90) axis-angle; so3: Gaussian on rotation residuals",
        choices=("standard", "so3"),
    )
    z_dim: int = _setting(24, "latent dimension")
    hidden: int = _setting(256, "hidden layer width of encoder and decoder")
    num_layers: int = _setting(2, "hidden layers per MLP")
    cov_rank: int = _setting(
        0,
        "standard model: rank of a learned low-rank part of the decoder covariance (0 = none; the whitened "
        "likelihood is already full-covariance)",
    )
    # Default measured with `python bench/prior_quality.py` (README "Expected Results"): whitened, the
    # CLI defaults score NLL −232.8 on the default proxy's unseen subject against −228.6 for the best
    # val-tuned Gaussian, and equal it (−217.5) on the one-subject proxy; the old unwhitened rank-32
    # default scored −112.7. cov_rank 0 and min_sigma 0.05 (whitened units) are the settings measured.
    whiten: bool = _setting(
        True,
        "standard model: model poses whitened by the full-covariance Gaussian of the training distribution (floor "
        "and scale chosen on val), so the VAE starts exactly at that Gaussian and moves away only as far as val "
        "supports (docs/design.md §4, §7); --no-whiten: diagonal sigma in radians",
        action="bool_optional",
    )
    dropout: float = _setting(0.0, "dropout after each hidden layer", "optim")
    min_sigma: float | None = _setting(
        None,
        "smooth floor of the learned likelihood scale sigma (stops it collapsing onto the training set); whitened "
        "units (fraction of the data's spread) when whitened, radians with --no-whiten (default: 0.05 and 0.005)",
        "optim",
    )

    def __post_init__(self) -> None:
        if self.model_type != "standard":
            self.whiten, self.cov_rank = False, 0  # the SO(3) likelihood has its own whitening
        if self.min_sigma is None:
            self.min_sigma = DEFAULT_MIN_SIGMA[self.model_type != "standard" or self.whiten]

    def to_dict(self) -> dict:
        return asdict(self)


# σ floor per likelihood unit, measured on held-out subjects: whitened units (SO(3), whitened
# standard) and radians (standard with --no-whiten).
DEFAULT_MIN_SIGMA = {True: 0.05, False: 0.005}


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
        # checkpoint so plausibility scores are comparable across models (hand_vae.calibration).
        self.register_buffer("energy_quantiles", torch.full((1001,), float("nan")))

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

    def energy(self, x: torch.Tensor, chunk_size: int | None = ENERGY_CHUNK) -> torch.Tensor:
        """Plausibility score: the negative ELBO evaluated at z = mu(x), in nats (lower = better).

        ``energy = recon_nll(x | decode(mu)) + KL(q(z|x) ‖ p(z))``. Deterministic (no sampling;
        call ``.eval()`` so dropout is off), differentiable in x, one value per pose.

        Args:
            x: (B, 90) or (B, 30, 3).
            chunk_size: rows per chunk for large batches; None = one pass (e.g. for torch.export).

        Returns:
            (B,) nats.
        """
        joints = to_joints(x)
        if chunk_size is not None and joints.shape[0] > chunk_size:
            # Large batches in cache-sized chunks: +49% poses/s at B = 65,536 on CPU (bench_energy).
            return torch.cat([self.energy(c, None) for c in joints.split(chunk_size)])
        mu, logvar = self.encode(joints)
        return self.recon_nll(joints, self.decode_params(mu)) + kl_per_dim(mu, logvar).sum(-1)

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor, num_samples: int = 100, chunk_size: int = 128) -> torch.Tensor:
        """Importance-weighted lower bound on log p(x) (Burda et al., "Importance Weighted
        Autoencoders", ICLR 2016): ``log 1/K Σ_k p(x|z_k) p(z_k) / q(z_k|x)``, z_k ~ q(z|x).

        Tightens towards log p(x) as K grows; K = 1 is the ELBO in expectation. Samples are
        processed ``chunk_size`` at a time with a running logsumexp, so memory is O(B · chunk).

        Args:
            x: (B, 90) or (B, 30, 3).
            num_samples: K.
            chunk_size: importance samples per chunk.

        Returns:
            (B,) nats (a log-density, higher = more plausible).
        """
        joints = to_joints(x)
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
        return total - math.log(num_samples)
