"""Embedded synthetic two-hand pose data: deterministic, seeded, no files, no downloads. **For trying
the tool and for tests, not a substitute for captured data.** Its assumptions: docs/design.md §2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hand_vae import anatomy
from hand_vae.data.layouts import stack_poses
from hand_vae.rotations import HAND_DIM, JOINTS_PER_HAND, POSE_DIM

# Grasp prototypes: flex(index, middle, pinky, ring), thumb flex, thumb opposition, spread.
_PROTOTYPES = np.array(
    [
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2],  # flat
        [0.3, 0.35, 0.4, 0.38, 0.2, 0.3, 0.3],  # relaxed
        [1.0, 1.0, 1.0, 1.0, 0.7, 0.6, 0.0],  # fist
        [0.0, 1.0, 1.0, 1.0, 0.6, 0.7, 0.1],  # point
        [0.55, 0.3, 0.3, 0.3, 0.5, 0.9, 0.2],  # pinch
        [0.0, 0.0, 1.0, 1.0, 0.7, 0.8, 0.7],  # peace / victory
        [0.5, 0.55, 0.65, 0.6, 0.4, 0.6, 0.1],  # cylinder grasp
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],  # spread hand
    ]
)
_NUM_PARAMS = _PROTOTYPES.shape[1]
_HOLD_PROTOTYPES = np.array([1, 2, 6])  # relaxed, fist, cylinder: what a holding hand does
_FINGER_COLUMNS = {"index": 0, "middle": 1, "pinky": 2, "ring": 3}


@dataclass(frozen=True)
class PoseSequence:
    """One motion clip."""

    name: str  # unique, e.g. "subject03/seq012"
    subject: str  # e.g. "subject03"
    poses: np.ndarray  # (T, 90) float32 axis-angle, [left 45 | right 45], radians
    fps: float


Splits = dict[str, list[PoseSequence]]  # train / val / test -> clips


@dataclass(frozen=True)
class CaptureNoise:
    """Per-frame measurement error added to every clip (radians, on the axis-angle numbers)."""

    sigma: float = 0.01  # std of the i.i.d. Gaussian jitter on every number of every frame
    outlier_prob: float = 0.01  # probability that one joint of one frame is an outlier
    outlier_sigma: float = 0.15  # std of the extra error on an outlier joint's 3 numbers


CAPTURE_NOISE = CaptureNoise()  # the level the proxies of bench/prior_quality.py use


@dataclass(frozen=True)
class _Subject:
    limit_scale: float
    spread_scale: float
    thumb_bias: float
    tremor: float
    grasp_weights: np.ndarray  # (num prototypes,)


def _axis_angle(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """axis (3,), angle (T,) -> (T, 3)."""
    return angle[:, None] * axis[None, :]


def _right_hand_pose(params: np.ndarray, subject: _Subject) -> np.ndarray:
    """Grasp parameters (T, 7) in [0, 1] -> right-hand axis-angle (T, 15, 3)."""
    T = params.shape[0]
    out = np.zeros((T, JOINTS_PER_HAND, 3))
    flex = {f: params[:, c] for f, c in _FINGER_COLUMNS.items()}
    # Neighbour coupling: ring and pinky share tendons with middle and ring.
    flex["ring"] = 0.7 * flex["ring"] + 0.3 * flex["middle"]
    flex["pinky"] = 0.7 * flex["pinky"] + 0.3 * flex["ring"]
    spread = params[:, 6]
    s = subject.limit_scale
    for finger, f in flex.items():
        j1, j2, j3 = anatomy.FINGER_JOINTS[finger]
        mcp = (-0.2 + 1.7 * f**1.2) * s
        pip = 1.8 * f**0.9 * s
        abduction = anatomy.SPREAD_SIGN[finger] * subject.spread_scale * spread * (1.0 - 0.7 * f)
        out[:, j1] = _axis_angle(anatomy.FLEX_AXIS, mcp) + _axis_angle(anatomy.SPREAD_AXIS, abduction)
        out[:, j2] = _axis_angle(anatomy.FLEX_AXIS, pip)
        out[:, j3] = _axis_angle(anatomy.FLEX_AXIS, 0.67 * pip)
    thumb_flex = np.clip(params[:, 4] + subject.thumb_bias, 0.0, 1.0)
    opposition = params[:, 5]
    t1, t2, t3 = anatomy.FINGER_JOINTS["thumb"]
    out[:, t1] = _axis_angle(anatomy.THUMB_OPPOSITION_AXIS, 0.9 * opposition * s) + _axis_angle(
        anatomy.THUMB_FLEX_AXIS, 0.3 * thumb_flex
    )
    out[:, t2] = _axis_angle(anatomy.THUMB_FLEX_AXIS, 0.6 * thumb_flex * s)
    out[:, t3] = _axis_angle(anatomy.THUMB_FLEX_AXIS, 0.9 * thumb_flex * s)
    return out


def _make_subject(rng: np.random.Generator) -> _Subject:
    weights = rng.dirichlet(np.full(len(_PROTOTYPES), 0.7))
    ranges = ((0.85, 1.1), (0.7, 1.3), (-0.1, 0.1), (0.004, 0.015))  # limit, spread, thumb bias, tremor
    return _Subject(*(float(rng.uniform(lo, hi)) for lo, hi in ranges), grasp_weights=weights)


def _keyframe_track(
    rng: np.random.Generator, subject: _Subject, T: int, fps: float, copy_of: np.ndarray | None, holder: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth grasp-parameter trajectory (T, 7) and the keyframe prototypes it used (``copy_of``: these
    prototypes). ``holder``: a hand holding an object, slow (2-4 s per keyframe) power grasps only."""
    seconds = rng.uniform(2.0, 4.0) if holder else rng.uniform(0.5, 1.3)
    n_keys = max(2, int(np.ceil(T / (fps * seconds))) + 1)
    if holder:
        protos = rng.choice(_HOLD_PROTOTYPES, size=n_keys)
    elif copy_of is None:
        protos = rng.choice(len(_PROTOTYPES), size=n_keys, p=subject.grasp_weights)
    else:
        protos = copy_of
    keys = np.clip(_PROTOTYPES[protos] + rng.normal(0.0, 0.12, size=(len(protos), _NUM_PARAMS)), 0.0, 1.0)
    # Place keyframes evenly over the clip and ease between them (smoothstep), so motion is smooth.
    pos = np.linspace(0.0, len(keys) - 1, T)
    lo = np.minimum(np.floor(pos).astype(int), len(keys) - 2)
    u = pos - lo
    u = u * u * (3.0 - 2.0 * u)
    track = keys[lo] * (1.0 - u[:, None]) + keys[lo + 1] * u[:, None]
    return track, protos


def _tremor(rng: np.random.Generator, T: int, std: float) -> np.ndarray:
    """AR(1) noise (T, 15, 3) with stationary std ``std`` radians."""
    phi = 0.9
    eps = rng.normal(0.0, std * np.sqrt(1.0 - phi**2), size=(T, JOINTS_PER_HAND, 3))
    out = np.empty_like(eps)
    out[0] = rng.normal(0.0, std, size=(JOINTS_PER_HAND, 3))
    for t in range(1, T):
        out[t] = phi * out[t - 1] + eps[t]
    return out


def _capture_error(rng: np.random.Generator, T: int, noise: CaptureNoise) -> np.ndarray:
    """Jitter plus outliers, (T, 90): see ``CaptureNoise``."""
    err = rng.normal(0.0, noise.sigma, size=(T, 2 * JOINTS_PER_HAND, 3))
    outlier = rng.random((T, 2 * JOINTS_PER_HAND, 1)) < noise.outlier_prob
    err += outlier * rng.normal(0.0, noise.outlier_sigma, size=(T, 2 * JOINTS_PER_HAND, 3))
    return err.reshape(T, POSE_DIM)


def generate_sequences(
    num_subjects: int = 8,
    sequences_per_subject: int = 40,
    frames_per_sequence: int = 150,
    fps: float = 30.0,
    bimanual_prob: float = 0.5,
    seed: int = 0,
    hand_roles: bool = False,
    capture_noise: CaptureNoise | None = None,
) -> list[PoseSequence]:
    """``num_subjects * sequences_per_subject`` clips of (T, 90) float32 poses (docs/design.md §2); the
    same arguments give identical arrays.

    Args:
        bimanual_prob: probability that a clip moves both hands through the same grasps.
        hand_roles: the left hand holds, the right manipulates (``bimanual_prob`` unused); a mirrored
            left hand is then not a typical right hand.
        capture_noise: capture error on every frame (None: none), from a second stream seeded by
            ``seed``: the noiseless arrays and subject s's error do not depend on it / ``num_subjects``.
    """
    rng = np.random.default_rng(seed)
    noise_rng = np.random.default_rng([seed, 1])
    mirror = np.array([1.0, -1.0, -1.0])
    sequences: list[PoseSequence] = []
    for s in range(num_subjects):
        subject = _make_subject(rng)
        sid = f"subject{s:02d}"
        for q in range(sequences_per_subject):
            T = frames_per_sequence
            right_params, protos = _keyframe_track(rng, subject, T, fps, None, False)
            copy = protos if not hand_roles and rng.random() < bimanual_prob else None
            left_params, _ = _keyframe_track(rng, subject, T, fps, copy, hand_roles)
            right = _right_hand_pose(right_params, subject) + _tremor(rng, T, subject.tremor)
            left = (_right_hand_pose(left_params, subject) + _tremor(rng, T, subject.tremor)) * mirror
            poses = np.concatenate([left.reshape(T, HAND_DIM), right.reshape(T, HAND_DIM)], axis=1)
            if capture_noise is not None:
                poses = poses + _capture_error(noise_rng, T, capture_noise)
            sequences.append(PoseSequence(f"{sid}/seq{q:03d}", sid, poses.astype(np.float32), fps))
    return sequences


def split_by_subject(sequences: list[PoseSequence], val_subjects: int = 1, test_subjects: int = 1) -> Splits:
    """Split clips by subject: the last subjects are val and test, the rest train (stricter than a
    by-sequence split: val and test measure generalisation to people the model never saw)."""
    subjects = sorted({s.subject for s in sequences})
    if len(subjects) < val_subjects + test_subjects + 1:
        raise ValueError(f"need at least {val_subjects + test_subjects + 1} subjects, got {len(subjects)}")
    test = set(subjects[len(subjects) - test_subjects :])
    val = set(subjects[len(subjects) - test_subjects - val_subjects : len(subjects) - test_subjects])
    splits: Splits = {"train": [], "val": [], "test": []}
    for seq in sequences:
        key = "test" if seq.subject in test else "val" if seq.subject in val else "train"
        splits[key].append(seq)
    return splits


def default_splits(seed: int = 0, **kwargs) -> Splits:
    """The embedded default dataset, ``generate_sequences(seed=seed, **kwargs)`` split by subject: by
    default 8 subjects x 40 clips x 150 frames; train = 6 subjects, val = subject06, test = subject07."""
    return split_by_subject(generate_sequences(seed=seed, **kwargs))


def small_proxy_splits(seed: int = 0, capture_noise: CaptureNoise | None = None) -> Splits:
    """A small-data, unseen-subject proxy of real captures (``bench/prior_quality.py``): 4 subjects with
    ``hand_roles``, 7 clips x 600 frames each; train = subject00's first 6 clips, val = its 7th, test =
    subjects 01-03 (one person to learn from, new people to be judged on)."""
    seqs = generate_sequences(4, 7, 600, hand_roles=True, seed=seed, capture_noise=capture_noise)
    first = [s for s in seqs if s.subject == "subject00"]
    return {"train": first[:-1], "val": first[-1:], "test": [s for s in seqs if s.subject != "subject00"]}


MANY_TEST_SUBJECTS = 4


def many_subject_splits(
    n_train_subjects: int = 20,
    seed: int = 0,
    capture_noise: CaptureNoise | None = CAPTURE_NOISE,
    sequences_per_subject: int = 8,
    frames_per_sequence: int = 300,
) -> Splits:
    """A many-subject proxy of the datasets users train on, capture noise on: test = subjects 00-03;
    train = all but the last clip of each of the next ``n_train_subjects``, val = their last clips.
    The test set is the same for every ``n_train_subjects`` and the training sets are nested (the
    subjects-vs-gain curve of ``bench/prior_quality.py``)."""
    if n_train_subjects < 1 or sequences_per_subject < 2:
        raise ValueError("need at least 1 training subject and 2 clips per subject")
    n = MANY_TEST_SUBJECTS + n_train_subjects
    seqs = generate_sequences(
        n, sequences_per_subject, frames_per_sequence, seed=seed, capture_noise=capture_noise
    )
    test_ids = {f"subject{s:02d}" for s in range(MANY_TEST_SUBJECTS)}
    splits: Splits = {"train": [], "val": [], "test": []}
    for seq in seqs:
        last = seq.name.endswith(f"seq{sequences_per_subject - 1:03d}")
        splits["test" if seq.subject in test_ids else "val" if last else "train"].append(seq)
    return splits


def pose_tensors(splits: Splits) -> dict[str, torch.Tensor]:
    """split -> all its poses as one (N, 90) float32 tensor (the in-memory form every consumer uses)."""
    return {k: torch.from_numpy(stack_poses(v)[0]) for k, v in splits.items()}
