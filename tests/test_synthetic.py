"""The embedded synthetic dataset: deterministic, structured, smooth, split by subject; capture noise
and the many-subject proxy."""

import hashlib

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from hand_vae.data.synthetic import (
    CAPTURE_NOISE,
    CaptureNoise,
    default_splits,
    generate_sequences,
    many_subject_splits,
    pose_tensors,
    small_proxy_splits,
    split_by_subject,
    stack_poses,
)
from hand_vae.gaussian import fit_gaussian, gaussian_log_prob

# sha256 of the train, val and test poses of the default dataset and the small proxy, recorded
# before capture noise existed: the noiseless data the CLI demo and the tests use must not move.
DEFAULT_SHA256 = "bde392b6f8bfc62941297a5143596779711e40183db200ab2aaca8760b1e2666"
SMALL_SHA256 = "8bcdf73ff30bddabf679d1b204813974a7aef03e041b6112d3c867010da0ef1f"


def _sha256(splits) -> str:
    h = hashlib.sha256()
    for key in ("train", "val", "test"):
        h.update(stack_poses(splits[key])[0].tobytes())
    return h.hexdigest()


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


def test_noiseless_data_is_unchanged():
    assert _sha256(default_splits()) == DEFAULT_SHA256
    assert _sha256(small_proxy_splits()) == SMALL_SHA256


def test_capture_noise_is_jitter_plus_rare_outliers_on_the_same_motion():
    kw = dict(num_subjects=2, sequences_per_subject=3, frames_per_sequence=400, seed=3)
    clean, _ = stack_poses(generate_sequences(**kw))
    noisy, _ = stack_poses(generate_sequences(**kw, capture_noise=CaptureNoise(0.01, 0.02, 0.3)))
    err = (noisy.astype(np.float64) - clean).reshape(-1, 30, 3)
    outlier = np.abs(err).max(-1) > 0.06  # 6 σ of the jitter
    assert 0.01 < outlier.mean() < 0.03
    assert np.std(err[~outlier]) == pytest.approx(0.01, rel=0.05)
    # The noise of subject 0 does not depend on how many subjects follow it.
    one, _ = stack_poses(
        generate_sequences(**{**kw, "num_subjects": 1}, capture_noise=CaptureNoise(0.01, 0.02, 0.3))
    )
    np.testing.assert_array_equal(one, noisy[: len(one)])


def test_capture_noise_lets_a_sharp_prior_beat_a_blunt_one_at_small_noise():
    """On the small proxy with capture noise, AUC at 0.02 rad discriminates: a Gaussian floored at
    1e-6 rad² separates real from noisy poses better than one floored at 1e-3 rad²."""
    splits = pose_tensors(small_proxy_splits(capture_noise=CAPTURE_NOISE))
    train = splits["train"].double()
    test = splits["test"][:: len(splits["test"]) // 2000].double()
    noisy = test + 0.02 * torch.randn(
        test.shape, generator=torch.Generator().manual_seed(0), dtype=test.dtype
    )
    aucs = {}
    for floor in (1e-6, 1e-3):
        mean, chol = fit_gaussian(train, floor)
        energy = torch.cat([-gaussian_log_prob(test, mean, chol), -gaussian_log_prob(noisy, mean, chol)])
        aucs[floor] = roc_auc_score(np.r_[np.zeros(len(test)), np.ones(len(noisy))], energy.numpy())
    assert aucs[1e-6] > aucs[1e-3] + 0.02 and aucs[1e-6] < 0.95  # not saturated, as without noise


def test_many_subject_proxy_has_fixed_unseen_test_subjects_and_nested_training_sets():
    small, big = (
        many_subject_splits(2, frames_per_sequence=20),
        many_subject_splits(5, frames_per_sequence=20),
    )
    subjects = {k: {s.subject for s in v} for k, v in big.items()}
    assert subjects["test"] == {f"subject{i:02d}" for i in range(4)}
    assert subjects["train"] == subjects["val"] == {f"subject{i:02d}" for i in range(4, 9)}
    assert all(s.name.endswith("seq007") for s in big["val"]) and len(big["train"]) == 5 * 7
    a, b = pose_tensors(small), pose_tensors(big)
    torch.testing.assert_close(a["test"], b["test"], rtol=0, atol=0)
    torch.testing.assert_close(a["train"], b["train"][: len(a["train"])], rtol=0, atol=0)
    clean = pose_tensors(many_subject_splits(2, frames_per_sequence=20, capture_noise=None))
    assert not torch.equal(clean["test"], a["test"])
    with pytest.raises(ValueError):
        many_subject_splits(0)
