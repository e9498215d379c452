"""Both VAEs: shapes, the scoring API, the IWAE bound, and that they actually learn."""

import math
import re

import pytest
import torch

from hand_vae.losses import free_bits_kl
from hand_vae.models import SO3HandVAE, StandardHandVAE, build_model

MODEL_TYPES = ["standard", "so3"]


@pytest.fixture(params=MODEL_TYPES)
def model(request):
    torch.manual_seed(0)
    return build_model(request.param, z_dim=8, hidden=32).eval()


def test_build_model_defaults_follow_the_seed():
    m = build_model("standard")
    assert isinstance(m, StandardHandVAE) and m.z_dim == 24 and m.cfg.hidden == 256
    assert isinstance(build_model("so3"), SO3HandVAE)
    with pytest.raises(ValueError, match="standard"):
        build_model("vposer")


def test_forward_shapes(model):
    out = model(torch.randn(5, 90) * 0.3)
    assert out["recon_nll"].shape == (5,) and out["kl"].shape == (5, 8)
    assert out["mu"].shape == (5, 8) and set(out) == {"recon_nll", "kl", "mu"}
    assert model.encode(torch.randn(5, 30, 3))[0].shape == (5, 8)
    assert model.decode(torch.randn(5, 8)).shape == (5, 90)
    assert model.reconstruct(torch.randn(5, 90)).shape == (5, 90)


@pytest.mark.parametrize("shape", [(5, 45), (5, 63), (89,), (30, 2), (5, 15, 3), (5, 30, 6), (2, 5, 90)])
def test_bad_shapes_raise_value_error(model, shape):
    with pytest.raises(ValueError, match=r"\(B, 90\) or \(B, 30, 3\)"):
        model.energy(torch.zeros(shape))


@pytest.mark.parametrize(
    "shape, hint",
    [
        ((4, 156), "[:, 66:156]"),
        ((4, 165), "[:, 75:165]"),
        ((4, 45), "energy_one_hand"),
        ((45,), "energy_one_hand"),
    ],
)
def test_bad_shapes_say_what_to_do(model, shape, hint):
    """Full-body SMPL+H / SMPL-X vectors get their hand slice; one hand gets the one-hand API."""
    with pytest.raises(ValueError, match=re.escape(hint)):
        model.energy(torch.zeros(shape))
    with pytest.raises(ValueError, match=re.escape(hint)):
        model.log_prob(torch.zeros(shape), num_samples=2)


def test_energy_takes_what_users_hold(model):
    """float64 numpy (as AMASS stores poses), float64 tensors and single poses; float32 back."""
    x = torch.randn(6, 90, generator=torch.Generator().manual_seed(0)) * 0.3
    with torch.no_grad():
        e = model.energy(x)
        for other in (x.double(), x.double().numpy(), x.numpy(), x.reshape(6, 30, 3).double().numpy()):
            got = model.energy(other)
            assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.device == x.device
            torch.testing.assert_close(got, e)
        for one in (x[0], x[0].reshape(30, 3), x[0].double().numpy()):
            single = model.energy(one)
            assert single.shape == () and single.dtype == torch.float32
            torch.testing.assert_close(single, e[0])
    assert model.log_prob(x[0].double().numpy(), num_samples=4).shape == ()
    assert model.log_prob(x.double(), num_samples=4).dtype == torch.float32
    leaf = x.double().requires_grad_(True)  # the cast is differentiable
    model.energy(leaf).sum().backward()
    assert leaf.grad is not None and leaf.grad.dtype == torch.float64 and torch.isfinite(leaf.grad).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_energy_comes_back_on_the_input_device(model):
    gpu = model.cuda()
    x = torch.randn(5, 90) * 0.3
    with torch.no_grad():
        on_cpu, on_gpu = gpu.energy(x.double()), gpu.energy(x.cuda())
    assert on_cpu.device.type == "cpu" and on_gpu.device.type == "cuda" and on_cpu.dtype == torch.float32
    torch.testing.assert_close(on_cpu, on_gpu.cpu(), atol=1e-4, rtol=1e-4)


def test_energy_deterministic_shape_and_differentiable(model):
    x = (torch.randn(6, 90) * 0.3).requires_grad_(True)
    e1, e2 = model.energy(x), model.energy(x)
    assert e1.shape == (6,) and torch.equal(e1, e2)
    e1.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_both_layouts_give_the_same_energy(model):
    x = torch.randn(6, 90) * 0.3
    torch.testing.assert_close(model.energy(x), model.energy(x.reshape(6, 30, 3)))


def test_energy_is_negative_elbo_at_the_mean(model):
    x = torch.randn(4, 90) * 0.3
    out = model(x, sample=False)
    torch.testing.assert_close(model.energy(x), out["recon_nll"] + out["kl"].sum(-1))


def test_sample_is_reproducible_with_a_generator(model):
    a = model.sample(4, generator=torch.Generator().manual_seed(3))
    b = model.sample(4, generator=torch.Generator().manual_seed(3))
    assert a.shape == (4, 90) and torch.equal(a, b)


def test_sigma_floor_holds(model):
    with torch.no_grad():
        model.raw_log_sigma.fill_(-50.0)
    assert model.log_sigma.exp().min() >= model.cfg.min_sigma * (1 - 1e-6)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_iwae_bound_above_elbo_and_tightens_with_k(model_type, trained_models, synthetic_poses):
    m = trained_models[model_type]
    x = synthetic_poses["val"][:64]
    torch.manual_seed(0)
    with torch.no_grad():
        elbos = torch.stack([-(o["recon_nll"] + o["kl"].sum(-1)) for o in (m(x) for _ in range(50))]).mean(0)
    lp1 = m.log_prob(x, num_samples=1)
    lp10 = m.log_prob(x, num_samples=10)
    lp200 = m.log_prob(x, num_samples=200, chunk_size=32)  # several chunks
    assert lp200.shape == (64,) and torch.isfinite(lp200).all()
    # K = 1 is an unbiased ELBO estimate; the bound increases with K on average.
    assert abs(lp1.mean() - elbos.mean()) < 0.05 * abs(elbos.mean()) + 1.0
    assert lp200.mean() >= lp10.mean() >= elbos.mean()


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_overfits_one_batch(model_type, synthetic_poses):
    """Both models start, as in training, at the full-covariance Gaussian chosen on other poses;
    on one batch they must then learn far beyond it (measured: ≈ 59 nats for both)."""
    torch.manual_seed(0)
    # Gaussian likelihood: its NLL keeps falling as the fit tightens (a t's log tail flattens the
    # drop, so the bar below would measure the tail, not whether the model can learn).
    m = build_model(model_type, z_dim=16, hidden=128, likelihood="gaussian")
    batch = synthetic_poses["train"][:256]
    m.fit_whitening(batch, synthetic_poses["train"][1000:1256])
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)

    def loss_fn():
        out = m(batch)
        return out["recon_nll"].mean() + free_bits_kl(out["kl"], 0.0)

    first = loss_fn().item()
    for _ in range(300):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = loss_fn().item()
    assert last < first - 40.0, (first, last)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_energy_ranks_clean_below_noisy(model_type, trained_models, synthetic_poses):
    """Held-out subject poses vs the same poses with 0.1 rad noise: clean wins ≥ 95% of pairs."""
    m = trained_models[model_type]
    x = synthetic_poses["test"][::10]
    g = torch.Generator().manual_seed(0)
    noisy = x + 0.1 * torch.randn(x.shape, generator=g)
    with torch.no_grad():
        wins = (m.energy(x) < m.energy(noisy)).float().mean().item()
    assert wins >= 0.95, wins


def test_log_prob_rejects_bad_shape(model):
    with pytest.raises(ValueError):
        model.log_prob(torch.zeros(3, 45))


def test_kl_term_uses_logvar_as_log_variance():
    """Guard against the 'logvar used as a std' bug: z's spread must be exp(½ logvar)."""
    m = build_model("standard", z_dim=4, hidden=8)
    mu, logvar = torch.zeros(20000, 4), torch.full((20000, 4), math.log(4.0))
    z = m.reparameterize(mu, logvar, generator=torch.Generator().manual_seed(0))
    assert z.std().item() == pytest.approx(2.0, rel=0.02)


def test_whitened_model_starts_at_the_val_tuned_mirrored_gaussian(synthetic_poses):
    """At init (zero decoder output, σ = 1 exactly) the whitened model is the full-covariance Gaussian
    of train ∪ mirrored train, with the floor and scale chosen on val: scipy's density, to fp32."""
    import numpy as np
    from scipy import stats

    from hand_vae.rotations import swap_and_mirror_hands

    train = synthetic_poses["train"][::5]
    both = torch.cat([train, swap_and_mirror_hands(train)])
    m = build_model("standard", z_dim=4, hidden=16, whiten=True, min_sigma=0.05, likelihood="gaussian")
    chosen = m.fit_whitening(both, synthetic_poses["val"][::10])
    assert chosen["floor"] > 0 and chosen["scale"] >= 1.0
    x = synthetic_poses["test"][:50]
    data = both.double().numpy()
    cov = chosen["scale"] ** 2 * (np.cov(data.T, bias=True) + chosen["floor"] * np.eye(90))
    ref = stats.multivariate_normal(data.mean(0), cov).logpdf(x.double().numpy())
    out = m(x, sample=False)
    np.testing.assert_allclose(out["recon_nll"].detach().numpy(), -ref, rtol=1e-4)
    # Decoded poses come back in radians: the zero code decodes to the data mean.
    torch.testing.assert_close(m.decode(torch.zeros(1, 4))[0], both.mean(0).float(), atol=1e-5, rtol=0)
