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


def test_best_model_is_never_worse_than_the_start(tmp_path) -> None:
    """A run whose every epoch is worse on val than the model it started from (the val-tuned
    Gaussian) keeps that start as best_model.ckpt: it is validated before the first step."""
    ckpt = tmp_path / "ckpt" / "worse"
    argv = ["--z_dim", "4", "--hidden", "16", "--batch_size", "64", "--limit_train_batches", "10"]
    argv += ["--no_plots", "--no_progress_bar", "--accelerator", "cpu", "--max_epochs", "2"]
    # A learning rate far too high: every epoch ends worse than the start.
    argv += ["--learning_rate", "0.05", "--experiment_name", "worse"]
    argv += ["--checkpoint_dir", str(tmp_path / "ckpt"), "--log_dir", str(tmp_path / "logs")]
    assert main(argv) == 0
    best = torch.load(ckpt / "best_model.ckpt", weights_only=True)
    scores = {p.name: float(p.name.split("_val_loss_")[1][: -len(".ckpt")]) for p in ckpt.glob("hand_vae_*")}
    assert len(scores) == 3  # the start and two epochs
    assert best["global_step"] == 0
    # The start is the untouched model: a whitened decoder's last layer starts at zero.
    last_layer = [k for k in best["state_dict"] if k.startswith("model.decoder.") and k.endswith("weight")][
        -1
    ]
    assert not best["state_dict"][last_layer].any()
    ended = [torch.load(p, weights_only=True)["global_step"] for p in ckpt.glob("hand_vae_*")]
    assert sorted(ended) == [0, 10, 20]
    start_score = scores[min(scores, key=scores.get)]
    assert all(v > start_score for k, v in scores.items() if k != min(scores, key=scores.get))
