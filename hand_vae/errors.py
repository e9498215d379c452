"""The one error a user can cause (``UserError``: a missing file, a bad shape, a flag that contradicts a
checkpoint; ``hand_vae/cli/common.py`` prints it as one line and exits with its code) and the one way a
file is written (``atomic_write``)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


class UserError(Exception):
    """A mistake in what the user asked for: reported as one line, exit code 2."""

    exit_code = 2


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object]) -> Path:
    """(Re)write ``path`` by calling ``write`` on a binary hidden temp file, fsync, rename it into place;
    returns ``path`` as a Path. Readers see the old file or the new one, never half of one: a run killed
    mid-write leaves at most a ``.NAME.tmp-*`` file beside it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
