"""hand_vae.prior: loading, hypothesis ranking, denoising, sampling and export, for both model types."""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import torch

from hand_vae.checkpoint import CheckpointError, load_checkpoint, load_vae, vae_from_checkpoint
from hand_vae.lightning_module import HandVAELightningModule
from hand_vae.prior import (
    calibrate,
    energy,
    export_energy,
    is_plausible,
    load_prior,
    log_prob,
    plausibility,
    project_to_prior,
    rank_hypotheses,
    sample_poses,
)
from hand_vae.rotations import geodesic_angle_axis_angle, to_joints

MODEL_TYPES = ("standard", "so3")


def held_out(synthetic_poses, n: int, seed: int = 0) -> torch.Tensor:
    """n poses of the test subject (never seen in training), (n, 90)."""
    test = synthetic_poses["test"]
    g = torch.Generator().manual_seed(seed)
    return test[torch.randperm(len(test), generator=g)[:n]]


def noised(x: torch.Tensor, std: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return x + std * torch.randn(x.shape, generator=g)


def write_checkpoint(path, model_type: str, run: dict | None = None) -> HandVAELightningModule:
    """A checkpoint with Lightning's layout (hyper_parameters + ``model.``-prefixed state_dict)."""
    torch.manual_seed(0)
    module = HandVAELightningModule(model_type=model_type, z_dim=4, hidden=16, dropout=0.1, run=run).eval()
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)
    return module


SYNTHETIC_RUN = {"consolidated_dir": None, "splits_dir": None, "seed": 0, "data_counts": None}


# --------------------------------------------------------------------------- load_prior


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_load_prior_rebuilds_the_model(tmp_path, model_type):
    module = write_checkpoint(tmp_path / "m.ckpt", model_type)
    prior = load_prior(tmp_path / "m.ckpt")
    assert not prior.training and prior.model_type == model_type and prior.z_dim == 4
    x = noised(torch.zeros(5, 90), 0.3)
    with torch.no_grad():
        torch.testing.assert_close(prior.energy(x), module.model.energy(x))
        torch.testing.assert_close(prior.energy(x), prior.energy(x))  # eval mode: dropout off


def test_load_prior_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_prior(tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_prior(tmp_path / "junk.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a hand VAE checkpoint"):
        load_prior(tmp_path / "other.ckpt")


def test_a_run_directory_names_its_checkpoints(tmp_path):
    run = tmp_path / "quick_test"
    run.mkdir()
    for name in ("last.ckpt", "hand_vae_epoch_03_val_loss_1.000.ckpt", "best_model.ckpt"):
        write_checkpoint(run / name, "standard")
    expected = f"{run} is a run directory; give one of its checkpoints: {run / 'best_model.ckpt'}, {run / 'last.ckpt'}"
    for load in (load_prior, load_vae, load_checkpoint):
        with pytest.raises(CheckpointError) as err:
            load(run)
        assert str(err.value).startswith(expected) and "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty is a directory with no .ckpt file"):
        load_prior(tmp_path / "empty")


def test_a_synthetic_prior_warns_on_load_and_a_real_one_does_not(tmp_path, caplog):
    write_checkpoint(tmp_path / "synthetic.ckpt", "standard", run=SYNTHETIC_RUN)
    write_checkpoint(
        tmp_path / "real.ckpt", "standard", run={**SYNTHETIC_RUN, "consolidated_dir": "consolidated"}
    )
    write_checkpoint(tmp_path / "splits.ckpt", "standard", run={**SYNTHETIC_RUN, "splits_dir": "splits"})
    with caplog.at_level(logging.INFO):
        load_prior(tmp_path / "synthetic.ckpt")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "trained on the embedded SYNTHETIC dataset" in warnings[0].getMessage()
    assert "--consolidated_dir" in warnings[0].getMessage()
    caplog.clear()
    for name in ("real", "splits"):
        vae, run = load_vae(tmp_path / f"{name}.ckpt")
        assert not vae.training and (run["consolidated_dir"] or run["splits_dir"])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_checkpoint_written_before_the_change_still_loads(tmp_path, caplog):
    """Lightning's full layout, no ``run`` settings and no energy calibration (the oldest format)."""
    module = write_checkpoint(tmp_path / "new.ckpt", "so3")
    hp = {k: v for k, v in module.hparams.items() if k != "run"}
    state = {k: v for k, v in module.state_dict().items() if not k.endswith("energy_quantiles")}
    old = {"epoch": 7, "global_step": 70, "pytorch-lightning_version": "2.5.0", "hyper_parameters": hp}
    torch.save(
        {**old, "state_dict": state, "optimizer_states": [], "lr_schedulers": []}, tmp_path / "old.ckpt"
    )
    with caplog.at_level(logging.INFO):
        prior = load_prior(tmp_path / "old.ckpt")
    assert prior.model_type == "so3" and torch.isnan(prior.energy_quantiles).all()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # unknown data: no claim
    with torch.no_grad():
        torch.testing.assert_close(prior.energy(torch.zeros(3, 90)), module.model.energy(torch.zeros(3, 90)))
    ckpt = load_checkpoint(tmp_path / "old.ckpt")
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if "decoder" not in k}
    with pytest.raises(CheckpointError, match="weights do not match"):
        vae_from_checkpoint(ckpt, "old.ckpt")


class _Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_load_prior_refuses_pickled_code(tmp_path):
    torch.save({"hyper_parameters": {}, "state_dict": {}, "x": _Payload()}, tmp_path / "evil.ckpt")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_prior(tmp_path / "evil.ckpt")


# --------------------------------------------------------------------------- what users hold


def test_the_api_takes_float64_numpy_and_single_poses(trained_models, synthetic_poses):
    prior = trained_models["standard"]
    x = held_out(synthetic_poses, 12)  # (12, 90) float32
    with torch.no_grad():
        expected = prior.energy(x)
    for got in (
        energy(prior, x.double().numpy()),
        energy(prior, x.double()),
        prior.energy(x.double().numpy()),
    ):
        assert got.dtype == torch.float32 and got.device.type == "cpu"
        torch.testing.assert_close(got, expected)
    torch.testing.assert_close(energy(prior, x[3].double().numpy()), expected[3])
    assert log_prob(prior, x.double().numpy(), num_samples=4).dtype == torch.float32
    hyp = x.reshape(3, 4, 90)
    e_np, best_np = rank_hypotheses(prior, hyp.double().numpy())
    e_t, best_t = rank_hypotheses(prior, hyp)
    torch.testing.assert_close(e_np, e_t)
    assert e_np.dtype == torch.float32 and torch.equal(best_np, best_t)
    den = project_to_prior(prior, x.double().numpy(), steps=5)
    assert den.dtype == torch.float32 and den.shape == (12, 90)
    torch.testing.assert_close(den, project_to_prior(prior, x, steps=5))
    one = project_to_prior(prior, x[0].reshape(30, 3).double(), steps=5)
    assert one.shape == (90,) and one.dtype == torch.float32
    calibrated = copy.deepcopy(prior)
    calibrate(calibrated, synthetic_poses["val"])
    p = plausibility(calibrated, x.double().numpy())
    assert p.dtype == torch.float32 and p.shape == (12,)
    torch.testing.assert_close(p, plausibility(calibrated, x))
    assert torch.equal(is_plausible(calibrated, x.double().numpy()), is_plausible(calibrated, x))
    assert is_plausible(calibrated, x[0].double().numpy()).shape == ()


@pytest.mark.parametrize(
    "shape, hint", [((4, 156), "[:, 66:156]"), ((4, 165), "[:, 75:165]"), ((4, 45), "energy_one_hand")]
)
def test_the_api_says_what_to_do_with_a_wrong_shape(trained_models, shape, hint):
    prior = trained_models["standard"]
    for call in (energy, plausibility, is_plausible, project_to_prior):
        with pytest.raises(ValueError) as err:
            call(prior, np.zeros(shape))
        assert hint in str(err.value), (call.__name__, str(err.value))


def test_poses_far_outside_the_calibration_warn_once(trained_models, synthetic_poses, caplog):
    prior = copy.deepcopy(trained_models["standard"])
    calibrate(prior, synthetic_poses["val"])
    with caplog.at_level(logging.WARNING):
        plausibility(prior, held_out(synthetic_poses, 64))
        assert not caplog.records  # held-out poses: no warning
        far = 2.0 * torch.randn(
            64, 90, generator=torch.Generator().manual_seed(0)
        )  # e.g. degrees, not radians
        energy(prior, far)
        plausibility(prior, far)
        is_plausible(prior, far)
    assert len(caplog.records) == 1
    assert "less plausible than 99.9% of validation poses: wrong convention, units or data?" in caplog.text


# --------------------------------------------------------------------------- rank_hypotheses


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_rank_hypotheses_picks_the_clean_pose(trained_models, synthetic_poses, model_type):
    """1 clean + 7 copies with 0.15 rad Gaussian noise per number, 400 held-out poses."""
    B, K, std = 400, 8, 0.15
    clean = held_out(synthetic_poses, B)
    hyp = clean[:, None].repeat(1, K, 1)  # (B, K, 90)
    hyp[:, 1:] = noised(hyp[:, 1:], std)
    g = torch.Generator().manual_seed(2)
    where = torch.randint(0, K, (B,), generator=g)  # move the clean one to a random slot
    hyp[torch.arange(B), where], hyp[:, 0] = hyp[:, 0].clone(), hyp[torch.arange(B), where].clone()
    energies, best = rank_hypotheses(trained_models[model_type], hyp)
    assert energies.shape == (B, K) and best.shape == (B,) and best.dtype == torch.int64
    accuracy = (best == where).float().mean().item()
    assert accuracy >= 0.95, accuracy


def test_rank_hypotheses_layouts_nan_and_bad_shapes(trained_models):
    prior = trained_models["standard"]
    hyp = noised(torch.zeros(3, 4, 90), 0.2)
    e_flat, best_flat = rank_hypotheses(prior, hyp)
    e_joints, best_joints = rank_hypotheses(prior, hyp.reshape(3, 4, 30, 3))
    torch.testing.assert_close(e_flat, e_joints)
    assert torch.equal(best_flat, best_joints)
    with torch.no_grad():
        torch.testing.assert_close(e_flat[1], prior.energy(hyp[1]))
    hyp[:, best_flat[0]] = float("nan")  # a NaN hypothesis is never the best
    _, best_nan = rank_hypotheses(prior, hyp)
    assert (best_nan != best_flat[0]).all()
    for bad in (torch.zeros(4, 90), torch.zeros(2, 3, 89), torch.zeros(2, 3, 15, 3), torch.zeros(0, 3, 90)):
        with pytest.raises(ValueError, match="hypotheses must"):
            rank_hypotheses(prior, bad)


def test_rank_hypotheses_accepts_the_lightning_module():
    module = HandVAELightningModule(z_dim=4, hidden=16).eval()
    energies, _ = rank_hypotheses(module, torch.zeros(2, 3, 90))
    assert energies.shape == (2, 3)
    with pytest.raises(TypeError, match="prior must be"):
        rank_hypotheses(torch.nn.Linear(2, 2), torch.zeros(2, 3, 90))


# --------------------------------------------------------------------------- project_to_prior


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_project_to_prior_lowers_energy_and_error(trained_models, synthetic_poses, model_type):
    prior = trained_models[model_type]
    clean = held_out(synthetic_poses, 48, seed=3)
    noisy = noised(clean, 0.1)
    denoised = project_to_prior(prior, noisy, steps=40, weight=50.0)  # weight = 1 / (2 · 0.1²)
    assert denoised.shape == (48, 90) and not denoised.requires_grad
    with torch.no_grad():
        e_noisy, e_den = prior.energy(noisy).mean(), prior.energy(denoised).mean()
    err_noisy = geodesic_angle_axis_angle(to_joints(noisy), to_joints(clean)).mean()
    err_den = geodesic_angle_axis_angle(to_joints(denoised), to_joints(clean)).mean()
    assert e_den < e_noisy - 5.0, (e_noisy, e_den)
    assert err_den < 0.95 * err_noisy, (err_noisy.rad2deg(), err_den.rad2deg())


def test_project_to_prior_is_batched_differentiable_and_checked(trained_models):
    prior = trained_models["standard"]
    x = noised(torch.zeros(4, 90), 0.2)
    together = project_to_prior(prior, x, steps=10)
    alone = torch.cat([project_to_prior(prior, x[i : i + 1], steps=10) for i in range(4)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(project_to_prior(prior, x.reshape(4, 30, 3), steps=10), together)
    assert torch.equal(project_to_prior(prior, x, steps=0), x)

    leaf = x.clone().requires_grad_(True)
    out = project_to_prior(prior, leaf, steps=5)
    assert out.requires_grad
    out.square().sum().backward()
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0

    for kwargs in ({"steps": -1}, {"weight": 0.0}, {"lr": -1.0}):
        with pytest.raises(ValueError):
            project_to_prior(prior, x, **kwargs)
    with pytest.raises(ValueError, match=r"\(B, 90\) or \(B, 30, 3\)"):
        project_to_prior(prior, torch.zeros(4, 45))


# --------------------------------------------------------------------------- sample_poses


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_sample_poses(trained_models, model_type):
    prior = trained_models[model_type]
    a = sample_poses(prior, 6, torch.Generator().manual_seed(0))
    b = sample_poses(prior, 6, torch.Generator().manual_seed(0))
    assert a.shape == (6, 90) and torch.isfinite(a).all() and torch.equal(a, b)
    with pytest.raises(ValueError, match="positive int"):
        sample_poses(prior, 0)


# --------------------------------------------------------------------------- export_energy

_LOADER = """
import json, sys
import torch
fn = torch.export.load(sys.argv[1]).module()
x = torch.load(sys.argv[2], weights_only=True)
with torch.no_grad():
    e = fn(x)
    e1 = fn(x[:1])
torch.save({"e": e, "e1": e1}, sys.argv[3])
print(json.dumps({"hand_vae": sorted(m for m in sys.modules if m.split(".")[0] == "hand_vae"),
                  "roma": "roma" in sys.modules}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_exported_energy_matches_without_hand_vae(tmp_path, trained_models, synthetic_poses, model_type):
    prior = trained_models[model_type]
    path = export_energy(prior, tmp_path / "sub" / f"{model_type}.pt2")
    assert path.is_file()
    x = torch.cat([held_out(synthetic_poses, 37), torch.zeros(1, 90)])  # B = 38, incl. the zero pose
    torch.save(x, tmp_path / "x.pt")
    # A fresh process, run from tmp_path with no PYTHONPATH, so the repository is not importable.
    proc = subprocess.run(
        [sys.executable, "-c", _LOADER, str(path), "x.pt", "out.pt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = json.loads(proc.stdout.strip().splitlines()[-1])
    assert imported == {"hand_vae": [], "roma": False}
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    with torch.no_grad():
        expected, expected1 = prior.energy(x), prior.energy(x[:1])
    torch.testing.assert_close(out["e"], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out["e1"], expected1, atol=1e-5, rtol=0)  # B = 1: the batch dim is dynamic
