"""Fitting poses to 3D keypoints (hand_vae.fit; its CLI in test_fit_cli.py); few frames and steps, so seconds each."""

from __future__ import annotations

import copy

import pytest
import torch

from hand_vae.evaluation.fit_bench import GaussianEnergy, corrupt, make_targets
from hand_vae.fit import fit_to_joints
from hand_vae.kinematics import hands_fk
from hand_vae.rotations import geodesic_angle_axis_angle, to_joints

pytestmark = pytest.mark.usefixtures("one_thread")


def targets(synthetic_poses, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n held-out poses (test subject) and their keypoints under random rigid transforms."""
    test = synthetic_poses["test"]
    g = torch.Generator().manual_seed(seed)
    poses = test[torch.randperm(len(test), generator=g)[:n]]
    return poses, make_targets(poses, g)


def mpjpe_mm(pred: torch.Tensor, true: torch.Tensor, where: torch.Tensor | None = None) -> float:
    d = (pred - true).norm(dim=-1) * 1000
    return float(d.mean() if where is None else d[where].mean())


@pytest.fixture(scope="module")
def vae(trained_models):
    """The tiny standard VAE, shared: fitting must leave its weights (and their .grad) alone."""
    return trained_models["standard"]


@pytest.mark.parametrize("with_prior", [False, True])
def test_clean_full_keypoints_recover_the_pose(synthetic_poses, vae, with_prior):
    poses, y = targets(synthetic_poses, 8)
    res = fit_to_joints(vae if with_prior else None, y, steps=250)
    assert res.poses.shape == (8, 90) and res.joints.shape == (8, 2, 21, 3)
    assert mpjpe_mm(res.joints, y) < 1.0
    geo = torch.rad2deg(geodesic_angle_axis_angle(to_joints(res.poses), to_joints(poses))).mean()
    # Keypoints do not see a joint's twist about its own bone: without a prior it stays unresolved.
    assert geo < (5.0 if with_prior else 30.0), geo
    assert res.converged.all() and res.hand_present.all()
    torch.testing.assert_close(
        res.joint_error_mm.mean(), torch.tensor(mpjpe_mm(res.joints, y)), rtol=1e-4, atol=1e-4
    )
    assert torch.isfinite(res.energy).all() == with_prior


def test_vae_prior_fills_in_two_hidden_fingers_better_than_none(synthetic_poses, vae):
    poses, clean = targets(synthetic_poses, 24, seed=1)
    observed, visible, sigma = corrupt(clean, "partial", torch.Generator().manual_seed(0))
    init = synthetic_poses["train"].mean(0, keepdim=True)
    errors = {}
    for name, prior in (("none", None), ("vae", vae)):
        res = fit_to_joints(prior, observed, visible, joint_sigma=sigma, steps=200, init=init)
        errors[name] = mpjpe_mm(res.joints, clean, ~visible)
        assert mpjpe_mm(res.joints, clean, visible) < 2.0
    assert errors["vae"] < 0.8 * errors["none"], errors


def test_gaussian_prior_and_latent_space_run(synthetic_poses, vae):
    from hand_vae.evaluation.baselines import GaussianPrior

    _, y = targets(synthetic_poses, 4)
    gauss = GaussianEnergy(GaussianPrior().fit(synthetic_poses["train"][::10]))
    res = fit_to_joints(gauss, y, steps=150)
    assert torch.isfinite(res.energy).all() and res.joint_error_mm.max() < 3.0, res.joint_error_mm
    latent = fit_to_joints(vae, y, steps=50, space="latent")
    torch.testing.assert_close(latent.poses, vae.decode(vae.encode(latent.poses)[0]), atol=0.5, rtol=0)
    assert torch.isfinite(latent.joint_error_mm).all()


def standin_fk(poses: torch.Tensor) -> torch.Tensor:
    """A different skeleton: 15% larger, the wrist 1 cm off the origin, keypoints in another order."""
    order = [0] + [k for f in (4, 0, 1, 3, 2) for k in range(1 + 4 * f, 5 + 4 * f)]  # thumb first
    return (1.15 * hands_fk(poses) + torch.tensor([0.01, 0.0, 0.0]))[:, :, order]


def test_plug_in_forward_kinematics(synthetic_poses):
    poses, _ = targets(synthetic_poses, 6, seed=2)
    y = standin_fk(poses)
    res = fit_to_joints(None, y, forward_kinematics=standin_fk, steps=250)
    assert mpjpe_mm(res.joints, y) < 1.0
    # The default skeleton cannot explain these keypoints: the plug-in is what made the fit work.
    assert fit_to_joints(None, y, steps=100).joint_error_mm.mean() > 10.0
    # A free scale per hand recovers the size difference with the default skeleton, wrist aligned.
    scaled = 1.15 * hands_fk(poses)
    res_scale = fit_to_joints(None, scaled, steps=250, fit_scale=True)
    assert mpjpe_mm(res_scale.joints, scaled) < 1.0
    # Within 3%: a flexed finger also looks shorter, so scale and flexion trade off a little.
    torch.testing.assert_close(res_scale.scale, torch.full((6, 2), 1.15), atol=0.03, rtol=0)


def test_frames_with_one_hand(synthetic_poses, vae):
    poses, y = targets(synthetic_poses, 6, seed=3)
    y[::2, 0] = float("nan")  # left hand absent in frames 0, 2, 4
    mask = torch.ones(6, 2, 21, dtype=torch.bool)
    mask[1, 1] = False  # right hand masked out in frame 1
    res = fit_to_joints(vae, y, mask=mask, steps=200)
    present = torch.tensor([[False, True], [True, False]] + [[False, True], [True, True]] * 2)
    assert torch.equal(res.hand_present, present)
    assert torch.isnan(res.joints[~present]).all() and torch.isfinite(res.joints[present]).all()
    assert torch.isfinite(res.poses).all() and torch.isfinite(res.energy).all()
    assert mpjpe_mm(res.joints[present], y[present]) < 1.5


def test_fit_takes_float64_numpy_keypoints(synthetic_poses, vae):
    """Keypoints as a user holds them (numpy float64): the same fit, float32 CPU tensors back."""
    _, y = targets(synthetic_poses, 2, seed=6)
    y[0, 1, 5:9] = float("nan")
    mask = torch.ones(2, 2, 21, dtype=torch.bool)
    expected = fit_to_joints(vae, y, mask=mask, steps=20)
    got = fit_to_joints(vae, y.double().numpy(), mask=mask.numpy(), steps=20)
    for name in ("poses", "joints", "transl", "joint_error_mm", "energy"):
        value = getattr(got, name)
        assert value.dtype == torch.float32 and value.device.type == "cpu", name
        torch.testing.assert_close(value, getattr(expected, name), equal_nan=True, atol=1e-4, rtol=1e-4)


def test_frames_are_fitted_independently(synthetic_poses, vae):
    _, y = targets(synthetic_poses, 3, seed=4)
    model = copy.deepcopy(vae)
    for p in model.parameters():
        p.grad = None
    before = copy.deepcopy(model.state_dict())
    together = fit_to_joints(model, y, steps=20)
    assert all(p.grad is None for p in model.parameters())  # no gradient leaks into the prior
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], equal_nan=True)
    alone = [fit_to_joints(vae, y[i : i + 1], steps=20) for i in range(3)]
    torch.testing.assert_close(together.poses, torch.cat([a.poses for a in alone]), atol=1e-4, rtol=0)


def test_fit_checks_its_input(vae):
    y = torch.zeros(2, 2, 21, 3)
    with pytest.raises(ValueError, match=r"\(T, 2, 21, 3\)"):
        fit_to_joints(None, torch.zeros(2, 21, 3))
    with pytest.raises(ValueError, match="mask must have shape"):
        fit_to_joints(None, y, mask=torch.ones(2, 21))
    with pytest.raises(ValueError, match="needs a hand VAE"):
        fit_to_joints(None, y, space="latent")
    with pytest.raises(ValueError, match="space must be"):
        fit_to_joints(vae, y, space="z")
    with pytest.raises(ValueError, match="joint_sigma > 0"):
        fit_to_joints(None, y, joint_sigma=0.0)
    with pytest.raises(TypeError, match="prior must be"):
        fit_to_joints(torch.nn.Linear(2, 2), y)
