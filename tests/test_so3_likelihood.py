"""The SO(3) VAE's correlated likelihood against an independent float64 oracle (numpy + scipy).

The oracle rebuilds everything from the raw weights and buffers: Gram-Schmidt of the decoder's
6D output, composition with the mean pose, error rotations and their rotation vectors with
scipy.spatial.transform.Rotation, and the density with scipy.stats.multivariate_normal.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from scipy.stats import multivariate_normal

from hand_vae.losses import kl_per_dim
from hand_vae.models import build_model

IDENTITY_6D = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])


def gram_schmidt(d6: np.ndarray) -> np.ndarray:
    """(..., 6) -> (..., 3, 3), columns x, y, z (Zhou et al. 2019)."""
    a, b = d6[..., :3], d6[..., 3:]
    x = a / np.linalg.norm(a, axis=-1, keepdims=True)
    y = b - (x * b).sum(-1, keepdims=True) * x
    y = y / np.linalg.norm(y, axis=-1, keepdims=True)
    return np.stack([x, y, np.cross(x, y)], axis=-1)


def oracle_residuals(R_hat: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Log(R̂_jᵀ R_j) by scipy: R_hat (B, 30, 3, 3), x (B, 90) axis-angle -> (B, 90)."""
    B = x.shape[0]
    err = Rotation.from_matrix(R_hat.reshape(-1, 3, 3)).inv() * Rotation.from_rotvec(x.reshape(-1, 3))
    return err.as_rotvec().reshape(B, 90)


def randomised_model(seed: int = 0, **settings):
    """A small SO(3) VAE with random mean pose, covariance factor, σ and decoder head (the classic
    global σ unless ``settings`` say otherwise)."""
    g = torch.Generator().manual_seed(seed)
    settings = {"likelihood": "gaussian", "local_sigma": False, **settings}
    model = build_model("so3", z_dim=4, hidden=16, min_sigma=0.05, **settings).eval()
    a = torch.randn(90, 90, generator=g, dtype=torch.float64) / 90**0.5
    chol = torch.linalg.cholesky(0.04 * a @ a.T + 0.01 * torch.eye(90, dtype=torch.float64))
    mean_rot = Rotation.random(30, random_state=seed).as_matrix()
    with torch.no_grad():
        model.mean_rot.copy_(torch.from_numpy(mean_rot))
        model.white_chol.copy_(chol)
        model.white_chol_inv.copy_(torch.linalg.inv(chol))
        model.raw_log_sigma.copy_(0.4 * torch.randn(90, generator=g))
        head = model.decoder[-1]
        head.weight.copy_(0.3 * torch.randn(head.weight.shape, generator=g))
        head.bias.copy_(0.3 * torch.randn(head.bias.shape, generator=g))
    return model, g


def test_recon_nll_is_the_multivariate_normal_of_the_tangent_residuals():
    model, g = randomised_model()
    z = torch.randn(16, 4, generator=g)
    x = 0.6 * torch.randn(16, 90, generator=g, dtype=torch.float64)
    with torch.no_grad():
        d6 = model.decoder(z).double().numpy().reshape(16, 30, 6) + IDENTITY_6D
        params = model.decode_params(z)
        nll = model.recon_nll(x.float().reshape(16, 30, 3), params).double().numpy()
        left = model.side_log_likelihood(x[:, :45].float(), "left", params).double().numpy()
    R_hat = model.mean_rot.double().numpy() @ gram_schmidt(d6)  # (16, 30, 3, 3)
    np.testing.assert_allclose(params.double().numpy(), R_hat, atol=1e-5)
    r = oracle_residuals(R_hat, x.numpy())
    L = model.white_chol.double().numpy()
    sigma = 0.05 + np.exp(model.raw_log_sigma.detach().double().numpy())  # the smooth floor
    cov = L @ np.diag(sigma**2) @ L.T
    ref = multivariate_normal(np.zeros(90), cov).logpdf(r)
    np.testing.assert_allclose(nll, -ref, rtol=1e-4, atol=2e-3)
    torch.testing.assert_close(model.residual_covariance(), torch.from_numpy(cov))
    # One hand: the marginal block of the same Gaussian (the hands are correlated through L).
    ref_left = multivariate_normal(np.zeros(45), cov[:45, :45]).logpdf(r[:, :45])
    np.testing.assert_allclose(left, ref_left, rtol=1e-4, atol=2e-3)


def karcher_mean_scipy(x: np.ndarray) -> list[Rotation]:
    """Per joint: start at scipy's chordal mean, then M <- M Exp(mean Log(M⁻¹ R)) to convergence."""
    means = []
    for j in range(30):
        rots = Rotation.from_rotvec(x[:, 3 * j : 3 * j + 3])
        m = rots.mean()
        for _ in range(30):
            step = (m.inv() * rots).as_rotvec().mean(0)
            m = m * Rotation.from_rotvec(step)
            if np.abs(step).max() < 1e-13:
                break
        means.append(m)
    return means


def test_fitted_model_at_init_is_the_tangent_gaussian_at_the_mean_pose(synthetic_poses):
    train, val = synthetic_poses["train"][::10], synthetic_poses["val"][::10]
    model = build_model("so3", z_dim=4, hidden=16, likelihood="gaussian").eval()
    settings = model.fit_whitening(train, val)
    assert bool(model.white_fitted) and set(settings) == {"floor", "scale", "val_nll"}
    torch.testing.assert_close(model.log_sigma, torch.zeros(90), atol=1e-6, rtol=0)  # σ = 1

    means = karcher_mean_scipy(train.double().numpy())
    M = np.stack([m.as_matrix() for m in means])
    np.testing.assert_allclose(model.mean_rot.double().numpy(), M, atol=1e-6)

    def resid(poses: torch.Tensor) -> np.ndarray:
        p = poses.double().numpy()
        return np.concatenate(
            [(means[j].inv() * Rotation.from_rotvec(p[:, 3 * j : 3 * j + 3])).as_rotvec() for j in range(30)],
            1,
        )

    r_train = resid(train)
    np.testing.assert_allclose(r_train.mean(0), 0.0, atol=1e-6)  # Karcher: zero-mean residuals
    cov = settings["scale"] ** 2 * (np.cov(r_train.T, bias=True) + settings["floor"] * np.eye(90))
    gauss = multivariate_normal(np.zeros(90), cov)
    assert settings["val_nll"] == pytest.approx(-gauss.logpdf(resid(val)).mean(), abs=1e-3)

    x = synthetic_poses["test"][:200]
    ref = -gauss.logpdf(resid(x))
    with torch.no_grad():
        at_zero = model.recon_nll(x.reshape(-1, 30, 3), model.decode_params(torch.zeros(200, 4)))
        mu, logvar = model.encode(x)
        energy = model.energy(x)
        decoded = model.decode(torch.randn(3, 4))
    np.testing.assert_allclose(at_zero.double().numpy(), ref, rtol=1e-4, atol=5e-3)
    # The zero head decodes every z to the mean pose, so the energy is that NLL plus the KL.
    np.testing.assert_allclose(
        (energy - kl_per_dim(mu, logvar).sum(-1)).double().numpy(), ref, rtol=1e-4, atol=5e-3
    )
    expected = Rotation.concatenate(means).as_rotvec().reshape(1, 90)
    np.testing.assert_allclose(decoded.double().numpy(), np.repeat(expected, 3, 0), atol=1e-5)


def test_state_dict_round_trip_keeps_the_fit(synthetic_poses):
    model = build_model("so3", z_dim=4, hidden=16).eval()
    model.fit_whitening(synthetic_poses["train"][::50])
    fresh = build_model("so3", z_dim=4, hidden=16).eval()
    fresh.load_state_dict(model.state_dict())
    assert bool(fresh.white_fitted)
    x = synthetic_poses["test"][:8]
    with torch.no_grad():
        torch.testing.assert_close(fresh.energy(x), model.energy(x))


@pytest.mark.parametrize("fitted_mean", [False, True])
def test_gradients_are_finite_at_zero_residual(fitted_mean):
    """Unfitted: M = I and a zero head decode the identity exactly, so x = 0 has r = 0 exactly."""
    model = build_model("so3", z_dim=4, hidden=16).eval()
    x = torch.zeros(3, 90)
    if fitted_mean:  # a random mean pose and x at it: r = 0 up to float round-off
        mean_rot = torch.from_numpy(Rotation.random(30, random_state=1).as_matrix()).float()
        with torch.no_grad():
            model.mean_rot.copy_(mean_rot)
        x = model.decode(torch.zeros(3, 4)).detach()
    x.requires_grad_(True)
    params = model.decode_params(model.encode(x)[0])
    loss = model.recon_nll(x.reshape(3, 30, 3), params).sum() + model.energy(x).sum()
    loss.backward()
    assert torch.isfinite(x.grad).all()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


def test_min_sigma_must_be_below_the_starting_sigma():
    with pytest.raises(ValueError, match="min_sigma"):
        build_model("so3", min_sigma=1.0)
