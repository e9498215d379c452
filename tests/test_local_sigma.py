"""The standard model's z-dependent likelihood scale (``local_sigma``) against scipy.

With ``local_sigma`` the decoder outputs a log-σ offset next to the mean, so p(x|z) has the pose-space
covariance (the t's scatter) L diag(σ_b²) Lᵀ with σ_b = min_sigma + exp(raw + offset_b(z)). Its head
starts at zero: a fitted model is still exactly the val-tuned classic Gaussian or t.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal, multivariate_t

from hand_vae.checkpoint import vae_from_checkpoint
from hand_vae.losses import free_bits_kl
from hand_vae.models import build_model
from hand_vae.settings import SettingError

HAND = 45
SIDES = (("left", slice(0, HAND)), ("right", slice(HAND, 90)))


@pytest.fixture(scope="module")
def data(synthetic_poses) -> dict[str, torch.Tensor]:
    return {
        "train": synthetic_poses["train"][::10],
        "val": synthetic_poses["val"][::20],
        "test": synthetic_poses["test"][:32],
    }


@pytest.fixture(scope="module", params=["gaussian", "student_t"])
def fitted(request, data) -> tuple[torch.nn.Module, torch.nn.Module, float]:
    """(local_sigma model, classic model, ν) fitted on the same poses; ν = inf for the Gaussian."""
    models = []
    for local in (True, False):
        model = build_model(
            "standard", z_dim=4, hidden=16, likelihood=request.param, local_sigma=local
        ).eval()
        settings = model.fit_whitening(data["train"], data["val"])
        models.append(model)
    return models[0], models[1], settings.get("nu", np.inf)


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """A decoder head (mean and log-σ offset) and σ away from their start, as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head = model.decoder[-1]
        head.weight.copy_(0.3 * torch.randn(head.weight.shape, generator=g))
        head.bias.copy_(0.3 * torch.randn(head.bias.shape, generator=g))
        model.raw_log_sigma.copy_(-0.5 + 0.3 * torch.randn(90, generator=g))


def _reference(nu: float, loc: np.ndarray, cov: np.ndarray):
    return multivariate_normal(loc, cov) if np.isinf(nu) else multivariate_t(loc=loc, shape=cov, df=nu)


def test_at_init_it_is_the_classic_prior(fitted, data):
    model, classic, nu = fitted
    assert model.decoder[-1].weight.shape[0] == 180 and classic.decoder[-1].weight.shape[0] == 90
    x = data["test"]
    L = classic.white_chol.double().numpy()
    ref = _reference(nu, classic.white_mean.double().numpy(), L @ L.T).logpdf(x.double().numpy())
    with torch.no_grad():
        torch.testing.assert_close(model.white_chol, classic.white_chol)
        got = model(x, sample=False)["recon_nll"].double().numpy()
        z = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(model.log_sigma, classic.log_sigma)
        local = model.mean_log_sigma(model.decode_params(z))[1]  # (8, 90): every pose at the global σ
        torch.testing.assert_close(local, classic.log_sigma.expand(8, 90), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got, -ref, rtol=1e-5, atol=0)


def test_per_sample_likelihood_and_one_hand_marginals_match_scipy(fitted, data):
    model, nu = copy.deepcopy(fitted[0]), fitted[2]
    _randomise(model)
    x = data["test"][:8].double()
    with torch.no_grad():
        params = model.decode_params(torch.randn(8, 4, generator=torch.Generator().manual_seed(1)))
        full = model.recon_nll(x.float().reshape(8, 30, 3), params).double().numpy()
        sides = {
            s: model.side_log_likelihood(x[:, sl].float(), s, params).double().numpy() for s, sl in SIDES
        }
        mean, cov = model.decoder_gaussian(params)
    assert mean.shape == (8, 90) and cov.shape == (8, 90, 90)
    # Oracle from the raw parameters: σ_b = 0.05 + exp(raw + offset_b), x ~ (m + L μ_b, L diag σ_b² Lᵀ).
    L = model.white_chol.double().numpy()
    p = params.double().numpy()
    sigma = 0.05 + np.exp(model.raw_log_sigma.detach().double().numpy() + p[:, 90:])  # (8, 90)
    assert np.ptp(sigma, axis=0).max() > 0.1  # the scale really differs between poses
    loc = model.white_mean.double().numpy() + p[:, :90] @ L.T
    for i in range(8):
        shape = (L * sigma[i] ** 2) @ L.T
        np.testing.assert_allclose(cov[i].numpy(), shape, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(mean[i].numpy(), loc[i], rtol=1e-10, atol=1e-12)
        ref = _reference(nu, loc[i], shape).logpdf(x[i].numpy())
        assert full[i] == pytest.approx(-ref, rel=1e-5, abs=1e-3)
        for s, sl in SIDES:
            block = _reference(nu, loc[i, sl], shape[sl, sl]).logpdf(x[i, sl].numpy())
            assert sides[s][i] == pytest.approx(block, rel=1e-5, abs=1e-3)


def test_one_hand_marginal_in_chunks(fitted, data, monkeypatch):
    """Above ``SIDE_CHUNK`` poses the per-pose blocks are factored in chunks: the same values."""
    import hand_vae.models.standard as standard

    model = copy.deepcopy(fitted[0])
    _randomise(model, seed=5)
    x = data["test"][:10, :HAND]
    with torch.no_grad():
        params = model.decode_params(torch.randn(10, 4, generator=torch.Generator().manual_seed(2)))
        whole = model.side_log_likelihood(x, "left", params)
        monkeypatch.setattr(standard, "SIDE_CHUNK", 3)
        torch.testing.assert_close(model.side_log_likelihood(x, "left", params), whole)


def test_unwhitened_local_sigma_is_a_diagonal_gaussian(data):
    model = build_model("standard", z_dim=4, hidden=16, whiten=False, local_sigma=True).eval()
    with torch.no_grad():
        assert (model.decoder[-1].weight[90:] == 0).all() and (model.decoder[-1].weight[:90] != 0).any()
    _randomise(model, seed=3)
    x = data["test"][:4].double()
    with torch.no_grad():
        params = model.decode_params(torch.randn(4, 4, generator=torch.Generator().manual_seed(3)))
        got = model.recon_nll(x.float().reshape(4, 30, 3), params).double().numpy()
    p = params.double().numpy()
    sigma = 0.005 + np.exp(model.raw_log_sigma.detach().double().numpy() + p[:, 90:])
    for i in range(4):
        ref = multivariate_normal(p[i, :90], np.diag(sigma[i] ** 2)).logpdf(x[i].numpy())
        assert got[i] == pytest.approx(-ref, rel=1e-5, abs=1e-3)


def test_a_training_step_is_finite(fitted, data):
    torch.manual_seed(0)
    model = copy.deepcopy(fitted[0]).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):
        out = model(data["test"])
        loss = out["recon_nll"].mean() + free_bits_kl(out["kl"], 0.0)
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(loss)
        for name, p in model.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), name
        opt.step()
    head = model.decoder[-1].weight
    assert head.grad[90:].abs().sum() > 0  # the offset learns
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model.energy(data["test"])).all()
        assert torch.isfinite(model.log_prob(data["test"][:4], num_samples=4)).all()
        assert model.sample(3).shape == (3, 90) and model.log_sigma.shape == (90,)


def test_checkpoints_old_and_new(fitted, data):
    model, classic, _ = fitted
    hparams = {"model_type": "standard", "z_dim": 4, "hidden": 16, "num_layers": 2, "cov_rank": 0,
               "whiten": True, "likelihood": classic.cfg.likelihood}  # fmt: skip
    old = {
        "hyper_parameters": hparams,
        "state_dict": {f"model.{k}": v for k, v in classic.state_dict().items()},
    }
    loaded = vae_from_checkpoint(old)  # no local_sigma in its hyperparameters: the classic model
    assert not loaded.cfg.local_sigma
    new = {"hyper_parameters": {**hparams, "local_sigma": True},
           "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}  # fmt: skip
    again = vae_from_checkpoint(new)
    assert again.cfg.local_sigma
    with torch.no_grad():
        torch.testing.assert_close(loaded.energy(data["test"]), classic.energy(data["test"]))
        torch.testing.assert_close(again.energy(data["test"]), model.energy(data["test"]))


def test_config_checks():
    with pytest.raises(SettingError, match="--local_sigma"):
        build_model("standard", local_sigma=True, whiten=False, cov_rank=2)
    with pytest.raises(SettingError, match="--local_sigma"):
        build_model("so3", local_sigma=True)
    # The default resolves per model: on for the standard model, off with --cov_rank and for SO(3).
    assert build_model("standard").cfg.local_sigma and build_model("standard", whiten=False).cfg.local_sigma
    assert not build_model("standard", cov_rank=2).cfg.local_sigma and not build_model("so3").cfg.local_sigma
