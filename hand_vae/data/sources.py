"""Importers for raw hand-pose files, one reader per format (docs/design.md §2): each returns poses
(T, 90) float32 in the layout of docs/design.md §1 and the file's frame rate, if stored. Pickles (GRAB,
object arrays) can run code: loaded only with ``trust_pickle=True`` (``--trust_pickle``).
"""

from __future__ import annotations

import pickle
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hand_vae.errors import UserError
from hand_vae.rotations import BODY_HAND_SLICES, HAND_DIM, NUM_JOINTS, POSE_DIM
from hand_vae.settings import FORMATS

EXTENSIONS = (".npz", ".npy")

# Full-body pose widths: SMPL+H (hands 66:156) and SMPL-X (hands 75:165), see rotations.BODY_HAND_SLICES.
SMPLH_POSE_DIM, SMPLX_POSE_DIM = 156, 165

# What numpy / zipfile raise for truncated or corrupt files; anything else is a bug and propagates.
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)
_PICKLE_HINT = (
    "unpickling can execute arbitrary code, so it is refused by default; "
    "re-run with --trust_pickle only if you trust where this file came from"
)


class SourceError(UserError, ValueError):
    """A raw file cannot be imported; the message is the one-line reason shown to the user."""


@dataclass(frozen=True)
class RawSequence:
    """One imported clip: poses (T, 90) float32, the source fps (None when the file does not say) and
    the reader that produced it (one of :data:`FORMATS`)."""

    poses: np.ndarray
    fps: float | None
    format: str


def is_side_file(path: Path) -> bool:
    """True for the body-shape files AMASS ships beside the motions (``shape.npz``, ``*_stagei.npz``)."""
    return path.name == "shape.npz" or path.name.endswith("_stagei.npz")


def _matrix(a: np.ndarray, what: str, width: int | None, hint: str = "") -> np.ndarray:
    """``a`` if it is a 2-D numeric (N, width) array, else a :class:`SourceError` naming ``what``."""
    if a.dtype == object:
        raise SourceError(f"{what} is an object array, expected numbers")
    if a.ndim != 2:
        raise SourceError(f"{what} has shape {a.shape}, expected 2-D (frames, dims)")
    if not np.issubdtype(a.dtype, np.number):
        raise SourceError(f"{what} has dtype {a.dtype}, expected numbers")
    if width is not None and a.shape[1] != width:
        raise SourceError(f"{what} has shape {a.shape}, expected (N, {width}){hint}")
    return a


def _fps(value: object, key: str) -> float:
    fps = float(np.asarray(value).reshape(-1)[0]) if np.asarray(value).size else float("nan")
    if not np.isfinite(fps) or fps <= 0:
        raise SourceError(f"{key} = {value!r} is not a positive frame rate")
    return fps


def _body_hands(poses: np.ndarray) -> np.ndarray:
    """(N, 156) SMPL+H or (N, 165) SMPL-X full-body poses -> (N, 90) float32 ``[left 45 | right 45]``."""
    _, start, stop = BODY_HAND_SLICES[poses.shape[1]]
    return poses[:, start:stop].astype(np.float32)  # the left hand's 45 columns, then the right's


def _join(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(T,45) + (T,45) -> (T,90) float32."""
    if left.shape[0] != right.shape[0]:
        raise SourceError(f"left hand has {left.shape[0]} frames but right hand has {right.shape[0]}")
    return np.concatenate([left, right], axis=1).astype(np.float32)  # (T, 90)


@contextmanager
def _as_source_error(what: str = "") -> Iterator[None]:
    """Turn what numpy / zipfile raise for a pickled, truncated or corrupt file into :class:`SourceError`."""
    try:
        yield
    except (pickle.UnpicklingError, *_READ_ERRORS) as err:
        if isinstance(err, ValueError) and "allow_pickle" in str(err):
            raise SourceError(f"{what}holds pickled Python objects; {_PICKLE_HINT}") from None
        raise SourceError(f"unreadable (truncated or corrupt?): {type(err).__name__}: {err}") from None


class _Members(dict):
    """A ``.npz``'s member names, each array loaded when a reader asks for it (so an unneeded pickled
    member does not need ``--trust_pickle``); load errors become :class:`SourceError`."""

    def __init__(self, npz: np.lib.npyio.NpzFile) -> None:
        super().__init__(dict.fromkeys(npz.files))
        self._npz = npz

    def __getitem__(self, key: str) -> np.ndarray:
        with _as_source_error(f"'{key}' "):
            return self._npz[key]


def _keys(path: Path) -> set[str]:
    """Member names of a .npz without loading any data ({""} for a .npy)."""
    if path.suffix == ".npy":
        return {""}
    with _as_source_error(), zipfile.ZipFile(path) as zf:
        return {n.removesuffix(".npy") for n in zf.namelist()}


def detect_format(path: Path) -> str:
    """Guess a file's format from its member names (and name, for AMASS SMPL-X).

    Raises:
        SourceError: when the keys fit no known format.
    """
    keys = _keys(path)
    if "lhand" in keys and "rhand" in keys:
        return "grab"
    if "pose_hand" in keys or "mocap_frame_rate" in keys or path.name.endswith("_stageii.npz"):
        return "amass_smplx"
    if "mocap_framerate" in keys or path.name.endswith("_poses.npz"):
        return "amass_smplh"
    if keys & {"", "hand_pose", "poses"} or {"left_hand_pose", "right_hand_pose"} <= keys:
        return "array"
    if keys == {"arr_0"}:  # np.savez(path, array) without a name
        return "array"
    shown = ", ".join(sorted(keys)[:8])
    raise SourceError(f"not a known hand-pose format (keys: {shown}); choose one with --format")


def read_amass_smplh(data: Mapping[str, np.ndarray]) -> RawSequence:
    """AMASS SMPL+H ``*_poses.npz``: ``poses`` (N,156), fps ``mocap_framerate``."""
    if "poses" not in data:
        raise SourceError("AMASS SMPL+H file has no 'poses' array")
    poses = _matrix(data["poses"], "poses", SMPLH_POSE_DIM, " for SMPL+H")
    fps = _fps(data["mocap_framerate"], "mocap_framerate") if "mocap_framerate" in data else None
    return RawSequence(_body_hands(poses), fps, "amass_smplh")


def read_amass_smplx(data: Mapping[str, np.ndarray]) -> RawSequence:
    """AMASS SMPL-X ``*_stageii.npz``: ``pose_hand`` (N,90), else ``poses`` (N,165)."""
    fps = _fps(data["mocap_frame_rate"], "mocap_frame_rate") if "mocap_frame_rate" in data else None
    if "pose_hand" in data:
        hands = _matrix(data["pose_hand"], "pose_hand", POSE_DIM)
        return RawSequence(hands.astype(np.float32), fps, "amass_smplx")
    if "poses" not in data:
        raise SourceError("AMASS SMPL-X file has neither 'pose_hand' nor 'poses'")
    poses = _matrix(data["poses"], "poses", SMPLX_POSE_DIM, " for SMPL-X")
    return RawSequence(_body_hands(poses), fps, "amass_smplx")


def _grab_hand(data: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    try:
        params = data[key].item()["params"]
        pose = np.asarray(params["fullpose"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise SourceError(f"GRAB '{key}' has no params['fullpose'] ({type(err).__name__}: {err})") from None
    return _matrix(pose, f"{key}.params.fullpose", HAND_DIM)


def read_grab(data: Mapping[str, np.ndarray]) -> RawSequence:
    """GRAB sequence: ``lhand`` / ``rhand`` dicts -> ``params['fullpose']`` (T,45), fps ``framerate``."""
    fps = _fps(data["framerate"], "framerate") if "framerate" in data else None
    return RawSequence(_join(_grab_hand(data, "lhand"), _grab_hand(data, "rhand")), fps, "grab")


def _width_hint(dims: int, key: str) -> str:
    """Advice for a plain array of the wrong width: a full-body ``poses`` member gets the --format that
    reads it, any other full-body array the slice to save."""
    if dims in BODY_HAND_SLICES:
        body, start, stop = BODY_HAND_SLICES[dims]
        fmt = "amass_smplh" if dims == SMPLH_POSE_DIM else "amass_smplx"
        if key == "poses":
            return f"; AMASS {body}? use --format {fmt}"
        return f"; a full {body} body pose? save its hands: np.save(out, poses[:, {start}:{stop}])"
    return "; one hand? give left_hand_pose + right_hand_pose" if dims == HAND_DIM else ""


def read_array(data: Mapping[str, np.ndarray]) -> RawSequence:
    """Plain arrays: one (N,90) or (N,30,3) array, or ``left_hand_pose`` + ``right_hand_pose`` (N,45) each."""
    fps = _fps(data["fps"], "fps") if "fps" in data else None
    if "left_hand_pose" in data and "right_hand_pose" in data:
        left, right = (_matrix(data[k], k, HAND_DIM) for k in ("left_hand_pose", "right_hand_pose"))
        return RawSequence(_join(left, right), fps, "array")
    candidates = [k for k in ("hand_pose", "poses", "") if k in data]
    arrays = [k for k in data if k != "fps"]
    key = candidates[0] if candidates else (arrays[0] if len(arrays) == 1 else None)
    if key is None:
        raise SourceError(
            f"no (N, {POSE_DIM}) array found (keys: {', '.join(sorted(data))}); "
            "expected 'hand_pose', a single array, or 'left_hand_pose' + 'right_hand_pose'"
        )
    label = key or "array"
    poses = np.asarray(data[key])
    if poses.shape[1:] == (NUM_JOINTS, 3):  # (N, 30, 3): per-joint axis-angle, the model's other layout
        poses = poses.reshape(len(poses), POSE_DIM)
    poses = _matrix(poses, label, None)
    if poses.shape[1] != POSE_DIM:
        raise SourceError(
            f"{label} has shape {poses.shape}, expected (N, {POSE_DIM}) = [left 45 | right 45] "
            f"or (N, {NUM_JOINTS}, 3){_width_hint(poses.shape[1], key)}"
        )
    return RawSequence(poses.astype(np.float32), fps, "array")


_READERS = dict(zip(FORMATS, (read_amass_smplh, read_amass_smplx, read_grab, read_array), strict=True))


def read_file(path: str | Path, fmt: str = "auto", trust_pickle: bool = False) -> RawSequence:
    """Import one ``.npz`` / ``.npy`` (only read) in format ``fmt`` (``"auto"``: detected from its keys);
    ``trust_pickle`` allows unpickling (GRAB), only for files from a trusted source.

    Raises:
        SourceError: unreadable, unrecognised, pickled without trust, or wrong shape.
    """
    path = Path(path)
    if fmt != "auto" and fmt not in _READERS:
        raise ValueError(f"unknown format {fmt!r}; choose auto or one of {', '.join(FORMATS)}")
    if path.suffix not in EXTENSIONS:
        raise SourceError(f"not a .npz or .npy file ({path.suffix or 'no extension'})")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "grab" and not trust_pickle:
        raise SourceError(f"GRAB files store pickled Python objects; {_PICKLE_HINT}")
    with _as_source_error():
        loaded = np.load(path, allow_pickle=trust_pickle)
    if isinstance(loaded, np.ndarray):
        return _READERS[fmt]({"": loaded})
    with loaded:
        return _READERS[fmt](_Members(loaded))
