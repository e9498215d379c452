"""Sequence-level train / val / test splits, never by frame (docs/design.md §2). Every scheme is
deterministic: names are sorted first and randomness comes only from ``np.random.default_rng(seed)``.
"""

from __future__ import annotations

import math

import numpy as np

from hand_vae.data.layouts import SPLITS, DatasetError
from hand_vae.settings import DEFAULT_RATIOS, SCHEMES

# AMASS sub-datasets held out by the usual protocol (VPoser, HuMoR, ...), case-insensitive, also
# as newer releases name them (MPI_HDM05 -> HDM05, MPI_mosh -> MoSh, Transitions_mocap -> Transitions).
AMASS_VAL = frozenset({"humaneva", "mpi_hdm05", "hdm05", "sfu", "mpi_mosh", "mosh"})
AMASS_TEST = frozenset({"transitions_mocap", "transitions", "ssm_synced", "ssm"})
# Folder names accepted by the ``dirs`` scheme.
DIR_ALIASES = {"train": "train", "training": "train", "val": "val", "vald": "val", "validation": "val",
               "test": "test"}  # fmt: skip


def check_ratios(ratios: tuple[float, ...] | list[float]) -> tuple[float, float, float]:
    """``--split_ratios`` as three non-negative floats summing to 1 with train > 0, else :class:`DatasetError`."""
    if len(ratios) != 3:
        raise DatasetError(f"--split_ratios needs 3 numbers (train val test), got {len(ratios)}")
    r = tuple(float(x) for x in ratios)
    if any(not math.isfinite(x) or x < 0 for x in r) or r[0] <= 0:
        raise DatasetError(f"--split_ratios must be non-negative with train > 0, got {' '.join(map(str, r))}")
    if abs(sum(r) - 1.0) > 1e-6:
        raise DatasetError(f"--split_ratios must sum to 1, got {' '.join(map(str, r))} (sum {sum(r):g})")
    return r  # type: ignore[return-value]


def _split_sizes(n: int, ratios: tuple[float, float, float]) -> list[int]:
    """Largest-remainder rounding of ``n * ratios``; each split with a positive ratio gets at least one
    sequence when there are enough (taken from the largest split)."""
    exact = [n * r for r in ratios]
    sizes = [math.floor(x) for x in exact]
    order = sorted(range(3), key=lambda i: (-(exact[i] - sizes[i]), i))
    for i in order[: n - sum(sizes)]:
        sizes[i] += 1
    if n >= sum(r > 0 for r in ratios):
        for i in range(3):
            if ratios[i] > 0 and sizes[i] == 0:
                sizes[max(range(3), key=lambda j: sizes[j])] -= 1
                sizes[i] = 1
    return sizes


def split_by_ratio(names: list[str], ratios: tuple[float, float, float], seed: int) -> dict[str, list[str]]:
    """Split unique sequence names (in any order) by a permutation seeded with ``seed`` at the
    (train, val, test) ``ratios``; returns split -> sorted names."""
    ordered = sorted(names)
    perm = np.random.default_rng(seed).permutation(len(ordered))
    parts = np.split(perm, np.cumsum(_split_sizes(len(ordered), ratios))[:2])
    return {split: sorted(ordered[i] for i in part) for split, part in zip(SPLITS, parts, strict=True)}


def amass_split_of(rel_path: str) -> str:
    """AMASS split of a file from its path relative to the input dir (first component = sub-dataset)."""
    subset = rel_path.split("/", 1)[0].lower()
    return "val" if subset in AMASS_VAL else "test" if subset in AMASS_TEST else "train"


def dirs_split_of(rel_path: str) -> str | None:
    """Split named by the top-level folder (``train/``, ``val/``, ``test/``), or None if none."""
    parts = rel_path.split("/", 1)
    return DIR_ALIASES.get(parts[0].lower()) if len(parts) == 2 else None


def assign_splits(
    names_to_paths: dict[str, str],
    scheme: str,
    ratios: tuple[float, float, float] = DEFAULT_RATIOS,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Every sequence (name -> its POSIX path under the input dir) in exactly one split, each sorted by
    name: ``scheme`` ``ratio`` (a seeded cut at ``ratios``), ``amass`` (by sub-dataset, the first path
    component) or ``dirs`` (the top-level ``train/``, ``val/``, ``test/`` folder). Raises DatasetError:
    unknown scheme, or a ``dirs`` path outside the split folders."""
    if scheme == "ratio":
        out = split_by_ratio(list(names_to_paths), ratios, seed)
    elif scheme in ("amass", "dirs"):
        out = {s: [] for s in SPLITS}
        for name in sorted(names_to_paths):
            path = names_to_paths[name]
            split = amass_split_of(path) if scheme == "amass" else dirs_split_of(path)
            if split is None:
                raise DatasetError(f"{path} is not under train/, val/ or test/ (--split_scheme dirs)")
            out[split].append(name)
    else:
        raise DatasetError(f"unknown --split_scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    return out


def empty_advice(splits: dict[str, list[str]], scheme: str, ratios: tuple[float, float, float]) -> str | None:
    """Why a split came out empty and what to do, in one line; None when every split has a sequence
    (training needs all three, so such a build is refused rather than failing later)."""
    empty = [s for s in SPLITS if not splits.get(s)]
    if not empty:
        return None
    n = sum(len(v) for v in splits.values())
    what = f"the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''} would be empty ({n} usable sequence{'s' if n != 1 else ''})"
    own = "or give your own split: --split_scheme dirs with train/, val/ and test/ folders under --input_dir"
    if scheme == "ratio":
        zero = [s for s, r in zip(SPLITS, ratios, strict=True) if r == 0]
        if zero:
            return f"{what}: --split_ratios gives {' and '.join(zero)} no share; give every split a positive share, {own}"
        return f"{what}: training needs at least one sequence per split, so at least 3 sequences; add sequences, {own}"
    if scheme == "amass":
        return (
            f"{what}: --split_scheme amass takes val from HumanEva, MPI_HDM05, SFU, MPI_mosh and test from "
            f"Transitions_mocap, SSM_synced sub-datasets (is --input_dir the AMASS root?); use --split_scheme ratio, {own}"
        )
    return f"{what}: put at least one usable file under each of --input_dir's {', '.join(f'{s}/' for s in empty)} folders"
