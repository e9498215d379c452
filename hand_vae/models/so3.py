"""SO(3) VAE: rotations in, rotations out, and a correlated tangent-space Gaussian likelihood.

The encoder sees the continuous 6D form (Zhou et al., "On the Continuity of Rotation
Representations in Neural Networks", CVPR 2019) of each joint's rotation relative to the data's
mean pose, so 2π-equivalent axis-angle inputs encode identically. The decoder emits 6D per joint,
mapped to a rotation by Gram-Schmidt and composed with the mean pose M_j:

    R̂_j = M_j · GS(d6_j + [1, 0, 0, 0, 1, 0]).

The likelihood is a full-covariance Gaussian on the stacked tangent residuals
r_j = Log(R̂_jᵀ R_j) (the rotation vector of the error rotation, in R̂_j's frame):

    r ~ N(0, L diag(σ²) Lᵀ),   r ∈ R⁹⁰,

with L a fixed global Cholesky factor of the residual covariance of the training poses around
their mean pose (``fit_whitening``) and σ learned per whitened direction. Real hands move their
joints together (a finger's three joints curl as one); one σ per joint cannot be small in the
thin directions of that motion, a global L can.

With ``likelihood="student_t"`` the residual gets a multivariate t_ν(ℓ, L diag(σ²) Lᵀ) instead, with ν
and the location ℓ fitted with L (``student_t.tune_student_t``; ℓ is the t's weighted mean of the
residuals, not 0 as the Gaussian's is).

Approximation: this is a Gaussian on the rotation vector of the error, not a density with
respect to the Haar measure on SO(3)³⁰; it ignores the Jacobian (2 − 2 cos θ)/θ² of the
exponential map at each joint's error angle θ. It is accurate while the residuals are well below
π (the missing factor is within 1% of 1 for θ < 0.3 rad) and stays a finite, smooth score beyond.
"""

from __future__ import annotations

import logging
import math

import roma
import torch
from torch import nn

from hand_vae.gaussian import tune_gaussian
from hand_vae.losses import LOG_2PI
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
from hand_vae.student_t import t_log_prob_from_maha, tune_student_t

log = logging.getLogger(__name__)

D6 = 6
IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # first two columns of the identity
# L before fit_whitening: an isotropic 0.1 rad per residual dimension, the pose-noise scale the
# unwhitened standard model also starts its σ at, so an unfitted model still trains sensibly.
UNFITTED_SCALE = 0.1


def compose(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """A @ B for (..., 3, 3) matrices as a broadcast sum, so autocast never runs it in half precision.

    A bfloat16 product would put ~4e-3 rad of noise on residuals whose thin directions are ~1e-3 rad.
    """
    return (A[..., :, :, None] * B[..., None, :, :]).sum(-2)


def tangent_residuals(R_hat: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Stacked rotation vectors of the error rotations, r_j = Log(R̂_jᵀ R_j).

    Args:
        R_hat: (B, J, 3, 3) or (J, 3, 3) reference rotations.
        R: (B, J, 3, 3) rotations.

    Returns:
        (B, 3J) radians, angle of each 3-block in [0, π] (roma: finite gradient at r = 0).
    """
    return matrix_to_axis_angle(compose(R_hat.transpose(-1, -2), R)).flatten(-2)


def _fit_log(R: torch.Tensor) -> torch.Tensor:
    """Log map of (..., 3, 3) float64 rotations -> (..., 3), for fitting only (no gradient needed).

    r = vee(R − Rᵀ) · θ / (2 sin θ) costs a quarter of roma's quaternion route; it loses accuracy
    as θ → π, so rotations beyond 2π/3 are redone by roma.
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
    """Per-joint Riemannian (Karcher) mean of rotations, and the tangent residuals about it.

    Starts at the chordal L2 mean (the rotation nearest the summed matrices, roma's special
    Procrustes) and takes Gauss-Newton steps M ← M Exp(mean_n Log(Mᵀ R_n)) until the mean tangent
    residual is below ``tol`` rad (about 5 steps for hand poses, each gaining a factor ~40), so the
    residuals about M have zero mean.

    Args:
        R: (N, J, 3, 3) rotations, float64, N >= 1.

    Returns:
        M (J, 3, 3) and the residuals Log(M_jᵀ R_nj) stacked to (N, 3J).
    """
    mean = roma.special_procrustes(R.sum(0))
    for _ in range(max_iter):
        resid = _fit_log(mean.transpose(-1, -2) @ R)  # (N, J, 3)
        step = resid.mean(0)  # (J, 3)
        if float(step.abs().max()) < tol:
            break
        mean = mean @ axis_angle_to_matrix(step)
    return mean, resid.flatten(-2)


class SO3HandVAE(BaseHandVAE):
    """p(R|z): a correlated tangent-space Gaussian around the decoded rotations.

    ``nll = ½ |diag(1/σ) L⁻¹ r|² + Σ_d log σ_d + log |det L| + 45 log 2π`` with r (90,) the stacked
    residuals Log(R̂_jᵀ R_j). σ = min_sigma + exp(raw) per whitened direction, in units of the data's
    spread in that direction (``cfg.min_sigma`` must be below 1), starting at exactly 1. With the
    decoder's last layer at zero, R̂ = M for every z, so a freshly fitted model is exactly the
    full-covariance tangent Gaussian of the training poses at their mean pose. Before
    ``fit_whitening`` M = I and L = 0.1 I (rad).
    """

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__(cfg, encoder_in=NUM_JOINTS * D6)
        self.decoder = mlp(cfg.z_dim, cfg.hidden, NUM_JOINTS * D6, cfg.num_layers, cfg.dropout)
        # Zero head + identity offset: every z decodes to the mean pose at initialisation.
        nn.init.zeros_(self.decoder[-1].weight)
        nn.init.zeros_(self.decoder[-1].bias)
        self.register_buffer("identity_6d", torch.tensor(IDENTITY_6D), persistent=False)
        # σ = min_sigma + exp(raw): solve for raw so that σ starts at exactly 1.
        self.raw_log_sigma = nn.Parameter(torch.full((POSE_DIM,), math.log(1.0 - cfg.min_sigma)))
        # Filled by fit_whitening() before training, then saved in the state_dict.
        self.register_buffer("mean_rot", torch.eye(3).expand(NUM_JOINTS, 3, 3).clone())  # M (30, 3, 3)
        self._register_whitening(UNFITTED_SCALE)  # L of the residuals, rad
        if cfg.likelihood == "student_t":
            # The t's ν (inf = the Gaussian until fitted) and location ℓ of the residuals (rad).
            self.register_buffer("white_nu", torch.tensor(math.inf))
            self.register_buffer("resid_loc", torch.zeros(POSE_DIM))

    @torch.no_grad()
    def fit_whitening(self, train: torch.Tensor, val: torch.Tensor | None = None) -> dict[str, float]:
        """Start the model at the validation-tuned tangent Gaussian of the training poses.

        M is the per-joint Karcher mean of ``train`` (N, 90) axis-angle, so the tangent residuals
        Log(M_jᵀ R_j) have zero mean and the Gaussian is centred at r = 0. L is the Cholesky
        factor of scale² (Σ_r + floor · I), with the floor (rad²) and scale chosen on the residuals
        of ``val`` (M, 90) by ``gaussian.tune_gaussian``; pass the distribution that is trained
        on (train ∪ mirrored train when mirroring). With the Student-t likelihood, ν, the floor
        and the scale are chosen by ``student_t.tune_student_t`` (no ``val``: the Gaussian, ν = inf)
        and the t's location goes to ``resid_loc``.

        Returns:
            {"floor", "scale", "val_nll"} of the chosen Gaussian (val_nll in nats per pose), plus
            "nu" for the Student-t.
        """
        R = axis_angle_to_matrix(to_joints(train.reshape(train.shape[0], POSE_DIM)).double())  # (N, 30, 3, 3)
        mean, train_resid = karcher_mean(R)
        val_resid = None
        if val is not None:
            R_val = axis_angle_to_matrix(to_joints(val.reshape(val.shape[0], POSE_DIM)).double().to(R.device))
            val_resid = _fit_log(mean.transpose(-1, -2) @ R_val).flatten(-2)
        student_t = self.cfg.likelihood == "student_t"
        if student_t and val_resid is not None and len(val_resid):
            loc, chol, settings = tune_student_t(train_resid, val_resid)
            self.resid_loc.copy_(loc)
        else:
            # tune_gaussian's residual mean is the Karcher fixed point's < 1e-9 rad: dropped.
            _, chol, settings = tune_gaussian(train_resid, val_resid)
            if student_t:
                log.info(
                    "no validation poses to choose nu on: the Student-t likelihood starts as the Gaussian"
                )
                settings["nu"] = math.inf
                self.resid_loc.zero_()
        if student_t:
            self.white_nu.fill_(settings["nu"])
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
        """z (B, Z) -> decoded rotations R̂ (B, 30, 3, 3)."""
        B = z.shape[0]
        d6 = self.decoder(z).float().reshape(B, NUM_JOINTS, D6) + self.identity_6d  # (B, 30, 6)
        return compose(self.mean_rot, rot6d_to_matrix(d6))

    def _nll_of_residuals(self, r: torch.Tensor) -> torch.Tensor:
        """−log N(r | 0, L diag(σ²) Lᵀ) (or −log t_ν(r | ℓ, L diag(σ²) Lᵀ)) for r (B, 90): (B,) nats."""
        with torch.autocast(r.device.type, enabled=False):
            log_sigma = self.log_sigma
            student_t = self.cfg.likelihood == "student_t"
            if student_t:
                r = r - self.resid_loc
            u = (r @ self.white_chol_inv.T) * torch.exp(-log_sigma)  # (B, 90) fully whitened
            log_det_l = torch.diagonal(self.white_chol).log().sum()
            if student_t:
                return log_det_l - t_log_prob_from_maha(
                    u.square().sum(-1), 2.0 * log_sigma.sum(), POSE_DIM, self.white_nu
                )
            return 0.5 * u.square().sum(-1) + (log_det_l + log_sigma.sum()) + 0.5 * LOG_2PI * POSE_DIM

    def recon_nll(self, joints: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """−log p(R | R̂) of (B, 30, 3) axis-angle poses given decoded rotations (B, 30, 3, 3): (B,) nats."""
        R = axis_angle_to_matrix(joints.float())
        return self._nll_of_residuals(tangent_residuals(params.float(), R))

    def params_to_pose(self, params: torch.Tensor) -> torch.Tensor:
        """Decoded rotations (B, 30, 3, 3) -> (B, 90) axis-angle."""
        return matrix_to_axis_angle(params).reshape(params.shape[0], POSE_DIM)

    def residual_covariance(self) -> torch.Tensor:
        """Covariance (the t's scatter) of the stacked tangent residuals, L diag(σ²) Lᵀ: (90, 90) rad², float64."""
        chol = self.white_chol.double()
        return (chol * torch.exp(2.0 * self.log_sigma.double())) @ chol.T

    def side_log_likelihood(self, x_side: torch.Tensor, side: str, params: torch.Tensor) -> torch.Tensor:
        """log p(x_side | z) of one hand ("left"/"right", (B, 45)), the other integrated out: (B,) nats.

        Exact within the tangent approximation: a hand's residuals depend only on its own joints,
        so their marginal is the Gaussian block of the residual covariance (the t_ν block of the
        location and scatter for the Student-t).
        """
        B, J = x_side.shape[0], JOINTS_PER_HAND
        s = slice(0, J) if side == "left" else slice(J, NUM_JOINTS)
        R = axis_angle_to_matrix(x_side.reshape(B, J, 3).float())
        r = tangent_residuals(params[:, s].float(), R).double()  # (B, 45)
        dims = slice(3 * s.start, 3 * s.stop)
        chol = torch.linalg.cholesky(self.residual_covariance()[dims, dims])
        if self.cfg.likelihood == "student_t":
            y = torch.linalg.solve_triangular(chol, (r - self.resid_loc[dims].double()).T, upper=False)
            log_det = 2.0 * torch.diagonal(chol).log().sum()
            return t_log_prob_from_maha(y.square().sum(0), log_det, 3 * J, self.white_nu).float()
        dist = torch.distributions.MultivariateNormal(
            torch.zeros_like(r), scale_tril=chol, validate_args=False
        )
        return dist.log_prob(r).float()
