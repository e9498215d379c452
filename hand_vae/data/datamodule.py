"""LightningDataModule over pose tensors held in memory (host or GPU), batched by index: a dataset dir
is streamed file by file into each split's tensor; a batch is one ``index_select`` (docs/design.md §6).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from hand_vae.data.layouts import READ_ERRORS, SPLITS, DatasetError, split_files, unreadable
from hand_vae.data.npz_io import iter_npz_rows
from hand_vae.data.synthetic import default_splits, pose_tensors
from hand_vae.rotations import NUM_JOINTS, POSE_DIM, swap_and_mirror_hands
from hand_vae.settings import DataConfig

log = logging.getLogger(__name__)

STAGING_ROWS = 1 << 16  # rows of the pinned host buffer a GPU-bound split streams through (23.6 MB)
CHECK_ROWS = 1 << 15  # rows per block of the NaN/inf check: isfinite makes a float |x| temporary (11.8 MB)


class IndexBatchSampler(Sampler):
    """Yields (b,) int64 index tensors on ``device`` (the data's: a CUDA permutation differs from the
    CPU one): with ``shuffle`` a permutation seeded by ``seed + epoch`` (``set_epoch``), of which DDP
    rank ``rank`` of ``world_size`` takes its equal share; else in-order slices of every row."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int = 0, rank: int = 0,
                 world_size: int = 1, device: torch.device | str = "cpu") -> None:  # fmt: skip
        self.n, self.batch_size, self.shuffle = n, batch_size, shuffle
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.device = torch.device(device)
        self.epoch = 0
        # Equal shares for every rank (DDP needs equal step counts); eval keeps every row.
        self.per_rank = n // world_size if shuffle else len(range(rank, n, world_size))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (self.per_rank + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator(device=self.device).manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g, device=self.device)
            start = self.rank * self.per_rank
            order = order[start : start + self.per_rank]
        else:
            order = torch.arange(self.rank, self.n, self.world_size, device=self.device)
        yield from order.split(self.batch_size)


class _GatherDataset(Dataset):
    """``dataset[idx_tensor]`` returns the whole batch ``data[idx]`` in one gather."""

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.index_select(self.data, 0, idx)  # faster than advanced indexing for a row gather


class HandPoseDataModule(pl.LightningDataModule):
    """Two-hand poses from ``DataConfig`` fields ``**data`` (absent: the defaults): a consolidated dir, a
    splits dir, or (neither) the embedded synthetic set of ``seed``, also the shuffling seed. ``model_type``
    "standard" yields (B, 90) batches, "so3" (B, 30, 3); it also picks the default batch size."""

    def __init__(self, model_type: str = "standard", seed: int = 0, **data: Any) -> None:
        super().__init__()
        self.cfg = DataConfig(**data).resolved(model_type)
        self.model_type, self.seed = model_type, seed
        # Plain types, so a checkpoint of this run loads with weights_only=True.
        self.save_hyperparameters({**asdict(self.cfg), "model_type": model_type, "seed": seed})
        self.tensors: dict[str, torch.Tensor] = {}

    @property
    def source(self) -> str:
        """Human-readable description of where the data comes from."""
        if self.cfg.directory:
            return f"{'consolidated' if self.cfg.consolidated_dir else 'splits'} dir {self.cfg.directory}"
        return f"embedded synthetic dataset (seed {self.seed})"

    def load_arrays(self) -> dict[str, torch.Tensor]:
        """The in-memory source: every split of the embedded synthetic set as (N, 90) float32 CPU
        tensors. Used when no directory is given (tests and benchmarks replace it)."""
        return pose_tensors(default_splits(seed=self.seed))

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        path = self.cfg.directory
        if path:
            files = split_files(Path(path), verify=self.cfg.verify_data)
            rows = {k: sum(n for _, n in files[k]) for k in SPLITS}
            device = self._target_device(sum(rows.values()) * POSE_DIM * 4)
            tensors = {k: _stream_split(files[k], rows[k], device, Path(path)) for k in SPLITS}
        else:
            data = self.load_arrays()
            device = self._target_device(sum(v.numel() * v.element_size() for v in data.values()))
            tensors = {k: v.to(device) for k, v in data.items()}
        for k, v in tensors.items():
            self._check_split(k, v)
        self.tensors = tensors
        sizes = (len(self.tensors[k]) for k in SPLITS)
        log.info("Data: %s — train %d, val %d, test %d poses (on %s)", self.source, *sizes, device)

    def _check_split(self, split: str, data: torch.Tensor) -> None:
        bad = sum((~torch.isfinite(block).all(1)).sum() for block in data.split(CHECK_ROWS))
        if int(bad):
            raise DatasetError(
                f"the {split} split of the {self.source} has {int(bad)} rows with NaN/inf; rebuild it with "
                "create_consolidated_npz.py / create_datamodule.py, which drop such frames"
            )
        if split in ("train", "val") and len(data) == 0:
            raise DatasetError(
                f"the {split} split of the {self.source} is empty; rebuild it from more sequences"
            )

    def _target_device(self, nbytes: int) -> torch.device:
        mode = self.cfg.data_on_device
        trainer = self.trainer
        root = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        if mode == "never" or (mode == "auto" and root.type != "cuda"):
            return torch.device("cpu")
        if mode == "auto":
            free, _ = torch.cuda.mem_get_info(root)
            if nbytes > 0.3 * free:
                log.info("Data (%.1f GB) too large for the device; keeping it in host memory", nbytes / 1e9)
                return torch.device("cpu")
        return root

    def split_tensor(self, stage: str, device: torch.device | str | None = "cpu") -> torch.Tensor:
        """The whole split as (N, 90) float32 on ``device`` (None: where it is kept, no copy)."""
        if not self.tensors:
            self.setup()
        data = self.tensors[stage]
        return data if device is None else data.to(device)

    def training_distribution(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, val) splits where they are kept, train as the model sees it in training: with
        ``mirror_augment``, train ∪ its mirror image, (2N, 90). For fitting the model's whitening."""
        train = self.split_tensor("train", device=None)
        if self.cfg.mirror_augment:
            train = torch.cat([train, swap_and_mirror_hands(train)])
        return train, self.split_tensor("val", device=None)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if not self.tensors:
            self.setup()
        data = self.tensors[split]
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sampler = IndexBatchSampler(
            len(data), self.cfg.batch_size, shuffle, self.seed, rank, world, data.device
        )
        workers = self.cfg.num_workers if data.device.type == "cpu" else 0
        pin = workers > 0 and torch.cuda.is_available()
        # batch_size=None: the sampler already yields whole batches.
        return DataLoader(_GatherDataset(data), sampler=sampler, batch_size=None, num_workers=workers,
                          persistent_workers=workers > 0, pin_memory=pin)  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch: torch.Tensor, dataloader_idx: int) -> torch.Tensor:
        """On the device: optional mirror augmentation, then the model's layout."""
        trainer = self.trainer
        if self.cfg.mirror_augment and trainer is not None and trainer.training:
            batch = mirror_random_half(batch)
        if self.model_type == "so3":
            return batch.reshape(batch.shape[0], NUM_JOINTS, 3)  # (B, 30, 3)
        return batch.reshape(batch.shape[0], POSE_DIM)  # (B, 90)


def mirror_random_half(batch: torch.Tensor) -> torch.Tensor:
    """Swap and mirror the hands of each pose with probability ½, on the batch's device: (B, 90) -> (B, 90)."""
    flip = torch.rand(batch.shape[0], device=batch.device) < 0.5  # (B,)
    return torch.where(flip[:, None], swap_and_mirror_hands(batch), batch)


def _stream_split(files: list[tuple[Path, int]], rows: int, device: torch.device, root: Path,
                  staging_rows: int | None = None) -> torch.Tensor:  # fmt: skip
    """One split's files ((path, rows) each, ``rows`` in all) read into a new (rows, 90) float32 tensor on
    ``device``: directly on a CPU, else through one pinned buffer of ``staging_rows`` (default
    ``STAGING_ROWS``; given, also on a CPU), so the host never holds the split."""
    out = torch.empty((rows, POSE_DIM), dtype=torch.float32, device=device)
    staging = None
    if device.type != "cpu" or staging_rows is not None:
        pin = device.type == "cuda"  # page-locked: the copy to the GPU needs no extra staging
        n = min(staging_rows or STAGING_ROWS, max(rows, 1))
        staging = torch.empty((n, POSE_DIM), pin_memory=pin).numpy()
    start = 0
    for file, n in files:
        buffer = out[start : start + n].numpy() if staging is None else staging
        try:
            for chunk in iter_npz_rows(file, "hand_pose", buffer, rows=n):
                if staging is not None:
                    out[start : start + len(chunk)].copy_(torch.from_numpy(chunk))
                start += len(chunk)
        except READ_ERRORS as err:
            raise unreadable(file, root, err) from None
    return out
