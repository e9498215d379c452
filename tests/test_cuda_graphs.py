"""The CUDA-graph training step: its step function matches the normal step exactly (CPU), the
replayed graph gives the eager losses over 100 steps (CUDA only), and ``auto`` is on exactly where
graphs apply (one CUDA device, 32-true, one process, no --compile)."""

from __future__ import annotations

import logging

import pytest
import pytorch_lightning as pl
import torch

import hand_vae.lightning_module as lm
from hand_vae.cuda_graphs import StaticStep, lightning_step, use_cuda_graphs
from hand_vae.data.datamodule import HandPoseDataModule
from hand_vae.lightning_module import HandVAELightningModule


class Losses(pl.Callback):
    """Every training step's loss (read on the host here, in the test, not in the step)."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append(float(outputs["loss"]))


def train(accelerator: str, cuda_graphs: str, steps: int, rows: int, model_type: str = "standard"):
    """``steps`` training steps from a fixed seed; returns (module, per-step losses, trainer)."""
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    data = 0.3 * torch.randn(rows, 90, generator=torch.Generator().manual_seed(0))
    datamodule = HandPoseDataModule(batch_size=128, model_type=model_type, data_on_device="always")
    datamodule.load_arrays = lambda: {"train": data, "val": data[:256], "test": data[:256]}
    pl.seed_everything(0, verbose=False)
    module = HandVAELightningModule(
        model_type=model_type, z_dim=4, hidden=32, cov_rank=4 if model_type == "standard" else 0,
        kl_warmup_epochs=1, learning_rate=3e-3, free_bits=0.01,
        run={"gradient_clip_val": 1.0, "cuda_graphs": cuda_graphs},
    )  # fmt: skip
    losses = Losses()
    trainer = pl.Trainer(accelerator=accelerator, devices=1, max_steps=steps, limit_val_batches=0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, use_distributed_sampler=False, callbacks=[losses])  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    return module, losses.values, trainer


@pytest.mark.parametrize("model_type", ["standard", "so3"])
def test_static_step_runs_the_normal_step_exactly_on_cpu(monkeypatch, model_type):
    """The function a graph captures (plain torch calls on a static input buffer, gradients zeroed in
    place, capturable AdamW) gives bit-identical losses and weights to Lightning's eager step,
    including the smaller last batch of each epoch (1000 rows = 7 x 128 + 104)."""
    eager, eager_losses, _ = train("cpu", "off", 20, 1000, model_type)
    monkeypatch.setattr(lm, "use_cuda_graphs", lambda *args: True)  # force the graph path on the CPU
    static, static_losses, trainer = train("cpu", "on", 20, 1000, model_type)
    assert isinstance(static._graph_step, StaticStep) and static._graph_step.x is not None
    assert not static._graph_step.captured  # nothing to capture on a CPU: run eagerly
    assert trainer.global_step == 20 and len(static_losses) == 20
    assert static_losses == eager_losses
    for key, value in eager.state_dict().items():  # energy_quantiles: NaN (no validation) in both
        torch.testing.assert_close(static.state_dict()[key], value, rtol=0, atol=0, equal_nan=True, msg=key)


def test_auto_is_on_exactly_where_graphs_apply_and_every_setting_is_off_on_cpu():
    """``auto`` picks graphs for one CUDA device in fp32 (32-true), one process, no --compile, where
    bench/bench_gpu.py measured them (bench/README.md), and nowhere else. Only the device type is
    read, so this runs without a GPU."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_cuda_graphs("auto", cuda, "32-true", 1, False)
    assert use_cuda_graphs("auto", torch.device("cuda", 0), "32-true", 1, False)
    assert not use_cuda_graphs("auto", cpu, "32-true", 1, False)
    assert not use_cuda_graphs("auto", cuda, "32-true", 2, False)  # DDP
    assert not use_cuda_graphs("auto", cuda, "bf16-mixed", 1, False)
    assert not use_cuda_graphs("auto", cuda, "16-mixed", 1, False)
    assert not use_cuda_graphs("auto", cuda, "32-true", 1, True)  # --compile
    assert not use_cuda_graphs("off", cuda, "32-true", 1, False)
    for setting in ("auto", "on", "off"):
        assert not use_cuda_graphs(setting, cpu, "32-true", 1, False)
    assert use_cuda_graphs("on", cuda, "32-true", 1, False)
    assert not use_cuda_graphs("on", cuda, "bf16-mixed", 1, False)
    assert not use_cuda_graphs("on", cuda, "32-true", 2, False)
    assert not use_cuda_graphs("on", cuda, "32-true", 1, True)
    with pytest.raises(ValueError, match="cuda_graphs"):
        use_cuda_graphs("yes", cuda, "32-true", 1, False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("model_type", ["standard", "so3"])
def test_cuda_graph_gives_the_eager_losses_over_100_steps(model_type):
    """The replayed graph draws the same reparameterisation noise (Philox offsets) and runs the same
    fused kernels as the eager step, so the losses agree to fp32 round-off over 100 steps
    (12,800 rows = exactly 100 batches: every step is a replay after warm-up)."""
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        _, eager_losses, _ = train("gpu", "off", 100, 12_800, model_type)
        graphed, graph_losses, trainer = train("gpu", "on", 100, 12_800, model_type)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    assert graphed._graph_step is not None and graphed._graph_step.captured
    assert trainer.global_step == 100
    torch.testing.assert_close(torch.tensor(graph_losses), torch.tensor(eager_losses), rtol=1e-4, atol=1e-4)


def test_lightning_step_counts_one_optimizer_step_around_the_graph_step():
    """The one use of Lightning internals: its optimizer's private hooks around our own step, which
    is where Lightning counts global_step (checked end to end by the CPU test above: 20 steps)."""
    calls = []

    class Optimizer:  # the two hooks of LightningOptimizer that count a step
        def _on_before_step(self):
            calls.append("before")

        def _on_after_step(self):
            calls.append("after")

    out = lightning_step(Optimizer(), lambda x: calls.append("step") or 2 * x, torch.ones(3))
    assert calls == ["before", "step", "after"] and torch.equal(out, torch.full((3,), 2.0))
    from pytorch_lightning.core.optimizer import LightningOptimizer

    real = LightningOptimizer(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1))
    assert callable(real._on_before_step) and callable(real._on_after_step)  # still where Lightning has them
