"""End-to-end data pipeline: the two CLIs on a fake raw tree, both layouts' readers, bad-input policy."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_raw import hand_track, truncate, write_array, write_grab, write_smplh, write_smplx

import create_consolidated_npz
import create_datamodule
from hand_vae.data import layouts
from hand_vae.data.layouts import (
    DatasetError,
    load_consolidated,
    load_dataset_dir,
    load_splits_dir,
    read_meta,
)
from hand_vae.data.synthetic import default_splits, stack_poses

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "val", "test")

# Expected outcome for raw_tree() (120 fps clips are subsampled to 30 fps: every 4th frame).
KEPT_FRAMES = {
    "CMU/01/01_01_poses": 60,  # 240 @ 120 fps
    "HumanEva/S1/walk_poses": 30,  # 120 @ 120 fps
    "SSM_synced/s/x_stageii": 23,  # 90 @ 120 fps -> frames 0, 4, ..., 88
    "mine/clip_a": 50,  # plain .npy, no fps: kept whole
    "mine/clip_b": 37,  # 40 frames, 3 with NaN / inf
}
SKIPPED = {
    "GRAB/s1/mug_drink_1.npz": "--trust_pickle",
    "mine/betas.npz": "not a known hand-pose format",
    "mine/body.npy": "expected (N, 90)",
    "mine/broken_poses.npz": "unreadable",
    "mine/clip_a.npz": "duplicate sequence name 'mine/clip_a'",
    "mine/objects.npy": "pickled",
    "mine/one_hand.npy": "one hand?",
}


def raw_tree(root: Path) -> Path:
    """A small AMASS-like tree with every kind of good and bad input."""
    write_smplh(root / "CMU/01/01_01_poses.npz", hand_track(240, 1))
    write_smplh(root / "CMU/01/01_02_poses.npz", hand_track(240, 2, constant="left"))  # no finger capture
    np.savez(root / "CMU/01/shape.npz", betas=np.zeros(16), gender=np.array("male"))  # side file: ignored
    write_smplh(root / "HumanEva/S1/walk_poses.npz", hand_track(120, 3))
    write_smplx(root / "SSM_synced/s/x_stageii.npz", hand_track(90, 4))
    np.savez(root / "SSM_synced/s/female_stagei.npz", betas=np.zeros(16))  # side file: ignored
    write_grab(root / "GRAB/s1/mug_drink_1.npz", hand_track(80, 5))
    write_array(root / "mine/clip_a.npy", hand_track(50, 6))
    write_array(root / "mine/clip_a.npz", hand_track(50, 7))  # same sequence name as clip_a.npy
    clip_b = hand_track(40, 8)
    clip_b[[3, 10], 5], clip_b[20, 70] = np.nan, np.inf
    write_array(root / "mine/clip_b.npz", clip_b, split_hands=True)
    np.save(root / "mine/one_hand.npy", hand_track(30, 9)[:, :45])
    np.save(root / "mine/body.npy", np.zeros((30, 63)))
    truncate(write_smplh(root / "mine/broken_poses.npz", hand_track(60, 10)))
    np.save(root / "mine/objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(root / "mine/betas.npz", betas=np.zeros(16))
    (root / "notes.txt").write_text("not data")
    return root


def digest_tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def raw(tmp_path) -> Path:
    return raw_tree(tmp_path / "raw")


def run_cli(module, *args) -> int:
    return module.main([str(a) for a in args])


def test_both_layouts_from_mixed_raw_tree(raw, tmp_path, capsys):
    before = digest_tree(raw)
    rc_c = run_cli(
        create_consolidated_npz, "--input_dir", raw, "--output_dir", tmp_path / "c", "--shard_size", 64
    )
    rc_s = run_cli(create_datamodule, "--input_dir", raw, "--output_dir", tmp_path / "s")
    assert rc_c == rc_s == 1  # written, but files were skipped
    assert digest_tree(raw) == before  # inputs never modified
    out = capsys.readouterr().out
    assert "SKIPPED 7 files" in out and "mine/one_hand.npy" in out and "meta.json" in out
    # The detected formats and frame-rate conversions are on screen, not only in meta.json.
    assert "amass_smplh 2 files (120 -> 30 fps)" in out and "amass_smplx 1 file (120 -> 30 fps)" in out
    assert "array 2 files (no frame rate stored" in out

    meta = read_meta(tmp_path / "c")
    assert meta["layout"] == "consolidated" and meta["source"] == "files" and meta["fps"] == 30.0
    assert {s["path"]: s["reason"] for s in meta["skipped"]}.keys() == SKIPPED.keys()
    for s in meta["skipped"]:
        assert SKIPPED[s["path"]] in s["reason"], s
    assert [(d["name"], d["reason"]) for d in meta["dropped"]] == [("CMU/01/01_02_poses", "constant_hand")]
    assert {i["path"] for i in meta["ignored"]} == {
        "CMU/01/shape.npz",
        "SSM_synced/s/female_stagei.npz",
        "notes.txt",
    }
    assert {s["name"]: s["frames_kept"] for s in meta["sources"]} == KEPT_FRAMES
    assert meta["drops"] == {
        "subsampled_frames": (240 - 60) * 2 + (120 - 30) + (90 - 23),
        "non_finite_frames": 3,
        "constant_hand_sequences": 1,
        "empty_sequences": 0,
    }
    # ratio split of 5 sequences at 0.8/0.1/0.1 -> 3/1/1, each sequence in exactly one split
    names = {s: [q["name"] for q in meta["splits"][s]["sequences"]] for s in SPLITS}
    assert [len(names[s]) for s in SPLITS] == [3, 1, 1]
    assert sorted(sum(names.values(), [])) == sorted(KEPT_FRAMES)
    for s in SPLITS:
        assert names[s] == sorted(names[s])
        assert meta["counts"][s]["frames"] == sum(KEPT_FRAMES[n] for n in names[s])
    assert len(meta["splits"]["train"]["shards"]) == -(-meta["counts"]["train"]["frames"] // 64)

    cons, spl = load_dataset_dir(tmp_path / "c", verify=True), load_dataset_dir(tmp_path / "s", verify=True)
    assert read_meta(tmp_path / "s")["splits"]["train"]["sequences"][0]["file"].startswith("train/")
    for s in SPLITS:
        np.testing.assert_array_equal(cons[s][0], spl[s][0])
        np.testing.assert_array_equal(cons[s][1], spl[s][1])
        assert cons[s][0].dtype == np.float32 and cons[s][1].dtype == np.int32
        lengths = [KEPT_FRAMES[n] for n in names[s]]
        np.testing.assert_array_equal(np.bincount(cons[s][1], minlength=len(lengths)), lengths)
    # rows are the raw poses: check one sequence end to end
    i = names["train"].index("mine/clip_a") if "mine/clip_a" in names["train"] else None
    if i is not None:
        rows = cons["train"][0][cons["train"][1] == i]
        np.testing.assert_array_equal(rows, hand_track(50, 6).astype(np.float32))


def test_amass_scheme_and_trust_pickle(raw, tmp_path):
    rc = run_cli(create_consolidated_npz, "--input_dir", raw, "--output_dir", tmp_path / "c",
                 "--split_scheme", "amass", "--trust_pickle")  # fmt: skip
    assert rc == 1  # the other bad files are still skipped
    meta = read_meta(tmp_path / "c")
    assert "GRAB/s1/mug_drink_1.npz" not in {s["path"] for s in meta["skipped"]}
    names = {s: [q["name"] for q in meta["splits"][s]["sequences"]] for s in SPLITS}
    assert names == {
        "train": ["CMU/01/01_01_poses", "GRAB/s1/mug_drink_1", "mine/clip_a", "mine/clip_b"],
        "val": ["HumanEva/S1/walk_poses"],
        "test": ["SSM_synced/s/x_stageii"],
    }
    assert meta["counts"]["train"]["frames"] == 60 + 20 + 50 + 37


def test_deterministic_bytes(raw, tmp_path):
    for script, extra in ((create_consolidated_npz, ["--shard_size", 50]), (create_datamodule, [])):
        for out in ("a", "b"):
            run_cli(script, "--input_dir", raw, "--output_dir", tmp_path / script.__name__ / out, *extra)
        a, b = (digest_tree(tmp_path / script.__name__ / o) for o in ("a", "b"))
        assert a == b and "meta.json" in a


def test_dirs_scheme(tmp_path):
    root = tmp_path / "raw"
    for split, name, seed in (("train", "a", 0), ("train", "b", 1), ("val", "c", 2), ("test", "d", 3)):
        write_array(root / split / f"{name}.npy", hand_track(10, seed))
    write_array(root / "val" / "a.npy", hand_track(10, 4))  # same name as train/a
    write_array(root / "extra" / "e.npy", hand_track(10, 5))
    assert (
        run_cli(
            create_datamodule, "--input_dir", root, "--output_dir", tmp_path / "s", "--split_scheme", "dirs"
        )
        == 1
    )
    meta = read_meta(tmp_path / "s")
    names = {s: [q["name"] for q in meta["splits"][s]["sequences"]] for s in SPLITS}
    assert names == {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    assert {s["path"]: s["reason"][:9] for s in meta["skipped"]} == {
        "extra/e.npy": "not under",
        "val/a.npy": "duplicate",
    }
    assert (tmp_path / "s" / "train" / "a.npz").is_file()


def test_strict_stops_and_writes_nothing(raw, tmp_path, capsys):
    out = tmp_path / "c"
    assert run_cli(create_consolidated_npz, "--input_dir", raw, "--output_dir", out, "--strict") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "--strict" in err[-1] and "Traceback" not in "".join(err)
    assert not out.exists() and not list(tmp_path.glob(".c.tmp-*"))


def test_output_dir_policy(tmp_path, capsys):
    raw = tmp_path / "raw"
    for i in range(3):
        write_array(raw / f"x{i}.npy", hand_track(10, i))
    out = tmp_path / "c"
    assert run_cli(create_consolidated_npz, "--input_dir", raw, "--output_dir", out) == 0
    first = digest_tree(out)
    assert run_cli(create_consolidated_npz, "--input_dir", raw, "--output_dir", out, "--seed", "1") == 2
    assert "--overwrite" in capsys.readouterr().err and digest_tree(out) == first
    assert run_cli(create_consolidated_npz, "--input_dir", raw, "--output_dir", out, "--overwrite") == 0
    assert digest_tree(out) == first and not list(tmp_path.glob(".c.*"))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    assert run_cli(create_datamodule, "--input_dir", raw, "--output_dir", foreign, "--overwrite") == 2
    assert "not written by this tool" in capsys.readouterr().err and (foreign / "thesis.tex").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--input_dir", "{tmp}/empty"], "holds no .npz/.npy files"),
        (["--input_dir", "{tmp}/nope"], "is not a directory"),
        (["--input_dir", "{tmp}/empty", "--output_dir", "{tmp}/empty/out"], "must not contain or be inside"),
        (["--split_ratios", "0.5", "0.2", "0.2"], "must sum to 1"),
        (["--target_fps", "-3"], "--target_fps"),
    ],
)
def test_user_mistakes_one_line_error(tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    argv = [a.format(tmp=tmp_path) for a in args]
    if "--output_dir" not in argv:
        argv += ["--output_dir", str(tmp_path / "out")]
    assert create_consolidated_npz.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]


def test_nothing_usable_is_an_error(tmp_path, capsys):
    raw = tmp_path / "raw"
    write_array(raw / "still.npy", hand_track(10, 0, constant="both"))
    np.save(raw / "one.npy", np.zeros((4, 45)))
    assert run_cli(create_datamodule, "--input_dir", raw, "--output_dir", tmp_path / "s") == 2
    assert "no usable sequence" in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_source_fps_for_plain_arrays(tmp_path):
    raw = tmp_path / "raw"
    write_array(raw / "a.npy", hand_track(120, 0))
    write_array(raw / "b.npz", hand_track(120, 1), fps=60.0)  # the file's own fps wins
    write_array(raw / "c.npz", hand_track(120, 2), fps=30.0)
    args = ["--input_dir", raw, "--output_dir", tmp_path / "c", "--source_fps", 120]
    assert run_cli(create_consolidated_npz, *args) == 0
    kept = {s["name"]: s["frames_kept"] for s in read_meta(tmp_path / "c")["sources"]}
    assert kept == {"a": 30, "b": 60, "c": 120}


def test_identical_content_under_two_names_refused(tmp_path, capsys):
    raw = tmp_path / "raw"
    for i in range(3):
        write_array(raw / f"x{i}.npy", hand_track(10, i))
    write_array(raw / "later" / "copy.npz", hand_track(10, 1))  # x1's poses again, other name and format
    out = tmp_path / "c"
    assert run_cli(create_consolidated_npz, "--input_dir", raw, "--output_dir", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "later/copy.npz" in err[-1] and "x1.npy" in err[-1]
    assert "identical" in err[-1] and "remove one copy" in err[-1]
    assert not out.exists() and not list(tmp_path.glob(".c.*"))


def test_train_smaller_than_val_warned(tmp_path, caplog):
    raw = tmp_path / "raw"
    for split, frames in (("train", 26), ("val", 100), ("test", 20)):
        write_array(raw / split / f"{split}_clip.npy", hand_track(frames, frames))
    args = ["--input_dir", raw, "--output_dir", tmp_path / "s", "--split_scheme", "dirs"]
    assert run_cli(create_datamodule, *args) == 0
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("train has fewer poses (26) than val (100)" in line for line in lines), lines
    assert read_meta(tmp_path / "s")["warnings"] == [line for line in lines if line.startswith("train has")]
    caplog.clear()
    write_array(raw / "val" / "val_clip.npy", hand_track(20, 0))
    assert run_cli(create_datamodule, *args, "--overwrite") == 0
    assert "train has only 26 poses (< 1000)" in read_meta(tmp_path / "s")["warnings"][0]


@pytest.mark.parametrize(
    "files, extra, advice",
    [
        (1, [], "the val and test splits would be empty (1 usable sequence): training needs at least one "
                "sequence per split, so at least 3 sequences"),
        (3, ["--split_ratios", "0.9", "0.1", "0"], "--split_ratios gives test no share"),
        (3, ["--split_scheme", "amass"], "--split_scheme amass takes val from HumanEva"),
    ],
)  # fmt: skip
def test_build_refuses_a_split_that_would_be_empty(tmp_path, capsys, files, extra, advice):
    """One AMASS clip used to build train 1 / val 0 / test 0 with exit 0, and training then failed."""
    raw = tmp_path / "raw"
    for i in range(files):
        write_smplh(raw / "CMU" / f"{i:02d}_poses.npz", hand_track(240, i))
    out = tmp_path / "c"
    assert run_cli(create_consolidated_npz, "--input_dir", raw, "--output_dir", out, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and advice in err[-1] and err[-1].endswith("nothing written")
    assert "--split_scheme dirs" in err[-1]
    assert not out.exists() and not list(tmp_path.glob(".c.*"))


def test_synthetic_default_is_the_quick_test_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert create_consolidated_npz.main(["--output_dir", "test_consolidated"]) == 0
    meta = read_meta(tmp_path / "test_consolidated")
    assert meta["source"] == "synthetic" and meta["warnings"] == []
    assert {s: c["frames"] for s, c in meta["counts"].items()} == {"train": 36000, "val": 6000, "test": 6000}
    loaded = load_consolidated("test_consolidated")
    for split, seqs in default_splits(0).items():
        poses, index = stack_poses(sorted(seqs, key=lambda s: s.name))
        np.testing.assert_array_equal(loaded[split][0], poses)
        np.testing.assert_array_equal(loaded[split][1], index)


# --------------------------------------------------------------------------- readers


@pytest.fixture
def small_dirs(tmp_path):
    splits = default_splits(0, num_subjects=3, sequences_per_subject=2, frames_per_sequence=20)
    layouts.write_consolidated(tmp_path / "c", splits, {"args": {}})
    layouts.write_splits_dir(tmp_path / "s", splits, {"args": {}})
    return tmp_path / "c", tmp_path / "s"


def test_readers_refuse_missing_incomplete_and_wrong_layout(small_dirs, tmp_path):
    cons, spl = small_dirs
    with pytest.raises(DatasetError, match="does not exist; create it with create_consolidated_npz.py"):
        load_dataset_dir(tmp_path / "nope")
    with pytest.raises(DatasetError, match="pass it as --splits_dir"):
        load_consolidated(spl)
    with pytest.raises(DatasetError, match="pass it as --consolidated_dir"):
        load_splits_dir(cons)
    (cons / "meta.json").unlink()
    with pytest.raises(DatasetError, match="no meta.json.*incomplete.*create_consolidated_npz.py"):
        load_dataset_dir(cons)
    (spl / "meta.json").write_text("{not json")
    with pytest.raises(DatasetError, match="unreadable"):
        load_dataset_dir(spl)


def test_readers_check_size_and_sha256(small_dirs):
    cons, spl = small_dirs
    shard = cons / "train_000.npz"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a pose value: same size, different content
    shard.write_bytes(bytes(data))
    load_consolidated(cons)  # sizes match: only --verify notices
    with pytest.raises(DatasetError, match="sha256"):
        load_consolidated(cons, verify=True)
    data[-40:] = b"\0" * 40  # the zip directory: unreadable even without --verify
    shard.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="unreadable"):
        load_consolidated(cons)
    seq = spl / read_meta(spl)["splits"]["val"]["sequences"][0]["file"]
    seq.write_bytes(seq.read_bytes()[:-10])
    with pytest.raises(DatasetError, match="bytes but meta.json says"):
        load_splits_dir(spl)
    seq.unlink()
    with pytest.raises(DatasetError, match="missing"):
        load_splits_dir(spl)


def test_empty_split_and_interrupted_write(tmp_path, monkeypatch):
    splits = default_splits(0, num_subjects=3, sequences_per_subject=1, frames_per_sequence=5)
    splits["test"] = []
    layouts.write_consolidated(tmp_path / "c", splits, {})
    got = load_dataset_dir(tmp_path / "c")
    assert got["test"][0].shape == (0, 90) and got["test"][1].shape == (0,)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(layouts, "write_json_atomic", boom)
    with pytest.raises(KeyboardInterrupt):
        layouts.write_splits_dir(tmp_path / "s", splits, {})
    assert not (tmp_path / "s").exists() and not list(tmp_path.glob(".s.tmp-*"))


@pytest.mark.slow
def test_bench_smoke(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_data.py"), "--smoke", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "frames/s" in proc.stdout and "load_dataset_dir" in proc.stdout
    json.loads(proc.stdout.strip().splitlines()[-1])  # last line: machine-readable results
