"""What every command shares: logging, exit codes, the dataset-source flags, reading a poses file.

Exit codes, the same for every command: 0 = done; 1 = done, but something was left out (files
skipped by a data build, an interrupted run); 2 = a user mistake (one line on stderr, nothing
written); 3 = training diverged (non-finite loss); 130 / 143 = stopped by SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hand_vae.anatomy import NUM_JOINTS, POSE_DIM, pose_shape_hint
from hand_vae.errors import UserError

if TYPE_CHECKING:
    import torch

EXIT_OK, EXIT_PARTIAL, EXIT_USER_ERROR, EXIT_DIVERGED = 0, 1, 2, 3

log = logging.getLogger("hand_vae")


def setup_logging(verbose: bool = False) -> None:
    """INFO (DEBUG with ``verbose``) to stderr, unless the calling program set up logging itself."""
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.DEBUG if verbose else logging.INFO)


def run_command(body: Callable[[], int]) -> int:
    """Run ``body`` (returns the exit code); a :class:`UserError` becomes one logged line and its code."""
    try:
        return body()
    except UserError as err:
        log.error("%s", err)
        return err.exit_code


def add_dataset_source(p: argparse.ArgumentParser) -> argparse._MutuallyExclusiveGroup:
    """``--consolidated_dir`` / ``--splits_dir``: one of them (argparse refuses both)."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--consolidated_dir", help="directory written by create_consolidated_npz.py")
    src.add_argument("--splits_dir", help="directory written by create_datamodule.py")
    return src


def load_splits(
    consolidated_dir: str | None, splits_dir: str | None, run_settings: dict
) -> tuple[dict[str, torch.Tensor], str]:
    """({split: (N, 90) float32}, a description) of the dataset dir given, else of the checkpoint run's
    own source (``run_settings``: its dir, or the synthetic set of its seed); UserError if unreadable."""
    # Here, not at the top: every command's --help answers before torch and roma load.
    import torch

    from hand_vae.data.layouts import load_dataset_dir
    from hand_vae.data.synthetic import default_splits, pose_tensors

    run_dir = run_settings.get("consolidated_dir") or run_settings.get("splits_dir")
    directory = consolidated_dir or splits_dir or run_dir
    if directory:
        try:
            arrays = load_dataset_dir(Path(directory))
        except (OSError, ValueError) as err:  # DatasetError is a ValueError
            raise UserError(f"cannot read dataset {directory}: {err}") from err
        return {k: torch.from_numpy(v[0]) for k, v in arrays.items()}, f"dataset {directory}"
    seed = int(run_settings.get("seed", 0))
    return pose_tensors(default_splits(seed=seed)), f"embedded synthetic dataset (seed {seed})"


def read_array(path: str, flag: str) -> np.ndarray:
    """One numeric array from a ``.npy`` file (never unpickled), or a one-line :class:`UserError`."""
    if Path(path).is_dir():
        raise UserError(f"{flag}: {path} is a directory; give a .npy file")
    if not Path(path).is_file():
        raise UserError(f"{flag}: no such file: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise UserError(f"{flag}: {path} is not a readable .npy array ({err})") from err
    if not isinstance(arr, np.ndarray) or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise UserError(f"{flag}: {path} must hold one numeric array")
    return arr


def read_poses(path: str, flag: str = "--poses") -> np.ndarray:
    """(N, 90) float32 two-hand poses from a ``.npy`` of (N, 90) or (N, 30, 3) axis-angle, radians;
    UserError if unreadable, not numeric, or another shape (with a hint: ``pose_shape_hint``)."""
    arr = read_array(path, flag)
    if arr.ndim == 3 and arr.shape[1:] == (NUM_JOINTS, 3):
        arr = arr.reshape(arr.shape[0], POSE_DIM)
    if arr.ndim != 2 or arr.shape[1] != POSE_DIM or arr.shape[0] == 0:
        expected = f"(N, {POSE_DIM}) or (N, {NUM_JOINTS}, 3)"
        raise UserError(f"{flag}: expected {expected} poses, got {arr.shape}{pose_shape_hint(arr.shape)}")
    return arr.astype(np.float32)
