"""HandPoseDataModule: index batches, seeded shuffles, DDP shards, both on-disk layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hand_vae.cli.train import main
from hand_vae.data.datamodule import HandPoseDataModule, IndexBatchSampler
from hand_vae.data.layouts import DatasetError, write_consolidated, write_splits_dir
from hand_vae.data.synthetic import generate_sequences, split_by_subject


def test_sampler_covers_every_row_once_and_is_seeded_per_epoch():
    s = IndexBatchSampler(1000, 128, shuffle=True, seed=3)
    s.set_epoch(0)
    e0 = torch.cat(list(s))
    assert len(list(s)) == len(s) == 8 and torch.equal(e0.sort().values, torch.arange(1000))
    assert torch.equal(e0, torch.cat(list(s)))  # same epoch, same order
    s.set_epoch(1)
    assert not torch.equal(e0, torch.cat(list(s)))


def test_ddp_ranks_take_disjoint_equal_shares_of_one_permutation():
    shares = []
    for rank in range(3):
        s = IndexBatchSampler(1000, 100, shuffle=True, seed=0, rank=rank, world_size=3)
        s.set_epoch(5)
        shares.append(torch.cat(list(s)))
    assert {len(x) for x in shares} == {333}
    assert len(set(torch.cat(shares).tolist())) == 999  # disjoint
    single = IndexBatchSampler(1000, 100, shuffle=True, seed=0)
    single.set_epoch(5)
    torch.testing.assert_close(torch.cat(shares), torch.cat(list(single))[:999])


def test_eval_sampler_keeps_every_row_in_order():
    parts = [torch.cat(list(IndexBatchSampler(10, 3, shuffle=False, rank=r, world_size=2))) for r in range(2)]
    assert sorted(torch.cat(parts).tolist()) == list(range(10))
    assert torch.equal(torch.cat(list(IndexBatchSampler(10, 3, shuffle=False))), torch.arange(10))


def _batches(dm: HandPoseDataModule, epoch: int = 0) -> list[torch.Tensor]:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return [dm.on_after_batch_transfer(b, 0) for b in loader]


@pytest.mark.parametrize("model_type,shape", [("standard", (256, 90)), ("so3", (256, 30, 3))])
def test_batches_have_the_model_layout(model_type, shape):
    dm = HandPoseDataModule(batch_size=256, model_type=model_type)
    dm.setup()
    b = _batches(dm)[0]
    assert b.shape == shape and b.dtype == torch.float32


def test_data_on_device_always_gives_identical_batches_on_cpu():
    a, b = HandPoseDataModule(batch_size=4096), HandPoseDataModule(batch_size=4096, data_on_device="always")
    a.setup()
    b.setup()
    for x, y in zip(_batches(a, 2), _batches(b, 2), strict=True):
        assert torch.equal(x, y)


def test_mirror_augment_flips_about_half_of_a_training_batch():
    from hand_vae.rotations import swap_and_mirror_hands

    class _T:  # the trainer attributes the loader and the hook read
        training, global_rank, world_size = True, 0, 1

    dm = HandPoseDataModule(batch_size=2048, mirror_augment=True)
    dm.setup()
    dm.trainer = _T()
    x = next(iter(dm.train_dataloader()))
    y = dm.on_after_batch_transfer(x.clone(), 0)
    same = (y == x).all(1)
    mirrored = (y == swap_and_mirror_hands(x)).all(1)
    assert (same | mirrored).all() and 0.4 < mirrored.float().mean() < 0.6


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """One consolidated dir and one splits dir built from the same sequences."""
    root = tmp_path_factory.mktemp("layouts")
    seqs = generate_sequences(num_subjects=4, sequences_per_subject=6, frames_per_sequence=60, seed=1)
    splits = split_by_subject(seqs)
    write_consolidated(root / "cons", splits, {}, shard_size=500)
    write_splits_dir(root / "splits", splits, {})
    return root


def test_both_layouts_give_identical_rows(tiny_dirs):
    a = HandPoseDataModule(consolidated_dir=str(tiny_dirs / "cons"))
    b = HandPoseDataModule(splits_dir=str(tiny_dirs / "splits"))
    for split in ("train", "val", "test"):
        x, y = a.split_tensor(split), b.split_tensor(split)
        assert len(x) > 0 and torch.equal(x, y)
    assert len(a.split_tensor("train")) == 2 * 6 * 60


def test_directory_without_meta_is_refused(tmp_path):
    (tmp_path / "half").mkdir()
    np.savez(tmp_path / "half" / "train_000.npz", hand_pose=np.zeros((3, 90), np.float32))
    with pytest.raises(DatasetError, match="meta.json"):
        HandPoseDataModule(consolidated_dir=str(tmp_path / "half")).setup()


@pytest.mark.slow
@pytest.mark.parametrize("flag,sub", [("--consolidated_dir", "cons"), ("--splits_dir", "splits")])
def test_cli_trains_one_epoch_on_each_layout(flag, sub, tiny_dirs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [
        flag,
        str(tiny_dirs / sub),
        "--max_epochs",
        "1",
        "--batch_size",
        "128",
        "--hidden",
        "32",
        "--z_dim",
        "4",
        "--no_plots",
        "--experiment_name",
        sub,
        "--accelerator",
        "cpu",
    ]
    assert main(argv) == 0
    assert (tmp_path / "checkpoints" / sub / "best_model.ckpt").is_file()


def test_streamed_splits_equal_the_whole_file_loader(tiny_dirs):
    """Setup streams each file into the split tensor; a 7-row staging buffer (the GPU path, forced on
    the CPU) gives the same rows as ``load_dataset_dir``, which reads whole files."""
    from pathlib import Path

    from hand_vae.data.datamodule import _stream_split
    from hand_vae.data.layouts import load_dataset_dir, split_files

    for sub in ("cons", "splits"):
        whole = load_dataset_dir(tiny_dirs / sub)
        files = split_files(tiny_dirs / sub)
        dm = HandPoseDataModule(
            **{"consolidated_dir" if sub == "cons" else "splits_dir": str(tiny_dirs / sub)}
        )
        for split in ("train", "val", "test"):
            expected = torch.from_numpy(whole[split][0])
            rows = sum(n for _, n in files[split])
            staged = _stream_split(files[split], rows, torch.device("cpu"), Path(sub), staging_rows=7)
            assert torch.equal(staged, expected) and torch.equal(dm.split_tensor(split), expected)


def test_iter_npz_rows_handles_compressed_and_other_dtypes(tmp_path):
    from hand_vae.data.npz_io import iter_npz_rows, write_npz

    x = np.arange(23 * 90, dtype=np.float64).reshape(23, 90)
    write_npz(tmp_path / "f8.npz", {"hand_pose": x})  # stored, another dtype: cast chunk by chunk
    np.savez_compressed(tmp_path / "z.npz", hand_pose=x.astype(np.float32))
    for name in ("f8.npz", "z.npz"):
        buf = np.empty((5, 90), np.float32)
        got = np.concatenate([c.copy() for c in iter_npz_rows(tmp_path / name, "hand_pose", buf)])
        np.testing.assert_array_equal(got, x.astype(np.float32))
    with pytest.raises(ValueError, match="rows of shape"):
        list(iter_npz_rows(tmp_path / "z.npz", "hand_pose", np.empty((5, 45), np.float32)))


def test_a_truncated_shard_is_a_dataset_error(tmp_path):
    from hand_vae.data.npz_io import write_npz

    seqs = generate_sequences(num_subjects=3, sequences_per_subject=2, frames_per_sequence=30, seed=2)
    write_consolidated(tmp_path / "d", split_by_subject(seqs), {})
    shard = tmp_path / "d" / "train_000.npz"
    size = shard.stat().st_size
    rows = np.zeros((1, 90), np.float32)
    write_npz(shard, {"hand_pose": rows})  # same name, other content: size no longer matches meta.json
    with pytest.raises(DatasetError, match="bytes but meta.json says"):
        HandPoseDataModule(consolidated_dir=str(tmp_path / "d")).setup()
    assert size != shard.stat().st_size


def test_loading_holds_one_copy_of_the_data_in_host_memory(tmp_path):
    """Peak host memory of ``setup`` on a 400k-row consolidated dir (144 MB) stays within 1.1x the
    data: files are read straight into the split tensors and the NaN check works in blocks."""
    import subprocess
    import sys
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    block = rng.standard_normal((20_000, 90)).astype(np.float32)
    seqs = {s: [SimpleNamespace(name=f"{s}{i}", poses=block, fps=30.0) for i in range(n)]
            for s, n in (("train", 16), ("val", 2), ("test", 2))}  # fmt: skip
    write_consolidated(tmp_path / "big", seqs, {}, shard_size=100_000)
    code = (
        "import resource, sys, torch\n"
        "from hand_vae.data.datamodule import HandPoseDataModule\n"
        "HandPoseDataModule(batch_size=8).setup()\n"  # warm up imports and the allocator
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"dm = HandPoseDataModule(consolidated_dir={str(tmp_path / 'big')!r})\n"
        "dm.setup()\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print((after - before) * 1024, sum(t.numel() * 4 for t in dm.tensors.values()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    grown, data = map(int, out.split())
    assert data == 400_000 * 90 * 4
    assert grown <= 1.1 * data, (grown / data, grown, data)
