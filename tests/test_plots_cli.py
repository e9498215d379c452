"""The plots through the real CLI: PNG files and TensorBoard images, validation and test, none twice."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from hand_vae.cli.train import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = {
    "energy_histogram",
    "latent_scatter",
    "loss_breakdown",
    "beta_sensitivity",
    "prior_samples",
    "reconstructions",
    "per_joint_geodesic_error",
}
# Figures of the split's poses: always drawn again for the test split. The other two (loss history,
# prior samples) are the same picture as the last epoch's unless an epoch ran since / the best
# checkpoint is an earlier one.
PER_SPLIT = FIGURES - {"loss_breakdown", "prior_samples"}


@pytest.mark.slow
def test_five_epoch_run_writes_validation_and_test_plots(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [
        "--max_epochs",
        "5",
        "--plot_every_n_epochs",
        "5",
        "--experiment_name",
        "p",
        "--z_dim",
        "4",
        "--hidden",
        "32",
        "--batch_size",
        "1024",
        "--limit_train_batches",
        "3",
        "--limit_val_batches",
        "2",
        "--accelerator",
        "cpu",
    ]
    assert main(argv) == 0
    run = tmp_path / "logs" / "hand-vae-prior" / "p"
    pngs = {p.name: p for p in (run / "plots").glob("*.png")}
    assert {f"{n}_epoch004.png" for n in FIGURES} <= set(pngs), sorted(pngs)
    assert {f"test_{n}.png" for n in PER_SPLIT} <= set(pngs), sorted(pngs)
    assert "test_loss_breakdown.png" not in pngs  # no epoch since the epoch-4 plot: the same picture
    assert not any("epoch000" in n or "epoch003" in n for n in pngs)  # only every 5th epoch
    contents = {}
    for p in pngs.values():
        data = p.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5_000, p.name
        assert data not in contents, f"{p.name} is a copy of {contents.get(data)}"  # nothing written twice
        contents[data] = p.name
    assert f"({len(pngs)} PNG files from this run)" in capsys.readouterr().out
    tags: set[str] = set()
    for f in run.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f), size_guidance={"images": 0})
        acc.Reload()
        tags |= set(acc.Tags()["images"])
    assert {f"val_plots/{n}" for n in FIGURES} <= tags, sorted(tags)
    assert {f"test_plots/{n}" for n in PER_SPLIT} <= tags, sorted(tags)
