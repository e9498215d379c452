"""Crash-safe creation of a dataset directory (docs/design.md §3).

The directory is built under a hidden temporary sibling name (``.NAME.tmp-XXXX``) and renamed into
place only when complete, with ``meta.json`` written last inside it (temp file + ``os.replace``).
A run that is killed midway therefore leaves at most a hidden temp dir, never a directory that the
readers accept. ``--overwrite`` replaces only a directory this tool wrote (one with ``meta.json``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hand_vae.errors import UserError, atomic_write

META_NAME = "meta.json"


class DatasetError(UserError, ValueError):
    """A dataset cannot be built, written or read (bad flags, bad input, damaged dir); one actionable line."""


def write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    """Write ``obj`` as indented JSON through :func:`hand_vae.errors.atomic_write`."""
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


def check_output_dir(out_dir: str | Path, overwrite: bool) -> None:
    """Refuse an output path that is a file, or a non-empty dir without ``overwrite``, or a non-empty
    dir this tool did not write (no ``meta.json``) even with ``overwrite``.

    Raises:
        DatasetError: with the fix in the message.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--output_dir {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DatasetError(
                f"--output_dir {out} already holds data; pass --overwrite to replace it or pick another dir"
            )
        if not (out / META_NAME).is_file():
            raise DatasetError(
                f"--output_dir {out} is not empty and has no {META_NAME}, so it was not written by this tool; "
                "refusing to delete it with --overwrite: remove it yourself or pick another dir"
            )


@contextmanager
def staging_dir(out_dir: str | Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary sibling dir; on success swap it into ``out_dir``, on failure delete it.

    Args:
        out_dir: final location; see :func:`check_output_dir` for what is refused.
        overwrite: replace an existing dir written by this tool.
    """
    out = Path(out_dir).resolve()
    check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        if out.is_dir() and any(out.iterdir()):  # overwrite: move the old dir away, then swap
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "data")
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            if out.is_dir():
                out.rmdir()
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
