"""Multivariate Student-t densities t_ν(m, L Lᵀ) on (N, D) features: log-density, EM fit, tuning on val.

ν = ∞ is the Gaussian; a far pose costs a t logarithmically in its Mahalanobis distance, a Gaussian
quadratically (docs/design.md §4). Floor, scale and ν ∈ ``NUS`` are chosen by ``gaussian.choose_on_val``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import torch

from hand_vae.gaussian import (
    CHUNK_ROWS,
    FLOORS,
    SCALES,
    Candidate,
    choose_on_val,
    fit_gaussian,
    floored_cholesky,
    gaussian_log_prob,
    gaussian_log_prob_from_maha,
    mahalanobis,
    moments,
)

NUS = (3.0, 5.0, 10.0, 20.0, 50.0, math.inf)  # candidate degrees of freedom; ∞ is the Gaussian
# A t's scatter is narrower than its covariance (ν/(ν−2) Σ), so its scale grid starts below 1.
T_SCALES = (0.8, 0.9, *SCALES)
EM_MAX_ROWS = 10_000  # most rows of tune_student_t's search fits (a seeded subset; the chosen one uses all)
SEARCH_TOL = 1e-3  # relative change of L that stops a search fit (the chosen one is refined to fit_t's tol)


def t_log_prob(x: torch.Tensor, mean: torch.Tensor, chol: torch.Tensor, nu: float) -> torch.Tensor:
    """Log-density (B, ...) nats of t_ν(mean, L Lᵀ) at each row of x, shapes as ``gaussian.mahalanobis``.

    log p = log Γ((ν+D)/2) − log Γ(ν/2) − (D/2) log(νπ) − log|L| − ((ν+D)/2) log(1 + δ/ν), δ the
    squared Mahalanobis distance; ν > 0, inf is the Gaussian. float64 for badly conditioned scatters.
    """
    if math.isinf(nu):
        return gaussian_log_prob(x, mean, chol)
    if nu <= 0:
        raise ValueError(f"nu must be > 0, got {nu}")
    return t_log_prob_from_maha(*mahalanobis(x, mean, chol), x.shape[-1], nu)


def t_log_prob_from_maha(
    maha: torch.Tensor, log_det: torch.Tensor, D: int, nu: float | torch.Tensor
) -> torch.Tensor:
    """t_ν log-density from squared Mahalanobis distances δ (B, ...) and log|Σ| (...); ν = inf is the
    Gaussian. A 0-d tensor ν (a model's buffer, inf allowed) costs no host sync (CUDA graphs)."""
    if not isinstance(nu, torch.Tensor):
        if math.isinf(nu):
            return gaussian_log_prob_from_maha(maha, log_det, D)
        const = math.lgamma((nu + D) / 2) - math.lgamma(nu / 2) - 0.5 * D * math.log(nu * math.pi)
        return const - 0.5 * log_det - 0.5 * (nu + D) * torch.log1p(maha / nu)
    finite = torch.isfinite(nu)
    nu64 = torch.where(finite, nu.double(), 1.0)  # the t branch stays finite (and so its gradient) at ν = inf
    const = torch.lgamma((nu64 + D) / 2) - torch.lgamma(nu64 / 2) - 0.5 * D * torch.log(nu64 * math.pi)
    nu_x = nu64.to(maha.dtype)
    t = const.to(maha.dtype) - 0.5 * log_det - 0.5 * (nu_x + D) * torch.log1p(maha / nu_x)
    return torch.where(finite, t, gaussian_log_prob_from_maha(maha, log_det, D))


def t_nll_diag(
    x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor, nu: float | torch.Tensor
) -> torch.Tensor:
    """−log t_ν(x | mean, diag σ²) (B,) nats for x, mean (B, D) and log σ (D,) or (B, D): one joint
    Mahalanobis distance, not a product of univariate t's; ν = inf is ``losses.gaussian_nll``."""
    maha = ((x - mean) * torch.exp(-log_sigma)).square().sum(-1)  # (B,)
    return -t_log_prob_from_maha(maha, 2.0 * log_sigma.sum(-1), x.shape[-1], nu)


def fit_t(
    x: torch.Tensor,
    nu: float,
    floor: float,
    max_iter: int = 500,
    tol: float = 1e-5,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Location and scatter of a t with fixed finite ν > 0 by EM, with floor · I (rad²) on the scatter.

    EM for the t as a Gaussian scale mixture (Liu & Rubin, Statistica Sinica 1995; Peel & McLachlan,
    Stat. Comput. 2000, §3): weights w_i = (ν + D)/(ν + δ_i), then m = Σ w x / Σ w and
    Σ = Σ_i w_i (x_i − m)(x_i − m)ᵀ / Σ_i w_i + floor · I, every M-step floored. Dividing by Σ w, not
    N, is the parameter-expanded EM (Liu, Rubin & Wu, Biometrika 1998): same fixed point, fewer steps.

    Args:
        x: (N, D) features, N >= 2; float64 sums over row blocks.
        tol: stop when an iteration changes L by less than this, relative (Frobenius norm).
        start: (mean (D,), L (D, D)), e.g. a fit at a nearby ν or floor; default the floored Gaussian.

    Returns:
        mean (D,), L = chol(Σ) (D, D), both float64, and the number of iterations run.
    """
    if not math.isfinite(nu) or nu <= 0:
        raise ValueError(f"nu must be finite and > 0, got {nu}")
    D = x.shape[1]
    eye = torch.eye(D, dtype=torch.float64, device=x.device)
    mean, chol = fit_gaussian(x, floor) if start is None else (start[0].double(), start[1].double())
    shift = x[0].detach().double()
    blocks = x.detach().split(CHUNK_ROWS)
    once = len(blocks) == 1
    if once:  # one block: convert and shift once, not every iteration
        blocks = (blocks[0].double() - shift,)
    iters = 0
    while iters < max_iter:
        iters += 1
        # δ through L⁻¹: one matrix product per block beats a triangular solve against N columns
        inv_t = torch.linalg.solve_triangular(chol, eye, upper=False).T
        offset = (mean - shift) @ inv_t  # (D,)
        w_sum = torch.zeros((), dtype=torch.float64, device=x.device)
        wx = torch.zeros(D, dtype=torch.float64, device=x.device)
        wxx = torch.zeros(D, D, dtype=torch.float64, device=x.device)
        for chunk in blocks:
            c = chunk if once else chunk.double() - shift  # (n, D), shifted
            maha = (c @ inv_t - offset).square().sum(-1)  # (n,)
            w = (nu + D) / (nu + maha)  # (n,)
            w_sum += w.sum()
            wx += w @ c
            a = c * w.sqrt()[:, None]
            wxx += a.T @ a
        m_c = wx / w_sum
        mean = m_c + shift
        scatter = wxx / w_sum - torch.outer(m_c, m_c)
        prev, chol = chol, torch.linalg.cholesky(0.5 * (scatter + scatter.T) + floor * eye)
        if float((chol - prev).norm()) < tol * float(prev.norm()):
            break
    return mean, chol, iters


def tune_student_t(
    train: torch.Tensor,
    val: torch.Tensor,
    nus: tuple[float, ...] = NUS,
    floors: tuple[float, ...] = FLOORS,
    scales: tuple[float, ...] = T_SCALES,
    max_rows: int = EM_MAX_ROWS,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """The t of train (N, D) with ν (inf = Gaussian), floor (rad²) and scale of L chosen on val (M, D).

    One EM fit per (ν, floor) to ``SEARCH_TOL``, ν from large to small, each started from the fit at
    the next larger ν (the largest from the Gaussian), on a seeded subset of ``max_rows`` rows; the
    chosen t is refined on every row and its scale chosen again (timed in ``bench/README.md``).

    Returns:
        location (D,), L = scale · chol(Σ_ν,floor) (D, D), both float64, and
        {"nu", "floor", "scale", "val_nll"}.
    """
    if val is None or val.shape[0] == 0:
        raise ValueError("tune_student_t needs validation rows to choose nu, floor and scale on")
    val = val.detach().double().to(train.device)
    em_rows = train
    if train.shape[0] > max_rows:
        pick = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(0))[:max_rows]
        em_rows = train[pick.to(train.device)]

    def candidates() -> Iterator[Candidate]:
        mean, cov = moments(train)
        starts = {floor: (mean, floored_cholesky(cov, floor)) for floor in floors}
        if math.inf in nus:
            for floor, (m, chol) in starts.items():
                yield {"nu": math.inf, "floor": floor}, m, chol, gaussian_log_prob_from_maha
        for nu in sorted((n for n in nus if math.isfinite(n)), reverse=True):
            t_nu = functools.partial(t_log_prob_from_maha, nu=nu)
            for floor in floors:
                starts[floor] = fit_t(em_rows, nu, floor, tol=SEARCH_TOL, start=starts[floor])[:2]
                yield {"nu": nu, "floor": floor}, *starts[floor], t_nu

    mean, chol, settings = choose_on_val(val, candidates(), scales)
    nu, floor = settings["nu"], settings["floor"]
    if math.isinf(nu):
        return mean, chol, settings
    mean, chol, _ = fit_t(train, nu, floor, start=(mean, chol / settings["scale"]))
    fit = ({"nu": nu, "floor": floor}, mean, chol, functools.partial(t_log_prob_from_maha, nu=nu))
    return choose_on_val(val, [fit], scales)
