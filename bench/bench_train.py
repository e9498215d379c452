"""CPU training throughput as ratios measured in one run.

    python bench/bench_train.py                      # standard VAE, 1e6 rows, batch 8192, fp32, 2 threads
    python bench/bench_train.py --model_type so3
    python bench/bench_train.py --smoke              # tiny sizes, a few seconds (used by the test suite)

Three paths train the same model with the same optimizer (fused AdamW), loss, gradient clipping and
batch, one epoch each, interleaved round by round (the order rotates), median over rounds:
  (a) project: ``hand_vae.training.build_run`` exactly as the CLI builds it (HandPoseDataModule with its
      index batches, HandVAELightningModule, the CLI's Trainer arguments, the whitening fitted from the
      datamodule before ``fit``), with the logger, the checkpoint and progress-bar callbacks, plots and
      validation turned off;
  (b) bare: a PyTorch loop over contiguous slices of a tensor shuffled once, before timing;
  (c) naive: the same LightningModule and Trainer fed by ``TensorDataset`` + ``DataLoader(shuffle=True)``.
Each round also times a 4096² fp32 matmul (the machine's practical peak under the current load).
Model FLOPs are the forward pass's matmul FLOPs (counted by ``FlopCounterMode``) × 3 for forward +
backward. The last three lines are ``project/bare``, ``project/naive`` and ``percent_of_matmul_peak``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from unittest import mock

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hand_vae import training  # noqa: E402
from hand_vae.cli.train import parse_settings  # noqa: E402
from hand_vae.data.datamodule import mirror_random_half  # noqa: E402
from hand_vae.data.synthetic import generate_sequences, stack_poses  # noqa: E402
from hand_vae.lightning_module import HandVAELightningModule  # noqa: E402
from hand_vae.losses import beta_schedule, free_bits_kl  # noqa: E402
from hand_vae.models import VAEConfig, build_model  # noqa: E402
from hand_vae.rotations import NUM_JOINTS, POSE_DIM, swap_and_mirror_hands  # noqa: E402


def quiet_lightning() -> None:
    """Silence Lightning's per-fit banners and the warnings that the benchmark's choices trigger."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*LightningModule.configure_optimizers.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="pytorch_lightning")
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning_fabric")


def synthetic_poses(rows: int, seed: int = 0, noise: float = 0.01) -> torch.Tensor:
    """``rows`` structured poses (rows, 90) float32: a small synthetic set, tiled, plus Gaussian noise.

    Args:
        rows: number of poses.
        seed: seeds both the synthetic clips and the noise.
        noise: std of the added noise, radians (so tiled copies are not identical).
    """
    base = torch.from_numpy(
        stack_poses(generate_sequences(num_subjects=2, sequences_per_subject=10, seed=seed))[0]
    )
    reps = -(-rows // len(base))
    out = base.repeat(reps, 1)[:rows].contiguous()  # (rows, 90)
    g = torch.Generator().manual_seed(seed)
    return out.add_(torch.randn(out.shape, generator=g).mul_(noise))


def matmul_gflops(size: int = 4096, repeats: int = 3, device: str = "cpu", dtype=torch.float32) -> float:
    """Best-of-``repeats`` GFLOP/s of one ``size``² matmul: the practical peak of this machine now."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b  # warm-up
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def forward_flops_per_sample(model: torch.nn.Module, batch: torch.Tensor, energy: bool = False) -> float:
    """Matmul FLOPs of one forward pass (``model(batch)`` or ``model.energy(batch)``) per sample."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.energy(batch) if energy else model(batch)
    return counter.get_total_flops() / batch.shape[0]


def model_layout(x: torch.Tensor, model_type: str) -> torch.Tensor:
    """(B, 90) -> the model's batch layout: (B, 90) standard, (B, 30, 3) so3."""
    B = x.shape[0]
    return x.reshape(B, NUM_JOINTS, 3) if model_type == "so3" else x.reshape(B, POSE_DIM)


class EpochTimer(pl.Callback):
    """Wall time and samples of each training epoch (start of the epoch to the end of its training
    batches); synchronises CUDA at both ends only, so the steps themselves stay asynchronous."""

    def __init__(self) -> None:
        self.epochs: list[tuple[float, int]] = []  # (seconds, samples)
        self._t0, self._samples = 0.0, 0

    def _sync(self, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sync(pl_module)
        self._t0, self._samples = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._samples += (batch[0] if isinstance(batch, list | tuple) else batch).shape[0]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sync(pl_module)
        self.epochs.append((time.perf_counter() - self._t0, self._samples))


class NaiveModule(HandVAELightningModule):
    """The project's module fed by a plain ``TensorDataset`` loader: unwraps the 1-tuple batch and
    mirrors half of it as the CLI's data module does (``mirror``)."""

    mirror = False

    def on_after_batch_transfer(self, batch, dataloader_idx: int) -> torch.Tensor:
        (x,) = batch
        if self.mirror and self.trainer.training:
            x = mirror_random_half(x)
        return model_layout(x, self.hparams.model_type)


def fit_whitening_like_cli(
    model: torch.nn.Module, train: torch.Tensor, val: torch.Tensor, mirror: bool
) -> None:
    """``training.fit_whitening`` for a model trained without the datamodule: the Gaussian of train
    (∪ mirrored train with mirroring), tuned on val."""
    if not bool(getattr(model, "white_fitted", True)):
        model.fit_whitening(torch.cat([train, swap_and_mirror_hands(train)]) if mirror else train, val)


def project_run(argv: list[str], train: torch.Tensor, val: torch.Tensor):
    """``build_run`` as the CLI calls it, with our in-memory splits as the data source.

    Returns:
        (trainer kwargs as build_run passed them, module, datamodule).
    """
    captured: dict = {}
    with mock.patch.object(training.pl, "Trainer", side_effect=lambda **kwargs: captured.update(kwargs)):
        _, module, datamodule, _ = training.build_run(parse_settings(argv))
    data = {"train": train, "val": val, "test": val}
    datamodule.load_arrays = lambda: data  # only the data source differs from the CLI
    return captured, module, datamodule


def bench_trainer(kwargs: dict, timer: EpochTimer, epochs: int = 1) -> pl.Trainer:
    """The CLI's Trainer arguments without logger, checkpoints, progress bar or model summary."""
    kwargs = dict(kwargs, logger=False, callbacks=[timer], enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, max_epochs=epochs)  # fmt: skip
    return pl.Trainer(**kwargs)


def fit_like_cli(trainer: pl.Trainer, module: HandVAELightningModule, datamodule) -> None:
    """``trainer.fit`` as ``training.run_training`` calls it: the data loaded where this trainer keeps
    it, the whitening fitted from it, then fit."""
    datamodule.trainer = trainer
    datamodule.setup("fit")
    training.fit_whitening(module, datamodule)
    trainer.fit(module, datamodule=datamodule)


def run_project(argv: list[str], train: torch.Tensor, val: torch.Tensor, epochs: int = 1) -> EpochTimer:
    kwargs, module, datamodule = project_run(argv, train, val)
    timer = EpochTimer()
    fit_like_cli(bench_trainer(kwargs, timer, epochs), module, datamodule)
    return timer


def run_naive(argv: list[str], train: torch.Tensor, epochs: int = 1, **loader_kwargs) -> EpochTimer:
    kwargs, module, datamodule = project_run(argv, train, train[:1])
    naive = NaiveModule(**dict(module.hparams))
    naive.mirror = datamodule.hparams.mirror_augment
    fit_whitening_like_cli(naive.model, train, train[:4096], naive.mirror)
    loader = DataLoader(
        TensorDataset(train), batch_size=datamodule.hparams.batch_size, shuffle=True, **loader_kwargs
    )
    timer = EpochTimer()
    bench_trainer(kwargs, timer, epochs).fit(naive, train_dataloaders=loader)
    return timer


def settings_model(settings: dict) -> torch.nn.Module:
    """The model the CLI builds from resolved settings: every ``VAEConfig`` field from the settings
    table (so the bare loop trains the CLI's model, e.g. its ``cov_rank``), seeded like the CLI."""
    torch.manual_seed(settings["seed"])
    return build_model(**{f.name: settings[f.name] for f in dataclasses.fields(VAEConfig)})


def run_bare(settings: dict, shuffled: torch.Tensor) -> tuple[float, int]:
    """One epoch of the best plain loop: same model, fused AdamW, loss, β warm-up and clipping."""
    model = settings_model(settings)
    fit_whitening_like_cli(model, shuffled, shuffled[:4096], settings["mirror_augment"])
    opt = torch.optim.AdamW(
        model.parameters(), lr=settings["learning_rate"], weight_decay=settings["weight_decay"], fused=True
    )
    B, clip = settings["batch_size"], settings["gradient_clip_val"]
    steps = -(-len(shuffled) // B)
    t0 = time.perf_counter()
    for step, x in enumerate(shuffled.split(B)):
        if settings["mirror_augment"]:
            x = mirror_random_half(x)
        out = model(model_layout(x, settings["model_type"]))
        beta = beta_schedule(step, settings["beta_max"], settings["kl_warmup_epochs"], steps)
        loss = out["recon_nll"].mean() + beta * free_bits_kl(out["kl"], settings["free_bits"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
    return time.perf_counter() - t0, len(shuffled)


def cli_argv(args: argparse.Namespace, workdir: str) -> list[str]:
    return [
        "--model_type", args.model_type, "--batch_size", str(args.batch_size), "--precision", "32-true",
        "--accelerator", "cpu", "--devices", "1", "--no_plots", "--limit_val_batches", "0",
        "--checkpoint_dir", f"{workdir}/ckpt", "--log_dir", f"{workdir}/logs",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model_type", choices=("standard", "so3"), default="standard")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch_size", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes for the test suite")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.batch_size, args.rounds, args.threads = 4096, 512, 1, 1
    torch.set_num_threads(args.threads)
    quiet_lightning()
    train = synthetic_poses(args.rows)
    val = train[:2048]
    shuffled = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(1))]

    with tempfile.TemporaryDirectory() as workdir:
        argv_cli = cli_argv(args, workdir)
        settings = parse_settings(argv_cli).flags()
        model = settings_model(settings)
        flops = 3 * forward_flops_per_sample(model, model_layout(train[: args.batch_size], args.model_type))
        warm = train[: 4 * args.batch_size]  # one short untimed pass of each path: allocator, threads
        run_project(argv_cli, warm, val), run_bare(settings, warm), run_naive(argv_cli, warm)

        paths = {
            "project": lambda: run_project(argv_cli, train, val).epochs[0],
            "bare": lambda: run_bare(settings, shuffled),
            "naive": lambda: run_naive(argv_cli, train).epochs[0],
        }
        names = list(paths)
        rates: dict[str, list[float]] = {k: [] for k in names}
        peaks: list[float] = []
        for r in range(args.rounds):
            order = names[r % 3 :] + names[: r % 3]
            for name in order:
                seconds, samples = paths[name]()
                rates[name].append(samples / seconds)
            peaks.append(matmul_gflops(512 if args.smoke else 4096))
            print(
                f"round {r}: "
                + ", ".join(f"{k} {rates[k][-1]:,.0f}/s" for k in names)
                + f", matmul {peaks[-1]:.1f} GFLOP/s"
            )

    med = {k: statistics.median(v) for k, v in rates.items()}
    peak = statistics.median(peaks)
    achieved = med["project"] * flops / 1e9
    print(f"model: {args.model_type}, rows {args.rows:,}, batch {args.batch_size}, fp32, {args.threads} threads, "
          f"{args.rounds} interleaved rounds (median)")  # fmt: skip
    for k in names:
        print(f"{k:>8}: {med[k]:>12,.0f} samples/s   {med[k] * flops / 1e9:6.1f} GFLOP/s")
    print(f"model FLOPs: {flops / 1e6:.3f} MFLOP/sample (3 x forward matmul)")
    print(f"matmul 4096^2 fp32 peak: {peak:.1f} GFLOP/s; project achieves {achieved:.1f} GFLOP/s")
    print(f"project/bare = {med['project'] / med['bare']:.2f}")
    print(f"project/naive = {med['project'] / med['naive']:.2f}")
    print(f"percent_of_matmul_peak = {100 * achieved / peak:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
