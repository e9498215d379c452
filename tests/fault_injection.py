"""Fault injection from the test side: checkpoint writes that pause half-way, so a test can kill the
process inside the write window.

    python tests/fault_injection.py SECONDS [train_hand_vae_lightning.py flags ...]

runs the training CLI with every ``AtomicCheckpointIO`` write pausing ``SECONDS`` after its first
half. ``pause_checkpoint_writes(seconds)`` does the same inside a test's own subprocess code. Only
``hand_vae.errors``'s view of ``os`` (``atomic_write``) is replaced; production code has no such hook.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class _PausingWriter:
    """A binary file whose ``write`` writes half, flushes, sleeps, then writes the rest."""

    def __init__(self, f, seconds: float) -> None:
        self._f, self._seconds = f, seconds

    def write(self, data) -> int:
        half = len(data) // 2
        self._f.write(data[:half])
        self._f.flush()
        time.sleep(self._seconds)
        return half + self._f.write(data[half:])

    def __getattr__(self, name: str):
        return getattr(self._f, name)

    def __enter__(self) -> _PausingWriter:
        return self

    def __exit__(self, *exc) -> None:
        self._f.__exit__(*exc)


class _OsWithPausingWrites:
    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    def __getattr__(self, name: str):
        return getattr(os, name)

    def fdopen(self, fd: int, *args, **kwargs):
        return _PausingWriter(os.fdopen(fd, *args, **kwargs), self._seconds)


def pause_checkpoint_writes(seconds: float) -> None:
    """Make every checkpoint write of this process pause ``seconds`` half-way."""
    import hand_vae.errors as errors

    errors.os = _OsWithPausingWrites(seconds)


if __name__ == "__main__":
    pause_checkpoint_writes(float(sys.argv[1]))
    from hand_vae.cli.train import main

    sys.exit(main(sys.argv[2:]))
