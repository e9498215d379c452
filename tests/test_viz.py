"""Forward kinematics and figure functions of ``hand_vae.viz`` (seconds, CPU, no files but tmp_path)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from hand_vae import anatomy, kinematics
from hand_vae.kinematics import hand_joint_positions, one_hand_fk, template_keypoints
from hand_vae.rotations import mirror_axis_angle, swap_and_mirror_hands
from hand_vae.viz import figures

RIGHT, LEFT = 1, 0
JOINTS_PER_HAND = 15
INDEX_TIP = kinematics.KEYPOINT_NAMES.index("index_tip")
INDEX_KEYPOINTS = [kinematics.KEYPOINT_NAMES.index(f"index{i}") for i in (1, 2, 3)] + [INDEX_TIP]


# --------------------------------------------------------------------------- kinematics


def test_keypoint_layout():
    assert len(kinematics.KEYPOINT_NAMES) == kinematics.NUM_KEYPOINTS == 21
    assert len(kinematics.BONES) == 20
    assert kinematics.KEYPOINT_NAMES[:5] == ("wrist", "index1", "index2", "index3", "index_tip")


def test_zero_pose_gives_template_skeleton():
    pos = hand_joint_positions(np.zeros((2, 90)))
    assert pos.shape == (2, 2, 21, 3)
    np.testing.assert_allclose(pos[0, RIGHT], template_keypoints(mirror=False), atol=1e-12)
    expected_left = template_keypoints(mirror=True) @ kinematics.LEFT_DISPLAY_ROTATION.T
    np.testing.assert_allclose(pos[0, LEFT], expected_left + kinematics.LEFT_HAND_OFFSET, atol=1e-12)
    # The template is the anatomy table itself: index tip = knuckle + summed bone lengths along +x.
    tip = anatomy.KNUCKLE_OFFSETS["index"] + np.array([sum(anatomy.BONE_LENGTHS["index"]), 0.0, 0.0])
    np.testing.assert_allclose(pos[1, RIGHT, INDEX_TIP], tip, atol=1e-12)


def test_index1_flexion_90_degrees_moves_only_the_index():
    pose = torch.zeros(1, 30, 3, dtype=torch.float64)
    pose[0, JOINTS_PER_HAND + 0] = torch.tensor(anatomy.FLEX_AXIS) * (np.pi / 2)  # right index1
    rest = hand_joint_positions(torch.zeros(1, 90))[0]
    bent = hand_joint_positions(pose)[0]
    # By hand: the whole finger (40 + 25 + 22 mm = 87 mm) turns from +x to +y (palm side) about
    # the knuckle, so the tip moves from k + (L, 0, 0) to k + (0, L, 0): a distance of L * sqrt(2).
    L = sum(anatomy.BONE_LENGTHS["index"])
    k = anatomy.KNUCKLE_OFFSETS["index"]
    np.testing.assert_allclose(bent[RIGHT, INDEX_TIP], k + np.array([0.0, L, 0.0]), atol=1e-9)
    assert np.linalg.norm(bent[RIGHT, INDEX_TIP] - rest[RIGHT, INDEX_TIP]) == pytest.approx(L * np.sqrt(2))
    np.testing.assert_allclose(bent[RIGHT, INDEX_KEYPOINTS[0]], k, atol=1e-12)  # the knuckle stays
    others = [i for i in range(21) if i not in INDEX_KEYPOINTS[1:]]
    np.testing.assert_allclose(bent[RIGHT, others], rest[RIGHT, others], atol=1e-12)
    np.testing.assert_allclose(bent[LEFT], rest[LEFT], atol=1e-12)


def test_mirrored_pose_on_reflected_skeleton_gives_reflected_positions():
    g = torch.Generator().manual_seed(0)
    rotvec = 0.6 * torch.randn(4, JOINTS_PER_HAND, 3, generator=g, dtype=torch.float64)
    left_frame = one_hand_fk(rotvec, mirror=True)
    right_of_mirror = one_hand_fk(mirror_axis_angle(rotvec), mirror=False)
    np.testing.assert_allclose(
        left_frame.numpy(), right_of_mirror.numpy() @ kinematics.MIRROR_X.T, atol=1e-12
    )


def test_swapped_and_mirrored_pose_is_the_mirror_image_in_the_display():
    g = torch.Generator().manual_seed(1)
    pose = 0.5 * torch.randn(3, 90, generator=g, dtype=torch.float64)
    pos = hand_joint_positions(pose)
    swapped = hand_joint_positions(swap_and_mirror_hands(pose))
    # The display's left hand is the right hand reflected z -> -z (x-mirror, then 180° about y).
    reflect_z = kinematics.LEFT_DISPLAY_ROTATION @ kinematics.MIRROR_X
    np.testing.assert_allclose(
        swapped[:, LEFT] - kinematics.LEFT_HAND_OFFSET, pos[:, RIGHT] @ reflect_z.T, atol=1e-12
    )


def test_fk_accepts_numpy_float32_and_joint_layout_and_rejects_bad_shapes():
    x = np.random.default_rng(0).normal(0, 0.3, (2, 90)).astype(np.float32)
    np.testing.assert_allclose(hand_joint_positions(x), hand_joint_positions(x.reshape(2, 30, 3)), atol=1e-12)
    with pytest.raises(ValueError, match="90"):
        hand_joint_positions(np.zeros((2, 45)))
    with pytest.raises(ValueError):
        one_hand_fk(torch.zeros(2, 16, 3))


# --------------------------------------------------------------------------- figures


def _labels(fig: Figure) -> str:
    texts = [fig._suptitle.get_text() if fig._suptitle else ""]
    for ax in fig.axes:
        texts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
    return " | ".join(texts)


def test_energy_histogram():
    rng = np.random.default_rng(0)
    e0 = -60 + 5 * rng.standard_normal(50)
    fig = figures.energy_histogram({"held-out": e0, "noise 0.05 rad": e0 + 300, "noise 0.1 rad": e0 + 3000})
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert "nats" in ax.get_xlabel() and ax.get_title()
    assert ax.get_xscale() == "symlog"  # wide range -> symmetric log axis
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("noise 0.1 rad" in t and "100% above" in t for t in texts)
    # Readable symlog axis: round ticks across the held-out bulk and the tails, not just "0, 500".
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert len(ticks) >= 5 and any(t < 0 for t in ticks) and max(ticks) >= 1000, ticks
    narrow = figures.energy_histogram({"held-out": e0, "noise": e0 + 5})
    assert narrow.axes[0].get_xscale() == "linear"
    with pytest.raises(ValueError):
        figures.energy_histogram({})


def test_latent_scatter():
    rng = np.random.default_rng(0)
    mu, energy = rng.standard_normal((40, 6)), rng.standard_normal(40)
    kl = np.array([2.0, 1.0, 0.5, 0.001, 0.002, 0.0])
    fig = figures.latent_scatter(mu, energy, kl)
    assert len(fig.axes) == 3  # scatter, KL bars, colorbar
    assert "PC1" in fig.axes[0].get_xlabel() and "nats" in fig.axes[1].get_ylabel()
    assert "3/6 active" in fig.axes[1].get_title()
    assert any("0.01 nats" in t.get_text() for t in fig.axes[1].get_legend().get_texts())
    assert "nats" in fig.axes[2].get_ylabel()  # colorbar
    assert len(figures.latent_scatter(mu[:, :1], energy, kl[:1]).axes) == 3  # Z = 1 still works
    with pytest.raises(ValueError):
        figures.latent_scatter(mu, energy[:5], kl)


@pytest.mark.parametrize("n_epochs", [1, 4])
def test_loss_breakdown(n_epochs):
    history = {
        "val/recon_nll": list(np.linspace(-10, -60, n_epochs)),
        "val/kl": list(np.linspace(30, 20, n_epochs)),
        "train/beta": list(np.linspace(0.5, 1.0, n_epochs)),
        "val/loss": list(np.linspace(20, -40, n_epochs)),
    }
    fig = figures.loss_breakdown(history, list(range(4, 4 + 5 * n_epochs, 5)))
    ax_nll, ax_kl, ax_beta = fig.axes
    assert "nats" in ax_nll.get_ylabel() and "epoch" in ax_kl.get_xlabel() and "β" in ax_beta.get_ylabel()
    labels = [t.get_text() for t in ax_kl.get_legend().get_texts()]
    assert "β · val KL" in labels and "val KL" in labels
    # The val −ELBO is a pale band under the val recon NLL line, so a small KL cannot hide the NLL.
    lines = {ln.get_label(): (i, ln) for i, ln in enumerate(ax_nll.lines)}
    band, nll = lines["val −ELBO = recon NLL + KL (band)"], lines["val recon NLL"]
    assert band[0] < nll[0] and band[1].get_linewidth() > 2 * nll[1].get_linewidth()
    with pytest.raises(ValueError, match="val/kl"):
        figures.loss_breakdown({"val/kl": [1.0, 2.0]}, [0])


def test_beta_sensitivity():
    rng = np.random.default_rng(0)
    fig = figures.beta_sensitivity(
        -80 + rng.standard_normal(30), 20 + rng.standard_normal(30), [0.1, 0.5, 1, 4]
    )
    assert len(fig.axes) == 2
    title = fig._suptitle.get_text()
    assert "FIXED" in title and "not a retrain" in title
    assert "nats" in fig.axes[0].get_xlabel() and "nats" in fig.axes[1].get_ylabel()
    with pytest.raises(ValueError):
        figures.beta_sensitivity(np.zeros(3), np.zeros(3), [0.0, 1.0])


def test_hand_skeletons_with_and_without_reconstruction():
    poses = np.random.default_rng(0).normal(0, 0.3, (3, 90))
    fig = figures.hand_skeletons(poses, titles=["a", "b", "c"], ncols=2)
    assert len(fig.axes) == 3 and all(ax.name == "3d" for ax in fig.axes)
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c"]
    fig2 = figures.hand_skeletons(poses[:2], recon=poses[:2] + 0.1)
    assert "reconstruction" in _labels(fig2)
    assert any(t.get_text() == "reconstruction: dashed" for t in fig2.legends[0].get_texts())
    # The reconstruction is drawn in the finger colours (not one black line), so a wrong finger shows.
    dashed = [c for c in fig2.axes[0].collections if any(ls[1] for ls in c.get_linestyles())]
    assert len(dashed) == 1
    finger_rgbs = {tuple(np.round(c[:3], 3)) for c in dashed[0].get_colors()}
    assert len(finger_rgbs) == 5
    with pytest.raises(ValueError):
        figures.hand_skeletons(poses, recon=poses[:1])


def test_per_joint_geodesic_error():
    fig = figures.per_joint_geodesic_error(np.arange(30, dtype=float))
    ax = fig.axes[0]
    assert "degrees" in ax.get_ylabel()
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[0] == "L index1" and ticks[-1] == "R thumb3" and len(ticks) == 30
    with pytest.raises(ValueError):
        figures.per_joint_geodesic_error(np.zeros(15))


def test_save_figure_writes_png_and_leaks_nothing(tmp_path):
    before = plt.get_fignums()
    fig = figures.per_joint_geodesic_error(np.ones(30))
    path = figures.save_figure(fig, tmp_path / "sub" / "err.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.get_fignums() == before
