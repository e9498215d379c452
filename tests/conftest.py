"""Shared fixtures: the synthetic data and tiny models trained on it once per session."""

from __future__ import annotations

import pytest
import torch

from hand_vae.data.synthetic import default_splits, pose_tensors
from hand_vae.losses import free_bits_kl
from hand_vae.models import BaseHandVAE, build_model

# The tests' models and batches are tiny: one intra-op thread is as fast on a quiet 2-core machine and
# far faster on a busy one (two OpenMP threads wait on each other at every small matmul).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synthetic_poses() -> dict[str, torch.Tensor]:
    """The embedded default dataset, split by subject: split -> (N, 90) float32."""
    return pose_tensors(default_splits(seed=0))


def train_tiny(model_type: str, train: torch.Tensor, epochs: int = 4, seed: int = 0) -> BaseHandVAE:
    """A bare training loop (no Lightning): a small model, Adam, linear β warm-up."""
    torch.manual_seed(seed)
    # A plain diagonal σ (no whitening, no z-dependent σ): fast to train.
    model = build_model(model_type, z_dim=16, hidden=128, whiten=False, local_sigma=False)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    steps = 0
    for _ in range(epochs):
        for idx in torch.randperm(len(train), generator=g).split(512):
            out = model(train[idx])
            beta = min(1.0, steps / 100)
            loss = out["recon_nll"].mean() + beta * free_bits_kl(out["kl"], 0.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    return model.eval()


@pytest.fixture(scope="session")
def trained_models(synthetic_poses) -> dict[str, BaseHandVAE]:
    """One tiny trained model per type (a few seconds each on 2 cores)."""
    train = synthetic_poses["train"][::3]
    return {t: train_tiny(t, train) for t in ("standard", "so3")}


@pytest.fixture(scope="module")
def one_thread():
    """Hundreds of tiny steps: a second thread only waits (much worse on a busy machine). Restores the
    count after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomise_decoder(model: torch.nn.Module, seed: int = 0) -> None:
    """A decoder head (mean [and log-σ offset]) and σ away from their start, as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head = model.decoder[-1]
        head.weight.copy_(0.3 * torch.randn(head.weight.shape, generator=g))
        head.bias.copy_(0.3 * torch.randn(head.bias.shape, generator=g))
        model.raw_log_sigma.copy_(-0.5 + 0.3 * torch.randn(90, generator=g))
