"""Tiny fake raw files with the real key layouts of AMASS SMPL+H / SMPL-X, GRAB and plain arrays.

Hand poses are smooth random walks (so no hand is constant unless asked), seeded per file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hand_vae.rotations import HAND_DIM, POSE_DIM


def hand_track(T: int, seed: int, constant: str | None = None) -> np.ndarray:
    """(T, 90) float64 smooth two-hand poses; ``constant`` = "left" / "right" / "both" freezes hands."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(0.0, 0.01, size=(T, POSE_DIM)), axis=0) + rng.normal(0.0, 0.3, size=POSE_DIM)
    if constant in ("left", "both"):
        x[:, :HAND_DIM] = x[0, :HAND_DIM]
    if constant in ("right", "both"):
        x[:, HAND_DIM:] = x[0, HAND_DIM:]
    return x


def write_smplh(path: Path, hands: np.ndarray, fps: float = 120.0, body_dims: int = 156) -> Path:
    """AMASS SMPL+H ``*_poses.npz``: trans, gender, mocap_framerate, betas, dmpls, poses (N,156)."""
    T = len(hands)
    poses = np.random.default_rng(1).normal(0, 0.1, size=(T, body_dims))
    if body_dims == 156:
        poses[:, 66:111], poses[:, 111:156] = hands[:, :HAND_DIM], hands[:, HAND_DIM:]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path, trans=np.zeros((T, 3)), gender=np.array("male"), mocap_framerate=np.array(fps),
        betas=np.zeros(16), dmpls=np.zeros((T, 8)), poses=poses,
    )  # fmt: skip
    return path


def write_smplx(path: Path, hands: np.ndarray, fps: float = 120.0, with_pose_hand: bool = True) -> Path:
    """AMASS SMPL-X ``*_stageii.npz``: poses (N,165) and pose_hand (N,90), plus an unneeded pickled
    member (marker metadata) that must not block import."""
    T = len(hands)
    poses = np.zeros((T, 165))
    poses[:, 75:120], poses[:, 120:165] = hands[:, :HAND_DIM], hands[:, HAND_DIM:]
    extra = {"pose_hand": hands} if with_pose_hand else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path, gender=np.array("female"), surface_model_type=np.array("smplx"),
        mocap_frame_rate=np.array(fps), mocap_time_length=np.array(T / fps), trans=np.zeros((T, 3)),
        poses=poses, betas=np.zeros(16), root_orient=np.zeros((T, 3)), pose_body=np.zeros((T, 63)),
        pose_jaw=np.zeros((T, 3)), pose_eye=np.zeros((T, 6)),
        markers_latent_vids=np.array({"C7": 3470}, dtype=object), **extra,
    )  # fmt: skip
    return path


def write_grab(path: Path, hands: np.ndarray, fps: float = 120.0) -> Path:
    """GRAB sequence .npz: object arrays of dicts; ``lhand/rhand['params']['fullpose']`` (T,45)."""
    T = len(hands)

    def part(fullpose: np.ndarray) -> np.ndarray:
        params = {"global_orient": np.zeros((T, 3)), "hand_pose": np.zeros((T, 24)), "transl": np.zeros((T, 3)),
                  "fullpose": fullpose}  # fmt: skip
        return np.array({"params": params, "vtemp": "tools/subject_meshes/male/s1_lhand.ply"}, dtype=object)

    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path, gender=np.array("male"), sbj_id=np.array("s1"), obj_name=np.array("mug"),
        motion_intent=np.array("drink"), framerate=np.array(fps), n_frames=np.array(T), n_comps=np.array(24),
        body=np.array({"params": {}}, dtype=object), lhand=part(hands[:, :HAND_DIM]),
        rhand=part(hands[:, HAND_DIM:]),
    )  # fmt: skip
    return path


def write_array(path: Path, hands: np.ndarray, split_hands: bool = False, fps: float | None = None) -> Path:
    """Plain array: ``.npy`` (N,90), or ``.npz`` with hand_pose / left_hand_pose + right_hand_pose."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, hands.astype(np.float32))
        return path
    arrays = (
        {"left_hand_pose": hands[:, :HAND_DIM], "right_hand_pose": hands[:, HAND_DIM:]}
        if split_hands
        else {"hand_pose": hands}
    )
    if fps is not None:
        arrays["fps"] = np.array(fps)
    np.savez(path, **arrays)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to a fraction of its bytes (a broken download)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path
