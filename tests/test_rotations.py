"""Rotation maths against scipy (float64), edge cases at 0 and near π, and gradients."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from hand_vae import rotations as rot


def _rotvecs(n: int, seed: int = 0) -> np.ndarray:
    """Random rotation vectors plus edge cases: zero, tiny, and angles just below π."""
    rng = np.random.default_rng(seed)
    axes = rng.normal(size=(n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = rng.uniform(0.0, math.pi, size=n)
    angles[:6] = [0.0, 1e-9, 1e-5, math.pi - 1e-3, math.pi - 1e-6, 1.0]
    return axes * angles[:, None]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_axis_angle_to_matrix_matches_scipy(dtype):
    v = _rotvecs(200)
    ours = rot.axis_angle_to_matrix(torch.tensor(v, dtype=dtype)).double().numpy()
    ref = Rotation.from_rotvec(v).as_matrix()
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    np.testing.assert_allclose(ours, ref, atol=tol)


def test_matrix_to_axis_angle_matches_scipy():
    v = _rotvecs(200, seed=1)
    R = Rotation.from_rotvec(v).as_matrix()
    ours = rot.matrix_to_axis_angle(torch.tensor(R)).numpy()
    ref = Rotation.from_matrix(R).as_rotvec()
    # Near π the axis sign is ambiguous (v and −v are the same rotation): compare as rotations too.
    np.testing.assert_allclose(Rotation.from_rotvec(ours).as_matrix(), R, atol=1e-9)
    far = np.linalg.norm(v, axis=1) < math.pi - 1e-2
    np.testing.assert_allclose(ours[far], ref[far], atol=1e-9)


def test_6d_round_trip_and_zhou_layout():
    R = torch.tensor(Rotation.random(100, random_state=3).as_matrix())
    d6 = rot.matrix_to_6d(R)
    np.testing.assert_allclose(d6[:, :3].numpy(), R[:, :, 0].numpy())  # first column
    np.testing.assert_allclose(rot.rot6d_to_matrix(d6).numpy(), R.numpy(), atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_random_6d_gives_proper_rotations(dtype):
    g = torch.Generator().manual_seed(0)
    R = rot.rot6d_to_matrix(torch.randn(1000, 6, generator=g, dtype=dtype) * 5)
    eye = torch.eye(3, dtype=dtype).expand_as(R)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(R.transpose(-1, -2) @ R, eye, atol=tol, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(1000, dtype=dtype), atol=tol, rtol=0)


def test_geodesic_angle_matches_scipy():
    a, b = _rotvecs(300, seed=4), _rotvecs(300, seed=5)
    ref = (Rotation.from_rotvec(a).inv() * Rotation.from_rotvec(b)).magnitude()
    ours = rot.geodesic_angle_axis_angle(torch.tensor(a), torch.tensor(b)).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-9)
    # Identical rotations (including near-π ones) are at distance 0.
    same = rot.geodesic_angle_axis_angle(torch.tensor(a), torch.tensor(a)).numpy()
    np.testing.assert_allclose(same, 0.0, atol=1e-7)


def test_geodesic_gradcheck():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(8, 3, dtype=torch.float64, generator=g)
    b = torch.randn(8, 3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda y: rot.geodesic_angle_axis_angle(a, y), (b,))


def test_geodesic_gradcheck_near_pi():
    """Relative rotation of π − 1e-3 rad: asin/acos forms blow up here, atan2 does not."""
    axis = torch.tensor([[0.3, -0.5, 0.8]], dtype=torch.float64)
    axis = axis / axis.norm()
    a = torch.zeros(1, 3, dtype=torch.float64)
    b = (axis * (math.pi - 1e-3)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda y: rot.geodesic_angle_axis_angle(a, y), (b,))
    rot.geodesic_angle_axis_angle(a, b).sum().backward()
    assert torch.isfinite(b.grad).all() and b.grad.norm() == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_geodesic_gradient_finite_at_identical_rotations(dtype):
    v = torch.tensor(_rotvecs(50, seed=6), dtype=dtype)
    x = v.clone().requires_grad_(True)
    angle = rot.geodesic_angle_axis_angle(v, x)
    (angle.square().sum() + angle.sum()).backward()
    assert torch.isfinite(x.grad).all()
    # The acos(clamp) form that VPoser used is not finite here: this is what the test guards.
    R1, R2 = rot.axis_angle_to_matrix(v), rot.axis_angle_to_matrix(x)
    cos = ((R1.transpose(-1, -2) @ R2).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    x.grad = None
    torch.acos(cos.clamp(-1, 1)).sum().backward()
    assert not torch.isfinite(x.grad).all() or (x.grad == 0).all()


def test_axis_angle_gradient_finite_at_zero():
    x = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    rot.axis_angle_to_matrix(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_mirror_is_reflection_of_rotation():
    """Mirroring x -> (x, −y, −z) equals conjugating by the reflection M = diag(−1, 1, 1)."""
    v = _rotvecs(100, seed=7)
    M = np.diag([-1.0, 1.0, 1.0])
    ref = M @ Rotation.from_rotvec(v).as_matrix() @ M
    ours = rot.axis_angle_to_matrix(rot.mirror_axis_angle(torch.tensor(v))).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_swap_and_mirror_is_involution_and_swaps_hands():
    x = torch.randn(5, 90, dtype=torch.float64)
    y = rot.swap_and_mirror_hands(x)
    torch.testing.assert_close(rot.swap_and_mirror_hands(y), x)
    torch.testing.assert_close(
        y[:, :45].reshape(5, 15, 3), rot.mirror_axis_angle(x[:, 45:].reshape(5, 15, 3))
    )
    assert rot.swap_and_mirror_hands(x.reshape(5, 30, 3)).shape == (5, 30, 3)


def test_layout_helpers_round_trip():
    x = torch.arange(2 * 90, dtype=torch.float32).reshape(2, 90)
    j = rot.to_joints(x)
    assert j.shape == (2, 30, 3) and j[0, 15, 0] == 45  # joint 15 = first right-hand joint
    h = rot.to_hands(x)
    assert h.shape == (2, 2, 15, 3) and h[0, 1, 0, 0] == 45
    torch.testing.assert_close(h.reshape(2, 90), x)
    torch.testing.assert_close(rot.to_flat(j), x)


@pytest.mark.parametrize("shape", [(4, 45), (4, 63), (90,), (4, 15, 3), (4, 30, 4), (2, 2, 15, 3)])
def test_bad_layouts_raise_value_error(shape):
    with pytest.raises(ValueError, match=r"\(B, 90\) or \(B, 30, 3\)"):
        rot.to_joints(torch.zeros(shape))


def test_conversions_reject_bad_trailing_shapes():
    with pytest.raises(ValueError):
        rot.axis_angle_to_matrix(torch.zeros(4, 4))
    with pytest.raises(ValueError):
        rot.rot6d_to_matrix(torch.zeros(4, 5))


def _matmul_geodesic(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """The textbook form: R = R1ᵀR2, θ = atan2(‖vee(R − Rᵀ)‖/2, (tr R − 1)/2)."""
    R = R1.transpose(-1, -2) @ R2
    vee = torch.stack(
        [R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1
    )
    return torch.atan2(0.5 * vee.norm(dim=-1), 0.5 * (R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1))


def test_training_path_conversions_match_roma_and_the_matmul_form_with_gradients():
    """Values and gradients of the whole-tensor implementations equal roma's conversions and the
    explicit-matmul geodesic angle to float64 rounding (away from roma's 1e-6 rad Taylor switch)."""
    import roma

    g = torch.Generator().manual_seed(8)
    v = torch.tensor(_rotvecs(300, seed=8)[6:], dtype=torch.float64)
    d6 = torch.randn(294, 6, dtype=torch.float64, generator=g)
    all_v = torch.tensor(_rotvecs(300, seed=8), dtype=torch.float64)  # with 0, 1e-9 and near-π angles
    pairs = [
        (rot.axis_angle_to_matrix, roma.rotvec_to_rotmat, v),
        (rot.rot6d_to_matrix, lambda d: roma.special_gramschmidt(torch.stack([d[:, :3], d[:, 3:]], -1)), d6),
        (rot.matrix_to_axis_angle, roma.rotmat_to_rotvec, roma.rotvec_to_rotmat(all_v)),
    ]
    for ours, ref, x in pairs:
        a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya, yb = ours(a), ref(b)
        torch.testing.assert_close(ya, yb, rtol=0, atol=1e-12)
        wy = torch.randn(ya.shape, dtype=torch.float64, generator=g)  # a scalar to differentiate
        (ya * wy).sum().backward()
        (yb * wy).sum().backward()
        assert torch.isfinite(a.grad).all()
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-10)
    R = rot.axis_angle_to_matrix(all_v.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # no 16-bit product inside the log map
        under_autocast = rot.matrix_to_axis_angle(R)
    torch.testing.assert_close(under_autocast, rot.matrix_to_axis_angle(R), rtol=0, atol=0)
    torch.testing.assert_close(rot.matrix_to_axis_angle(R).double(), all_v, rtol=0, atol=2e-3)
    R1 = rot.axis_angle_to_matrix(v)
    R2a = rot.rot6d_to_matrix(d6).requires_grad_(True)
    R2b = R2a.detach().clone().requires_grad_(True)
    ta, tb = rot.geodesic_angle(R1, R2a), _matmul_geodesic(R1, R2b)
    torch.testing.assert_close(ta, tb, rtol=0, atol=1e-12)
    ta.square().sum().backward()
    tb.square().sum().backward()
    torch.testing.assert_close(R2a.grad, R2b.grad, rtol=0, atol=1e-10)
