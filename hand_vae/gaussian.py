"""Full-covariance Gaussians on (N, D) features, with a diagonal floor (rad²) and a scale chosen on
validation: the Gaussian baselines and the whitening both VAEs start from (docs/design.md §4)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from hand_vae.losses import LOG_2PI

# Candidate diagonal floors (rad²) and standard-deviation scales.
FLOORS = (1e-6, 1e-5, 1e-4, 4e-4, 1e-3)
SCALES = (1.0, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0)
CHUNK_ROWS = 1 << 18  # rows per float64 block when accumulating moments
# A fitted density for choose_on_val: (settings, mean (D,), L (D, D), log_prob_from_maha), the latter
# (δ (M,), log|L Lᵀ|, D) -> (M,) nats from squared Mahalanobis distances under L Lᵀ.
Candidate = tuple[
    dict[str, float],
    torch.Tensor,
    torch.Tensor,
    Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
]


def mahalanobis(x: torch.Tensor, mean: torch.Tensor, chol: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared Mahalanobis distances (B, ...) of the rows of x (B, D) under L Lᵀ, and log|L Lᵀ| (...).

    ``mean`` (..., D) and the lower Cholesky factors ``chol`` (..., D, D) broadcast against a new
    axis after B.
    """
    D = x.shape[-1]
    diff = x.reshape(x.shape[0], *([1] * (mean.dim() - 1)), D) - mean  # (B, ..., D)
    y = torch.linalg.solve_triangular(chol, diff.movedim(0, -1), upper=False)  # (..., D, B)
    log_det = 2.0 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)  # (...)
    return y.square().sum(-2).movedim(-1, 0), log_det


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """Log-density (B, ...) nats of N(mean, L Lᵀ) at each row of x; shapes as for ``mahalanobis``."""
    return gaussian_log_prob_from_maha(*mahalanobis(x, mean, chol), x.shape[-1])


def gaussian_log_prob_from_maha(maha: torch.Tensor, log_det: torch.Tensor, D: int) -> torch.Tensor:
    """Gaussian log-density from squared Mahalanobis distances (B, ...) and log|Σ| (...)."""
    return -0.5 * (maha + log_det + D * LOG_2PI)


def floored_cholesky(cov: torch.Tensor, floor: float) -> torch.Tensor:
    """Lower Cholesky factor of cov (D, D) + floor · I (the floor keeps a constant dimension invertible)."""
    return torch.linalg.cholesky(cov + floor * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device))


def fit_gaussian(x: torch.Tensor, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximum-likelihood mean (D,) of x (N >= 2, D) and the Cholesky factor (D, D) of Σ_ML + floor · I,
    float64."""
    mean, cov = moments(x)
    return mean, floored_cholesky(cov, floor)


def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and maximum-likelihood covariance (D, D) of x (N, D), float64."""
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 rows to fit a Gaussian, got {x.shape[0]}")
    # float64 over row chunks (a float64 copy of all rows may not fit on a GPU), shifted by the first
    # row against cancellation
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
    """The candidate density × scale with the best NLL on val (M, D) (float64, on the candidates'
    device): the tuning routine of every classic family (Gaussian, ``student_t``).

    Scaling L divides the Mahalanobis distances (computed once per candidate) by scale² and adds
    2 D log scale to log|L Lᵀ|. Returns mean, scale · L and settings plus {"scale", "val_nll"}.
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
    """N(m, scale² (Σ + floor · I)) of train (N, D) with floor (rad²) and scale chosen on val (M, D).

    Returns:
        mean (D,), L = scale · chol(Σ + floor · I) (D, D), both float64, and
        {"floor", "scale", "val_nll"}; without val: floors[0], scale 1 and val_nll NaN.
    """
    mean, cov = moments(train)  # one pass over the data for every floor
    fits = (({"floor": f}, mean, floored_cholesky(cov, f), gaussian_log_prob_from_maha) for f in floors)
    if val is None or val.shape[0] == 0:
        return mean, next(fits)[2], {"floor": floors[0], "scale": 1.0, "val_nll": math.nan}
    return choose_on_val(val.detach().double().to(train.device), fits, scales)
