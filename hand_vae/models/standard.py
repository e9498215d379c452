"""Standard VAE: a Gaussian (or Student-t) likelihood on the flat (B, 90) axis-angle vector.

The covariance is diagonal (``cov_rank = 0``) or low rank plus diagonal, Σ = diag(σ²) + W Wᵀ
(``cov_rank = r > 0``). Real hand poses lie close to a thin manifold; a diagonal σ wide enough to
cover an unseen subject's reconstruction error blurs it, so small off-manifold noise goes
unnoticed (docs/design.md §4). W carries the correlated part of the residual and lets σ stay small.
With ``likelihood="student_t"`` (whitened only) the same Σ is the scatter of a multivariate t_ν,
ν fitted with the whitening (``student_t.tune_student_t``).
With ``local_sigma`` the decoder also outputs a log-σ offset per dimension (zero at the start), so
σ depends on z: thin where the decoder reconstructs well, wide where it does not.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from hand_vae.gaussian import tune_gaussian
from hand_vae.losses import LOG_2PI, gaussian_nll
from hand_vae.models.base import BaseHandVAE, VAEConfig, floored_log_sigma, mlp
from hand_vae.rotations import POSE_DIM
from hand_vae.student_t import t_log_prob_from_maha, t_nll_diag, tune_student_t

log = logging.getLogger(__name__)

SIDE_CHUNK = 1024  # poses per batch of (45, 45) float64 Cholesky factors with local_sigma


def low_rank_mahalanobis(
    x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor, factor: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared Mahalanobis distances (B,) under Σ = diag(σ²) + W Wᵀ, and log det Σ (0-d), via Woodbury.

    With u = (x − μ)/σ, V = W/σ (row-scaled) and the capacitance C = I_r + VᵀV = L Lᵀ:
    ``Mahalanobis = |u|² − |L⁻¹ Vᵀ u|²`` and ``log det Σ = 2 Σ_d log σ_d + 2 Σ_i log L_ii``
    (the matrix determinant lemma). Cost O(B·D·r), no D×D matrix.

    Args:
        x: (B, D) observations.
        mean: (B, D) means.
        log_sigma: (D,) log σ of the diagonal part.
        factor: (D, r) low-rank factor W.
    """
    r = factor.shape[1]
    inv_sigma = torch.exp(-log_sigma)  # (D,)
    u = (x - mean) * inv_sigma  # (B, D)
    v = factor * inv_sigma[:, None]  # (D, r)
    cap = torch.eye(r, dtype=v.dtype, device=v.device) + v.T @ v  # (r, r)
    # cholesky_ex: a NaN factor (after a diverged step) propagates as NaN for the non-finite
    # guard to report, instead of raising mid-step.
    chol, _ = torch.linalg.cholesky_ex(cap)
    proj = torch.linalg.solve_triangular(chol, (u @ v).T, upper=False)  # (r, B)
    maha = u.square().sum(-1) - proj.square().sum(0)  # (B,)
    return maha, 2.0 * log_sigma.sum() + 2.0 * torch.diagonal(chol).log().sum()


def low_rank_gaussian_nll(
    x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor, factor: torch.Tensor
) -> torch.Tensor:
    """−log N(x | mean, diag(σ²) + W Wᵀ), summed over the D dimensions (``low_rank_mahalanobis``).

    Args:
        x: (B, D) observations.
        mean: (B, D) means.
        log_sigma: (D,) log σ of the diagonal part.
        factor: (D, r) low-rank factor W.

    Returns:
        (B,) nats.
    """
    maha, log_det = low_rank_mahalanobis(x, mean, log_sigma, factor)
    return 0.5 * (maha + log_det + x.shape[-1] * LOG_2PI)


class StandardHandVAE(BaseHandVAE):
    """p(x|z) = N(decoder(z), diag σ² [+ W Wᵀ]) on the 90 axis-angle numbers.

    σ is learned per dimension with a smooth floor ``cfg.min_sigma`` (radians):
    σ = min_sigma + exp(raw). W (90, ``cfg.cov_rank``) is a learned global factor, radians.
    ``cfg.likelihood == "student_t"``: p(u|z) = t_ν(decoder(z), diag σ² [+ W Wᵀ]) on the whitened
    poses u instead, ν in the buffer ``white_nu`` (inf = the Gaussian until ``fit_whitening``).
    ``cfg.local_sigma``: the decoder outputs (B, 180) = [mean, offset] and σ_b = min_sigma +
    exp(raw + offset_b(z)) per pose; the offset's head starts at zero.
    """

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__(cfg, encoder_in=POSE_DIM)
        out = 2 * POSE_DIM if cfg.local_sigma else POSE_DIM
        self.decoder = mlp(cfg.z_dim, cfg.hidden, out, cfg.num_layers, cfg.dropout)
        # Start at σ ≈ 0.1 rad, the scale of pose noise we care about; whitened coordinates
        # have unit spread, so there start at σ = 1 with a zero decoder output, i.e. exactly at the
        # full-covariance Gaussian, and let training improve on it.
        start = 1.0 if cfg.whiten else max(0.1, 2.0 * cfg.min_sigma)
        # σ = min_sigma + exp(raw): solve for raw so that σ starts exactly at ``start``.
        self.raw_log_sigma = nn.Parameter(torch.full((POSE_DIM,), math.log(start - cfg.min_sigma)))
        # Zero head (whitened: all of it; else the log-σ offset rows): σ starts at ``start`` for every z.
        zero_from = 0 if cfg.whiten else POSE_DIM
        if cfg.whiten or cfg.local_sigma:
            nn.init.zeros_(self.decoder[-1].weight[zero_from:])
            nn.init.zeros_(self.decoder[-1].bias[zero_from:])
        if cfg.whiten:
            # Filled by fit_whitening() before training, then saved in the state_dict.
            self.register_buffer("white_mean", torch.zeros(POSE_DIM))
            self._register_whitening()  # L, Σ_data = L Lᵀ
            if cfg.likelihood == "student_t":
                # ν of the t, a buffer (no host sync in a step); inf (the Gaussian) until fitted.
                self.register_buffer("white_nu", torch.tensor(math.inf))
        if cfg.cov_rank < 0:
            raise ValueError(f"cov_rank must be >= 0, got {cfg.cov_rank}")
        if cfg.cov_rank > 0:
            # Small random start: at W = 0 the gradient w.r.t. W vanishes (the NLL is quadratic in W).
            g = torch.Generator().manual_seed(0)
            self.cov_factor = nn.Parameter(0.01 * torch.randn(POSE_DIM, cfg.cov_rank, generator=g))

    @torch.no_grad()
    def fit_whitening(self, train: torch.Tensor, val: torch.Tensor | None = None) -> dict[str, float]:
        """Start the model at the validation-tuned classic prior of the training poses.

        The whitening is N(m, scale² (Σ + floor · I)) of ``train`` (N, 90) with the floor (rad²) and
        scale chosen on ``val`` (M, 90) by ``gaussian.tune_gaussian``; with the Student-t likelihood
        it is t_ν(m, scale² Σ_ν,floor) with ν, floor and scale chosen on ``val`` by
        ``student_t.tune_student_t`` (no ``val``: the Gaussian, ν = inf). Pass the distribution that
        is trained on (train ∪ mirrored train when mirroring). With a zero decoder and σ = 1 the
        model then is exactly that prior, and training moves it only as far as the data supports.

        Returns:
            {"floor", "scale", "val_nll"} of the chosen Gaussian, plus "nu" for the Student-t
            ({} when whitening is off).
        """
        if not self.cfg.whiten:
            return {}
        x = train.reshape(train.shape[0], POSE_DIM)
        v = None if val is None or len(val) == 0 else val.reshape(val.shape[0], POSE_DIM)
        if self.cfg.likelihood == "student_t" and v is not None:
            mean, chol, settings = tune_student_t(x, v)
        else:
            mean, chol, settings = tune_gaussian(x, v)
        if self.cfg.likelihood == "student_t":
            if v is None:
                log.info(
                    "no validation poses to choose nu on: the Student-t likelihood starts as the Gaussian"
                )
                settings["nu"] = math.inf
            self.white_nu.fill_(settings["nu"])
        self.white_mean.copy_(mean)
        self._set_whitening(chol)
        return settings

    def _whiten(self, flat: torch.Tensor) -> torch.Tensor:
        """(B, 90) poses -> (B, 90) whitened coordinates L⁻¹ (x − m)."""
        return (flat - self.white_mean) @ self.white_chol_inv.T

    @property
    def log_sigma(self) -> torch.Tensor:
        """(90,) log σ of the diagonal part of the likelihood, floor included."""
        return floored_log_sigma(self.raw_log_sigma, self.cfg.min_sigma)

    def encoder_input(self, joints: torch.Tensor) -> torch.Tensor:
        B = joints.shape[0]
        flat = joints.reshape(B, POSE_DIM)  # (B, 90)
        return self._whiten(flat) if self.cfg.whiten else flat

    def decode_params(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).float()  # (B, 90) mean [+ (B, 90) log-σ offset]; losses in fp32 under autocast

    def mean_log_sigma(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder output -> location (B, 90) and log σ, floor included: (90,), or (B, 90) with
        ``local_sigma`` (σ_b = min_sigma + exp(raw + offset_b)), in ``params``' dtype."""
        if not self.cfg.local_sigma:
            return params, self.log_sigma.to(params.dtype)
        raw = self.raw_log_sigma.to(params.dtype) + params[..., POSE_DIM:]
        return params[..., :POSE_DIM], floored_log_sigma(raw, self.cfg.min_sigma)

    def recon_nll(self, joints: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        B = joints.shape[0]
        x = joints.reshape(B, POSE_DIM).float()
        # Change of variables: log p(x) = log p(L⁻¹(x − m)) − log det L.
        log_det = 0.0
        if self.cfg.whiten:
            x = self._whiten(x)
            log_det = torch.diagonal(self.white_chol).log().sum()
        mean, log_sigma = self.mean_log_sigma(params)
        if self.cfg.likelihood == "student_t":
            if self.cfg.cov_rank > 0:
                maha, log_det_u = low_rank_mahalanobis(x, mean, log_sigma, self.cov_factor.float())
                return log_det - t_log_prob_from_maha(maha, log_det_u, POSE_DIM, self.white_nu)
            return t_nll_diag(x, mean, log_sigma, self.white_nu) + log_det
        if self.cfg.cov_rank > 0:
            return low_rank_gaussian_nll(x, mean, log_sigma, self.cov_factor.float()) + log_det
        return gaussian_nll(x, mean, log_sigma) + log_det

    def params_to_pose(self, params: torch.Tensor) -> torch.Tensor:
        """Decoder output -> (B, 90) mean pose (un-whitened when whitening is on)."""
        params = params[..., :POSE_DIM]
        if self.cfg.whiten:
            return self.white_mean + params @ self.white_chol.T
        return params

    def decoder_gaussian(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(x|z) on the 90 pose numbers: location (B, 90) rad and covariance (90, 90) rad² of the
        Gaussian, or scatter of the Student-t (same ν as ``white_nu``); (B, 90, 90) with ``local_sigma``.

        The parametrisation-free form of the likelihood (e.g. for marginalising a hand). Whitened:
        x = m + L w with w ~ N(params, Σ_w) gives N(m + L params, L Σ_w Lᵀ), and likewise for a t
        (an affine map of a t_ν is a t_ν). float64.
        """
        mean, log_sigma = self.mean_log_sigma(params.double())
        var = torch.exp(2.0 * log_sigma)  # (90,) or (B, 90)
        if self.cfg.whiten:
            chol = self.white_chol.double()
            # L diag(σ²) Lᵀ (+ L W Wᵀ Lᵀ), per pose with local_sigma.
            cov = (chol * var[..., None, :]) @ chol.T
            if self.cfg.cov_rank > 0:
                lw = chol @ self.cov_factor.double()
                cov = cov + lw @ lw.T
            return self.white_mean.double() + mean @ chol.T, cov
        cov = torch.diag_embed(var)
        if self.cfg.cov_rank > 0:
            cov = cov + self.cov_factor.double() @ self.cov_factor.double().T
        return mean, cov

    def side_log_likelihood(self, x_side: torch.Tensor, side: str, params: torch.Tensor) -> torch.Tensor:
        """log p(x_side | z) of one hand ("left"/"right", (B, 45)), the other integrated out: (B,) nats.

        Exact: the marginal of a Gaussian is the Gaussian of its mean block and covariance block; that
        of a multivariate t_ν is the t_ν of its location block and scatter block. With ``local_sigma``
        each pose has its own block, factored ``SIDE_CHUNK`` poses at a time.
        """
        if self.cfg.local_sigma and params.shape[0] > SIDE_CHUNK:
            parts = zip(x_side.split(SIDE_CHUNK), params.split(SIDE_CHUNK), strict=True)
            return torch.cat([self.side_log_likelihood(x, side, p) for x, p in parts])
        mean, cov = self.decoder_gaussian(params)
        s = slice(0, POSE_DIM // 2) if side == "left" else slice(POSE_DIM // 2, POSE_DIM)
        chol = torch.linalg.cholesky(cov[..., s, s])  # (45, 45), or (B, 45, 45) with local_sigma
        if self.cfg.likelihood == "student_t":
            diff = x_side.double() - mean[..., s]  # (B, 45)
            if chol.dim() == 2:  # one factor: one solve against B right-hand sides
                y = torch.linalg.solve_triangular(chol, diff.T, upper=False).T
            else:
                y = torch.linalg.solve_triangular(chol, diff.unsqueeze(-1), upper=False).squeeze(-1)
            log_det = 2.0 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)
            maha = y.square().sum(-1)  # (B,)
            return t_log_prob_from_maha(maha, log_det, POSE_DIM // 2, self.white_nu).float()
        dist = torch.distributions.MultivariateNormal(mean[..., s], scale_tril=chol, validate_args=False)
        return dist.log_prob(x_side.double()).float()
