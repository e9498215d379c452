"""Multivariate Student-t densities on (N, D) features: exact log-density, EM fit, tuning on val.

t_ν(m, Σ) with scatter Σ = L Lᵀ is a Gaussian scale mixture, x | w ~ N(m, Σ / w) with
w ~ Gamma(ν/2, rate ν/2); its tails are heavier the smaller ν is, and ν = ∞ is N(m, Σ). A prior
for new people gains from them: a pose of an unseen subject that is far from the training set
costs a t only logarithmically in its Mahalanobis distance, a Gaussian quadratically.

As for the Gaussian (``hand_vae.gaussian``), a diagonal ``floor`` (rad²) and a ``scale`` on L are
chosen on validation poses, with ν ∈ ``NUS`` on top, by the same routine (``gaussian.choose_on_val``).
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
    gaussian_log_prob,
    gaussian_log_prob_from_maha,
    mahalanobis,
    moments,
)

NUS = (3.0, 5.0, 10.0, 20.0, 50.0, math.inf)  # candidate degrees of freedom; ∞ is the Gaussian
# A t's scatter is narrower than its covariance (ν/(ν−2) Σ), so its scale grid starts below 1.
T_SCALES = (0.8, 0.9, *SCALES)
# Rows the EM fits of tune_student_t's search run on at most (a seeded subset above; the chosen
# fit is refined on every row): enough for a 90-D scatter, and fast enough for a training start-up.
EM_MAX_ROWS = 10_000
# Relative change of L at which the search's EM fits stop; the chosen one is refined to fit_t's tol.
SEARCH_TOL = 1e-3


def t_log_prob(x: torch.Tensor, mean: torch.Tensor, chol: torch.Tensor, nu: float) -> torch.Tensor:
    """Log-density of the multivariate t_ν(mean, L Lᵀ) at each row of x; ν = inf is the Gaussian.

    log p = log Γ((ν+D)/2) − log Γ(ν/2) − (D/2) log(νπ) − log|L| − ((ν+D)/2) log(1 + δ/ν),
    δ the squared Mahalanobis distance. Run it in float64 for badly conditioned scatters.

    Args:
        x: (B, D).
        mean: (..., D) locations; leading dims broadcast against a new axis after B.
        chol: (..., D, D) lower Cholesky factors of the scatter matrices.
        nu: degrees of freedom, > 0.

    Returns:
        (B, ...) nats.
    """
    if math.isinf(nu):
        return gaussian_log_prob(x, mean, chol)
    if nu <= 0:
        raise ValueError(f"nu must be > 0, got {nu}")
    return t_log_prob_from_maha(*mahalanobis(x, mean, chol), x.shape[-1], nu)


def t_log_prob_from_maha(
    maha: torch.Tensor, log_det: torch.Tensor, D: int, nu: float | torch.Tensor
) -> torch.Tensor:
    """t_ν log-density from squared Mahalanobis distances δ (B, ...) and log|Σ| (...); ν = inf is
    the Gaussian.

    ν may be a 0-d tensor (a model's buffer, inf allowed): then no host sync, as a training step
    (and a CUDA graph) needs; its constant is computed in float64.
    """
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
    """−log t_ν(x | mean, diag σ²), the multivariate t with a diagonal scatter (one joint
    Mahalanobis distance, not a product of univariate t's); ν = inf is ``losses.gaussian_nll``.

    The likelihood of the whitened VAE on u = L⁻¹(x − m): with mean 0 and σ = 1 it is the
    classic t_ν(m, L Lᵀ) once the Jacobian log|det L| is added.

    Args:
        x: (B, D) observations.
        mean: (B, D) locations.
        log_sigma: (D,) or (B, D) log scatter scales.
        nu: degrees of freedom (> 0; inf is the Gaussian), a float or a 0-d tensor.

    Returns:
        (B,) nats.
    """
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
    """Location and scatter of a multivariate t with fixed ν, by EM, with floor · I on the scatter.

    EM for the t as a Gaussian scale mixture (Liu & Rubin, Statistica Sinica 1995; Peel &
    McLachlan, Statistics and Computing 2000, §3): the E-step weighs each row by
    w_i = (ν + D) / (ν + δ_i), the M-step sets m = Σ w x / Σ w and
    Σ = Σ_i w_i (x_i − m)(x_i − m)ᵀ / Σ_i w_i + floor · I. Dividing by Σ w instead of N is the
    parameter-expanded EM of Liu, Rubin & Wu (Biometrika 1998), the same fixed point in fewer
    iterations. The floor is part of every M-step, so the weights are those of the floored model.

    Args:
        x: (N, D) features, N >= 2; float64 sums over row blocks (any size fits in memory).
        nu: degrees of freedom, finite and > 0.
        floor: rad² added to the scatter's diagonal.
        max_iter: EM iteration cap.
        tol: stop when an iteration changes L by less than this, relative (Frobenius norm).
        start: (mean (D,), L (D, D)) to start from (a fit at a nearby ν or floor converges in a
            few iterations); default the floored Gaussian.

    Returns:
        mean (D,), L = chol(Σ) (D, D), both float64, and the number of iterations run.
    """
    if not math.isfinite(nu) or nu <= 0:
        raise ValueError(f"nu must be finite and > 0, got {nu}")
    D = x.shape[1]
    eye = torch.eye(D, dtype=torch.float64, device=x.device)
    if start is None:
        mean, cov = moments(x)
        chol = torch.linalg.cholesky(cov + floor * eye)
    else:
        mean, chol = start[0].double(), start[1].double()
    shift = x[0].detach().double()
    blocks = x.detach().split(CHUNK_ROWS)
    once = len(blocks) == 1
    if once:  # one block: convert and shift once, not every iteration
        blocks = (blocks[0].double() - shift,)
    iters = 0
    while iters < max_iter:
        iters += 1
        # δ through L⁻¹ (a D × D inverse, then one matrix product per block, faster than a
        # triangular solve against N right-hand sides).
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
    """The multivariate t of ``train`` with ν, floor and scale chosen by validation NLL.

    The search: one EM fit per (ν, floor) (``fit_t`` to ``SEARCH_TOL``), ν from large to small,
    each started from the fit at the next larger ν and the same floor (the largest ν from the
    Gaussian), so each takes a few iterations; ν = inf is the Gaussian of
    ``gaussian.tune_gaussian``; scales are free (``gaussian.choose_on_val``). Above ``max_rows``
    training rows the search's fits run on a fixed random subset of that many (seeded: the same
    data give the same fit). The chosen t is then refined on every row to ``fit_t``'s tolerance
    and its scale chosen again. So the cost is about that of a training start-up, whatever the
    data's size (timed in ``bench/README.md``).

    Args:
        train: (N, D) features to fit.
        val: (M, D) features to choose on.
        nus: candidate degrees of freedom (inf = Gaussian).
        floors: candidate diagonal floors, rad².
        scales: candidate multipliers of the Cholesky factor.
        max_rows: most training rows the EM fits of the search run on.

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
        eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
        starts = {floor: (mean, torch.linalg.cholesky(cov + floor * eye)) for floor in floors}
        if math.inf in nus:
            for floor, (m, chol) in starts.items():
                yield {"nu": math.inf, "floor": floor}, m, chol, gaussian_log_prob_from_maha
        for nu in sorted((n for n in nus if math.isfinite(n)), reverse=True):
            for floor in floors:
                starts[floor] = fit_t(em_rows, nu, floor, tol=SEARCH_TOL, start=starts[floor])[:2]
                yield (
                    {"nu": nu, "floor": floor},
                    *starts[floor],
                    functools.partial(t_log_prob_from_maha, nu=nu),
                )

    mean, chol, settings = choose_on_val(val, candidates(), scales)
    nu, floor = settings["nu"], settings["floor"]
    if math.isinf(nu):
        return mean, chol, settings
    mean, chol, _ = fit_t(train, nu, floor, start=(mean, chol / settings["scale"]))
    fit = ({"nu": nu, "floor": floor}, mean, chol, functools.partial(t_log_prob_from_maha, nu=nu))
    return choose_on_val(val, [fit], scales)
