"""SO(3) VAE: rotations in, rotations out, a correlated tangent-space likelihood (docs/design.md §4).

Encoder: the 6D form (Zhou et al., CVPR 2019) of M_jᵀ R_j, M the data's mean pose. Decoder:
R̂_j = M_j · GS(d6_j + [1, 0, 0, 0, 1, 0]). Likelihood: r ~ N(0, L diag(σ²) Lᵀ) (or t_ν(ℓ, ·)) for
the stacked residuals r_j = Log(R̂_jᵀ R_j) ∈ R⁹⁰, L fitted on the training residuals. It ignores the
exp map's Haar Jacobian (2 − 2 cos θ)/θ², so it is a density only for residuals well below π.
"""

from __future__ import annotations

import math

import roma
import torch
from torch import nn

from hand_vae.models.base import BaseHandVAE, VAEConfig, floored_log_sigma, mlp
from hand_vae.rotations import (
    JOINTS_PER_HAND,
    NUM_JOINTS,
    POSE_DIM,
    axis_angle_to_matrix,
    matrix_to_6d,
    matrix_to_axis_angle,
    rot6d_to_matrix,
    to_joints,
)
from hand_vae.student_t import t_log_prob_from_maha

D6 = 6
IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # first two columns of the identity
UNFITTED_SCALE = 0.1  # L = 0.1 I rad before fit_whitening (the unwhitened standard model's start σ)
ROT_FLAT = NUM_JOINTS * 9  # a decoded rotation's entries in the flat params of ``local_sigma``


def compose(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """A @ B for (..., 3, 3) as a broadcast sum: autocast never runs it in half precision, whose noise
    would swamp the residuals' thin directions."""
    return (A[..., :, :, None] * B[..., None, :, :]).sum(-2)


def tangent_residuals(R_hat: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """r_j = Log(R̂_jᵀ R_j) for R_hat (B or none, J, 3, 3) and R (B, J, 3, 3), stacked to (B, 3J) rad
    (each angle in [0, π], finite gradient at r = 0)."""
    return matrix_to_axis_angle(compose(R_hat.transpose(-1, -2), R)).flatten(-2)


def _fit_log(R: torch.Tensor) -> torch.Tensor:
    """Log map (..., 3) of (..., 3, 3) float64 rotations, for fitting (no gradient).

    r = vee(R − Rᵀ) θ/(2 sin θ) costs a quarter of the quaternion route but loses accuracy as θ → π,
    so rotations beyond 2π/3 are redone exactly.
    """
    vee = torch.stack(
        [R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1
    )
    cos = 0.5 * (R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0)
    theta = torch.atan2(0.5 * torch.linalg.vector_norm(vee, dim=-1), cos)
    out = vee * (0.5 * roma.inv_sinc(theta))[..., None]
    far = cos < -0.5
    if bool(far.any()):
        out[far] = matrix_to_axis_angle(R[far])
    return out


@torch.no_grad()
def karcher_mean(R: torch.Tensor, max_iter: int = 20, tol: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-joint Karcher mean M (J, 3, 3) of (N, J, 3, 3) float64 rotations, and the residuals
    Log(M_jᵀ R_nj) (N, 3J): from the chordal mean (roma's special Procrustes), Gauss-Newton steps
    M ← M Exp(mean_n Log(Mᵀ R_n)) until the mean residual is below ``tol`` rad (zero-mean residuals)."""
    mean = roma.special_procrustes(R.sum(0))
    for _ in range(max_iter):
        resid = _fit_log(mean.transpose(-1, -2) @ R)  # (N, J, 3)
        step = resid.mean(0)  # (J, 3)
        if float(step.abs().max()) < tol:
            break
        mean = mean @ axis_angle_to_matrix(step)
    return mean, resid.flatten(-2)


class SO3HandVAE(BaseHandVAE):
    """p(R|z): ``nll = ½ |diag(1/σ) L⁻¹ r|² + Σ_d log σ_d + log |det L| + 45 log 2π`` for the residuals r.

    σ = min_sigma + exp(raw) per whitened direction in units of the data's spread (min_sigma < 1),
    starting at 1; with a zero last decoder layer R̂ = M, so a freshly fitted model is exactly the
    tangent Gaussian of the training poses at their mean. Before ``fit_whitening`` M = I, L = 0.1 I.
    ``local_sigma``: the decoder also outputs a (B, 90) log-σ offset, σ_b = min_sigma + exp(raw +
    offset_b(z)) (zero at the start), and the params are flat (B, 270 + 90) = [R̂, offset].
    """

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__(cfg, encoder_in=NUM_JOINTS * D6)
        out = NUM_JOINTS * D6 + (POSE_DIM if cfg.local_sigma else 0)
        self.decoder = mlp(cfg.z_dim, cfg.hidden, out, cfg.num_layers, cfg.dropout)
        # Zero head + identity offset: every z decodes to the mean pose (and the global σ) at initialisation.
        nn.init.zeros_(self.decoder[-1].weight)
        nn.init.zeros_(self.decoder[-1].bias)
        self.register_buffer("identity_6d", torch.tensor(IDENTITY_6D), persistent=False)
        self.raw_log_sigma = nn.Parameter(torch.full((POSE_DIM,), math.log(1.0 - cfg.min_sigma)))
        # Filled by fit_whitening() before training, then saved in the state_dict.
        self.register_buffer("mean_rot", torch.eye(3).expand(NUM_JOINTS, 3, 3).clone())  # M (30, 3, 3)
        self._register_whitening(UNFITTED_SCALE)  # L of the residuals, rad
        if cfg.likelihood == "student_t":
            self.register_buffer("resid_loc", torch.zeros(POSE_DIM))  # the t's location ℓ, rad

    @torch.no_grad()
    def fit_whitening(self, train: torch.Tensor, val: torch.Tensor | None = None) -> dict[str, float]:
        """Start the model at the val-tuned tangent prior of ``train`` (N, 90) (train ∪ mirrored train
        when mirroring): M its per-joint Karcher mean, L and ν (``_tune_prior``) from the residuals
        about M, chosen on those of ``val`` (M, 90); the t's location goes to ``resid_loc``.

        Returns:
            {"floor", "scale", "val_nll"} (nats per pose), plus "nu" for the Student-t.
        """
        R = axis_angle_to_matrix(to_joints(train.reshape(train.shape[0], POSE_DIM)).double())  # (N, 30, 3, 3)
        mean, train_resid = karcher_mean(R)
        val_resid = None
        if val is not None:
            R_val = axis_angle_to_matrix(to_joints(val.reshape(val.shape[0], POSE_DIM)).double().to(R.device))
            val_resid = _fit_log(mean.transpose(-1, -2) @ R_val).flatten(-2)
        loc, chol, settings = self._tune_prior(train_resid, val_resid)
        if self.cfg.likelihood == "student_t":
            self.resid_loc.copy_(loc if math.isfinite(settings["nu"]) else 0.0)  # a Gaussian's is 0 (Karcher)
        self.mean_rot.copy_(mean)
        self._set_whitening(chol)
        return settings

    @property
    def log_sigma(self) -> torch.Tensor:
        """(90,) log σ per whitened direction (units of the data's spread), floor included."""
        return floored_log_sigma(self.raw_log_sigma, self.cfg.min_sigma)

    def encoder_input(self, joints: torch.Tensor) -> torch.Tensor:
        """(B, 30, 3) -> (B, 180): 6D of M_jᵀ R_j minus the identity's 6D, zero at the mean pose."""
        rel = compose(self.mean_rot.transpose(-1, -2), axis_angle_to_matrix(joints.float()))
        return (matrix_to_6d(rel) - self.identity_6d).flatten(1)

    def decode_params(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, Z) -> decoded rotations R̂ (B, 30, 3, 3); with ``local_sigma`` flat (B, 360) =
        [R̂ (270), log-σ offset (90)]."""
        B = z.shape[0]
        out = self.decoder(z).float()
        d6 = out[:, : NUM_JOINTS * D6].reshape(B, NUM_JOINTS, D6) + self.identity_6d  # (B, 30, 6)
        R_hat = compose(self.mean_rot, rot6d_to_matrix(d6))
        if not self.cfg.local_sigma:
            return R_hat
        return torch.cat([R_hat.reshape(B, ROT_FLAT), out[:, NUM_JOINTS * D6 :]], -1)

    def mean_log_sigma(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder output -> decoded rotations R̂ (B, 30, 3, 3) and log σ per whitened direction, floor
        included: (90,), or (B, 90) with ``local_sigma`` (σ_b = min_sigma + exp(raw + offset_b))."""
        if not self.cfg.local_sigma:
            return params, self.log_sigma.to(params.dtype)
        raw = self.raw_log_sigma.to(params.dtype) + params[:, ROT_FLAT:]
        R_hat = params[:, :ROT_FLAT].reshape(params.shape[0], NUM_JOINTS, 3, 3)
        return R_hat, floored_log_sigma(raw, self.cfg.min_sigma)

    def _nll_of_residuals(self, r: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
        """−log N(r | 0, L diag(σ²) Lᵀ) (or −log t_ν(r | ℓ, L diag(σ²) Lᵀ)) for r (B, 90), log σ (90,)
        or per pose (B, 90): (B,) nats."""
        with torch.autocast(r.device.type, enabled=False):
            log_sigma = log_sigma.float()
            if self.cfg.likelihood == "student_t":
                r = r - self.resid_loc
            u = (r @ self.white_chol_inv.T) * torch.exp(-log_sigma)  # (B, 90) fully whitened
            log_det_l = torch.diagonal(self.white_chol).log().sum()
            return log_det_l - t_log_prob_from_maha(
                u.square().sum(-1), 2.0 * log_sigma.sum(-1), POSE_DIM, self._nu
            )

    def recon_nll(self, joints: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """−log p(R | R̂) of (B, 30, 3) axis-angle poses given the decoder output (``decode_params``): (B,) nats."""
        R = axis_angle_to_matrix(joints.float())
        R_hat, log_sigma = self.mean_log_sigma(params.float())
        return self._nll_of_residuals(tangent_residuals(R_hat, R), log_sigma)

    def params_to_pose(self, params: torch.Tensor) -> torch.Tensor:
        """Decoder output -> (B, 90) axis-angle of the decoded rotations."""
        return matrix_to_axis_angle(self.mean_log_sigma(params)[0]).reshape(params.shape[0], POSE_DIM)

    def residual_covariance(self, params: torch.Tensor | None = None) -> torch.Tensor:
        """L diag(σ²) Lᵀ, covariance (the t's scatter) of the stacked residuals, float64 rad²: (90, 90)
        for the global σ, (B, 90, 90) for decoder output ``params`` with ``local_sigma``."""
        chol = self.white_chol.double()
        log_sigma = self.log_sigma if params is None else self.mean_log_sigma(params.double())[1]
        return (chol * torch.exp(2.0 * log_sigma.double())[..., None, :]) @ chol.T

    def side_residual(
        self, x_side: torch.Tensor, side: str, params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One hand's (B, 45) tangent residuals to the decoded rotations (minus the t's location) and
        their covariance (scatter) block, float64: (45, 45), or (B, 45, 45) with ``local_sigma``. Exact
        in the tangent approximation: a hand's residuals are the block of its own joints."""
        B, J = x_side.shape[0], JOINTS_PER_HAND
        s = slice(0, J) if side == "left" else slice(J, NUM_JOINTS)
        R = axis_angle_to_matrix(x_side.reshape(B, J, 3).float())
        r = tangent_residuals(self.mean_log_sigma(params)[0][:, s].float(), R).double()  # (B, 45)
        dims = slice(3 * s.start, 3 * s.stop)
        if self.cfg.likelihood == "student_t":
            r = r - self.resid_loc[dims].double()
        cov = self.residual_covariance(params if self.cfg.local_sigma else None)
        return r, cov[..., dims, dims]
