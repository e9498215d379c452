"""last.ckpt is the latest state even when val/loss stops improving (Lightning 2.5+ alone would
write it only together with a new top-k checkpoint, so a plateaued run resumed from a stale one)."""

from __future__ import annotations

import torch

from hand_vae.cli.train import main


def test_last_ckpt_follows_every_epoch_on_a_plateau(tmp_path) -> None:
    ckpt = tmp_path / "ckpt" / "plateau"
    argv = ["--z_dim", "4", "--hidden", "16", "--batch_size", "512", "--limit_train_batches", "2"]
    argv += ["--limit_val_batches", "1", "--no_plots", "--no_progress_bar", "--accelerator", "cpu"]
    # lr 0: val/loss never improves on epoch 0, so only epoch 0 is ever a top-1 checkpoint.
    argv += ["--learning_rate", "0", "--save_top_k", "1", "--max_epochs", "3", "--experiment_name", "plateau"]
    argv += ["--checkpoint_dir", str(tmp_path / "ckpt"), "--log_dir", str(tmp_path / "logs")]
    assert main(argv) == 0
    assert [p.name for p in ckpt.glob("hand_vae_epoch_*.ckpt")] == [
        next(ckpt.glob("hand_vae_epoch_00_*")).name
    ]
    assert torch.load(ckpt / "last.ckpt", weights_only=True)["epoch"] == 2
