"""One-hand scores: the absent hand marginalised out (exactly in p(x_s|z), by importance sampling over z)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from hand_vae.losses import free_bits_kl
from hand_vae.models import build_model
from hand_vae.prior import energy_one_hand, log_prob_one_hand
from hand_vae.rotations import HAND_DIM, mirror_axis_angle, swap_and_mirror_hands

SIDES = {"left": slice(0, HAND_DIM), "right": slice(HAND_DIM, 2 * HAND_DIM)}


def linear_gaussian_vae(kind: str, seed: int = 0):
    """A standard VAE with a linear decoder (num_layers = 0), so p(x) is Gaussian in closed form.

    The encoder is zeroed: the proposal is the prior N(0, I), valid for importance sampling.
    """
    g = torch.Generator().manual_seed(seed)
    kwargs = {"cov_rank": 3, "whiten": False} if kind == "low_rank" else {"whiten": kind == "whiten"}
    # The closed form is the Gaussian marginal of one global covariance: Gaussian likelihood, global σ.
    model = build_model("standard", z_dim=2, hidden=8, num_layers=0, min_sigma=0.01, likelihood="gaussian",
                        local_sigma=False, **kwargs).eval()  # fmt: skip
    with torch.no_grad():
        dec = model.decoder[-1]
        dec.weight.copy_(0.03 * torch.randn(dec.weight.shape, generator=g))
        dec.bias.copy_(0.2 * torch.randn(dec.bias.shape, generator=g))
        model.raw_log_sigma.copy_(np.log(0.08) + 0.3 * torch.randn(90, generator=g))
        for p in model.encoder.parameters():
            p.zero_()
        if kind == "low_rank":
            model.cov_factor.copy_(0.05 * torch.randn(90, 3, generator=g))
        if kind == "whiten":
            a = torch.randn(90, 90, generator=g, dtype=torch.float64) / 90**0.5
            chol = torch.linalg.cholesky(0.04 * a @ a.T + 0.01 * torch.eye(90, dtype=torch.float64))
            model.white_mean.copy_(0.1 * torch.randn(90, generator=g))
            model.white_chol.copy_(chol)
            model.white_chol_inv.copy_(torch.linalg.inv(chol))
    return model


def exact_marginal(model, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of p(x) from the raw weights: x = m + L (A z + b + ε)."""
    A = model.decoder[-1].weight.detach().double().numpy()  # (90, 2)
    b = model.decoder[-1].bias.detach().double().numpy()
    sigma = 0.01 + np.exp(model.raw_log_sigma.detach().double().numpy())  # the smooth floor
    cov = A @ A.T + np.diag(sigma**2)
    if kind == "low_rank":
        W = model.cov_factor.detach().double().numpy()
        cov = cov + W @ W.T
    mean = b
    if kind == "whiten":
        L = model.white_chol.double().numpy()
        mean, cov = model.white_mean.double().numpy() + L @ b, L @ cov @ L.T
    return mean, cov


@pytest.mark.parametrize("kind", ["diagonal", "low_rank", "whiten"])
def test_one_hand_log_prob_matches_the_closed_form(kind):
    model = linear_gaussian_vae(kind)
    mean, cov = exact_marginal(model, kind)
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.multivariate_normal(mean, cov, size=3)).float()  # (3, 90) typical poses
    K = 20000
    for side, s in SIDES.items():
        exact = multivariate_normal(mean[s], cov[s, s]).logpdf(x[:, s].double().numpy())  # (3,)
        est = (
            log_prob_one_hand(
                model,
                x[:, s],
                side,
                num_samples=K,
                chunk_size=4096,
                generator=torch.Generator().manual_seed(2),
            )
            .double()
            .numpy()
        )
        # Monte-Carlo error of log(mean w): std(w) / (mean(w) sqrt(K)), from the weights themselves.
        with torch.no_grad():
            z = torch.randn(K, 2, generator=torch.Generator().manual_seed(3))
            params = model.decode_params(z)
            log_w = torch.stack(
                [model.side_log_likelihood(x[i, s].expand(K, HAND_DIM), side, params) for i in range(3)]
            ).double()  # (3, K): the proposal is the prior, so w = p(x_s | z)
        w = torch.exp(log_w - log_w.max(1, keepdim=True).values)
        se = (w.std(1) / w.mean(1) / K**0.5).numpy()
        assert np.all(np.abs(est - exact) < 4 * se + 1e-3), (kind, side, est, exact, se)


@pytest.mark.parametrize("kind", ["diagonal", "low_rank", "whiten"])
def test_decoder_gaussian_is_the_likelihood(kind):
    """The generic (mean, covariance) form gives the model's own recon NLL, and the side blocks add up."""
    model = linear_gaussian_vae(kind)
    x = 0.3 * torch.randn(4, 90, generator=torch.Generator().manual_seed(0))
    params = model.decode_params(torch.randn(4, 2, generator=torch.Generator().manual_seed(1)))
    mean, cov = model.decoder_gaussian(params)
    full = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).log_prob(x.double())
    with torch.no_grad():
        torch.testing.assert_close(
            full.float(), -model.recon_nll(x.reshape(4, 30, 3), params), rtol=1e-4, atol=1e-3
        )
        both = model.side_log_likelihood(x[:, :HAND_DIM], "left", params) + model.side_log_likelihood(
            x[:, HAND_DIM:], "right", params
        )
    if kind == "diagonal":  # block-diagonal covariance: the hands are independent given z
        torch.testing.assert_close(both, full.float(), rtol=1e-4, atol=1e-3)


def test_so3_sides_add_up_when_the_hands_are_independent(trained_models, synthetic_poses):
    """With a block-diagonal residual covariance (the unfitted default), p(x|z) = p(x_L|z) p(x_R|z).

    The correlated case (a fitted whitening) is checked against scipy in tests/test_so3_likelihood.py.
    """
    model = copy.deepcopy(trained_models["so3"])
    with torch.no_grad():
        scale = 0.05 + 0.1 * torch.rand(90, generator=torch.Generator().manual_seed(0))
        model.white_chol.copy_(torch.diag(scale))
        model.white_chol_inv.copy_(torch.diag(1.0 / scale))
    x = synthetic_poses["test"][:6]
    with torch.no_grad():
        params = model.decode_params(model.encode(x)[0])
        both = model.side_log_likelihood(x[:, :HAND_DIM], "left", params) + model.side_log_likelihood(
            x[:, HAND_DIM:], "right", params
        )
        torch.testing.assert_close(both, -model.recon_nll(x.reshape(6, 30, 3), params), rtol=1e-5, atol=1e-3)
        e = energy_one_hand(model, x[:, HAND_DIM:], "right")
    assert e.shape == (6,) and torch.isfinite(e).all()


def train_mirrored(train: torch.Tensor, epochs: int = 4, seed: int = 0):
    """Like conftest.train_tiny, with mirror augmentation of a random half of every batch."""
    torch.manual_seed(seed)
    model = build_model("standard", z_dim=16, hidden=128, whiten=False, local_sigma=False)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    steps = 0
    for _ in range(epochs):
        for idx in torch.randperm(len(train), generator=g).split(512):
            batch = train[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            batch = torch.where(flip[:, None], swap_and_mirror_hands(batch), batch)
            out = model(batch)
            loss = out["recon_nll"].mean() + min(1.0, steps / 100) * free_bits_kl(out["kl"], 0.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    return model.eval()


def test_mirrored_pose_scores_alike_on_both_sides(synthetic_poses):
    model = train_mirrored(synthetic_poses["train"][::3])
    right = synthetic_poses["test"][::20, HAND_DIM:]  # (300, 45)
    left = mirror_axis_angle(right.reshape(-1, 15, 3)).reshape(-1, HAND_DIM)  # the same hand, mirrored
    with torch.no_grad():
        e_right, e_left = energy_one_hand(model, right, "right"), energy_one_hand(model, left, "left")
    gen = torch.Generator().manual_seed(0)
    lp_right = log_prob_one_hand(model, right[:50], "right", num_samples=200, generator=gen)
    lp_left = log_prob_one_hand(model, left[:50], "left", num_samples=200, generator=gen)
    spread = e_right.std()
    diff = (e_right - e_left).abs()
    assert diff.median() < 0.1 * spread, (diff.median(), spread)
    assert np.corrcoef(e_right.numpy(), e_left.numpy())[0, 1] > 0.95
    assert (lp_right - lp_left).abs().median() < 0.1 * lp_right.std()


def test_one_hand_checks_its_input(trained_models):
    model = trained_models["standard"]
    with pytest.raises(ValueError, match="side must be"):
        energy_one_hand(model, torch.zeros(2, 45), "both")
    with pytest.raises(ValueError, match=r"\(B, 45\) or \(B, 15, 3\)"):
        energy_one_hand(model, torch.zeros(2, 90), "left")
    e = energy_one_hand(model, torch.zeros(2, 15, 3), "left")
    assert e.shape == (2,)
    x = torch.zeros(2, 45, requires_grad=True)
    energy_one_hand(model, x, "right").sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_one_hand_takes_what_users_hold(trained_models, synthetic_poses):
    """float64 numpy and a single hand (45,) / (15, 3); float32 back on the input's device."""
    model = trained_models["so3"]
    left = synthetic_poses["test"][:5, :HAND_DIM]
    with torch.no_grad():
        expected = energy_one_hand(model, left, "left")
        got = energy_one_hand(model, left.double().numpy(), "left")
    assert got.dtype == torch.float32 and got.device.type == "cpu"
    torch.testing.assert_close(got, expected)
    one = energy_one_hand(model, left[2].reshape(15, 3).double(), "left")
    assert one.shape == ()
    torch.testing.assert_close(one, expected[2], atol=1e-4, rtol=1e-4)
    gen = torch.Generator().manual_seed(0)
    lp = log_prob_one_hand(model, left[0].double().numpy(), "left", num_samples=8, generator=gen)
    assert lp.shape == () and lp.dtype == torch.float32
