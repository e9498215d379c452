"""Byte-deterministic, uncompressed ``.npz`` writing and copy-once reading: why ``np.savez`` and
``np.load`` do not do, docs/design.md §3."""

from __future__ import annotations

import hashlib
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

_FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # earliest zip timestamp; fixed so output bytes are reproducible
_LOCAL_HEADER = struct.Struct(zipfile.structFileHeader)  # 30 bytes before name + extra field


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays (member name without ``.npy`` -> array, no pickle) as an uncompressed ``.npz``
    whose bytes depend only on the arrays."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_FIXED_DATE)
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)


def _member_header(f, info: zipfile.ZipInfo) -> tuple[np.dtype, tuple[int, ...]]:
    """(dtype, shape) of a stored ``.npy`` member; leaves ``f`` at its first data byte."""
    f.seek(info.header_offset)
    fields = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
    f.seek(fields[zipfile._FH_FILENAME_LENGTH] + fields[zipfile._FH_EXTRA_FIELD_LENGTH], 1)
    fmt = np.lib.format
    read_header = fmt.read_array_header_1_0 if fmt.read_magic(f) == (1, 0) else fmt.read_array_header_2_0
    shape, fortran, dtype = read_header(f)
    if fortran or dtype.hasobject:
        raise ValueError(f"member {info.filename} is Fortran-ordered or an object array")
    return dtype, tuple(shape)


def iter_npz_rows(
    path: str | Path, key: str, buffer: np.ndarray, rows: int | None = None
) -> Iterator[np.ndarray]:
    """Stream member ``key`` (N, ...) of an ``.npz`` in row order through ``buffer`` (R, ...): yields
    ``buffer[:n]`` holding the next n <= R rows (copy each away before the next). A stored member of
    ``buffer``'s dtype is ``readinto`` it; anything else is loaded whole and cast chunk by chunk.
    ``rows``: the N to expect, when known. Raises ValueError (missing member, wrong shape, truncated),
    OSError or zipfile.BadZipFile (unreadable file)."""
    with open(path, "rb") as f, zipfile.ZipFile(f) as zf:
        try:
            info = zf.getinfo(f"{key}.npy")
        except KeyError:
            raise ValueError(f"{path} has no member {key!r}") from None
        whole = None
        if info.compress_type == zipfile.ZIP_STORED:
            dtype, shape = _member_header(f, info)
        if info.compress_type != zipfile.ZIP_STORED or dtype != buffer.dtype:
            with np.load(path, allow_pickle=False) as z:
                whole = z[key]
            shape = whole.shape
        if tuple(shape[1:]) != buffer.shape[1:]:
            raise ValueError(f"{path}:{key} has rows of shape {shape[1:]}, expected {buffer.shape[1:]}")
        if rows is not None and shape[0] != rows:
            raise ValueError(f"{path}:{key} has shape {shape}, expected {(rows, *buffer.shape[1:])}")
        for start in range(0, shape[0], max(len(buffer), 1)):
            chunk = buffer[: min(len(buffer), shape[0] - start)]
            if whole is not None:
                chunk[...] = whole[start : start + len(chunk)]
            elif f.readinto(memoryview(chunk).cast("B")) != chunk.nbytes:
                raise ValueError(f"{path}:{key} is truncated")
            yield chunk


def read_npz_into(path: str | Path, dest: dict[str, np.ndarray]) -> None:
    """Fill each C-contiguous ``dest[key]`` with member ``key`` of an ``.npz``, whose shape must match;
    raises as :func:`iter_npz_rows`."""
    for key, out in dest.items():
        for _ in iter_npz_rows(path, key, out, rows=len(out)):  # one chunk: the whole of ``out``
            pass


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()
