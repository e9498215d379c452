"""Full-covariance Gaussians on (N, D) features, with a floor and a scale chosen on validation.

One routine serves three places: the Gaussian baselines of the evaluation, the whitening the
standard VAE starts from (poses) and the one the SO(3) VAE starts from (tangent residuals at the
mean pose). A Gaussian prior for new people is a frontier, not a point: a diagonal ``floor``
(rad²) trades the NLL of an unseen subject against sharpness to small off-manifold noise, and a
``scale`` on the standard deviations widens it without changing how it ranks poses. Both are
chosen on validation poses, as a VAE's settings are, so comparisons are fair.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from hand_vae.losses import LOG_2PI

# Candidate diagonal floors (rad²) and standard-deviation scales.
FLOORS = (1e-6, 1e-5, 1e-4, 4e-4, 1e-3)
SCALES = (1.0, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0)
CHUNK_ROWS = 1 << 18  # rows per float64 block when accumulating moments
# A fitted density for choose_on_val: (settings, mean (D,), L (D, D), log_prob_from_maha), where
# log_prob_from_maha(δ (M,), log|L Lᵀ|, D) -> (M,) nats is the family's log-density given the squared
# Mahalanobis distances under L Lᵀ.
Candidate = tuple[
    dict[str, float],
    torch.Tensor,
    torch.Tensor,
    Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
]


def mahalanobis(x: torch.Tensor, mean: torch.Tensor, chol: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared Mahalanobis distances of the rows of x under scatter L Lᵀ, and log|det L Lᵀ|.

    Args:
        x: (B, D).
        mean: (..., D) means; leading dims broadcast against a new axis after B.
        chol: (..., D, D) lower Cholesky factors.

    Returns:
        (B, ...) squared distances and (...) log-determinants.
    """
    D = x.shape[-1]
    diff = x.reshape(x.shape[0], *([1] * (mean.dim() - 1)), D) - mean  # (B, ..., D)
    y = torch.linalg.solve_triangular(chol, diff.movedim(0, -1), upper=False)  # (..., D, B)
    log_det = 2.0 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)  # (...)
    return y.square().sum(-2).movedim(-1, 0), log_det


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """Log-density of N(mean, L Lᵀ) at each row of x.

    Args:
        x: (B, D).
        mean: (..., D) means; leading dims broadcast against a new axis after B.
        chol: (..., D, D) lower Cholesky factors of the covariances.

    Returns:
        (B, ...) nats.
    """
    return gaussian_log_prob_from_maha(*mahalanobis(x, mean, chol), x.shape[-1])


def gaussian_log_prob_from_maha(maha: torch.Tensor, log_det: torch.Tensor, D: int) -> torch.Tensor:
    """Gaussian log-density from squared Mahalanobis distances (B, ...) and log|Σ| (...)."""
    return -0.5 * (maha + log_det + D * LOG_2PI)


def fit_gaussian(x: torch.Tensor, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximum-likelihood mean and the Cholesky factor of Σ_ML + floor · I, in float64.

    Args:
        x: (N, D) features, N >= 2.
        floor: rad² added to the diagonal (keeps a constant dimension invertible).

    Returns:
        mean (D,) and lower Cholesky factor L (D, D), float64.
    """
    mean, cov = moments(x)
    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    return mean, torch.linalg.cholesky(cov + floor * eye)


def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and maximum-likelihood covariance (D, D) of x (N, D), float64."""
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 rows to fit a Gaussian, got {x.shape[0]}")
    # Moments accumulated in float64 over row chunks, shifted by the first row against cancellation:
    # a float64 copy of 10M poses (7 GB) on a GPU would not fit beside the data.
    N, D = x.shape
    shift = x[0].detach().double()
    total = torch.zeros(D, dtype=torch.float64, device=x.device)
    scatter = torch.zeros(D, D, dtype=torch.float64, device=x.device)
    for chunk in x.detach().split(CHUNK_ROWS):
        c = chunk.double() - shift  # (n, D)
        total += c.sum(0)
        scatter += c.T @ c
    mean_c = total / N
    return mean_c + shift, scatter / N - torch.outer(mean_c, mean_c)


def choose_on_val(
    val: torch.Tensor, candidates: Iterable[Candidate], scales: tuple[float, ...] = SCALES
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """The fitted density × scale with the best validation NLL: the one tuning routine of every
    classic family (this module's Gaussian, ``student_t``'s multivariate t).

    Args:
        val: (M, D) features, float64, on the candidates' device.
        candidates: (settings, mean (D,), L (D, D), log_prob_from_maha) per fitted density
            (``Candidate``); L is scaled by each of ``scales`` in turn, which divides the
            Mahalanobis distances by scale² (computed once per candidate) and adds 2 D log scale
            to log|L Lᵀ|.
        scales: candidate multipliers of L.

    Returns:
        mean, scale · L of the best, and its settings plus {"scale", "val_nll"}.
    """
    best: tuple[float, torch.Tensor, torch.Tensor, dict[str, float]] | None = None
    D = val.shape[-1]
    for settings, mean, chol, from_maha in candidates:
        maha, log_det = mahalanobis(val, mean, chol)
        for scale in scales:
            nll = float(-from_maha(maha / scale**2, log_det + 2 * D * math.log(scale), D).mean())
            if best is None or nll < best[0]:
                best = (nll, mean, scale * chol, {**settings, "scale": scale, "val_nll": nll})
    if best is None:
        raise ValueError("no candidate densities to choose from")
    return best[1], best[2], best[3]


def tune_gaussian(
    train: torch.Tensor,
    val: torch.Tensor | None,
    floors: tuple[float, ...] = FLOORS,
    scales: tuple[float, ...] = SCALES,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """The Gaussian N(m, scale² (Σ + floor · I)) of ``train`` with the best validation NLL.

    Args:
        train: (N, D) features to fit.
        val: (M, D) features to choose (floor, scale) on; None keeps floors[0] and scale 1.
        floors: candidate floors, rad².
        scales: candidate standard-deviation scales.

    Returns:
        mean (D,), L = scale · chol(Σ + floor · I) (D, D), both float64, and
        {"floor", "scale", "val_nll"} (val_nll is NaN without val).
    """
    if val is None or val.shape[0] == 0:
        mean, chol = fit_gaussian(train, floors[0])
        return mean, chol, {"floor": floors[0], "scale": 1.0, "val_nll": math.nan}
    mean, cov = moments(train)  # one pass over the data for every floor
    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    fits = (
        ({"floor": f}, mean, torch.linalg.cholesky(cov + f * eye), gaussian_log_prob_from_maha)
        for f in floors
    )
    return choose_on_val(val.detach().double().to(train.device), fits, scales)
