"""The whole training step replayed from one CUDA graph (``--cuda_graphs``).

The models are small, so a training step costs mostly Python and kernel launches (forward,
backward, clipping and AdamW), not GPU work. A CUDA graph records those launches once and replays
them with a single call, so the step costs about its GPU time (``bench/bench_gpu.py``).

What a graph needs, and how the training step provides it:
  * every tensor the step reads lives at a fixed address: the batch is copied into a static input
    buffer (a device-to-device copy after the on-device gather), β is a device tensor filled in
    place before each replay, gradients are zeroed in place (never set to None), and the
    optimizer is ``AdamW(fused=True, capturable=True)``, whose step counter lives on the device;
  * no host synchronisation or host-to-device copy inside the step;
  * the same shapes every time: a batch of another size (the last one of an epoch) runs the same
    step eagerly.
Random numbers (the reparameterisation noise) come from the CUDA generator's Philox offsets,
which a replay advances exactly as the eager calls would, so a replayed step draws the same noise
as the eager one.

``auto`` and ``on`` both use graphs where they apply: one CUDA device, one process, 32-true
precision, no ``--compile``. Elsewhere the step runs eagerly: under DDP (the gradient all-reduce is
not captured), bf16/16 precision, ``--compile`` (its own graphs and guards), and on a CPU, where the
setting has no effect. ``auto`` is on because ``bench/bench_gpu.py`` measured the graph step faster
than the eager one with the same losses (tests/test_cuda_graphs.py); the numbers are in
``bench/README.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)

CHOICES = ("auto", "on", "off")
WARMUP_STEPS = 3  # eager steps on a side stream before capture (cuBLAS handles, autograd's threads)


def use_cuda_graphs(
    setting: str, device: torch.device, precision: str, world_size: int, compiled: bool
) -> bool:
    """Whether the training step is captured in a CUDA graph.

    Args:
        setting: "auto", "on" or "off" (``--cuda_graphs``); "auto" and "on" both mean on where
            graphs apply (see the module docstring).
        device: the training device.
        precision: Lightning's precision string, e.g. "32-true".
        world_size: number of training processes.
        compiled: whether ``--compile`` is on (its own graphs and guards do not mix with ours).

    Raises:
        ValueError: unknown setting.
    """
    if setting not in CHOICES:
        raise ValueError(f"cuda_graphs must be one of {CHOICES}, got {setting!r}")
    if setting == "off" or device.type != "cuda":
        return False
    why = []
    if world_size > 1:
        why.append(f"{world_size} processes (the gradient all-reduce is not captured)")
    if str(precision) not in ("32-true", "32"):
        why.append(f"precision {precision} (only 32-true is captured)")
    if compiled:
        why.append("--compile")
    if why:
        log.info("CUDA graphs off: %s", "; ".join(why))
        return False
    return True


class StaticStep:
    """Run ``step(x)`` on a static input buffer; on CUDA capture it after warm-up and replay it.

    ``step`` must do a whole optimisation step on x (B, ...) without host syncs, reading and
    writing only tensors that persist between calls, and return a tensor of results (a static
    output: a replay overwrites it, so read it before the next call). On a CPU, and for batches of
    another shape, ``step`` simply runs eagerly, so the step function can be tested anywhere.

    Args:
        step: the optimisation step, x -> results.
        warmup_steps: eager CUDA steps (on a side stream, as capture requires) before capture.
    """

    def __init__(
        self, step: Callable[[torch.Tensor], torch.Tensor], warmup_steps: int = WARMUP_STEPS
    ) -> None:
        self.step = step
        self.warmup_steps = warmup_steps
        self.x: torch.Tensor | None = None  # static input
        self.out: torch.Tensor | None = None  # static output of the graph
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager_calls = 0

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if self.x is None:
            self.x = torch.empty_like(batch)
        if batch.shape != self.x.shape or batch.dtype != self.x.dtype:
            return self.step(batch)  # e.g. the smaller last batch of an epoch
        self.x.copy_(batch)
        if self.graph is not None:
            self.graph.replay()
            return self.out
        if self.x.device.type != "cuda":
            return self.step(self.x)
        if self.eager_calls < self.warmup_steps:
            self.eager_calls += 1
            side = torch.cuda.Stream(self.x.device)
            side.wait_stream(torch.cuda.current_stream(self.x.device))
            with torch.cuda.stream(side):
                out = self.step(self.x)
            torch.cuda.current_stream(self.x.device).wait_stream(side)
            return out
        graph = torch.cuda.CUDAGraph()
        # thread_local: only this thread's CUDA calls are checked (a logger's thread may touch CUDA)
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self.out = self.step(self.x)
        self.graph = graph
        log.info("Captured the training step in a CUDA graph (batch %s)", tuple(self.x.shape))
        graph.replay()  # capture records the kernels without running them
        return self.out


def lightning_step(optimizer: Any, step: StaticStep, batch: torch.Tensor) -> torch.Tensor:
    """Run ``step(batch)`` as one step of Lightning's optimizer wrapper ``optimizer``.

    The captured graph updates the weights itself, so Lightning's ``optimizer.step()`` is not
    called; its two private hooks around that step are, because they are where Lightning counts
    optimizer steps (``trainer.global_step``, which checkpoints, logging and ``max_steps`` read).
    The only use of Lightning internals in the project (tests/test_cuda_graphs.py checks them).

    Args:
        optimizer: the ``LightningOptimizer`` of ``self.optimizers()``.
        step: the static (graphed) optimisation step.
        batch: (B, ...) the batch.

    Returns:
        ``step``'s output (a static buffer on a replay).
    """
    optimizer._on_before_step()
    out = step(batch)
    optimizer._on_after_step()
    return out
