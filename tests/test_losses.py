"""Losses against independent oracles: scipy densities and Monte Carlo KL."""

import numpy as np
import pytest
import torch
from scipy import stats

from hand_vae import losses


def test_gaussian_nll_matches_scipy():
    g = torch.Generator().manual_seed(0)
    x, mean = (
        torch.randn(7, 90, generator=g, dtype=torch.float64),
        torch.randn(7, 90, generator=g, dtype=torch.float64),
    )
    log_sigma = torch.randn(90, generator=g, dtype=torch.float64) * 0.5
    ref = -stats.norm.logpdf(x.numpy(), mean.numpy(), np.exp(log_sigma.numpy())).sum(1)
    np.testing.assert_allclose(losses.gaussian_nll(x, mean, log_sigma).numpy(), ref, rtol=1e-12)


def test_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(2)
    mu = torch.tensor([[0.5, -1.0, 0.0]], dtype=torch.float64)
    logvar = torch.tensor([[-1.0, 0.3, 0.0]], dtype=torch.float64)
    n = 400_000
    z = mu + torch.exp(0.5 * logvar) * torch.randn(n, 3, generator=g, dtype=torch.float64)
    log_q = stats.norm.logpdf(z.numpy(), mu.numpy(), np.exp(0.5 * logvar.numpy()))
    log_p = stats.norm.logpdf(z.numpy())
    mc = (log_q - log_p).mean(0)
    analytic = losses.kl_per_dim(mu, logvar)[0].numpy()
    np.testing.assert_allclose(analytic, mc, atol=6e-3)
    assert analytic[2] == 0.0  # q = p gives exactly zero


def test_free_bits_floors_each_dimension():
    kl = torch.tensor([[0.0, 0.5, 2.0], [0.02, 0.7, 2.0]])  # batch means: 0.01, 0.6, 2.0
    assert losses.free_bits_kl(kl, 0.0).item() == pytest.approx(2.61)
    assert losses.free_bits_kl(kl, 0.1).item() == pytest.approx(0.1 + 0.6 + 2.0)
    assert losses.free_bits_kl(kl, 1.0).item() == pytest.approx(1.0 + 1.0 + 2.0)
    # Below the floor a dimension gets no gradient: nothing to gain by collapsing it further.
    k = kl.clone().requires_grad_(True)
    losses.free_bits_kl(k, 0.1).backward()
    assert k.grad[:, 0].abs().sum() == 0 and (k.grad[:, 1:] > 0).all()


@pytest.mark.parametrize(
    "step,expected",
    [(0, 0.0), (50, 0.75), (100, 1.5), (250, 1.5)],
)
def test_beta_schedule_values(step, expected):
    # beta_max 1.5, 10 epochs x 10 steps per epoch = 100 warm-up steps.
    assert losses.beta_schedule(step, 1.5, 10, 10) == pytest.approx(expected)


def test_beta_schedule_without_warmup():
    assert losses.beta_schedule(0, 1.0, 0, 10) == 1.0
