"""Fault injection: hard kills, SIGINT/SIGTERM, NaNs, malicious checkpoints, a changed dataset."""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hand_vae.cli.train import main, parse_settings
from hand_vae.reliability import AtomicCheckpointIO, NonFiniteError
from hand_vae.training import build_run

REPO = Path(__file__).resolve().parents[1]
SCRIPT = str(REPO / "train_hand_vae_lightning.py")
PAUSING = str(REPO / "tests" / "fault_injection.py")  # the CLI with checkpoint writes pausing half-way
TINY = [
    "--z_dim",
    "4",
    "--hidden",
    "32",
    "--batch_size",
    "512",
    "--limit_train_batches",
    "8",
    "--limit_val_batches",
    "2",
    "--no_plots",
    "--accelerator",
    "cpu",
    "--kl_warmup_epochs",
    "1",
    "--learning_rate",
    "3e-3",
]


# Long enough (12 epochs x 30 batches) that kills land inside training, not after it.
KILL_RUN = ("--max_epochs", "12", "--limit_train_batches", "30", "--experiment_name", "k")


def _start(tmp: Path, *args: str, write_pause: float = 0.0) -> subprocess.Popen:
    cmd = [PAUSING, str(write_pause)] if write_pause else [SCRIPT]
    return subprocess.Popen(
        [sys.executable, *cmd, *TINY, *args],
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _load_all(ckpt_dir: Path) -> dict[str, dict]:
    """Every checkpoint present must load, both raw (weights_only) and through Lightning."""
    from hand_vae.lightning_module import HandVAELightningModule

    out = {}
    for p in sorted(ckpt_dir.glob("*.ckpt")):
        out[p.name] = torch.load(p, weights_only=True)
        HandVAELightningModule.load_from_checkpoint(p)
    return out


def _wait_for(predicate, timeout: float, proc: subprocess.Popen) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def test_atomic_save_leaves_old_file_when_killed_mid_write(tmp_path):
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"v": torch.ones(3)}, target)
    code = (
        f"import torch, sys; sys.path.insert(0, {str(REPO / 'tests')!r})\n"
        "from fault_injection import pause_checkpoint_writes\n"
        "pause_checkpoint_writes(30)\n"
        "from hand_vae.reliability import AtomicCheckpointIO\n"
        f"AtomicCheckpointIO().save_checkpoint({{'v': torch.zeros(200000)}}, {str(target)!r})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    assert _wait_for(lambda: list(tmp_path.glob(".last.ckpt.tmp-*")), 60, proc), "never started writing"
    proc.kill()
    proc.wait()
    assert torch.equal(torch.load(target, weights_only=True)["v"], torch.ones(3))  # old file intact


@pytest.mark.slow
def test_hard_kills_lose_at_most_one_epoch(tmp_path):
    """SIGKILL real training runs at seeded random moments: mid-epoch, in validation, mid-write."""
    rng = random.Random(0)
    ref = tmp_path / "ref"
    ref.mkdir()
    assert (
        subprocess.run(
            [sys.executable, SCRIPT, *TINY, *KILL_RUN],
            cwd=ref,
            capture_output=True,
        ).returncode
        == 0
    )
    ref_loss = torch.load(ref / "checkpoints/k/best_model.ckpt", weights_only=True)["callbacks"]
    ref_best = next(v["best_model_score"] for v in ref_loss.values() if "best_model_score" in v).item()

    run = tmp_path / "run"
    run.mkdir()
    ckpt_dir = run / "checkpoints" / "k"
    kills = []
    for attempt in range(5):
        mode = ("epoch", "write", "validation")[attempt % 3]
        args = list(KILL_RUN)
        if (ckpt_dir / "last.ckpt").exists():
            args += ["--resume_from_checkpoint", str(ckpt_dir / "last.ckpt")]
        before = (
            torch.load(ckpt_dir / "last.ckpt", weights_only=True)["epoch"]
            if args[-1].endswith("ckpt")
            else -1
        )
        proc = _start(run, *args, write_pause=5.0 if mode == "write" else 0.0)
        if mode == "write":
            _wait_for(lambda: list(ckpt_dir.glob(".*.tmp-*")), 120, proc)
        else:
            _wait_for(lambda: (ckpt_dir / "last.ckpt").exists(), 120, proc)
            time.sleep(rng.uniform(0.2, 1.5))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills.append(mode)
        proc.wait()
        present = _load_all(ckpt_dir)  # every file loads
        after = present["last.ckpt"]["epoch"]
        assert after >= before, (before, after)  # progress is never lost
    assert len(kills) >= 4, kills
    # Finish the run from whatever survived.
    final = subprocess.run(
        [sys.executable, SCRIPT, "--resume_from_checkpoint", str(ckpt_dir / "last.ckpt")],
        cwd=run,
        capture_output=True,
        text=True,
    )
    assert final.returncode == 0, final.stderr[-2000:]
    state = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    assert state["epoch"] == 11
    best = next(v["best_model_score"] for v in state["callbacks"].values() if "best_model_score" in v).item()
    # Comparable to the uninterrupted run with the same seed (re-shuffled epochs differ slightly).
    assert abs(best - ref_best) < 0.15 * abs(ref_best) + 5.0, (best, ref_best, kills)


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_last_and_explains_resume(sig, code, tmp_path):
    ckpt_dir = tmp_path / "checkpoints" / "s"
    proc = _start(tmp_path, "--max_epochs", "1000", "--experiment_name", "s")
    assert _wait_for(lambda: (ckpt_dir / "last.ckpt").exists(), 120, proc)
    time.sleep(0.5)
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert "--resume_from_checkpoint" in err and "last.ckpt" in err
    state = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())
    res = subprocess.run(
        [
            sys.executable,
            SCRIPT,
            "--resume_from_checkpoint",
            str(ckpt_dir / "last.ckpt"),
            "--max_epochs",
            str(state["epoch"] + 2),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert torch.load(ckpt_dir / "last.ckpt", weights_only=True)["global_step"] > state["global_step"]


@pytest.mark.slow
def test_sigterm_under_ddp_saves_last(tmp_path):
    ckpt_dir = tmp_path / "checkpoints" / "d"
    proc = _start(
        tmp_path, "--max_epochs", "1000", "--experiment_name", "d", "--devices", "2", "--strategy", "ddp"
    )
    assert _wait_for(lambda: (ckpt_dir / "last.ckpt").exists(), 180, proc)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGTERM)  # rank 0 only: Lightning's launcher forwards it to rank 1
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and "--resume_from_checkpoint" in err, err[-3000:]
    torch.load(ckpt_dir / "last.ckpt", weights_only=True)


def test_nan_stops_with_epoch_and_step_and_keeps_good_last(tmp_path, monkeypatch):
    import pytorch_lightning as pl

    monkeypatch.chdir(tmp_path)

    class Poison(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 2 and batch_idx == 3:
                with torch.no_grad():
                    pl_module.model.decoder[0].weight.fill_(float("nan"))

    s = parse_settings([*TINY, "--max_epochs", "5", "--experiment_name", "nan"])
    trainer, module, dm, _ = build_run(s)
    trainer.callbacks.append(Poison())
    with pytest.raises(NonFiniteError, match=r"epoch 2, step 19"):
        trainer.fit(module, datamodule=dm)
    last = torch.load(tmp_path / "checkpoints/nan/last.ckpt", weights_only=True)
    # Every saved tensor is finite, but the Student-t's ν, whose +inf means "the Gaussian limit".
    state = {k: v for k, v in last["state_dict"].items() if k != "model.white_nu"}
    assert last["epoch"] == 1 and all(torch.isfinite(v).all() for v in state.values())
    assert not torch.isnan(last["state_dict"]["model.white_nu"])


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_malicious_checkpoint_is_refused(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": _Evil()}}, evil, pickle_module=pickle)
    assert main(["--resume_from_checkpoint", str(evil)]) == 2
    assert "not a readable checkpoint" in caplog.text
    from hand_vae.lightning_module import HandVAELightningModule

    with pytest.raises(pickle.UnpicklingError):
        HandVAELightningModule.load_from_checkpoint(evil)
    assert not (tmp_path / "PWNED").exists()


def test_resume_warns_when_the_dataset_changed(tmp_path, monkeypatch, caplog):
    from hand_vae.data.layouts import write_consolidated
    from hand_vae.data.synthetic import generate_sequences, split_by_subject

    monkeypatch.chdir(tmp_path)
    seqs = generate_sequences(num_subjects=3, sequences_per_subject=3, frames_per_sequence=40)
    write_consolidated(tmp_path / "data", split_by_subject(seqs), {})
    args = [
        "--consolidated_dir",
        "data",
        "--max_epochs",
        "1",
        "--experiment_name",
        "c",
        "--batch_size",
        "64",
        "--hidden",
        "16",
        "--z_dim",
        "2",
        "--no_plots",
        "--accelerator",
        "cpu",
    ]
    assert main(args) == 0
    write_consolidated(tmp_path / "data", split_by_subject(seqs[:-1]), {}, overwrite=True)
    assert main(["--resume_from_checkpoint", "checkpoints/c/last.ckpt", "--max_epochs", "2"]) == 0
    assert "dataset changed" in caplog.text and "'test': 120" in caplog.text and "'test': 80}" in caplog.text
