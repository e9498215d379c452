"""Cleaning of imported clips (docs/design.md §2): subsample to a target fps, drop non-finite frames, drop
clips in which a hand never moves. Every drop is counted per reason in :class:`DropCounts`.

Order matters and is fixed: subsampling happens first, on the original time grid, so that dropping
a bad frame never shifts which frames are kept; then non-finite frames are removed; then the
constant-hand test runs on what is left.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from hand_vae.rotations import HAND_DIM, POSE_DIM

# Many AMASS subsets captured no fingers: their hands hold one pose for the whole clip. A hand whose
# largest per-dimension standard deviation over time is below this (radians) is "constant".
CONSTANT_HAND_STD = 1e-4
# Tolerance when turning fractional source positions into frame indices (fps ratios such as 120/30
# are exact in binary, but 100/30 is not).
_INDEX_EPS = 1e-9


@dataclass
class DropCounts:
    """What cleaning removed, per reason.

    Attributes:
        subsampled_frames: frames skipped to reach the target fps (expected, not a data problem).
        non_finite_frames: frames with a NaN or inf value.
        constant_hand_sequences: clips dropped because a hand never moves.
        empty_sequences: clips with no frame left.
    """

    subsampled_frames: int = 0
    non_finite_frames: int = 0
    constant_hand_sequences: int = 0
    empty_sequences: int = 0

    def as_dict(self) -> dict[str, int]:
        """Plain dict for ``meta.json``."""
        return asdict(self)


@dataclass(frozen=True)
class CleanResult:
    """Outcome of :func:`clean_sequence`.

    Attributes:
        poses: (T', 90) float32 kept frames, or None when the clip was dropped.
        fps: frame rate of ``poses`` (the target fps if subsampled, else the source fps).
        drop_reason: ``"constant_hand"``, ``"empty"`` or None when kept.
        detail: human-readable explanation of a drop.
    """

    poses: np.ndarray | None
    fps: float | None
    drop_reason: str | None = None
    detail: str = ""


def subsample_indices(num_frames: int, source_fps: float | None, target_fps: float | None) -> np.ndarray:
    """Frame indices that resample a clip from ``source_fps`` down to ``target_fps``.

    Frame k of the output is source frame ``floor(k * source_fps / target_fps)`` (nearest earlier
    frame), so 120 -> 30 fps keeps every 4th frame starting at 0. Clips that are not faster than
    the target, or whose rate is unknown, are kept whole (never upsampled).

    Args:
        num_frames: T, frames in the clip.
        source_fps: the clip's frame rate, or None if unknown.
        target_fps: the wanted frame rate, or None for no subsampling.

    Returns:
        (T',) int64 increasing indices into the clip.
    """
    if source_fps is None or target_fps is None or source_fps <= target_fps:
        return np.arange(num_frames)
    step = source_fps / target_fps
    count = int(np.ceil(num_frames / step - _INDEX_EPS))
    return np.floor(np.arange(count) * step + _INDEX_EPS).astype(np.int64)


def constant_hands(poses: np.ndarray, threshold: float = CONSTANT_HAND_STD) -> list[str]:
    """Names of the hands (``"left"``, ``"right"``) whose pose barely varies over the clip.

    Args:
        poses: (T, 90) frames ``[left 45 | right 45]``.
        threshold: a hand is constant when ``max_d std_t poses[t, d] < threshold`` (radians).
    """
    std = poses.astype(np.float64).std(axis=0) if len(poses) else np.zeros(POSE_DIM)  # (90,)
    return [
        name
        for name, cols in (("left", slice(0, HAND_DIM)), ("right", slice(HAND_DIM, POSE_DIM)))
        if float(std[cols].max()) < threshold
    ]


def clean_sequence(
    poses: np.ndarray,
    source_fps: float | None,
    target_fps: float | None,
    counts: DropCounts,
    drop_constant: bool = True,
) -> CleanResult:
    """Subsample, drop non-finite frames and reject constant-hand clips, updating ``counts``.

    Args:
        poses: (T, 90) float32 clip.
        source_fps: the clip's frame rate, or None if unknown.
        target_fps: wanted frame rate, or None for no subsampling.
        counts: accumulator, updated in place.
        drop_constant: reject clips in which either hand is constant (see :func:`constant_hands`).

    Returns:
        The kept frames, or a drop reason.
    """
    idx = subsample_indices(len(poses), source_fps, target_fps)
    counts.subsampled_frames += len(poses) - len(idx)
    fps = target_fps if len(idx) < len(poses) else source_fps
    kept = poses[idx]
    finite = np.isfinite(kept).all(axis=1)  # (T',)
    bad = int((~finite).sum())
    if bad:
        counts.non_finite_frames += bad
        kept = kept[finite]
    if len(kept) == 0:
        counts.empty_sequences += 1
        detail = f"no frames left ({bad} non-finite)" if bad else "no frames"
        return CleanResult(None, fps, "empty", detail)
    if drop_constant:
        still = constant_hands(kept)
        if still:
            counts.constant_hand_sequences += 1
            detail = f"{' and '.join(still)} hand constant (per-dim std < {CONSTANT_HAND_STD:g} rad)"
            return CleanResult(None, fps, "constant_hand", detail)
    return CleanResult(np.ascontiguousarray(kept, dtype=np.float32), fps)
