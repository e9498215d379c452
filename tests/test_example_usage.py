"""example_usage.py: scripted runs never prompt, a missing stdin never hangs, --help is the guide."""

from __future__ import annotations

import builtins
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "example_usage.py"
SCRIPTS = (
    "create_consolidated_npz.py",
    "create_datamodule.py",
    "train_hand_vae_lightning.py",
    "example_usage.py",
    "python -m hand_vae.evaluate",
)

sys.path.insert(0, str(REPO))
import example_usage  # noqa: E402


def run_script(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tiny_checkpoint(path: Path, model_type: str = "standard") -> Path:
    from hand_vae.lightning_module import HandVAELightningModule

    torch.manual_seed(0)
    module = HandVAELightningModule(model_type=model_type, z_dim=4, hidden=16)
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)
    return path


def test_help_is_the_usage_guide(tmp_path):
    res = run_script(["--help"], tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    for script in SCRIPTS:
        assert script in res.stdout, script
    for step in ("Data", "Training", "Loading and scoring", "--checkpoint", "--all", "--example"):
        assert step in res.stdout, step


def test_no_tty_prints_the_menu_and_runs_nothing(tmp_path):
    res = run_script([], tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "1. Load a checkpoint and score poses" in res.stdout and "--all" in res.stdout
    assert not (tmp_path / "example_output" / "checkpoints").exists()  # nothing was trained


def test_user_mistakes_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert example_usage.main(["--example", "1", "--checkpoint", str(tmp_path / "nope.ckpt")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "junk.ckpt").write_text("junk")
    assert example_usage.main(["--example", "1", "--checkpoint", str(tmp_path / "junk.ckpt")]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse: an unknown example number
        example_usage.main(["--example", "9"])
    assert exit_info.value.code == 2
    assert list(tmp_path.iterdir()) == [tmp_path / "junk.ckpt"]  # nothing written on a mistake


class _Terminal:
    def isatty(self) -> bool:
        return True


def test_interactive_menu_runs_the_choice(tmp_path, monkeypatch, capsys):
    ckpt = tiny_checkpoint(tmp_path / "a.ckpt", "so3")
    answers = iter(["2", "7", "q"])
    monkeypatch.setattr(sys, "stdin", _Terminal())
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(answers))
    code = example_usage.main(["--checkpoint", str(ckpt), "--output_dir", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("Hand VAE prior examples:") == 3  # menu shown before each answer
    assert "=== Example 2: Rank hypotheses" in out and "Unknown choice '7'" in out


def test_examples_with_a_given_checkpoint_in_process(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "a.ckpt")
    other = tiny_checkpoint(tmp_path / "b.ckpt", "so3")
    out_dir = tmp_path / "out"
    for n in (1, 5, 6):
        args = ["--example", str(n), "--checkpoint", str(ckpt), "--output_dir", str(out_dir)]
        assert example_usage.main([*args, "--compare_checkpoint", str(other)]) == 0
    out = capsys.readouterr().out
    assert "a.ckpt" in out and "b.ckpt" in out and (out_dir / "hand_prior_energy.pt2").is_file()


@pytest.mark.slow
def test_all_without_stdin_trains_a_tiny_model_and_exits_0(tmp_path):
    res = run_script(["--all"], tmp_path, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "No --checkpoint given: training a tiny model" in res.stdout
    for n in range(1, 7):
        assert f"=== Example {n}:" in res.stdout
    out = tmp_path / "example_output"
    for name in ("samples.png", "denoise.png", "hand_prior_energy.pt2"):
        assert (out / name).is_file(), name
    assert (out / "checkpoints" / "example_tiny" / "best_model.ckpt").is_file()
    # A second run reuses the tiny model instead of training again.
    res = run_script(["--example", "1"], tmp_path, timeout=300)
    assert res.returncode == 0 and "reusing the tiny model" in res.stdout
