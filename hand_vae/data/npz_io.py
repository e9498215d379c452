"""Byte-deterministic, uncompressed ``.npz`` writing and copy-once reading.

``np.savez`` stamps every member with the current time, so two runs on the same data give different
bytes (and different sha256 in ``meta.json``). :func:`write_npz` writes the same container format
(a zip of ``.npy`` members, stored uncompressed, readable by ``np.load``) with a fixed timestamp.

:func:`read_npz_into` reads stored members straight into caller-provided arrays with one
``readinto`` per member, skipping zipfile's 256 KiB chunking and the concatenate copy: this is what
makes 1e7 consolidated rows load in about a second. :func:`iter_npz_rows` streams a
member through a small caller-provided buffer instead, for a destination that is not host memory
(a GPU tensor), so the host never holds the whole array. Integrity is checked by size and, on
request, by sha256 of the whole file (see ``layouts``), not by zip CRCs.
"""

from __future__ import annotations

import hashlib
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

_FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # earliest zip timestamp; fixed so output bytes are reproducible
_LOCAL_HEADER = struct.Struct(zipfile.structFileHeader)  # 30 bytes before name + extra field
_HASH_CHUNK = 1 << 24


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays as an uncompressed ``.npz`` whose bytes depend only on the arrays.

    Args:
        path: output file (overwritten).
        arrays: member name (without ``.npy``) -> array; written in the given order, no pickle.
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_FIXED_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)


def _member_header(f, info: zipfile.ZipInfo) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, shape, absolute data offset) of a stored ``.npy`` member."""
    f.seek(info.header_offset)
    fields = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
    name_len, extra_len = fields[zipfile._FH_FILENAME_LENGTH], fields[zipfile._FH_EXTRA_FIELD_LENGTH]
    f.seek(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    if fortran or dtype.hasobject:
        raise ValueError(f"member {info.filename} is Fortran-ordered or an object array")
    return dtype, tuple(shape), f.tell()


def npz_shapes(path: str | Path) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Member name -> (dtype, shape) of an uncompressed ``.npz``, reading headers only."""
    out = {}
    with open(path, "rb") as f, zipfile.ZipFile(f) as zf:
        for info in zf.infolist():
            dtype, shape, _ = _member_header(f, info)
            out[info.filename.removesuffix(".npy")] = (dtype, shape)
    return out


def read_npz_into(path: str | Path, dest: dict[str, np.ndarray]) -> None:
    """Fill each ``dest[key]`` with member ``key`` of an ``.npz`` (one copy, no temporaries).

    Stored (uncompressed) members of the exact dtype are read with ``readinto``; anything else
    (compressed, other dtype) falls back to ``np.load`` and a casting copy.

    Args:
        path: the ``.npz``.
        dest: key -> C-contiguous array whose shape must equal the member's shape.

    Raises:
        ValueError: missing member or shape mismatch (corrupt or foreign file).
        OSError, zipfile.BadZipFile: unreadable file.
    """
    with open(path, "rb") as f, zipfile.ZipFile(f) as zf:
        infos = {i.filename.removesuffix(".npy"): i for i in zf.infolist()}
        for key, out in dest.items():
            if key not in infos:
                raise ValueError(f"{path} has no member {key!r}")
            info = infos[key]
            if info.compress_type != zipfile.ZIP_STORED:
                with np.load(path, allow_pickle=False) as z:
                    arr = z[key]
                if arr.shape != out.shape:
                    raise ValueError(f"{path}:{key} has shape {arr.shape}, expected {out.shape}")
                out[...] = arr
                continue
            dtype, shape, offset = _member_header(f, info)
            if shape != out.shape:
                raise ValueError(f"{path}:{key} has shape {shape}, expected {out.shape}")
            if dtype != out.dtype:
                f.seek(offset)
                out[...] = np.fromfile(f, dtype=dtype, count=int(np.prod(shape))).reshape(shape)
                continue
            f.seek(offset)
            view = memoryview(out).cast("B")
            if f.readinto(view) != view.nbytes:
                raise ValueError(f"{path}:{key} is truncated")


def iter_npz_rows(path: str | Path, key: str, buffer: np.ndarray) -> Iterator[np.ndarray]:
    """Stream member ``key`` (N, ...) of an ``.npz`` in row order through ``buffer``.

    Yields ``buffer[:n]``, filled with the next n <= len(buffer) rows, until all N rows were
    yielded; the caller copies each chunk away before asking for the next. A stored member of
    ``buffer``'s dtype is read with sequential ``readinto`` calls (no temporaries); anything else
    (compressed, another dtype) is loaded whole with ``np.load`` and cast chunk by chunk.

    Args:
        path: the ``.npz``.
        key: member name without ``.npy``.
        buffer: C-contiguous (R, ...) array with the member's row shape.

    Raises:
        ValueError: missing member, row-shape mismatch or truncated member.
        OSError, zipfile.BadZipFile: unreadable file.
    """
    with open(path, "rb") as f, zipfile.ZipFile(f) as zf:
        infos = {i.filename.removesuffix(".npy"): i for i in zf.infolist()}
        if key not in infos:
            raise ValueError(f"{path} has no member {key!r}")
        info = infos[key]
        if info.compress_type == zipfile.ZIP_STORED:
            dtype, shape, offset = _member_header(f, info)
            stored = dtype == buffer.dtype
        else:
            stored = False
        if not stored:
            with np.load(path, allow_pickle=False) as z:
                whole = z[key]
            shape = whole.shape
        if tuple(shape[1:]) != buffer.shape[1:]:
            raise ValueError(
                f"{path}:{key} has rows of shape {tuple(shape[1:])}, expected {buffer.shape[1:]}"
            )
        if stored:
            f.seek(offset)
        for start in range(0, shape[0], len(buffer)):
            chunk = buffer[: min(len(buffer), shape[0] - start)]
            if not stored:
                chunk[...] = whole[start : start + len(chunk)]
            else:
                view = memoryview(chunk).cast("B")
                if f.readinto(view) != view.nbytes:
                    raise ValueError(f"{path}:{key} is truncated")
            yield chunk


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()
