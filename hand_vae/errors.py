"""The one error a user can cause, and the one way a file is written.

Every layer raises :class:`UserError` (or a subclass, where a caller catches that subclass) for a
mistake in what the user asked for: a missing file, a bad shape, a flag that contradicts a
checkpoint. The command-line layer (``hand_vae/cli/common.py``) turns it into one line on stderr and
its ``exit_code``; a Python caller gets an exception with the same one-line message.
"""

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
    """Write ``path`` through ``write(file)`` to a hidden temp file, fsync, then rename it into place.

    Readers see the old file or the new one, never half of one: a run killed mid-write leaves at
    most a ``.NAME.tmp-*`` file beside it.

    Args:
        path: the file to (re)write.
        write: called with a binary file object open for writing.

    Returns:
        ``path`` as a Path.
    """
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
