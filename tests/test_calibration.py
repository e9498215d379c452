"""Calibrated plausibility: stored validation-energy quantiles, the score, and the --calibrate CLI."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from hand_vae.cli.calibrate import main
from hand_vae.lightning_module import HandVAELightningModule
from hand_vae.models.quantiles import (
    QUANTILE_LEVELS,
    STATE_KEY,
    NotCalibratedError,
    calibrate,
    energy_quantiles,
    plausibility_from_quantiles,
)
from hand_vae.prior import is_plausible, load_prior, plausibility


def test_quantiles_match_numpy_and_drop_nan():
    e = torch.randn(5001, generator=torch.Generator().manual_seed(0)) * 10
    with_nan = torch.cat([e, torch.full((7,), float("nan"))])
    q = energy_quantiles(with_nan)
    assert q.shape == (1001,) and q.dtype == torch.float32
    np.testing.assert_allclose(
        q.numpy(), np.quantile(e.double().numpy(), QUANTILE_LEVELS.numpy()), rtol=1e-6, atol=1e-5
    )
    with pytest.raises(ValueError, match="non-NaN"):
        energy_quantiles(torch.full((3,), float("nan")))


def test_plausibility_is_monotone_bounded_and_matches_the_empirical_cdf():
    val = torch.randn(20000, generator=torch.Generator().manual_seed(1))
    q = energy_quantiles(val)
    e = torch.linspace(-6, 6, 2001)
    p = plausibility_from_quantiles(e, q)
    assert (p[1:] <= p[:-1]).all() and p[0] == 1.0 and p[-1] == 0.0
    # Against the empirical share of validation energies above e (an independent count).
    share_above = (val[None, :] > e[:, None]).float().mean(1)
    assert (p - share_above).abs().max() < 2e-3
    assert plausibility_from_quantiles(torch.tensor([float("nan")]), q).item() == 0.0
    q[10:20] = q[10]  # ties (a flat run of quantiles) stay monotone and finite
    p_tied = plausibility_from_quantiles(e, q)
    assert torch.isfinite(p_tied).all() and (p_tied[1:] <= p_tied[:-1]).all()


def test_about_one_percent_of_held_out_validation_poses_fall_below_the_001_level(
    trained_models, synthetic_poses
):
    model = copy.deepcopy(trained_models["standard"])
    val = synthetic_poses["val"]
    calibrate(model, val[0::2])  # calibrate on half of the validation subject, score the other half
    p = plausibility(model, val[1::2])
    below = (p < 0.01).float().mean().item()
    assert 0.004 < below < 0.02, below
    passing = is_plausible(model, val[1::2], level=0.99).float().mean().item()
    assert 0.98 < passing < 0.996, passing
    with torch.no_grad():  # the score orders poses exactly like the energy
        e = model.energy(val[1::2][:500])
    order = e.argsort()
    assert (p[:500][order][1:] <= p[:500][order][:-1]).all()


def test_uncalibrated_model_names_the_fix(trained_models):
    model = copy.deepcopy(trained_models["standard"])
    model.energy_quantiles.fill_(float("nan"))
    with pytest.raises(NotCalibratedError, match="python -m hand_vae.calibration --checkpoint"):
        plausibility(model, torch.zeros(2, 90))
    with pytest.raises(NotCalibratedError, match="hand_vae.calibration"):
        is_plausible(model, torch.zeros(2, 90))


def old_checkpoint(path, model) -> None:
    """A Lightning-layout checkpoint from before calibration: no energy_quantiles key."""
    module = HandVAELightningModule(**model.cfg.to_dict())  # the same model settings
    module.model.load_state_dict(model.state_dict())
    state = {k: v for k, v in module.state_dict().items() if k != STATE_KEY}
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": state}, path)


def test_calibrate_cli_adds_quantiles_to_an_old_checkpoint(tmp_path, trained_models, synthetic_poses, capsys):
    old_checkpoint(tmp_path / "old.ckpt", trained_models["standard"])
    prior = load_prior(tmp_path / "old.ckpt")  # a missing key loads as "not calibrated"
    assert torch.isnan(prior.energy_quantiles).all()
    assert main(["--checkpoint", str(tmp_path / "old.ckpt"), "--output", str(tmp_path / "new.ckpt")]) == 0
    assert "calibrated on 6000 poses (val split" in capsys.readouterr().out
    calibrated = load_prior(tmp_path / "new.ckpt")
    expected = calibrate(copy.deepcopy(prior), synthetic_poses["val"])  # the run's own val split
    torch.testing.assert_close(calibrated.energy_quantiles, expected)
    assert torch.isnan(load_prior(tmp_path / "old.ckpt").energy_quantiles).all()  # --output: source untouched
    assert plausibility(calibrated, synthetic_poses["val"][:10]).shape == (10,)
    assert main(["--checkpoint", str(tmp_path / "missing.ckpt")]) == 2
