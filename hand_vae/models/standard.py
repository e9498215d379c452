"""Standard VAE: a Gaussian or Student-t likelihood on the flat (B, 90) pose, optionally whitened,
with σ diagonal or plus a low-rank W Wᵀ, global or depending on z (docs/design.md §4)."""

from __future__ import annotations

import math

import torch
from torch import nn

from hand_vae.losses import LOG_2PI, gaussian_nll
from hand_vae.models.base import BaseHandVAE, VAEConfig, floored_log_sigma, mlp
from hand_vae.rotations import POSE_DIM
from hand_vae.student_t import t_log_prob_from_maha, t_nll_diag


def low_rank_mahalanobis(
    x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor, factor: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared Mahalanobis distances (B,) of x, mean (B, D) under Σ = diag(σ²) + W Wᵀ (log σ (D,),
    W (D, r)), and log det Σ (0-d), by Woodbury in O(B·D·r).

    With u = (x − μ)/σ, V = W/σ and the capacitance I_r + VᵀV = L Lᵀ: δ = |u|² − |L⁻¹ Vᵀ u|² and
    log det Σ = 2 Σ_d log σ_d + 2 Σ_i log L_ii (the matrix determinant lemma).
    """
    r = factor.shape[1]
    inv_sigma = torch.exp(-log_sigma)  # (D,)
    u = (x - mean) * inv_sigma  # (B, D)
    v = factor * inv_sigma[:, None]  # (D, r)
    cap = torch.eye(r, dtype=v.dtype, device=v.device) + v.T @ v  # (r, r)
    # cholesky_ex: a diverged step's NaN reaches the non-finite guard instead of raising mid-step
    chol, _ = torch.linalg.cholesky_ex(cap)
    proj = torch.linalg.solve_triangular(chol, (u @ v).T, upper=False)  # (r, B)
    maha = u.square().sum(-1) - proj.square().sum(0)  # (B,)
    return maha, 2.0 * log_sigma.sum() + 2.0 * torch.diagonal(chol).log().sum()


def low_rank_gaussian_nll(
    x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor, factor: torch.Tensor
) -> torch.Tensor:
    """−log N(x | mean, diag(σ²) + W Wᵀ), (B,) nats; arguments as for ``low_rank_mahalanobis``."""
    maha, log_det = low_rank_mahalanobis(x, mean, log_sigma, factor)
    return 0.5 * (maha + log_det + x.shape[-1] * LOG_2PI)


class StandardHandVAE(BaseHandVAE):
    """p(x|z) = N(decoder(z), diag σ² [+ W Wᵀ]) on the 90 numbers (whitened: on u = L⁻¹(x − m)).

    σ = min_sigma + exp(raw) per dimension; W (90, ``cfg.cov_rank``) a learned global factor.
    Student-t: t_ν with the same scatter, ν in ``white_nu``. ``local_sigma``: the decoder outputs
    (B, 180) = [mean, offset], σ_b = min_sigma + exp(raw + offset_b(z)), the offset head starting at 0.
    """

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__(cfg, encoder_in=POSE_DIM)
        out = 2 * POSE_DIM if cfg.local_sigma else POSE_DIM
        self.decoder = mlp(cfg.z_dim, cfg.hidden, out, cfg.num_layers, cfg.dropout)
        # σ starts at 0.1 rad (the pose noise we care about), or whitened at 1 with a zero decoder:
        # exactly the full-covariance prior fitted by fit_whitening.
        start = 1.0 if cfg.whiten else max(0.1, 2.0 * cfg.min_sigma)
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
        if cfg.cov_rank < 0:
            raise ValueError(f"cov_rank must be >= 0, got {cfg.cov_rank}")
        if cfg.cov_rank > 0:
            # Small random start: at W = 0 the gradient w.r.t. W vanishes (the NLL is quadratic in W).
            g = torch.Generator().manual_seed(0)
            self.cov_factor = nn.Parameter(0.01 * torch.randn(POSE_DIM, cfg.cov_rank, generator=g))

    @torch.no_grad()
    def fit_whitening(self, train: torch.Tensor, val: torch.Tensor | None = None) -> dict[str, float]:
        """Start the model at the val-tuned classic prior (``_tune_prior``) of ``train`` (N, 90), the
        distribution trained on (train ∪ mirrored train when mirroring), choosing on ``val`` (M, 90).

        Returns:
            {"floor", "scale", "val_nll"}, plus "nu" for the Student-t ({} when whitening is off).
        """
        if not self.cfg.whiten:
            return {}
        v = None if val is None else val.reshape(val.shape[0], POSE_DIM)
        mean, chol, settings = self._tune_prior(train.reshape(train.shape[0], POSE_DIM), v)
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
        """p(x|z) on the 90 pose numbers, float64: location (B, 90) rad and covariance (Student-t:
        scatter) (90, 90) rad², (B, 90, 90) with ``local_sigma``. Whitened, x = m + L w maps
        N(params, Σ_w) (or a t_ν) to N(m + L params, L Σ_w Lᵀ) (the t_ν alike)."""
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

    def side_residual(
        self, x_side: torch.Tensor, side: str, params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One hand's (B, 45) residual from the decoded location and its covariance (scatter) block,
        float64: (45, 45), or (B, 45, 45) with ``local_sigma``."""
        mean, cov = self.decoder_gaussian(params)
        s = slice(0, POSE_DIM // 2) if side == "left" else slice(POSE_DIM // 2, POSE_DIM)
        return x_side.double() - mean[..., s], cov[..., s, s]
