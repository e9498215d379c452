"""The whole training step replayed from one CUDA graph (``--cuda_graphs``; docs/design.md §6).

A small model's step costs mostly kernel launches; a graph records them once and replays them in
one call. Where graphs apply (one CUDA device and process, 32-true, no ``--compile``) ``auto`` and
``on`` use them; elsewhere the step runs eagerly.
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
    """Whether the training step is captured: ``setting`` in ``CHOICES`` where graphs apply (one
    process, Lightning precision "32-true", not ``compiled``: --compile's graphs and guards do not mix)."""
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
    """Run ``step(x)`` on a static input buffer; on CUDA capture it after ``warmup_steps`` and replay it.

    ``step``: a whole optimisation step on x (B, ...) with no host sync, touching only persistent
    tensors, returning a tensor (a replay overwrites it). Eager on a CPU and for other batch shapes.
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
    """Run ``step(batch)`` as one step of the ``LightningOptimizer`` ``optimizer``; returns its output.

    The graph updates the weights, so only the private hooks around ``optimizer.step()`` that count
    ``trainer.global_step`` run: the project's one use of Lightning internals (tests/test_cuda_graphs.py).
    """
    optimizer._on_before_step()
    out = step(batch)
    optimizer._on_after_step()
    return out
