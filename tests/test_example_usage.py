"""example_usage.py: interactive in a terminal, every example otherwise; --help is a guide; clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "example_usage.py"

sys.path.insert(0, str(REPO))
import example_usage  # noqa: E402


def tiny_checkpoint(path: Path, model_type: str = "standard") -> Path:
    from hand_vae.lightning_module import HandVAELightningModule

    torch.manual_seed(0)
    module = HandVAELightningModule(model_type=model_type, z_dim=4, hidden=16)
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)
    return path


def test_help_names_the_checkpoint_and_how_to_train_it(tmp_path):
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "checkpoints/demo/best_model.ckpt" in res.stdout and "--experiment_name demo" in res.stdout
    assert not list(tmp_path.iterdir())  # --help writes nothing
    # A usage guide: every example, the API call it shows and the files it writes.
    assert len(res.stdout.splitlines()) >= 20
    for title, call, files in example_usage.EXAMPLES:
        assert title in res.stdout and call in res.stdout and files in res.stdout


def test_in_a_terminal_it_asks_which_example(tmp_path, capsys, monkeypatch):
    ckpt = tiny_checkpoint(tmp_path / "m.ckpt")
    answers = iter(["9", "3"])  # a wrong choice is explained, then example 3 runs alone
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    out = tmp_path / "out"
    assert example_usage.main(["--checkpoint", str(ckpt), "--out_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "type a number from 1 to 6" in printed and "3. Sample poses" in printed
    assert "1. Score poses:" not in printed and "5. Export:" not in printed
    assert [p.name for p in out.iterdir()] == ["samples.png"]
    monkeypatch.setattr("builtins.input", lambda prompt: "q")
    assert example_usage.main(["--checkpoint", str(ckpt), "--out_dir", str(tmp_path / "none")]) == 0
    assert not (tmp_path / "none").exists()


def test_missing_or_bad_checkpoint_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert example_usage.main([]) == 2  # the default checkpoint, not trained yet
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such checkpoint: checkpoints/demo/best_model.ckpt" in err[0]
    assert "python train_hand_vae_lightning.py --max_epochs 5 --experiment_name demo" in err[0]
    (tmp_path / "junk.ckpt").write_text("junk")
    assert example_usage.main(["--checkpoint", "junk.ckpt"]) == 2
    assert "junk.ckpt is not a readable checkpoint" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["junk.ckpt"]


@pytest.mark.parametrize("model_type", ["standard", "so3"])
def test_every_example_runs_on_a_checkpoint(model_type, tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "m.ckpt", model_type)
    out = tmp_path / "out"
    assert example_usage.main(["--checkpoint", str(ckpt), "--out_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    for step in ("1. Score poses", "2. Rank hypotheses", "3. Sample poses", "4. Denoise", "5. Export"):
        assert step in printed, step
    assert (out / "samples.png").read_bytes()[:4] == b"\x89PNG" and (out / "denoise.png").is_file()
    # The export is usable with torch alone and gives the prior's energies.
    from hand_vae.prior import load_prior

    x = torch.zeros(3, 90)
    exported = torch.export.load(out / "hand_prior_energy.pt2").module()
    torch.testing.assert_close(exported(x), load_prior(ckpt).energy(x))


@pytest.mark.slow
def test_script_runs_without_stdin_from_another_directory(tmp_path):
    """As the README runs it: a fresh process, no terminal; it never waits for input."""
    ckpt = tiny_checkpoint(tmp_path / "m.ckpt")
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--checkpoint", str(ckpt)],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "example_output" / "hand_prior_energy.pt2").is_file()
