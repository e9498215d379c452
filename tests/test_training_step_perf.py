"""Per-step overhead guards (issue 9): no host sync inside the training step, fused AdamW selected.

A host sync is any call that needs a tensor's value on the CPU: ``.item()``, ``.tolist()``,
``.numpy()``, ``.cpu()``, ``float(t)``, ``int(t)``, ``bool(t)`` (``if t:``), ``t.__index__``. On a GPU
each one waits for every queued kernel, which serialises the step. We count these calls with
wrappers on ``torch.Tensor`` while ``training_step`` runs (a CPU-only stand-in for
``torch.cuda.set_sync_debug_mode``).

Where Lightning itself syncs, outside our step (measured with pytorch-lightning 2.6, fp32, logger
off): ``has_len_all_ranks`` (``bool``, once per fit), the DataLoader's base seed (``item``, once per
loader), the epoch-end reduction of ``on_epoch`` metrics (``to_item``, per epoch), our
``check_finite`` (``item``, per epoch) and ``module.cpu()`` at teardown. None of them runs per step,
so this test asserts only about our step.
"""

from __future__ import annotations

import logging
from collections import Counter

import pytest
import pytorch_lightning as pl
import torch

from hand_vae.data.datamodule import HandPoseDataModule
from hand_vae.lightning_module import HandVAELightningModule

SYNC_METHODS = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__")


class SyncCounter:
    """Counts host-sync tensor calls made while ``active`` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.active = False
        self.calls: Counter[str] = Counter()
        for name in SYNC_METHODS:
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, getattr(torch.Tensor, name)))

    def _wrap(self, name, original):
        def counted(tensor, *args, **kwargs):
            if self.active:
                self.calls[name] += 1
            return original(tensor, *args, **kwargs)

        return counted


class ProbedModule(HandVAELightningModule):
    """The project's module with ``training_step`` bracketed by the counter."""

    counter: SyncCounter | None = None

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.counter.active = True
        try:
            return super().training_step(batch, batch_idx)
        finally:
            self.counter.active = False


class ItemInStep(ProbedModule):
    """Positive control: a step that logs with ``.item()`` must be caught."""

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.counter.active = True
        try:
            loss = HandVAELightningModule.training_step(self, batch, batch_idx)
            self.log("debug/loss", loss.item())
            return loss
        finally:
            self.counter.active = False


def fit_a_few_steps(
    module: HandVAELightningModule, model_type: str, precision: str = "32-true"
) -> pl.Trainer:
    """Four training steps through a Trainer set up like the CLI's (clipping on), logger off."""
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    g = torch.Generator().manual_seed(0)
    data = 0.3 * torch.randn(1024, 90, generator=g)  # (N, 90) poses, radians
    datamodule = HandPoseDataModule(batch_size=128, model_type=model_type)
    datamodule.load_arrays = lambda: {"train": data, "val": data[:256], "test": data[:256]}
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        max_epochs=1,
        limit_train_batches=4,
        limit_val_batches=0,
        gradient_clip_val=5.0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=datamodule)
    return trainer


@pytest.mark.parametrize("model_type", ["standard", "so3"])
def test_training_step_makes_no_host_sync(monkeypatch, model_type):
    counter = SyncCounter(monkeypatch)
    module = ProbedModule(model_type=model_type, z_dim=4, hidden=32)
    module.counter = counter
    trainer = fit_a_few_steps(module, model_type)
    assert trainer.global_step == 4
    assert counter.calls == Counter(), f"host syncs inside training_step: {dict(counter.calls)}"


def test_sync_counter_catches_item_in_the_step(monkeypatch):
    counter = SyncCounter(monkeypatch)
    module = ItemInStep(z_dim=4, hidden=32)
    module.counter = counter
    fit_a_few_steps(module, "standard")
    assert counter.calls["item"] == 4


def test_fused_adamw_for_fp32():
    module = HandVAELightningModule(z_dim=4, hidden=32)
    assert module.configure_optimizers().defaults["fused"] is True
    trainer = fit_a_few_steps(HandVAELightningModule(z_dim=4, hidden=32), "standard")
    (optimizer,) = trainer.optimizers
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["fused"] is True


def test_mixed_precision_uses_a_multi_tensor_adamw():
    """Lightning cannot clip gradients of a fused optimizer under mixed precision; foreach is next best."""
    trainer = fit_a_few_steps(HandVAELightningModule(z_dim=4, hidden=32), "standard", precision="bf16-mixed")
    (optimizer,) = trainer.optimizers
    assert optimizer.defaults["fused"] or optimizer.defaults["foreach"]
