"""The training CLI end to end: outputs, TensorBoard tags, resume, loading, errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from hand_vae.cli.train import build_parser, main

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--z_dim",
    "8",
    "--hidden",
    "64",
    "--batch_size",
    "1024",
    "--limit_train_batches",
    "6",
    "--kl_warmup_epochs",
    "1",
    "--learning_rate",
    "3e-3",
    "--no_plots",
    "--accelerator",
    "cpu",
]
SEED_SCALARS = {"train/loss", "val/loss", "train/recon_nll", "train/kl", "val/energy_mean"}
ALL_SCALARS = SEED_SCALARS | {
    "train/beta",
    "train/recon_sigma",
    "val/recon_nll",
    "val/kl",
    "val/geodesic_deg",
    "val/active_units",
    "test/loss",
    "test/energy_mean",
    "test/geodesic_deg",
}


def scalars(log_dir: Path) -> dict[str, list]:
    """Every scalar event under a TensorBoard run dir (all event files merged, in the order written)."""
    out: dict[str, list] = {}
    for f in sorted(log_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend(acc.Scalars(tag))
    # By wall time: two event files opened in the same second sort by process id, not by age.
    return {tag: sorted(events, key=lambda e: e.wall_time) for tag, events in out.items()}


def test_parser_has_every_seed_flag_with_seed_defaults():
    args = vars(build_parser().parse_args([]))
    seed_defaults = {
        "z_dim": 24,
        "hidden": 256,
        "learning_rate": 3e-4,
        "kl_warmup_epochs": 10,
        "max_epochs": 100,
    }
    for k, v in seed_defaults.items():
        assert args[k] == v, k
    for flag in (
        "model_type",
        "batch_size",
        "consolidated_dir",
        "splits_dir",
        "experiment_name",
        "accelerator",
        "devices",
        "strategy",
        "beta_max",
        "free_bits",
        "precision",
        "num_workers",
        "resume_from_checkpoint",
    ):
        assert flag in args, flag
    assert build_parser().parse_args(["--model_type", "so3"]).model_type == "so3"


def test_batch_size_default_depends_on_model_type():
    from hand_vae.cli.train import parse_settings

    assert parse_settings([]).data.batch_size == 8192
    assert parse_settings(["--model_type", "so3"]).data.batch_size == 4096


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["standard", "so3"])
def test_end_to_end_outputs(model_type, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main(["--model_type", model_type, "--max_epochs", "2", "--experiment_name", "e2e", *TINY])
    assert rc == 0
    ckpt_dir = tmp_path / "checkpoints" / "e2e"
    names = sorted(p.name for p in ckpt_dir.glob("*.ckpt"))
    assert "last.ckpt" in names and "best_model.ckpt" in names
    top = [n for n in names if n.startswith("hand_vae_epoch_")]
    assert top and all(re.fullmatch(r"hand_vae_epoch_\d{2}_val_loss_-?\d+\.\d{3}\.ckpt", n) for n in top), (
        names
    )
    tags = scalars(tmp_path / "logs" / "hand-vae-prior" / "e2e")
    assert ALL_SCALARS <= set(tags), sorted(ALL_SCALARS - set(tags))
    # The starting model is validated at step 0 (a checkpoint candidate), then once per epoch.
    assert [e.step for e in tags["val/loss"]][0] == 0 and len(tags["val/loss"]) == 3
    # Checkpoints are plain data: they load with weights_only=True.
    ckpt = torch.load(ckpt_dir / "best_model.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["model_type"] == model_type


@pytest.mark.slow
def test_resume_continues_the_same_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--max_epochs", "2", "--experiment_name", "res", *TINY]) == 0
    last = tmp_path / "checkpoints" / "res" / "last.ckpt"
    step_before = torch.load(last, weights_only=True)["global_step"]
    capsys.readouterr()
    assert main(["--resume_from_checkpoint", str(last), "--max_epochs", "4"]) == 0
    # The summary names the file the resumed run wrote, and that file holds the new step.
    named = re.search(r"^  last:\s+(\S+)$", capsys.readouterr().out, flags=re.M).group(1)
    assert Path(named).resolve() == last.resolve()
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["epoch"] == 3 and ckpt["global_step"] == 2 * step_before
    log_dir = tmp_path / "logs" / "hand-vae-prior" / "res"
    assert len(list(log_dir.glob("events.out.tfevents.*"))) >= 2  # same dir, a new event file
    steps = [e.step for e in scalars(log_dir)["val/loss"]]
    # The start (step 0) and 2 epochs, then 2 more epochs: a resume does not re-validate a start.
    assert len(steps) == 5 and steps[0] == 0 and steps == sorted(steps)
    # Tiny settings (hidden 64, z 8) came from the checkpoint, not the defaults.
    assert ckpt["hyper_parameters"]["hidden"] == 64


@pytest.mark.slow
def test_trained_model_loads_in_fresh_process_and_scores(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--max_epochs", "3", "--experiment_name", "load", *TINY]) == 0
    code = f"""
import sys, torch
sys.path.insert(0, {str(REPO)!r})
from train_hand_vae_lightning import HandVAELightningModule
from hand_vae.data.synthetic import default_splits, stack_poses
model = HandVAELightningModule.load_from_checkpoint('checkpoints/load/best_model.ckpt')
model.eval()
x = torch.from_numpy(stack_poses(default_splits()['test'])[0][::20])
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    e = model.model.energy(x)
    noisy = model.model.energy(x + 0.1 * torch.randn(x.shape, generator=g))
assert e.shape == (x.shape[0],) and torch.isfinite(e).all(), e
assert e.mean() < noisy.mean(), (e.mean(), noisy.mean())
print('OK', e.mean().item(), noisy.mean().item())
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-2000:]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--experiment_name", "../escape"], "plain name"),
        (["--experiment_name", "a/b"], "plain name"),
        (["--resume_from_checkpoint", "nope/last.ckpt"], "no such checkpoint"),
        (["--consolidated_dir", "x", "--splits_dir", "y"], "not both"),
        (["--z_dim", "0"], "--z_dim must be >= 1"),
        (["--consolidated_dir", "does_not_exist"], "does_not_exist"),
        (["--threads", "-1"], "--threads must be >= 0"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(argv, message, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    assert main(argv + ["--max_epochs", "1", "--no_plots"]) == 2
    assert message in caplog.text
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0].getMessage()
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "logs").exists()  # nothing left behind


def test_resume_with_conflicting_model_shape_is_an_error(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    from hand_vae.lightning_module import HandVAELightningModule

    module = HandVAELightningModule(z_dim=8, hidden=32, run={"experiment_name": "x"})
    ckpt = tmp_path / "fake.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, ckpt)
    assert main(["--resume_from_checkpoint", str(ckpt), "--model_type", "so3"]) == 2
    assert "different model shape" in caplog.text and "--model_type so3" in caplog.text
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["--resume_from_checkpoint", str(bad)]) == 2
    assert "not a readable checkpoint" in caplog.text


def test_unknown_precision_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["--precision", "8-bit"])
    assert exc.value.code == 2 and "invalid choice: '8-bit'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains_on_cpu(precision, tmp_path, monkeypatch):
    """Autocast on CPU; fp16 also exercises GradScaler + gradient clipping (needs a non-fused AdamW)."""
    monkeypatch.chdir(tmp_path)
    argv = ["--precision", precision, "--max_epochs", "1", "--experiment_name", "amp", *TINY]
    assert main(argv + ["--limit_val_batches", "2"]) == 0
    ckpt = torch.load(tmp_path / "checkpoints" / "amp" / "last.ckpt", weights_only=True)
    # Every weight is finite (the energy-calibration buffer is NaN until it is fitted).
    assert all(torch.isfinite(v).all() for k, v in ckpt["state_dict"].items() if "energy_quantiles" not in k)


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    """2-process gloo DDP through the real script: one set of checkpoints, a full run."""
    cmd = [
        sys.executable,
        str(REPO / "train_hand_vae_lightning.py"),
        "--max_epochs",
        "2",
        "--experiment_name",
        "ddp",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        *TINY,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints" / "ddp").glob("*.ckpt"))
    assert "last.ckpt" in ckpts and "best_model.ckpt" in ckpts
    assert res.stdout.count("Run summary") == 1
    ckpt = torch.load(tmp_path / "checkpoints" / "ddp" / "last.ckpt", weights_only=True)
    # 6 batches of 1024 per rank per epoch: each rank did its own share, so 6 steps per epoch.
    assert ckpt["global_step"] == 12


def _digest(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_second_fresh_run_never_touches_the_first(tmp_path):
    """Through the real script: a quiet start, one run per name, --overwrite starts again."""
    cmd = [sys.executable, str(REPO / "train_hand_vae_lightning.py"), "--max_epochs", "1", *TINY]
    cmd += ["--limit_val_batches", "2", "--no_progress_bar", "--experiment_name", "same"]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "litlogger" not in first.stderr and "Trainable params" not in first.stderr  # quiet start-up
    assert "This run writes checkpoints/same/ and logs/hand-vae-prior/same/" in first.stderr
    before = _digest(tmp_path)
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    errors = [line for line in again.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, again.stderr[-3000:]
    for way in (
        "--resume_from_checkpoint checkpoints/same/last.ckpt",
        "another --experiment_name",
        "--overwrite",
    ):
        assert way in errors[0], errors[0]
    assert _digest(tmp_path) == before  # the first run's files are untouched
    fresh = subprocess.run(
        [*cmd, "--overwrite", "--verbose"], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert (
        "deleted the earlier run's checkpoints/same/" in fresh.stderr and "Trainable params" in fresh.stderr
    )
    names = sorted(p.name for p in (tmp_path / "checkpoints" / "same").iterdir())
    assert not any("-v1" in n for n in names), names
    assert (
        len(list((tmp_path / "logs" / "hand-vae-prior" / "same").glob("events.out.tfevents.*"))) == 2
    )  # fit + test
    # The summary names the files this run wrote, and says what the test split is.
    assert "last:            " + str(tmp_path / "checkpoints" / "same" / "last.ckpt") in fresh.stdout
    assert "splits:          val and test are two more synthetic subjects" in fresh.stdout


def test_consolidated_flag_on_a_splits_dir_is_read_as_what_it_is(tmp_path, monkeypatch, caplog):
    from hand_vae.data.layouts import write_splits_dir
    from hand_vae.data.synthetic import default_splits

    monkeypatch.chdir(tmp_path)
    write_splits_dir(
        tmp_path / "sp",
        default_splits(0, num_subjects=3, sequences_per_subject=2, frames_per_sequence=50),
        {},
    )
    argv = [
        "--consolidated_dir",
        "sp",
        "--max_epochs",
        "1",
        "--batch_size",
        "64",
        "--hidden",
        "16",
        "--z_dim",
        "2",
    ]
    assert (
        main([*argv, "--no_plots", "--no_progress_bar", "--accelerator", "cpu", "--experiment_name", "x"])
        == 0
    )
    assert (
        "sp holds the splits layout (from create_datamodule.py): reading it as --splits_dir sp" in caplog.text
    )
    assert "Data: splits dir sp" in caplog.text
    run = torch.load(tmp_path / "checkpoints" / "x" / "last.ckpt", weights_only=True)["hyper_parameters"][
        "run"
    ]
    assert run["splits_dir"] == "sp" and run["consolidated_dir"] is None


def test_cpu_threads_rule_and_override():
    from hand_vae.settings import SMALL_BATCH_ROWS, available_cores, cpu_threads

    assert cpu_threads(0, 64) == 1 and cpu_threads(0, SMALL_BATCH_ROWS - 1) == 1
    assert cpu_threads(0, 8192) == max(1, available_cores() - 1)
    assert cpu_threads(0, 8192, processes=2) == max(1, (available_cores() - 1) // 2)
    assert cpu_threads(3, 64) == 3  # --threads wins


def test_the_summary_says_what_the_val_and_test_splits_are():
    from hand_vae.cli.train import describe_splits

    counts = {"train": {"sequences": 8}, "val": {"sequences": 1}, "test": {"sequences": 2}}
    built = {"source": "files", "counts": counts, "args": {"split_scheme": "amass"}}
    assert describe_splits(built).startswith(
        "val 1 sequences and test 2 sequences held out by --split_scheme amass"
    )
    for synthetic in (None, {"source": "synthetic", "counts": counts, "args": {"split_scheme": "ratio"}}):
        assert "two more synthetic subjects" in describe_splits(synthetic)


# --------------------------------------------------------------------------- resume (issue 21, item 7)


def _fake_checkpoint(path: Path, epochs_done: int, run: dict | None = None) -> Path:
    """A checkpoint file as the trainer writes it, without training: weights, hparams, loop state."""
    from hand_vae.lightning_module import HandVAELightningModule

    module = HandVAELightningModule(
        z_dim=8, hidden=32, run={"experiment_name": "x", "max_epochs": 2, **(run or {})}
    )
    progress = {
        "ready": epochs_done,
        "completed": epochs_done - 1,
        "started": epochs_done,
        "processed": epochs_done,
    }
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "epoch": epochs_done - 1,
                "loops": {"fit_loop": {"epoch_progress": {"current": progress, "total": progress}}}}, path)  # fmt: skip
    return path


def _one_error(caplog) -> str:
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    return errors[0]


def test_resume_of_a_finished_run_says_so_and_names_max_epochs(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    ckpt = _fake_checkpoint(tmp_path / "last.ckpt", epochs_done=2)
    assert main(["--resume_from_checkpoint", str(ckpt)]) == 2
    error = _one_error(caplog)
    assert "has already trained 2 epochs (--max_epochs 2)" in error and "--max_epochs 4" in error
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "logs").exists()


@pytest.mark.parametrize(
    "flags,shown",
    [
        (["--consolidated_dir", "elsewhere"], "--consolidated_dir elsewhere (checkpoint: None)"),
        (["--seed", "3"], "--seed 3 (checkpoint: 0)"),
        (["--dropout", "0.1"], "--dropout 0.1 (checkpoint: 0.0)"),
    ],
)
def test_resume_refuses_flags_it_cannot_apply(flags, shown, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    ckpt = _fake_checkpoint(tmp_path / "last.ckpt", epochs_done=1)
    assert main(["--resume_from_checkpoint", str(ckpt), *flags, "--max_epochs", "5"]) == 2
    error = _one_error(caplog)
    assert shown in error and "another --experiment_name" in error


def test_resume_merge_applies_what_it_can(tmp_path):
    from hand_vae.cli.train import parse_settings

    ckpt = _fake_checkpoint(tmp_path / "last.ckpt", epochs_done=1, run={"batch_size": 1024, "no_plots": True})
    s = parse_settings(["--resume_from_checkpoint", str(ckpt), "--learning_rate", "0.01", "--batch_size", "256",
                        "--max_epochs", "7", "--z_dim", "8"])  # fmt: skip
    assert (s.optim.learning_rate, s.data.batch_size, s.length.max_epochs) == (0.01, 256, 7)
    assert (s.model.z_dim, s.model.hidden, s.run.no_plots, s.run.experiment_name) == (8, 32, True, "x")


@pytest.mark.slow
def test_resume_applies_learning_rate_and_batch_size_quietly(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    assert main(["--max_epochs", "1", "--experiment_name", "lr", *TINY]) == 0
    assert "starting from the val-tuned multivariate Student-t" in caplog.text
    caplog.clear()
    last = tmp_path / "checkpoints" / "lr" / "last.ckpt"
    argv = [
        "--resume_from_checkpoint",
        str(last),
        "--max_epochs",
        "2",
        "--learning_rate",
        "1e-3",
        "--batch_size",
        "512",
    ]
    assert main(argv) == 0
    assert "starting from" not in caplog.text  # the resumed model keeps its whitening
    assert "WARNING" not in caplog.text
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == 1e-3
    assert (
        ckpt["hyper_parameters"]["learning_rate"] == 1e-3
        and ckpt["hyper_parameters"]["run"]["batch_size"] == 512
    )


def test_lightning_notices_that_do_not_apply_are_silenced():
    import warnings

    from pytorch_lightning.utilities.rank_zero import rank_zero_warn

    from hand_vae.training import quiet_lightning

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_lightning()
        rank_zero_warn("Checkpoint directory checkpoints/x exists and is not empty.")
        rank_zero_warn("something else")
    assert [str(w.message) for w in seen] == ["something else"]


def test_a_checkpoint_written_before_typed_settings_loads_and_resumes(tmp_path):
    """The hparams layout of checkpoints written before hand_vae.settings: model and optimiser fields at
    the top level, everything else in "run" (limits as text, a key that no longer exists)."""
    from hand_vae.cli.train import parse_settings
    from hand_vae.lightning_module import HandVAELightningModule
    from hand_vae.settings import Settings

    module = HandVAELightningModule(z_dim=8, hidden=32, whiten=False)
    run = {"consolidated_dir": None, "splits_dir": None, "batch_size": 1024, "num_workers": 0,
           "mirror_augment": True, "data_on_device": "auto", "verify_data": False, "experiment_name": "old",
           "seed": 0, "checkpoint_dir": "checkpoints", "log_dir": "logs", "accelerator": "cpu", "devices": "auto",
           "num_nodes": 1, "strategy": "auto", "precision": "32-true", "compile": False, "gradient_clip_val": 5.0,
           "save_top_k": 3, "plot_every_n_epochs": 5, "no_plots": True, "no_progress_bar": False,
           "log_every_n_steps": 50, "threads": 0, "max_epochs": 3, "early_stopping_patience": 0,
           "limit_train_batches": "6", "limit_val_batches": "0.5", "data_meta_sha256": None, "data_counts": None,
           "a_setting_since_removed": 1}  # fmt: skip
    hp = {**{k: v for k, v in dict(module.hparams).items() if k != "run"}, "run": run}
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hp, "epoch": 0,
                "pytorch-lightning_version": "2.6.0"}, path)  # fmt: skip
    loaded = HandVAELightningModule.load_from_checkpoint(path)
    assert loaded.model.z_dim == 8 and loaded.run_cfg.gradient_clip_val == 5.0
    s = Settings.from_hparams(torch.load(path, weights_only=True)["hyper_parameters"])
    assert (s.length.limit_train_batches, s.length.limit_val_batches, s.run.cuda_graphs) == (6, 0.5, "auto")
    resumed = parse_settings(["--resume_from_checkpoint", str(path)])
    assert (resumed.run.experiment_name, resumed.data.batch_size, resumed.model.whiten) == (
        "old",
        1024,
        False,
    )


# --------------------------------------------------------------------------- start-up (issue 21, item 10)


@pytest.mark.parametrize(
    "script,argv,absent",
    [
        (
            "train_hand_vae_lightning.py",
            ["--help"],
            ("torch", "pytorch_lightning", "matplotlib", "tensorboard"),
        ),
        (
            "train_hand_vae_lightning.py",
            ["--z_dim", "x"],
            ("torch", "pytorch_lightning", "matplotlib", "tensorboard"),
        ),
        ("create_consolidated_npz.py", ["--help"], ("torch", "roma", "pytorch_lightning", "matplotlib")),
        ("create_datamodule.py", ["--bogus"], ("torch", "roma", "pytorch_lightning", "matplotlib")),
        ("hand_vae.evaluate", ["--help"], ("roma", "pytorch_lightning", "matplotlib", "sklearn")),
        ("hand_vae.fit", ["--help"], ("roma", "pytorch_lightning", "matplotlib")),
        ("hand_vae.calibration", ["--bogus"], ("roma", "pytorch_lightning", "matplotlib")),
    ],
)
def test_help_and_bad_flags_answer_before_heavy_imports(script, argv, absent):
    """Every command answers --help and a bad flag before loading what only its work needs."""
    run = (f"runpy.run_path({str(REPO / script)!r}, run_name='__main__')" if script.endswith(".py")
           else f"runpy.run_module({script!r}, run_name='__main__', alter_sys=True)")  # fmt: skip
    code = (f"import sys, runpy; sys.argv = {[script, *argv]!r}\n"
            f"try:\n    {run}\n"
            "except SystemExit as e:\n    code = e.code\n"
            f"print(code, [m for m in {absent!r} if m in sys.modules])")  # fmt: skip
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.stdout.strip().splitlines()[-1] == f"{0 if argv == ['--help'] else 2} []", (
        res.stdout + res.stderr
    )


# --------------------------------------------------------------------------- small data (issue 21, item 8)


@pytest.mark.parametrize(
    "counts,expected",
    [
        ({"train": 26, "val": 100, "test": 40}, "train has fewer poses (26) than val (100)"),
        ({"train": 500, "val": 50, "test": 50}, "train has only 500 poses (< 1000)"),
        ({"train": 5000, "val": 500, "test": 500}, None),
    ],
)
def test_small_or_lopsided_train_split_is_warned_in_one_line(counts, expected, caplog):
    from hand_vae.training import warn_small_data

    warn_small_data(counts)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ([] if expected is None else warnings[:1]) and len(warnings) == (expected is not None)
    if expected:
        assert expected in warnings[0] and "\n" not in warnings[0]


def test_a_checkpoint_from_before_the_student_t_default_loads_as_what_it_was(tmp_path):
    """Checkpoints written before ``likelihood`` / ``local_sigma`` existed were Gaussian with a global σ:
    every load path rebuilds that model (settings.LEGACY_MODEL), not today's defaults."""
    from hand_vae.checkpoint import vae_from_checkpoint
    from hand_vae.lightning_module import HandVAELightningModule
    from hand_vae.settings import Settings

    old = HandVAELightningModule(z_dim=4, hidden=16, likelihood="gaussian", local_sigma=False)
    hp = {k: v for k, v in dict(old.hparams).items() if k not in ("likelihood", "local_sigma")}
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": old.state_dict(), "hyper_parameters": hp, "epoch": 0,
                "pytorch-lightning_version": "2.6.0"}, path)  # fmt: skip
    x = torch.randn(5, 90) * 0.2
    for cfg in (
        HandVAELightningModule.load_from_checkpoint(path).model.cfg,
        vae_from_checkpoint(torch.load(path, weights_only=True)).cfg,
        Settings.from_hparams(hp).model,
    ):
        assert (cfg.likelihood, cfg.local_sigma) == ("gaussian", False)
    loaded = HandVAELightningModule.load_from_checkpoint(path).model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.energy(x), old.model.eval().energy(x))
