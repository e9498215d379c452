"""Per-step overhead guards: no host sync and no host-to-device copy per training step; fused AdamW.

A host sync is anything that needs a tensor's value on the CPU (``.item()``, ``float(t)``,
``if t:``, ``.tolist()``, ``.cpu()``, boolean-mask indexing, ``nonzero``); on a GPU each one waits
for every queued kernel. A tensor built from Python data (``torch.tensor(...)``, ``new_tensor``)
is a host-to-device copy on a GPU, which from pageable memory also blocks the host. On the CPU we
see both kinds as dispatcher events (``_local_scalar_dense``, ``lift_fresh``, ...) with a
``TorchDispatchMode``, plus a wrapper on the ``Tensor`` methods that read values without
dispatching. Every event between the start of training step 3 and the start of step 7 counts:
our step, Lightning's loop, the data loader and every callback of the CLI's Trainer. This is the
CPU stand-in for ``torch.cuda.set_sync_debug_mode("error")``, which the CUDA test below uses.
"""

from __future__ import annotations

import logging
from collections import Counter

import pytest
import pytorch_lightning as pl
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hand_vae.cli.train import parse_settings
from hand_vae.lightning_module import HandVAELightningModule
from hand_vae.training import build_run

WARMUP, STEPS = 3, 4
# Dispatcher ops that need a value on the host, or that turn Python data into a tensor.
HOST_OPS = {
    "aten._local_scalar_dense.default",  # .item(), float(t), int(t), bool(t)
    "aten.lift_fresh.default",  # torch.tensor / new_tensor / as_tensor of Python data
    "aten.lift_fresh_copy.default",
    "aten.nonzero.default",
    "aten.masked_select.default",
    "aten._unique2.default",
    "aten.unique_consecutive.default",
    "aten.repeat_interleave.Tensor",
    "aten.equal.default",
    "aten.is_nonzero.default",
}
VALUE_METHODS = ("tolist", "numpy", "cpu")  # read values without a dispatcher op on the CPU


class HostEvents(TorchDispatchMode):
    """Records host syncs and host-to-device copies in ``self.events`` while active."""

    def __init__(self) -> None:
        super().__init__()
        self.events: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        if name in HOST_OPS:
            self.events[name] += 1
        elif name.startswith("aten.index.Tensor") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ())
        ):
            self.events["boolean-mask index"] += 1
        elif name in ("aten._to_copy.default", "aten.copy_.default"):
            src, dst = args[0], kwargs.get("device", args[1].device if len(args) > 1 else None)
            if dst is not None and torch.device(dst) != src.device:
                self.events[f"{name} {src.device}->{dst}"] += 1
        return func(*args, **kwargs)


class StepWindow(pl.Callback):
    """Records host events from the start of step ``WARMUP`` to the start of step ``WARMUP + STEPS``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.mode = HostEvents()
        self.active = False
        for name in VALUE_METHODS:
            monkeypatch.setattr(torch.Tensor, name, self._counted(name, getattr(torch.Tensor, name)))

    def _counted(self, name, original):
        def counted(tensor, *args, **kwargs):
            if self.active:
                self.mode.events[f"Tensor.{name}"] += 1
            return original(tensor, *args, **kwargs)

        return counted

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == WARMUP:
            self.mode.__enter__()
            self.active = True
        elif trainer.global_step == WARMUP + STEPS and self.active:
            self.stop()

    def stop(self) -> None:
        self.active = False
        self.mode.__exit__(None, None, None)


def cli_steps(tmp_path, monkeypatch, *flags: str) -> tuple[pl.Trainer, Counter]:
    """The CLI's Trainer, module and data module (progress bar and logger on, no plots) on tiny
    in-memory data, with host events recorded over steps ``WARMUP`` .. ``WARMUP + STEPS - 1``."""
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    g = torch.Generator().manual_seed(0)
    data = 0.3 * torch.randn(1280, 90, generator=g)  # (N, 90) poses, radians
    argv = ["--z_dim", "4", "--hidden", "32", "--batch_size", "128", "--max_epochs", "1",
            "--limit_val_batches", "0", "--no_plots", "--accelerator", "cpu", "--experiment_name", "sync",
            "--checkpoint_dir", str(tmp_path / "ckpt"), "--log_dir", str(tmp_path / "logs"), *flags]  # fmt: skip
    trainer, module, datamodule, _ = build_run(parse_settings(argv))
    datamodule.load_arrays = lambda: {"train": data, "val": data[:256], "test": data[:256]}
    window = StepWindow(monkeypatch)
    trainer.callbacks.append(window)
    try:
        trainer.fit(module, datamodule=datamodule)
    finally:
        if window.active:
            window.stop()
    assert trainer.global_step == 10
    return trainer, window.mode.events


@pytest.mark.parametrize(
    "flags",
    [(), ("--model_type", "so3"), ("--mirror_augment",), ("--free_bits", "0.1")],
    ids=["standard", "so3", "mirror", "free_bits"],
)
def test_training_steps_make_no_host_sync_or_copy(tmp_path, monkeypatch, flags):
    _, events = cli_steps(tmp_path, monkeypatch, *flags)
    assert events == Counter(), f"host syncs / copies in {STEPS} training steps: {dict(events)}"


@pytest.mark.parametrize(
    "extra,event",
    [
        (lambda loss: loss.item(), "aten._local_scalar_dense.default"),
        (lambda loss: torch.tensor(1.0), "aten.lift_fresh.default"),
    ],
    ids=["item", "tensor-from-python"],
)
def test_the_window_catches_a_sync_and_a_copy_in_the_step(tmp_path, monkeypatch, extra, event):
    original = HandVAELightningModule.model_step

    def model_step(self, batch, beta, free_bits):
        out = original(self, batch, beta, free_bits)
        extra(out[0])
        return out

    monkeypatch.setattr(HandVAELightningModule, "model_step", model_step)
    _, events = cli_steps(tmp_path, monkeypatch)
    assert events[event] == STEPS, dict(events)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("graphs", ["off", "on"])
def test_cuda_training_steps_never_sync(tmp_path, monkeypatch, graphs):
    """``set_sync_debug_mode("error")`` raises on any sync (``.item()``, a blocking host-to-device
    copy, ``nonzero``) from the start of step 5 to the start of step 9; the profiler counts copies.
    (Step 5: with graphs on, step 3 captures, which synchronises once by design.)"""
    start = 5
    from torch.profiler import ProfilerActivity, profile

    class SyncErrors(pl.Callback):
        def __init__(self) -> None:
            self.prof = profile(activities=[ProfilerActivity.CUDA])

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.global_step == start:
                torch.cuda.synchronize()
                self.prof.__enter__()
                torch.cuda.set_sync_debug_mode("error")
            elif trainer.global_step == start + STEPS:
                torch.cuda.set_sync_debug_mode("default")
                self.prof.__exit__(None, None, None)

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    data = 0.3 * torch.randn(1280, 90)
    argv = ["--z_dim", "4", "--hidden", "32", "--batch_size", "128", "--max_epochs", "1",
            "--limit_val_batches", "0", "--no_plots", "--accelerator", "gpu", "--devices", "1",
            "--data_on_device", "always", "--cuda_graphs", graphs, "--experiment_name", "cuda_sync",
            "--checkpoint_dir", str(tmp_path / "ckpt"), "--log_dir", str(tmp_path / "logs")]  # fmt: skip
    trainer, module, datamodule, _ = build_run(parse_settings(argv))
    datamodule.load_arrays = lambda: {"train": data, "val": data[:256], "test": data[:256]}
    probe = SyncErrors()
    trainer.callbacks.append(probe)
    try:
        trainer.fit(module, datamodule=datamodule)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainer.global_step == 10
    copies = [e for e in probe.prof.events() if "HtoD" in e.name]
    assert not copies, [e.name for e in copies]


def _module(**kwargs) -> HandVAELightningModule:
    return HandVAELightningModule(z_dim=4, hidden=32, run={"gradient_clip_val": 5.0}, **kwargs)


def fit_a_few_steps(module: HandVAELightningModule, precision: str = "32-true") -> pl.Trainer:
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    from hand_vae.data.datamodule import HandPoseDataModule

    data = 0.3 * torch.randn(1024, 90, generator=torch.Generator().manual_seed(0))
    datamodule = HandPoseDataModule(batch_size=128)
    datamodule.load_arrays = lambda: {"train": data, "val": data[:256], "test": data[:256]}
    trainer = pl.Trainer(accelerator="cpu", devices=1, precision=precision, max_epochs=1, limit_train_batches=4,
                         limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, use_distributed_sampler=False)  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    return trainer


def test_fused_adamw_for_fp32():
    assert _module().configure_optimizers().defaults["fused"] is True
    trainer = fit_a_few_steps(_module())
    (optimizer,) = trainer.optimizers
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"] is True
    assert trainer.global_step == 4


def test_mixed_precision_uses_a_multi_tensor_adamw_and_still_clips():
    """Lightning cannot clip gradients of a fused optimizer under mixed precision; foreach is next best."""
    trainer = fit_a_few_steps(_module(), precision="bf16-mixed")
    (optimizer,) = trainer.optimizers
    assert optimizer.defaults["fused"] or optimizer.defaults["foreach"]
    assert trainer.global_step == 4
