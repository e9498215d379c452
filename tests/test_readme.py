"""README.md cannot rot: every fenced ``bash`` command and every ``python`` block is exercised.

The bash commands run in README order in one scratch dir, as a newcomer would type them:
  * ``python *.py`` / ``python -m ...`` commands run in-process through their ``main(argv)``.
    Training commands get tiny settings appended (argparse keeps the last value), so each takes
    seconds; data commands run as written on a tiny fake raw tree (``RAW/``) or the synthetic
    default; ``python -m hand_vae.evaluate`` runs without ``--baselines`` (fitting the GMMs takes
    minutes; tests/test_evaluate covers them) on a few poses.
  * GPU commands, on a machine without a GPU, must stop with a one-line error and exit code 2.
  * ``pip install -r requirements.txt``: the file exists and every requirement is installed,
    including this project itself in editable mode (``-e .``).
    ``python -m pytest``: not re-run from inside pytest; CI runs exactly that line (checked).
    ``tensorboard --logdir D``: the executable is installed and D holds event files by then.
A command of a kind this file does not know fails the test, so new README commands need a handler.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from hand_vae.settings import Settings

DEFAULTS = Settings().flags()  # every flag's resolved default (batch size and σ floor included)

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
TEST_LINE = "pip install -r requirements.txt && python -m pytest"
TINY_TRAIN = [
    "--max_epochs", "1", "--hidden", "32", "--z_dim", "4", "--batch_size", "1024",
    "--limit_train_batches", "2", "--limit_val_batches", "2", "--no_plots", "--accelerator", "cpu",
]  # fmt: skip
TINY_EVAL = ["--max_poses", "128", "--num_samples", "4", "--no_figures", "--output_dir", "evaluation"]
CKPT_NAME = re.compile(r"^hand_vae_epoch_\d{2}_val_loss_-?\d+\.\d{3}\.ckpt$")
METRICS = (
    "train/loss", "val/loss", "train/recon_nll", "train/kl", "train/beta", "train/recon_sigma",
    "val/energy_mean", "val/geodesic_deg", "val/active_units",
)  # fmt: skip

sys.path.insert(0, str(REPO))


def readme_text() -> str:
    return README.read_text(encoding="utf-8")


def fenced(lang: str) -> list[str]:
    """Bodies of the README's ```lang fenced blocks, in order."""
    return re.findall(rf"^```{lang}\n(.*?)^```", readme_text(), flags=re.M | re.S)


def bash_commands() -> list[str]:
    """Every command of the bash blocks: continuations joined, comments dropped, ``&&`` split."""
    commands = []
    for block in fenced("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                commands += [c.strip() for c in line.split("&&")]
    return commands


@contextlib.contextmanager
def chdir(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def make_raw(root: Path) -> None:
    """RAW/: ten tiny AMASS SMPL+H clips (the README's Option A/B input)."""
    from fake_raw import hand_track, write_smplh

    for i in range(10):
        write_smplh(root / "RAW" / f"Set{i % 2}" / f"clip{i:02d}_poses.npz", hand_track(240, seed=i))


# --------------------------------------------------------------------------- handlers


def _pip(args: list[str]) -> str:
    if args != ["install", "-r", "requirements.txt"]:
        raise AssertionError(f"unexpected pip command: pip {' '.join(args)}")
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if line.strip() == "-e .":  # this project, editable: importable from any directory
            importlib.metadata.version("hand-vae-prior")
            continue
        name = re.split(r"[<>=\[; ]", line.strip(), maxsplit=1)[0]
        if name and not name.startswith("#"):
            importlib.metadata.version(name)  # raises PackageNotFoundError when missing
    return "requirements installed"


def _tensorboard(args: list[str]) -> str:
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "tensorboard").exists() or shutil.which("tensorboard"), "tensorboard not installed"
    logdir = Path(args[args.index("--logdir") + 1])
    assert list(logdir.rglob("events.out.tfevents.*")), f"no TensorBoard events under {logdir}"
    return "tensorboard installed, events present"


def _train(args: list[str]) -> str:
    from hand_vae.cli.train import main

    if "gpu" in args and not torch.cuda.is_available():
        res = subprocess.run(
            [sys.executable, str(REPO / "train_hand_vae_lightning.py"), *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("ERROR")]
        assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
        return f"no GPU: exit 2, {errors[0]!r}"
    if "--resume_from_checkpoint" in args:
        last = Path(args[args.index("--resume_from_checkpoint") + 1])
        step_before = torch.load(last, weights_only=True)["global_step"]
        assert main([*args, "--max_epochs", "2"]) == 0
        step_after = torch.load(last, weights_only=True)["global_step"]
        assert step_after > step_before, (step_before, step_after)
        return f"resumed: global_step {step_before} -> {step_after}"
    tiny = TINY_TRAIN
    if "gpu" in args:  # a machine with a GPU: run it small, on one device
        tiny = [*TINY_TRAIN[:-2], "--devices", "1", "--strategy", "auto"]
    assert main([*args, *tiny]) == 0
    name = args[args.index("--experiment_name") + 1] if "--experiment_name" in args else "hand_vae"
    ckpt_dir = Path("checkpoints") / name
    assert (ckpt_dir / "best_model.ckpt").is_file() and (ckpt_dir / "last.ckpt").is_file()
    assert any(CKPT_NAME.match(p.name) for p in ckpt_dir.iterdir()), sorted(os.listdir(ckpt_dir))
    return f"trained: {ckpt_dir}/best_model.ckpt"


def _data(script: str, args: list[str]) -> str:
    module = __import__(script.removesuffix(".py"))
    assert module.main(args) == 0
    out = args[args.index("--output_dir") + 1] if "--output_dir" in args else None
    assert out and (Path(out) / "meta.json").is_file(), out
    return f"wrote {out}/"


def _evaluate(args: list[str]) -> str:
    from hand_vae.evaluate import main

    args = [a for a in args if a != "--baselines"]
    assert main([*args, *TINY_EVAL]) == 0
    assert (Path("evaluation") / "evaluation.json").is_file()
    return "evaluated (without --baselines)"


def _example(args: list[str]) -> str:
    import example_usage

    if "--help" in args:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as info:
            example_usage.main(args)
        assert info.value.code == 0 and "train_hand_vae_lightning.py" in out.getvalue()
        return "help printed"
    # On the checkpoint that the README's first command trained in this same directory.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "stdin", io.StringIO())  # no terminal: it must never wait for input
        assert example_usage.main(args) == 0
    assert (Path("example_output") / "hand_prior_energy.pt2").is_file()
    return "examples ran"


def run_command(command: str) -> str:
    """Exercise one README command in the current directory; returns what was checked."""
    words = shlex.split(command)
    if words[0] == "pip":
        return _pip(words[1:])
    if words[0] == "tensorboard":
        return _tensorboard(words[1:])
    if words[0] != "python":
        raise AssertionError(f"no handler for README command: {command}")
    if words[1:3] == ["-m", "pytest"]:
        assert command == "python -m pytest" and (REPO / "tests").is_dir()
        return "the test suite itself (CI runs it)"
    if words[1:3] == ["-m", "hand_vae.evaluate"]:
        return _evaluate(words[3:])
    script, args = words[1], words[2:]
    if script == "train_hand_vae_lightning.py":
        return _train(args)
    if script in ("create_consolidated_npz.py", "create_datamodule.py"):
        return _data(script, args)
    if script == "example_usage.py":
        return _example(args)
    raise AssertionError(f"no handler for README command: {command}")


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory) -> tuple[Path, list[tuple[str, str]]]:
    """Run every README bash command in order in one scratch dir; (dir, [(command, outcome)])."""
    work = tmp_path_factory.mktemp("readme")
    make_raw(work)
    results = []
    with chdir(work):
        for command in bash_commands():
            try:
                results.append((command, run_command(command)))
            except (Exception, SystemExit) as err:  # collect, so one run reports every failure
                results.append((command, f"FAILED: {type(err).__name__}: {err}"))
    return work, results


# --------------------------------------------------------------------------- tests


def test_the_two_commands():
    assert any(block.strip() == TEST_LINE for block in fenced("bash")), (
        "the set-up + tests command must be its own block"
    )
    ci = (REPO / ".ci" / "run").read_text()
    assert ci.strip().splitlines()[-1] == TEST_LINE, "CI must run exactly the README's test line"
    main_job = fenced("bash")[0].strip()
    assert main_job.startswith("pip install -r requirements.txt && python train_hand_vae_lightning.py")
    assert "-e ." in (REPO / "requirements.txt").read_text().splitlines()


def _names(command: str) -> list[str]:
    words = shlex.split(command)
    return [words[i + 1] for i, w in enumerate(words) if w == "--experiment_name"]


def test_fresh_runs_in_the_readme_use_distinct_names():
    """One name is one run: no two fresh training commands of the README share an experiment name."""
    names = [n for c in bash_commands() if "train_hand_vae_lightning.py" in c for n in _names(c)]
    assert "demo" in names and "quick_test" in names
    assert len(names) == len(set(names)), names
    loading = [b for b in fenced("python") if "best_model.ckpt" in b]
    assert loading and all("checkpoints/demo/best_model.ckpt" in b for b in loading[:2])


def test_every_command_has_a_handler():
    known = ("pip ", "tensorboard ", "python ")
    assert all(c.startswith(known) for c in bash_commands()), bash_commands()
    for script in ("create_consolidated_npz.py", "create_datamodule.py", "train_hand_vae_lightning.py"):
        assert (REPO / script).is_file()


def test_readme_sections_and_markers():
    text = readme_text()
    for heading in (
        "Quick Start", "Option A", "Option B", "Model Types", "Key Parameters", "Monitoring",
        "Output Files", "Multi-GPU", "Custom Experiment", "Resume Training", "Troubleshooting",
        "Model Loading", "Using the prior", "Expected Results", "Reading the results",
    ):  # fmt: skip
        assert heading in text, heading
    assert "SYNTHETIC" in text
    for metric in METRICS:
        assert f"`{metric}`" in text, metric
    assert "hand_vae_epoch_XX_val_loss_Y.YYY.ckpt" in text and "best_model.ckpt" in text
    assert CKPT_NAME.match(re.search(r"`(hand_vae_epoch_\d\d_val_loss_-[\d.]+\.ckpt)`", text).group(1))
    results = text.index("<!-- results:start -->")
    assert results < text.index("<!-- results:end -->")
    trouble = text.index("## 🛠️ Troubleshooting")
    start, end = text.index("<!-- bad-inputs:start -->"), text.index("<!-- bad-inputs:end -->")
    assert trouble < start < end < text.index("\n## ", trouble + 1)


def test_parameters_table_matches_the_settings():
    rows = re.findall(r"^\| `--(\w+)` \| ([^|]+) \|", readme_text(), flags=re.M)
    assert len(rows) >= 6
    for name, default in rows:
        expected = DEFAULTS[name]
        if expected is None:  # resolved at run time (e.g. --min_sigma by --whiten): text explains
            assert default.strip(), name
        elif isinstance(expected, bool):
            assert default.strip() == ("on" if expected else "off"), name
        elif isinstance(expected, str):
            assert default.strip() == expected, name
        else:
            assert float(default) == float(expected), (name, default, expected)


@pytest.mark.slow
def test_every_bash_command_works(readme_run):
    _, results = readme_run
    report = "\n".join(f"  {cmd}\n      -> {outcome}" for cmd, outcome in results)
    assert len(results) == len(bash_commands())
    assert not [r for r in results if r[1].startswith("FAILED")], "README commands:\n" + report


@pytest.mark.slow
def test_metrics_named_in_the_readme_are_logged(readme_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    work, _ = readme_run
    acc = EventAccumulator(str(work / "logs" / "hand-vae-prior" / "my_experiment"))
    acc.Reload()
    missing = [m for m in METRICS if m not in acc.Tags()["scalars"]]
    assert not missing, missing


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(fenced("python"))))
def test_python_block_runs_as_written(readme_run, index):
    """Each python block, verbatim, in a fresh process in the scratch dir where the bash commands ran:
    outside the repository and without PYTHONPATH, as a user's own script (the package is installed)."""
    work, _ = readme_run
    assert REPO not in work.parents
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(
        [sys.executable, "-c", fenced("python")[index]],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    hint = "\n(is the package installed? `pip install -r requirements.txt` runs `pip install -e .`)"
    assert res.returncode == 0, res.stderr[-3000:] + hint
