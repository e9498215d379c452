"""Shared VAE machinery: MLPs, whitening, reparameterisation, energy and the IWAE bound.

Subclasses define what the encoder sees and the decoder's likelihood; the user API (``encode``,
``decode``, ``forward``, ``reconstruct``, ``sample``, ``energy``, ``log_prob``) lives here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from hand_vae.gaussian import tune_gaussian
from hand_vae.losses import kl_per_dim
from hand_vae.models.quantiles import BUFFER, empty_quantiles
from hand_vae.rotations import NUM_JOINTS, POSE_DIM, pose_shape_hint, to_joints
from hand_vae.settings import VAEConfig
from hand_vae.student_t import t_log_prob_from_maha, tune_student_t

log = logging.getLogger(__name__)

ENERGY_CHUNK = 8192  # rows per energy() chunk: keeps the MLP's temporaries in cache
SIDE_CHUNK = 1024  # poses per batch of (45, 45) float64 Cholesky factors with local_sigma


def as_pose_batch(
    x: torch.Tensor | np.ndarray, like: torch.Tensor, dim: int = POSE_DIM, name: str = "hand pose"
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """What a user holds -> a pose batch the model can score, and the way back for the result.

    ``x``: a tensor (any float dtype and device) or numpy array of axis-angle poses, (B, dim),
    (B, dim/3, 3) or one pose (dim,) / (dim/3, 3), dim 90 (two hands) or 45 (one hand); any other
    shape raises ValueError with a hint (``name`` says what the poses are). A differentiable cast.

    Returns:
        (B, dim) on the device and dtype of ``like`` (a model parameter), and ``back(out)``: moves a
        result (B, ...) to x's device (the CPU for numpy) and drops B for a single pose.
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
    """log σ for ``σ = min_sigma + exp(raw)``: a floor with a gradient everywhere (a clamp's could trap σ)."""
    return torch.logaddexp(raw, torch.full_like(raw, math.log(min_sigma)))  # a fill, not a host copy


class BaseHandVAE(nn.Module):
    """Encoder, reparameterisation and the scoring API shared by both models.

    Subclasses implement ``encoder_input`` ((B, 30, 3) -> (B, D_in)), ``decode_params`` (z (B, Z) ->
    decoder output), ``recon_nll`` ((joints, params) -> (B,) nats), ``params_to_pose`` (-> (B, 90)) and
    ``side_residual`` (one hand's residual (B, 45) and its covariance block, for the one-hand marginal).
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

    def _register_whitening(self, scale: float = 1.0) -> None:
        """Buffers of a fixed whitening factor L (90, 90) (covariance L Lᵀ), its inverse, a fitted flag
        and, for the Student-t, ν (a buffer: no host sync in a step): ``scale · I`` and ν = inf (the
        Gaussian) until ``fit_whitening``, then saved in the state_dict."""
        self.register_buffer("white_chol", scale * torch.eye(POSE_DIM))
        self.register_buffer("white_chol_inv", torch.eye(POSE_DIM) / scale)
        self.register_buffer("white_fitted", torch.zeros((), dtype=torch.bool))
        if self.cfg.likelihood == "student_t":
            self.register_buffer("white_nu", torch.tensor(math.inf))

    @property
    def _nu(self) -> torch.Tensor | float:
        """ν of the likelihood: the ``white_nu`` buffer for the Student-t, else inf (the Gaussian)."""
        return self.white_nu if self.cfg.likelihood == "student_t" else math.inf

    @torch.no_grad()
    def _tune_prior(
        self, train: torch.Tensor, val: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """The validation-tuned classic prior of (N, 90) features a fitted model starts at:
        ``tune_student_t`` for the Student-t (ν into ``white_nu``), else, or without val rows,
        ``tune_gaussian`` (ν = inf). Returns its location, Cholesky factor and settings."""
        val = None if val is None or len(val) == 0 else val
        if self.cfg.likelihood != "student_t":
            return tune_gaussian(train, val)
        if val is None:
            log.info("no validation poses to choose nu on: the Student-t likelihood starts as the Gaussian")
            mean, chol, settings = tune_gaussian(train, None)
            settings["nu"] = math.inf
        else:
            mean, chol, settings = tune_student_t(train, val)
        self.white_nu.fill_(settings["nu"])
        return mean, chol, settings

    def side_log_likelihood(self, x_side: torch.Tensor, side: str, params: torch.Tensor) -> torch.Tensor:
        """log p(x_side | z) of one hand ("left"/"right", (B, 45)), the other integrated out: (B,) nats.

        Exact: a Gaussian's (t_ν's) marginal is that of its location and covariance (scatter) blocks;
        with ``local_sigma`` each pose has its own block, factored ``SIDE_CHUNK`` poses at a time.
        """
        if self.cfg.local_sigma and params.shape[0] > SIDE_CHUNK:
            parts = zip(x_side.split(SIDE_CHUNK), params.split(SIDE_CHUNK), strict=True)
            return torch.cat([self.side_log_likelihood(x, side, p) for x, p in parts])
        diff, cov = self.side_residual(x_side, side, params)  # (B, d), (d, d) or (B, d, d) float64
        chol = torch.linalg.cholesky(cov)
        if chol.dim() == 2:  # one factor: one solve against B right-hand sides
            y = torch.linalg.solve_triangular(chol, diff.T, upper=False).T
        else:
            y = torch.linalg.solve_triangular(chol, diff.unsqueeze(-1), upper=False).squeeze(-1)
        log_det = 2.0 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)
        return t_log_prob_from_maha(y.square().sum(-1), log_det, diff.shape[-1], self._nu).float()

    @torch.no_grad()
    def _set_whitening(self, chol: torch.Tensor) -> None:
        """Store a fitted lower Cholesky factor L (90, 90) and its inverse."""
        self.white_chol.copy_(chol)
        self.white_chol_inv.copy_(torch.linalg.inv(chol))
        self.white_fitted.fill_(True)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior q(z|x) of (B, 90) or (B, 30, 3) poses: mu (B, Z) and logvar = log σ² (B, Z)."""
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
        """What a loss needs for a (B, 90) or (B, 30, 3) batch, z ~ q(z|x) (``sample``) or z = mu:
        ``recon_nll`` (B,) nats, ``kl`` (B, Z) nats and ``mu`` (B, Z); nothing else (the step pays for it)."""
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
        """Plausibility: ``recon_nll(x | decode(mu)) + KL(q(z|x) ‖ p(z))``, the negative ELBO at z = mu(x).

        Deterministic (``.eval()`` turns dropout off), differentiable in x, lower = more plausible.

        Args:
            x: (B, 90), (B, 30, 3) or one pose, tensor or numpy (``as_pose_batch``).
            chunk_size: rows per chunk (faster on CPU, ``bench/bench_energy.py``); None = one pass
                (e.g. for torch.export).

        Returns:
            (B,) nats (a scalar for one pose) in the model's dtype, on x's device (CPU for numpy).
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
        """Importance-weighted bound ``log 1/K Σ_k p(x|z_k) p(z_k) / q(z_k|x)``, z_k ~ q(z|x), K =
        ``num_samples`` (Burda et al., "Importance Weighted Autoencoders", ICLR 2016).

        K = 1 is the ELBO in expectation. ``chunk_size`` samples at a time with a running logsumexp
        (memory O(B · chunk)). x and the result as for ``energy`` (nats, higher = more plausible).
        """
        flat, back = as_pose_batch(x, next(self.parameters()))
        joints = to_joints(flat)
        B, Z = joints.shape[0], self.z_dim
        mu, logvar = self.encode(joints)
        std = torch.exp(0.5 * logvar)
        total = torch.full((B,), -math.inf, device=mu.device)
        for done in range(0, num_samples, chunk_size):
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
        return back(total - math.log(num_samples))
