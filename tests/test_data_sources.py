"""Importers, cleaning, splits and the deterministic npz writer (hand_vae.data.*), on tiny fake files."""

from __future__ import annotations

import numpy as np
import pytest
from fake_raw import hand_track, truncate, write_array, write_grab, write_smplh, write_smplx

from hand_vae.data.build import DropCounts, clean_sequence, constant_hands, subsample_indices
from hand_vae.data.layouts import DatasetError
from hand_vae.data.npz_io import read_npz_into, write_npz
from hand_vae.data.sources import SourceError, detect_format, read_file
from hand_vae.data.splits import amass_split_of, assign_splits, check_ratios, split_by_ratio

# --------------------------------------------------------------------------- importers


def test_amass_smplh_slices_hands_and_fps(tmp_path):
    hands = hand_track(20, seed=0)
    path = write_smplh(tmp_path / "CMU" / "01_01_poses.npz", hands, fps=120.0)
    assert detect_format(path) == "amass_smplh"
    seq = read_file(path)
    assert seq.format == "amass_smplh" and seq.fps == 120.0
    assert seq.poses.dtype == np.float32 and seq.poses.shape == (20, 90)
    np.testing.assert_array_equal(seq.poses, hands.astype(np.float32))


@pytest.mark.parametrize("with_pose_hand", [True, False])
def test_amass_smplx_pose_hand_or_poses_slice(tmp_path, with_pose_hand):
    hands = hand_track(15, seed=1)
    path = write_smplx(tmp_path / "a_stageii.npz", hands, fps=60.0, with_pose_hand=with_pose_hand)
    seq = read_file(path)  # the unneeded pickled member does not need --trust_pickle
    assert seq.format == "amass_smplx" and seq.fps == 60.0
    np.testing.assert_array_equal(seq.poses, hands.astype(np.float32))


def test_grab_needs_trust_flag(tmp_path):
    hands = hand_track(12, seed=2)
    path = write_grab(tmp_path / "s1" / "mug_drink_1.npz", hands)
    assert detect_format(path) == "grab"
    with pytest.raises(SourceError, match="--trust_pickle") as err:
        read_file(path)
    assert "arbitrary code" in str(err.value)
    seq = read_file(path, trust_pickle=True)
    assert seq.format == "grab" and seq.fps == 120.0
    np.testing.assert_array_equal(seq.poses, hands.astype(np.float32))


@pytest.mark.parametrize(
    "name, kwargs",
    [("a.npy", {}), ("b.npz", {}), ("c.npz", {"split_hands": True}), ("d.npz", {"fps": 50.0})],
)
def test_plain_arrays(tmp_path, name, kwargs):
    hands = hand_track(9, seed=3)
    seq = read_file(write_array(tmp_path / name, hands, **kwargs))
    assert seq.format == "array" and seq.fps == kwargs.get("fps")
    np.testing.assert_allclose(seq.poses, hands.astype(np.float32))


def test_wrong_dims_give_clear_messages(tmp_path):
    one_hand = tmp_path / "one.npy"
    np.save(one_hand, np.zeros((5, 45), np.float32))
    with pytest.raises(SourceError, match=r"\(5, 45\), expected \(N, 90\).*one hand"):
        read_file(one_hand)
    body = tmp_path / "body.npy"
    np.save(body, np.zeros((5, 63), np.float32))
    with pytest.raises(SourceError, match=r"\(5, 63\), expected \(N, 90\)"):
        read_file(body)
    smplh = write_smplh(tmp_path / "x_poses.npz", hand_track(5, 0), body_dims=63)
    with pytest.raises(SourceError, match=r"\(5, 63\), expected \(N, 156\) for SMPL\+H"):
        read_file(smplh)
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros(90, np.float32))
    with pytest.raises(SourceError, match="expected 2-D"):
        read_file(flat)


@pytest.mark.parametrize("dims, cols", [(156, "66:156"), (165, "75:165")])
def test_full_body_npy_gets_the_slice_to_save(tmp_path, dims, cols):
    path = tmp_path / "body.npy"
    np.save(path, np.zeros((5, dims)))
    with pytest.raises(SourceError, match=rf"np.save\(out, poses\[:, {cols}\]\)"):
        read_file(path)
    # the advice works: the saved slice is read as the two hands
    poses = np.random.default_rng(0).normal(size=(5, dims))
    a, b = (int(c) for c in cols.split(":"))
    np.save(path, poses[:, a:b])
    np.testing.assert_array_equal(read_file(path).poses, poses[:, a:b].astype(np.float32))


def test_per_joint_npy_accepted(tmp_path):
    hands = hand_track(7, seed=2)
    np.save(tmp_path / "joints.npy", hands.reshape(7, 30, 3))
    seq = read_file(tmp_path / "joints.npy")
    assert seq.poses.shape == (7, 90) and seq.poses.dtype == np.float32
    np.testing.assert_array_equal(seq.poses, hands.astype(np.float32))


def test_pickled_object_array_refused_without_trust(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"pose": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(SourceError, match="pickled.*--trust_pickle"):
        read_file(path)


def test_truncated_corrupt_and_foreign_files(tmp_path):
    broken = truncate(write_smplh(tmp_path / "b_poses.npz", hand_track(30, 0)))
    with pytest.raises(SourceError, match="unreadable"):
        read_file(broken)
    garbage = tmp_path / "g.npz"
    garbage.write_bytes(b"this is not a zip file")
    with pytest.raises(SourceError, match="unreadable"):
        read_file(garbage)
    shape = tmp_path / "betas.npz"
    np.savez(shape, betas=np.zeros(16), gender=np.array("male"))
    with pytest.raises(SourceError, match="not a known hand-pose format.*--format"):
        read_file(shape)
    text = tmp_path / "notes.txt"
    text.write_text("hi")
    with pytest.raises(SourceError, match="not a .npz or .npy"):
        read_file(text)


def test_format_override(tmp_path):
    hands = hand_track(6, seed=4)
    path = tmp_path / "clip.npz"  # SMPL+H layout, but no mocap_framerate and no *_poses.npz name
    poses = np.zeros((6, 156))
    poses[:, 66:] = hands
    np.savez(path, poses=poses)
    with pytest.raises(SourceError, match="--format amass_smplh"):
        read_file(path)
    seq = read_file(path, fmt="amass_smplh")
    assert seq.fps is None
    np.testing.assert_array_equal(seq.poses, hands.astype(np.float32))


# --------------------------------------------------------------------------- cleaning


def test_subsample_indices():
    np.testing.assert_array_equal(subsample_indices(10, 120.0, 30.0), [0, 4, 8])
    np.testing.assert_array_equal(subsample_indices(8, 120.0, 30.0), [0, 4])
    np.testing.assert_array_equal(subsample_indices(7, 100.0, 30.0), [0, 3, 6])
    for src, tgt in ((30.0, 30.0), (24.0, 30.0), (None, 30.0), (120.0, None)):
        np.testing.assert_array_equal(subsample_indices(5, src, tgt), np.arange(5))


def test_clean_drops_non_finite_frames_and_counts():
    poses = hand_track(40, 0).astype(np.float32)
    poses[[1, 5], 3] = np.nan
    poses[9, 80] = np.inf
    counts = DropCounts()
    res = clean_sequence(poses, 120.0, 30.0, counts)  # keeps 0,4,...,36 -> 10 frames; none of 1,5,9
    assert res.poses.shape == (10, 90) and res.fps == 30.0 and counts.non_finite_frames == 0
    assert counts.subsampled_frames == 30
    res = clean_sequence(poses, None, 30.0, counts)
    assert res.poses.shape == (37, 90) and counts.non_finite_frames == 3 and res.fps is None
    np.testing.assert_array_equal(res.poses, np.delete(poses, [1, 5, 9], axis=0))


@pytest.mark.parametrize("which", ["left", "right", "both"])
def test_constant_hand_sequences_dropped(which):
    counts = DropCounts()
    res = clean_sequence(hand_track(30, 1, constant=which).astype(np.float32), 30.0, 30.0, counts)
    assert res.poses is None and res.drop_reason == "constant_hand"
    assert counts.constant_hand_sequences == 1
    expected = ["left", "right"] if which == "both" else [which]
    assert constant_hands(hand_track(30, 1, constant=which)) == expected


def test_constant_threshold_and_empty():
    poses = np.zeros((20, 90), np.float32)
    poses[::2] += 3e-4  # std 1.5e-4 > 1e-4: moving (barely)
    assert constant_hands(poses) == []
    assert constant_hands(poses * 0.5) == ["left", "right"]  # std 0.75e-4
    counts = DropCounts()
    res = clean_sequence(np.full((4, 90), np.nan, np.float32), None, 30.0, counts)
    assert res.drop_reason == "empty" and counts.empty_sequences == 1 and counts.non_finite_frames == 4


# --------------------------------------------------------------------------- splits


def test_ratio_split_sizes_disjoint_and_seeded():
    names = [f"s{i:02d}" for i in range(10)]
    a = split_by_ratio(names[::-1], (0.8, 0.1, 0.1), seed=0)
    assert [len(a[s]) for s in ("train", "val", "test")] == [8, 1, 1]
    assert sorted(sum(a.values(), [])) == names
    assert a == split_by_ratio(names, (0.8, 0.1, 0.1), seed=0)  # input order does not matter
    assert any(a != split_by_ratio(names, (0.8, 0.1, 0.1), seed=s) for s in (1, 2, 3))
    small = split_by_ratio(["a", "b", "c"], (0.8, 0.1, 0.1), seed=0)
    assert [len(small[s]) for s in ("train", "val", "test")] == [1, 1, 1]


def test_check_ratios_rejects_bad_values():
    assert check_ratios([0.7, 0.2, 0.1]) == (0.7, 0.2, 0.1)
    for bad in ([0.8, 0.1], [0.8, 0.3, 0.1], [1.2, -0.1, -0.1], [0.0, 0.5, 0.5]):
        with pytest.raises(DatasetError, match="--split_ratios"):
            check_ratios(bad)


def test_amass_and_dirs_schemes():
    assert amass_split_of("HumanEva/S1/x_poses.npz") == "val"
    assert amass_split_of("hdm05/x.npz") == "val"
    assert amass_split_of("SSM_synced/x.npz") == "test"
    assert amass_split_of("Transitions/x.npz") == "test"
    assert amass_split_of("CMU/01/x.npz") == "train"
    paths = {"a": "train/a.npy", "b": "val/b.npy", "c": "test/c.npy", "d": "vald/d.npy"}
    assert assign_splits(paths, "dirs") == {"train": ["a"], "val": ["b", "d"], "test": ["c"]}
    with pytest.raises(DatasetError, match="not under train/"):
        assign_splits({"e": "extra/e.npy"}, "dirs")
    with pytest.raises(DatasetError, match="unknown --split_scheme"):
        assign_splits(paths, "subject")


# --------------------------------------------------------------------------- npz writer / reader


def test_write_npz_is_deterministic_and_loadable(tmp_path):
    x = np.random.default_rng(0).normal(size=(7, 90)).astype(np.float32)
    i = np.arange(7, dtype=np.int32)
    write_npz(tmp_path / "a.npz", {"hand_pose": x, "sequence_index": i})
    write_npz(tmp_path / "b.npz", {"hand_pose": x, "sequence_index": i})
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz") as z:
        np.testing.assert_array_equal(z["hand_pose"], x)
    out = {"hand_pose": np.empty_like(x), "sequence_index": np.empty(7, np.int64)}  # int64: cast path
    read_npz_into(tmp_path / "a.npz", out)
    np.testing.assert_array_equal(out["hand_pose"], x)
    np.testing.assert_array_equal(out["sequence_index"], i)
    np.savez_compressed(tmp_path / "c.npz", hand_pose=x)  # compressed member: np.load fallback
    read_npz_into(tmp_path / "c.npz", {"hand_pose": out["hand_pose"]})
    with pytest.raises(ValueError, match="shape"):
        read_npz_into(tmp_path / "a.npz", {"hand_pose": np.empty((6, 90), np.float32)})
