"""Multivariate Student-t: the exact log-density, its EM fit and the choice of ν, floor and scale on val."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal, multivariate_t

from hand_vae import student_t
from hand_vae.student_t import NUS, fit_t, t_log_prob, tune_student_t


def _scatter(D: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random location (D,) and a badly conditioned scatter (D, D)."""
    g = np.random.default_rng(seed)
    a = g.normal(size=(D, D)) * np.logspace(0, -2, D)
    return g.normal(size=D), a @ a.T + 1e-6 * np.eye(D)


@pytest.mark.parametrize("nu", [0.7, 3.0, 5.0, 10.0, 50.0, 1e4])
def test_log_prob_matches_scipy(nu: float) -> None:
    m, S = _scatter(12, 0)
    x = m + 2.0 * np.random.default_rng(1).normal(size=(64, 12)) @ np.linalg.cholesky(S).T  # tails included
    ref = multivariate_t.logpdf(x, loc=m, shape=S, df=nu)
    got = t_log_prob(torch.from_numpy(x), torch.from_numpy(m), torch.linalg.cholesky(torch.from_numpy(S)), nu)
    assert got.dtype == torch.float64 and got.shape == (64,)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-9, atol=1e-8)


def test_infinite_nu_is_the_gaussian() -> None:
    m, S = _scatter(8, 2)
    x = m + np.random.default_rng(3).normal(size=(20, 8)) @ np.linalg.cholesky(S).T
    L = torch.linalg.cholesky(torch.from_numpy(S))
    got = t_log_prob(torch.from_numpy(x), torch.from_numpy(m), L, math.inf)
    np.testing.assert_allclose(got.numpy(), multivariate_normal.logpdf(x, m, S), rtol=1e-9, atol=1e-8)
    big = t_log_prob(torch.from_numpy(x), torch.from_numpy(m), L, 1e8)
    np.testing.assert_allclose(big.numpy(), got.numpy(), rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="nu"):
        t_log_prob(torch.from_numpy(x), torch.from_numpy(m), L, 0.0)


def test_em_recovers_a_known_scatter() -> None:
    m, S = _scatter(6, 4)
    S = S + 0.01 * np.eye(6)
    x = torch.from_numpy(multivariate_t.rvs(loc=m, shape=S, df=5.0, size=40_000, random_state=5))
    mean, chol, iters = fit_t(x.float(), 5.0, floor=0.0)
    assert 1 < iters < 500
    fitted = (chol @ chol.T).numpy()
    assert np.abs(fitted - S).max() / np.abs(S).max() < 0.05
    np.testing.assert_allclose(mean.numpy(), m, rtol=0, atol=0.05 * np.sqrt(np.diag(S)).max())
    # The sample covariance of a t_5 is 5/3 of its scatter: the EM does not return the covariance.
    assert np.trace(np.cov(x.numpy().T)) > 1.4 * np.trace(S)


def test_em_in_row_blocks_equals_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    m, S = _scatter(5, 6)
    x = torch.from_numpy(multivariate_t.rvs(loc=m, shape=S, df=3.0, size=3000, random_state=7))
    one = fit_t(x, 3.0, 1e-4)
    monkeypatch.setattr(student_t, "CHUNK_ROWS", 700)
    blocks = fit_t(x, 3.0, 1e-4)
    torch.testing.assert_close(blocks[0], one[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(blocks[1], one[1], rtol=0, atol=1e-10)


def test_tuning_chooses_heavy_tails_only_when_the_data_has_them() -> None:
    m, S = _scatter(6, 8)
    S = S + 0.01 * np.eye(6)
    t_data = torch.from_numpy(multivariate_t.rvs(loc=m, shape=S, df=3.0, size=6000, random_state=9))
    g_data = torch.from_numpy(np.random.default_rng(10).multivariate_normal(m, S, size=6000))
    mean, chol, settings = tune_student_t(t_data[:5000], t_data[5000:])
    assert set(settings) == {"nu", "floor", "scale", "val_nll"} and settings["nu"] <= 5.0
    val_nll = -t_log_prob(t_data[5000:], mean, chol, settings["nu"]).mean()
    assert float(val_nll) == pytest.approx(settings["val_nll"], abs=1e-9)
    _, _, settings = tune_student_t(g_data[:5000], g_data[5000:])
    assert settings["nu"] >= 50.0 and settings["nu"] in NUS
    with pytest.raises(ValueError, match="validation"):
        tune_student_t(g_data, None)


@pytest.mark.parametrize("nu", [4.0, 30.0, math.inf])
def test_diagonal_scatter_nll_is_the_full_t_with_a_diagonal_factor(nu: float) -> None:
    g = torch.Generator().manual_seed(11)
    x, mean = (
        torch.randn(16, 9, generator=g, dtype=torch.float64),
        torch.randn(16, 9, generator=g, dtype=torch.float64),
    )
    log_sigma = 0.3 * torch.randn(9, generator=g, dtype=torch.float64)
    full = torch.stack(
        [t_log_prob(x[i : i + 1], mean[i], torch.diag(log_sigma.exp()), nu)[0] for i in range(16)]
    )
    torch.testing.assert_close(student_t.t_nll_diag(x, mean, log_sigma, nu), -full, rtol=1e-10, atol=1e-10)
    # A model's ν buffer: a 0-d float32 tensor, inf included (the Gaussian), with finite gradients.
    xf, mf = x.float(), mean.float().requires_grad_()
    as_buffer = student_t.t_nll_diag(xf, mf, log_sigma.float(), torch.tensor(nu))
    torch.testing.assert_close(as_buffer.double(), -full, rtol=1e-5, atol=1e-4)
    as_buffer.sum().backward()
    assert torch.isfinite(mf.grad).all()
    if math.isinf(nu):
        from hand_vae.losses import gaussian_nll

        torch.testing.assert_close(
            student_t.t_nll_diag(x, mean, log_sigma, nu), gaussian_nll(x, mean, log_sigma)
        )


def test_tuning_on_many_rows_searches_a_seeded_subset_then_refines_on_all(monkeypatch) -> None:
    m, S = _scatter(4, 12)
    x = torch.from_numpy(
        multivariate_t.rvs(loc=m, shape=S + 0.01 * np.eye(4), df=5.0, size=3000, random_state=13)
    )
    val = x[:300]
    rows: list[int] = []
    fit = student_t.fit_t
    monkeypatch.setattr(student_t, "fit_t", lambda x, *a, **k: rows.append(len(x)) or fit(x, *a, **k))
    a = tune_student_t(x, val, nus=(5.0, 20.0), floors=(1e-6,), max_rows=1000)
    assert rows == [1000] * 2 + [3000]  # the search on the subset, the chosen t refined on all rows
    b = tune_student_t(x, val, nus=(5.0, 20.0), floors=(1e-6,), max_rows=1000)
    full = tune_student_t(x, val, nus=(5.0, 20.0), floors=(1e-6,))
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=0)
    assert a[2]["nu"] == full[2]["nu"] and abs(a[2]["val_nll"] - full[2]["val_nll"]) < 1e-4
    torch.testing.assert_close(a[1], full[1], rtol=1e-3, atol=1e-4)


def test_tuning_is_the_converged_fit_of_the_chosen_settings() -> None:
    """The search stops its EM early; what it returns is the chosen t fitted to fit_t's tolerance."""
    m, S = _scatter(6, 14)
    x = torch.from_numpy(
        multivariate_t.rvs(loc=m, shape=S + 0.01 * np.eye(6), df=4.0, size=4000, random_state=15)
    )
    mean, chol, settings = tune_student_t(x[:3500], x[3500:])
    ref_mean, ref_chol, _ = fit_t(x[:3500], settings["nu"], settings["floor"])
    torch.testing.assert_close(mean, ref_mean, rtol=0, atol=1e-4)
    torch.testing.assert_close(chol, settings["scale"] * ref_chol, rtol=0, atol=1e-4)
