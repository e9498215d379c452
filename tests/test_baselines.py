"""Classic priors of the evaluation: exact Gaussian density, EM on a known mixture, nearest neighbour,
the Student-t baseline and the settings every density reports."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from hand_vae.evaluation.baselines import (
    DEFAULT_NU,
    REG_COVAR,
    GaussianPrior,
    GMMPrior,
    NearestNeighbourPrior,
    StudentTPrior,
    fit_baselines,
)
from hand_vae.student_t import NUS


def _poses(n: int, seed: int) -> torch.Tensor:
    """Correlated (n, 90) float32 data with very different scales, like hand poses."""
    basis = torch.randn(90, 90, generator=torch.Generator().manual_seed(0)) / 10  # (90, 90)
    basis = basis * torch.logspace(0, -2.5, 90)  # scales from 1 to 0.003 rad
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 90, generator=g) @ basis.T + 0.3).float()


def test_gaussian_matches_scipy() -> None:
    train, test = _poses(2000, 0), _poses(300, 1)
    prior = GaussianPrior().fit(train)
    x = train.double().numpy()
    cov = np.cov(x, rowvar=False, bias=True) + REG_COVAR * np.eye(90)
    np.testing.assert_allclose(prior.cov.numpy(), cov, rtol=1e-9, atol=1e-12)
    ref = multivariate_normal.logpdf(test.double().numpy(), mean=x.mean(0), cov=cov)
    np.testing.assert_allclose(prior.log_prob(test).numpy(), ref, rtol=1e-9, atol=1e-8)
    np.testing.assert_allclose(prior.energy(test.reshape(-1, 30, 3)).numpy(), -ref, rtol=1e-9, atol=1e-8)


def test_gmm_recovers_two_known_clusters() -> None:
    """30 % / 70 % mixture of two separated 90-D Gaussians with different covariances."""
    g = torch.Generator().manual_seed(0)
    n0, n1 = 600, 1400
    mu0, mu1 = torch.zeros(90), torch.full((90,), 1.0)
    a = torch.randn(n0, 90, generator=g) * 0.1 + mu0
    b = torch.randn(n1, 90, generator=g) * torch.linspace(0.05, 0.2, 90) + mu1
    x = torch.cat([a, b])[torch.randperm(n0 + n1, generator=g)]
    gmm = GMMPrior(2, seed=0).fit(x)
    assert gmm.converged
    means = gmm.means  # (2, 90)
    order = means.mean(1).argsort()
    torch.testing.assert_close(
        gmm.weights[order], torch.tensor([0.3, 0.7], dtype=torch.float64), atol=1e-3, rtol=0
    )
    torch.testing.assert_close(means[order[0]], mu0.double(), atol=0.03, rtol=0)
    torch.testing.assert_close(means[order[1]], mu1.double(), atol=0.03, rtol=0)
    # Its log-density is the mixture's: compare with the two true components via scipy.
    q = x[:50].double().numpy()
    true = np.logaddexp(
        np.log(0.3) + multivariate_normal.logpdf(q, mu0.numpy(), 0.01 * np.eye(90)),
        np.log(0.7) + multivariate_normal.logpdf(q, mu1.numpy(), np.diag(np.linspace(0.05, 0.2, 90) ** 2)),
    )
    # Fitted (not true) parameters: close to the true density, within sampling error.
    assert np.abs(gmm.log_prob(x[:50]).numpy() - true).mean() < 5.0


def test_gmm_with_one_component_is_the_gaussian() -> None:
    train, test = _poses(1500, 2), _poses(100, 3)
    gmm, gauss = GMMPrior(1).fit(train), GaussianPrior().fit(train)
    np.testing.assert_allclose(gmm.log_prob(test).numpy(), gauss.log_prob(test).numpy(), rtol=1e-4, atol=0.05)


def test_nearest_neighbour_is_brute_force_distance() -> None:
    train, test = _poses(500, 4), _poses(40, 5)
    nn = NearestNeighbourPrior(chunk_size=7).fit(train)
    ref = np.sqrt(((test.numpy()[:, None] - train.numpy()[None]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(nn.energy(test).numpy(), ref, rtol=1e-4, atol=1e-4)
    assert nn.energy(train[:5]).abs().max() < 2e-3  # a training pose is its own neighbour


def test_unfitted_and_bad_arguments() -> None:
    with pytest.raises(RuntimeError, match="fit"):
        GaussianPrior().log_prob(torch.zeros(2, 90))
    with pytest.raises(ValueError, match="n_components"):
        GMMPrior(0)
    with pytest.raises(ValueError, match="shape"):
        GaussianPrior().fit(torch.zeros(10, 7))


def test_student_t_baseline_is_tuned_and_reports_its_settings() -> None:
    train, val, test = _poses(1500, 6), _poses(300, 7), _poses(50, 8)
    priors = fit_baselines(train, val=val)
    assert list(priors) == [
        "gaussian",
        "gaussian_mirrored",
        "student_t",
        "student_t_mirrored",
        "gmm4",
        "gmm8",
        "nearest_neighbour",
    ]
    t = priors["student_t"]
    assert set(t.settings) == {"nu", "floor", "scale", "val_nll"} and t.settings["nu"] in NUS
    assert float(-t.log_prob(val).mean()) == pytest.approx(t.settings["val_nll"], abs=1e-9)
    # ν = ∞ and the Gaussian's floors and scales are in the t's grid: never worse on val.
    assert t.settings["val_nll"] <= priors["gaussian"].settings["val_nll"] + 1e-9
    assert t.energy(test).shape == (50,) and t.energy(test).isfinite().all()
    plain = fit_baselines(train, mirror=False)
    assert "student_t_mirrored" not in plain and plain["student_t"].settings == {
        "floor": REG_COVAR,
        "scale": 1.0,
        "nu": DEFAULT_NU,
    }


def test_student_t_with_infinite_nu_is_the_gaussian() -> None:
    train, test = _poses(800, 9), _poses(40, 10)
    t, gauss = StudentTPrior(scale=1.3, nu=math.inf).fit(train), GaussianPrior(scale=1.3).fit(train)
    torch.testing.assert_close(t.log_prob(test), gauss.log_prob(test), rtol=0, atol=1e-9)
