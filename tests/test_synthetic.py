"""The embedded synthetic dataset: deterministic, structured, smooth, split by subject."""

import numpy as np

from hand_vae.data.synthetic import default_splits, generate_sequences, split_by_subject, stack_poses


def test_deterministic_and_seed_dependent():
    a = generate_sequences(num_subjects=3, sequences_per_subject=2, frames_per_sequence=40, seed=1)
    b = generate_sequences(num_subjects=3, sequences_per_subject=2, frames_per_sequence=40, seed=1)
    c = generate_sequences(num_subjects=3, sequences_per_subject=2, frames_per_sequence=40, seed=2)
    assert all(np.array_equal(x.poses, y.poses) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].poses, c[0].poses)
    assert a[0].poses.dtype == np.float32 and a[0].poses.shape == (40, 90)


def test_poses_are_structured_not_isotropic_noise():
    poses, _ = stack_poses(generate_sequences(num_subjects=4, sequences_per_subject=10, seed=0))
    assert np.isfinite(poses).all() and np.abs(poses).max() < np.pi
    # Low-dimensional: a handful of principal components explain almost all variance.
    centred = poses - poses.mean(0)
    ev = np.linalg.svd(centred, compute_uv=False) ** 2
    assert ev[:14].sum() / ev.sum() > 0.95
    # Flexion of one finger's three joints is coupled (index1 vs index2 flexion about z).
    right = poses[:, 45:].reshape(-1, 15, 3)
    assert np.corrcoef(right[:, 0, 2], right[:, 1, 2])[0, 1] > 0.9


def test_sequences_are_smooth():
    seq = generate_sequences(num_subjects=1, sequences_per_subject=1, seed=0)[0].poses
    step = np.abs(np.diff(seq, axis=0)).mean()
    shuffled = np.abs(np.diff(seq[np.random.default_rng(0).permutation(len(seq))], axis=0)).mean()
    assert step < 0.5 * shuffled


def test_left_hand_is_mirrored_convention():
    """Flexion about z has opposite signs for the two hands (left = mirror of right)."""
    poses, _ = stack_poses(generate_sequences(num_subjects=2, sequences_per_subject=5, seed=0))
    left, right = poses[:, :45].reshape(-1, 15, 3), poses[:, 45:].reshape(-1, 15, 3)
    assert right[:, 1, 2].mean() > 0.2 and left[:, 1, 2].mean() < -0.2


def test_default_split_is_by_subject():
    splits = default_splits()
    subjects = {k: {s.subject for s in v} for k, v in splits.items()}
    assert subjects["val"] == {"subject06"} and subjects["test"] == {"subject07"}
    assert not subjects["train"] & (subjects["val"] | subjects["test"])
    assert sum(len(s.poses) for s in splits["train"]) == 36_000
    names = [s.name for v in splits.values() for s in v]
    assert len(names) == len(set(names))


def test_split_by_subject_needs_enough_subjects():
    import pytest

    with pytest.raises(ValueError):
        split_by_subject(generate_sequences(num_subjects=2, sequences_per_subject=1, frames_per_sequence=5))
