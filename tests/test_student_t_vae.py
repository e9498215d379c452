"""The Student-t likelihood of both VAEs (``likelihood="student_t"``) against scipy's multivariate t.

At initialisation (zero decoder head, σ = 1) a fitted model must be exactly the val-tuned classic t
(the ``StudentTPrior`` baseline with the same settings); a trained one is a t_ν with location
m + L·dec(z) and scatter L diag(σ²) Lᵀ, whose one-hand marginal is the t_ν of its 45-blocks.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from conftest import randomise_decoder
from scipy.spatial.transform import Rotation
from scipy.stats import multivariate_t

from hand_vae.checkpoint import vae_from_checkpoint
from hand_vae.evaluation.baselines import StudentTPrior
from hand_vae.losses import free_bits_kl
from hand_vae.models import build_model
from hand_vae.rotations import swap_and_mirror_hands
from hand_vae.settings import SettingError

HAND = 45


@pytest.fixture(scope="module")
def data(synthetic_poses) -> dict[str, torch.Tensor]:
    train = synthetic_poses["train"][::5]
    return {
        "train": torch.cat([train, swap_and_mirror_hands(train)]),  # as training fits it: train ∪ mirrored
        "val": synthetic_poses["val"][::10],
        "test": synthetic_poses["test"][:64],
    }


@pytest.fixture(scope="module")
def fitted(data) -> tuple[torch.nn.Module, dict[str, float]]:
    model = build_model("standard", z_dim=4, hidden=16, local_sigma=False, likelihood="student_t").eval()
    settings = model.fit_whitening(data["train"], data["val"])
    return model, settings


def test_fitted_standard_model_at_init_is_the_val_tuned_t(fitted, data):
    model, settings = fitted
    assert set(settings) == {"nu", "floor", "scale", "val_nll"} and math.isfinite(settings["nu"])
    assert float(model.white_nu) == settings["nu"]
    x = data["test"]
    L = model.white_chol.double().numpy()
    ref = multivariate_t(loc=model.white_mean.double().numpy(), shape=L @ L.T, df=settings["nu"]).logpdf(
        x.double().numpy()
    )
    with torch.no_grad():
        out = model(x, sample=False)["recon_nll"]
        # The same likelihood in float64 (the decoder's zero head decodes every z to params 0).
        exact = model.double().recon_nll(x.double().reshape(-1, 30, 3), torch.zeros(len(x), 90).double())
    model.float()
    np.testing.assert_allclose(exact.numpy(), -ref, rtol=0, atol=1e-4)
    np.testing.assert_allclose(out.double().numpy(), -ref, rtol=1e-5, atol=0)
    # The baseline tuned on the same poses is the same density, settings and all (the model keeps
    # its buffers in float32).
    prior = StudentTPrior.tuned(data["train"], data["val"])
    assert prior.settings == settings
    np.testing.assert_allclose(exact.numpy(), -prior.log_prob(x).numpy(), rtol=0, atol=1e-4)


def test_trained_standard_model_is_a_t_and_its_one_hand_marginal_the_block(fitted, data):
    model, settings = copy.deepcopy(fitted[0]), fitted[1]
    randomise_decoder(model)
    x = data["test"][:16].double()
    with torch.no_grad():
        params = model.decode_params(torch.randn(16, 4, generator=torch.Generator().manual_seed(1)))
        full = model.recon_nll(x.float().reshape(16, 30, 3), params).double().numpy()
        sides = {s: model.side_log_likelihood(x[:, sl].float(), s, params).double().numpy()
                 for s, sl in (("left", slice(0, HAND)), ("right", slice(HAND, 90)))}  # fmt: skip
    # Oracle from the raw buffers: u = L⁻¹(x − m) ~ t_ν(params, diag σ²)  <=>  x ~ t_ν(m + L params, L diag σ² Lᵀ).
    L = model.white_chol.double().numpy()
    sigma = 0.05 + np.exp(model.raw_log_sigma.detach().double().numpy())  # the smooth floor, min_sigma 0.05
    loc = model.white_mean.double().numpy() + params.double().numpy() @ L.T  # (16, 90)
    shape = (L * sigma**2) @ L.T
    nu = settings["nu"]
    for i in range(16):
        ref = multivariate_t(loc=loc[i], shape=shape, df=nu).logpdf(x[i].numpy())
        assert full[i] == pytest.approx(-ref, rel=1e-5, abs=1e-3)
        for s, sl in (("left", slice(0, HAND)), ("right", slice(HAND, 90))):
            block = multivariate_t(loc=loc[i, sl], shape=shape[sl, sl], df=nu).logpdf(x[i, sl].numpy())
            assert sides[s][i] == pytest.approx(block, rel=1e-5, abs=1e-3)


def test_low_rank_t_is_the_t_of_the_low_rank_scatter(data):
    model = build_model(
        "standard", z_dim=4, hidden=16, local_sigma=False, likelihood="student_t", cov_rank=3
    ).eval()
    model.fit_whitening(data["train"], data["val"])
    with torch.no_grad():
        model.white_nu.fill_(4.0)
        model.cov_factor.mul_(30.0)  # a factor that matters
    randomise_decoder(model, seed=2)
    x = data["test"][:8]
    with torch.no_grad():
        params = model.decode_params(torch.randn(8, 4, generator=torch.Generator().manual_seed(3)))
        got = model.recon_nll(x.reshape(8, 30, 3), params).double().numpy()
        mean, scatter = model.decoder_gaussian(params)
    for i in range(8):
        ref = multivariate_t(loc=mean[i].numpy(), shape=scatter.numpy(), df=4.0).logpdf(x[i].double().numpy())
        assert got[i] == pytest.approx(-ref, rel=1e-5, abs=1e-3)


@pytest.mark.parametrize("fit", [True, False])
def test_a_training_step_is_finite_and_keeps_nu(fit, data):
    """Fitted (finite ν) and unfitted (ν = inf, the Gaussian branch): finite loss and gradients."""
    torch.manual_seed(0)
    model = build_model("standard", z_dim=4, hidden=16, local_sigma=False, likelihood="student_t", cov_rank=2)
    if fit:
        model.fit_whitening(data["train"], data["val"])
    nu = float(model.white_nu)
    assert math.isfinite(nu) == fit
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    out = model(data["test"])
    loss = out["recon_nll"].mean() + free_bits_kl(out["kl"], 0.0)
    opt.zero_grad()
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    opt.step()
    assert float(model.white_nu) == nu and torch.isfinite(model(data["test"])["recon_nll"]).all()


def test_without_val_the_t_starts_as_the_gaussian(data, caplog):
    model = build_model("standard", z_dim=4, hidden=16, local_sigma=False, likelihood="student_t")
    with caplog.at_level("INFO"):
        settings = model.fit_whitening(data["train"], None)
    assert settings["nu"] == math.inf and float(model.white_nu) == math.inf and "nu" in caplog.text
    gauss = build_model("standard", z_dim=4, hidden=16, local_sigma=False, likelihood="gaussian")
    gauss.load_state_dict({k: v for k, v in model.state_dict().items() if k != "white_nu"})
    with torch.no_grad():
        torch.testing.assert_close(model.energy(data["test"]), gauss.energy(data["test"]))


def test_state_dicts_old_and_new(fitted, data):
    """A Student-t model round-trips with its ν; an old Gaussian checkpoint (no ``likelihood`` in its
    hyperparameters, no ``white_nu``) still loads as the Gaussian model."""
    model, _ = fitted
    fresh = build_model("standard", z_dim=4, hidden=16, local_sigma=False, likelihood="student_t").eval()
    fresh.load_state_dict(model.state_dict())
    assert float(fresh.white_nu) == float(model.white_nu)
    with torch.no_grad():
        torch.testing.assert_close(fresh.energy(data["test"]), model.energy(data["test"]))

    old = build_model("standard", z_dim=4, hidden=16, local_sigma=False, likelihood="gaussian").eval()
    old.fit_whitening(data["train"], data["val"])
    hparams = {
        "model_type": "standard",
        "z_dim": 4,
        "hidden": 16,
        "num_layers": 2,
        "cov_rank": 0,
        "whiten": True,
    }
    ckpt = {"hyper_parameters": hparams, "state_dict": {f"model.{k}": v for k, v in old.state_dict().items()}}
    loaded = vae_from_checkpoint(ckpt)
    assert loaded.cfg.likelihood == "gaussian" and not hasattr(loaded, "white_nu")
    with torch.no_grad():
        torch.testing.assert_close(loaded.energy(data["test"]), old.energy(data["test"]))


def test_config_checks_the_likelihood():
    with pytest.raises(SettingError, match="--likelihood"):
        build_model("standard", likelihood="cauchy")
    with pytest.raises(SettingError, match="--no-whiten"):
        build_model("standard", likelihood="student_t", whiten=False)
    assert build_model("so3", likelihood="student_t").cfg.likelihood == "student_t"


def _so3_residuals(model: torch.nn.Module, poses: torch.Tensor) -> np.ndarray:
    """Log(M_jᵀ R_j) by scipy, (B, 90), from the model's mean pose."""
    M = Rotation.from_matrix(model.mean_rot.double().numpy())
    p = poses.double().numpy()
    return np.concatenate(
        [(M[j].inv() * Rotation.from_rotvec(p[:, 3 * j : 3 * j + 3])).as_rotvec() for j in range(30)], 1
    )


def test_so3_at_init_is_the_val_tuned_t_of_the_tangent_residuals(synthetic_poses):
    train, val = synthetic_poses["train"][::10], synthetic_poses["val"][::10]
    model = build_model("so3", z_dim=4, hidden=16, likelihood="student_t").eval()
    settings = model.fit_whitening(train, val)
    assert set(settings) == {"nu", "floor", "scale", "val_nll"} and float(model.white_nu) == settings["nu"]
    L = model.white_chol.double().numpy()
    dist = multivariate_t(loc=model.resid_loc.double().numpy(), shape=L @ L.T, df=settings["nu"])
    assert settings["val_nll"] == pytest.approx(-dist.logpdf(_so3_residuals(model, val)).mean(), abs=1e-3)
    x = synthetic_poses["test"][:100]
    with torch.no_grad():
        at_zero = model.recon_nll(x.reshape(-1, 30, 3), model.decode_params(torch.zeros(100, 4)))
    np.testing.assert_allclose(
        at_zero.double().numpy(), -dist.logpdf(_so3_residuals(model, x)), rtol=1e-4, atol=5e-3
    )

    # One hand: the t_ν of the residual location's and scatter's 45-blocks (decoder at the mean pose).
    _randomise_so3_sigma(model)
    r = _so3_residuals(model, x[:8])
    scatter = model.residual_covariance().detach().numpy()
    loc = model.resid_loc.double().numpy()
    with torch.no_grad():
        params = model.decode_params(torch.zeros(8, 4))
        for side, sl in (("left", slice(0, HAND)), ("right", slice(HAND, 90))):
            got = model.side_log_likelihood(x[:8, sl], side, params).double().numpy()
            ref = multivariate_t(loc=loc[sl], shape=scatter[sl, sl], df=settings["nu"]).logpdf(r[:, sl])
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=5e-3)


def _randomise_so3_sigma(model: torch.nn.Module) -> None:
    with torch.no_grad():
        model.raw_log_sigma.copy_(0.3 * torch.randn(90, generator=torch.Generator().manual_seed(4)))
