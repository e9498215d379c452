"""hand_vae.metrics against independent oracles: scipy rotations, plain means, the model's energy."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from hand_vae import metrics


def test_geodesic_error_is_the_angle_of_the_relative_rotation():
    g = torch.Generator().manual_seed(0)
    x, y = (
        torch.randn(5, 90, generator=g, dtype=torch.float64),
        torch.randn(5, 90, generator=g, dtype=torch.float64),
    )
    ours = metrics.geodesic_error(x, y.reshape(5, 30, 3))  # both layouts accepted
    a, b = x.reshape(-1, 3).numpy(), y.reshape(-1, 3).numpy()
    ref = (Rotation.from_rotvec(a).inv() * Rotation.from_rotvec(b)).magnitude().reshape(5, 30)
    assert ours.shape == (5, 30)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-9)


def test_neg_elbo_at_the_posterior_mean_is_the_energy_and_reconstruction_error_is_geodesic():
    from hand_vae.models import build_model

    torch.manual_seed(0)
    model = build_model("standard", z_dim=4, hidden=16).eval()
    x = 0.3 * torch.randn(16, 90, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(metrics.neg_elbo(model(x, sample=False)), model.energy(x))
        err = metrics.reconstruction_error(model, x)
        x_hat = model.reconstruct(x)
    a, b = x.double().reshape(-1, 3).numpy(), x_hat.double().reshape(-1, 3).numpy()
    ref = (Rotation.from_rotvec(a).inv() * Rotation.from_rotvec(b)).magnitude().reshape(16, 30)
    np.testing.assert_allclose(err.numpy(), ref, atol=2e-5)


def test_active_units_counts_dimensions_above_the_threshold():
    kl = torch.tensor([0.0, 0.005, 0.011, 2.0])
    assert metrics.active_units(kl).item() == 2
    assert metrics.active_units(kl, threshold=0.001).item() == 3


def test_running_mean_is_the_batch_weighted_mean():
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(n, 3, generator=g, dtype=torch.float64) for n in (7, 128, 1)]
    acc = metrics.RunningMean(["a", "b", "c"])
    assert acc.compute() == {} and acc.sums() is None
    for b in batches:
        acc.update(b.mean(0), b.shape[0])
    expected = torch.cat(batches).mean(0)
    got = acc.compute()
    torch.testing.assert_close(torch.stack([got[k] for k in "abc"]), expected)
    assert acc.sums()[1] == 136
    acc.reset()
    assert acc.sums() is None
