"""The z-dependent likelihood scale (``local_sigma``) of both models against scipy.

With ``local_sigma`` the decoder outputs a log-σ offset next to the mean, so p(x|z) has the pose-space
covariance (the t's scatter) L diag(σ_b²) Lᵀ with σ_b = min_sigma + exp(raw + offset_b(z)); for SO(3)
the same per-pose covariance of the tangent residuals Log(R̂ᵀR). Its head starts at zero: a fitted
model is still exactly the val-tuned classic Gaussian or t.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import randomise_decoder
from scipy.spatial.transform import Rotation
from scipy.stats import multivariate_normal, multivariate_t
from test_so3_likelihood import IDENTITY_6D, gram_schmidt, oracle_residuals, randomised_model

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
    randomise_decoder(model)
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
    import hand_vae.models.base as base

    model = copy.deepcopy(fitted[0])
    randomise_decoder(model, seed=5)
    x = data["test"][:10, :HAND]
    with torch.no_grad():
        params = model.decode_params(torch.randn(10, 4, generator=torch.Generator().manual_seed(2)))
        whole = model.side_log_likelihood(x, "left", params)
        monkeypatch.setattr(base, "SIDE_CHUNK", 3)
        torch.testing.assert_close(model.side_log_likelihood(x, "left", params), whole)


def test_unwhitened_local_sigma_is_a_diagonal_gaussian(data):
    model = build_model("standard", z_dim=4, hidden=16, whiten=False, local_sigma=True).eval()
    with torch.no_grad():
        assert (model.decoder[-1].weight[90:] == 0).all() and (model.decoder[-1].weight[:90] != 0).any()
    randomise_decoder(model, seed=3)
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
    # The default resolves per model: on for the standard model and SO(3), off with --cov_rank.
    assert build_model("standard").cfg.local_sigma and build_model("standard", whiten=False).cfg.local_sigma
    assert not build_model("standard", cov_rank=2).cfg.local_sigma
    assert build_model("so3").cfg.local_sigma and build_model("so3", local_sigma=True).cfg.local_sigma
    assert not build_model("so3", local_sigma=False).cfg.local_sigma


# --- SO(3): the per-pose covariance of the tangent residuals r = Log(R̂ᵀ R) ---


@pytest.fixture(scope="module", params=["gaussian", "student_t"])
def so3_fitted(request, data) -> tuple[torch.nn.Module, torch.nn.Module, float]:
    """(local_sigma SO(3) model, classic SO(3) model, ν) fitted on the same poses; ν = inf for the Gaussian."""
    models = []
    for local in (True, False):
        model = build_model("so3", z_dim=4, hidden=16, likelihood=request.param, local_sigma=local).eval()
        settings = model.fit_whitening(data["train"], data["val"])
        models.append(model)
    return models[0], models[1], settings.get("nu", np.inf)


def _so3_loc(model: torch.nn.Module) -> np.ndarray:
    """The residuals' location: the t's ℓ, 0 for the Gaussian."""
    loc = getattr(model, "resid_loc", None)
    return np.zeros(90) if loc is None else loc.double().numpy()


def test_so3_at_init_it_is_the_classic_tangent_prior(so3_fitted, data):
    model, classic, nu = so3_fitted
    assert model.decoder[-1].weight.shape[0] == 270 and classic.decoder[-1].weight.shape[0] == 180
    x = data["test"]
    M = Rotation.from_matrix(classic.mean_rot.double().numpy())
    p = x.double().numpy()
    r = np.concatenate([(M[j].inv() * Rotation.from_rotvec(p[:, 3 * j : 3 * j + 3])).as_rotvec()
                        for j in range(30)], 1)  # fmt: skip
    cov = classic.residual_covariance().detach().numpy()
    ref = _reference(nu, _so3_loc(classic), cov).logpdf(r)
    with torch.no_grad():
        torch.testing.assert_close(model.white_chol, classic.white_chol)
        torch.testing.assert_close(model.mean_rot, classic.mean_rot)
        got = model(x, sample=False)["recon_nll"].double().numpy()
        z = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
        params = model.decode_params(z)
        assert params.shape == (8, 360)
        local = model.mean_log_sigma(params)[1]  # (8, 90): every pose at the global σ
        torch.testing.assert_close(local, classic.log_sigma.expand(8, 90), rtol=0, atol=1e-6)
        torch.testing.assert_close(
            model.residual_covariance(params), classic.residual_covariance().expand(8, 90, 90)
        )
        torch.testing.assert_close(model.decode(z), classic.decode(z))
        for s, sl in SIDES:
            torch.testing.assert_close(
                model.side_log_likelihood(x[:8, sl], s, params),
                classic.side_log_likelihood(x[:8, sl], s, classic.decode_params(z)),
            )
    np.testing.assert_allclose(got, -ref, rtol=1e-4, atol=5e-3)


@pytest.mark.parametrize("likelihood", ["gaussian", "student_t"])
def test_so3_per_pose_likelihood_and_one_hand_marginals_match_scipy(likelihood):
    model, g = randomised_model(seed=2, likelihood=likelihood, local_sigma=True)
    nu, loc = np.inf, np.zeros(90)
    if likelihood == "student_t":
        nu, loc = 6.0, 0.05 * np.random.default_rng(0).standard_normal(90)
        with torch.no_grad():
            model.white_nu.fill_(nu)
            model.resid_loc.copy_(torch.from_numpy(loc))
    z = torch.randn(8, 4, generator=g)
    x = 0.6 * torch.randn(8, 90, generator=g, dtype=torch.float64)
    with torch.no_grad():
        out = model.decoder(z).double().numpy()
        params = model.decode_params(z)
        nll = model.recon_nll(x.float().reshape(8, 30, 3), params).double().numpy()
        sides = {
            s: model.side_log_likelihood(x[:, sl].float(), s, params).double().numpy() for s, sl in SIDES
        }
        cov = model.residual_covariance(params).numpy()
        pose = model.params_to_pose(params).double().numpy()
    R_hat = model.mean_rot.double().numpy() @ gram_schmidt(out[:, :180].reshape(8, 30, 6) + IDENTITY_6D)
    np.testing.assert_allclose(params[:, :270].double().numpy(), R_hat.reshape(8, 270), atol=1e-5)
    np.testing.assert_allclose(pose, Rotation.from_matrix(R_hat.reshape(-1, 3, 3)).as_rotvec().reshape(8, 90),
                               atol=1e-4)  # fmt: skip
    r = oracle_residuals(R_hat, x.numpy())
    L = model.white_chol.double().numpy()
    sigma = 0.05 + np.exp(model.raw_log_sigma.detach().double().numpy() + out[:, 180:])  # (8, 90)
    assert np.ptp(sigma, axis=0).max() > 0.1  # the scale really differs between poses
    for i in range(8):
        shape = (L * sigma[i] ** 2) @ L.T
        np.testing.assert_allclose(cov[i], shape, rtol=1e-6, atol=1e-12)
        ref = _reference(nu, loc, shape).logpdf(r[i])
        assert nll[i] == pytest.approx(-ref, rel=1e-4, abs=2e-3)
        for s, sl in SIDES:
            block = _reference(nu, loc[sl], shape[sl, sl]).logpdf(r[i, sl])
            assert sides[s][i] == pytest.approx(block, rel=1e-4, abs=2e-3)


def test_so3_one_hand_marginal_in_chunks(monkeypatch):
    """Above ``SIDE_CHUNK`` poses the per-pose blocks are factored in chunks: the same values."""
    import hand_vae.models.base as base

    model, g = randomised_model(seed=4, local_sigma=True)
    x = 0.5 * torch.randn(10, 45, generator=g)
    with torch.no_grad():
        params = model.decode_params(torch.randn(10, 4, generator=g))
        whole = model.side_log_likelihood(x, "right", params)
        monkeypatch.setattr(base, "SIDE_CHUNK", 3)
        torch.testing.assert_close(model.side_log_likelihood(x, "right", params), whole)


def test_so3_a_training_step_is_finite(so3_fitted, data):
    torch.manual_seed(0)
    model = copy.deepcopy(so3_fitted[0]).train()
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
    assert model.decoder[-1].weight.grad[180:].abs().sum() > 0  # the offset learns
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model.energy(data["test"])).all()
        assert torch.isfinite(model.log_prob(data["test"][:4], num_samples=4)).all()
        assert model.sample(3).shape == (3, 90) and model.log_sigma.shape == (90,)


def test_so3_checkpoints_old_and_new(so3_fitted, data):
    model, classic, _ = so3_fitted
    hparams = {"model_type": "so3", "z_dim": 4, "hidden": 16, "num_layers": 2,
               "likelihood": classic.cfg.likelihood}  # fmt: skip
    old = {
        "hyper_parameters": hparams,  # written before local_sigma existed: a 180-output (6D) head
        "state_dict": {f"model.{k}": v for k, v in classic.state_dict().items()},
    }
    loaded = vae_from_checkpoint(old)
    assert not loaded.cfg.local_sigma and loaded.decoder[-1].weight.shape[0] == 180
    new = {"hyper_parameters": {**hparams, "local_sigma": True},
           "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}  # fmt: skip
    again = vae_from_checkpoint(new)
    assert again.cfg.local_sigma
    with torch.no_grad():
        torch.testing.assert_close(loaded.energy(data["test"]), classic.energy(data["test"]))
        torch.testing.assert_close(again.energy(data["test"]), model.energy(data["test"]))
