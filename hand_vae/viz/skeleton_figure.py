"""3-D stick figures of both hands, from forward kinematics on the generic skeleton.

Drawing frame: the kinematics frame (``hand_vae.kinematics``: fingers +x, palm facing +y,
right thumb +z) is turned so the hands lie palm down with the fingers pointing away from the
viewer and the left hand on the left: plot (X, Y, Z) = (−z, x, −y), a proper rotation, so the
picture is not mirrored. Curling fingers therefore bend downwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from mpl_toolkits.mplot3d.art3d import Line3DCollection

from hand_vae import anatomy
from hand_vae.kinematics import BONES, POINTS_PER_FINGER, hand_joint_positions
from hand_vae.viz.style import figure_style, finger_colors, new_figure

# Kinematics frame -> drawing frame (rows are the plot axes), see the module docstring.
_TO_PLOT = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
_ELEVATION, _AZIMUTH = 22.0, -62.0  # degrees: from behind the wrists, above and to the right


def _bone_finger(bone: tuple[int, int]) -> str:
    """Finger a (parent, child) keypoint pair belongs to."""
    return anatomy.FINGERS[(bone[1] - 1) // POINTS_PER_FINGER]


def _draw(ax, points: np.ndarray, colors: dict[str, tuple], dashed: bool, alpha: float = 1.0) -> None:
    """Draw one two-hand skeleton, points (2, 21, 3) in plot coordinates, metres.

    Every bone has its finger's colour, solid (an input pose) or dashed (a reconstruction), so a
    reconstructed finger is compared with the input finger of the same colour. One
    ``Line3DCollection`` per skeleton (not one line per bone) keeps a grid of 8 fast to draw.
    """
    bones = np.array(BONES)  # (20, 2) keypoint pairs
    segments = points[:, bones].reshape(-1, 2, 3)  # (2 hands * 20 bones, 2, 3)
    seg_colors = [colors[_bone_finger(b)] for b in BONES] * points.shape[0]
    if dashed:
        lines = Line3DCollection(segments, colors=seg_colors, linestyles=(0, (2.0, 1.2)), linewidths=1.6)
    else:
        lines = Line3DCollection(segments, colors=seg_colors, linewidths=2.6, capstyle="round", alpha=alpha)
    ax.add_collection3d(lines)
    if not dashed:
        ax.scatter(*points.reshape(-1, 3).T, s=4, color="0.25", depthshade=False)


def hand_skeletons(
    poses: np.ndarray | torch.Tensor,
    titles: Sequence[str] | None = None,
    recon: np.ndarray | torch.Tensor | None = None,
    ncols: int = 4,
    suptitle: str | None = None,
    labels: tuple[str, str] = ("input", "reconstruction"),
) -> Figure:
    """A grid of 3-D stick figures of both hands, optionally with reconstructions overlaid.

    Args:
        poses: (n, 90) or (n, 30, 3) axis-angle poses in radians, ``[left 45 | right 45]``.
        titles: n panel titles (default "pose i").
        recon: same shape as ``poses``; drawn dashed over the inputs, in the same finger colours
            (the inputs are then drawn lighter, so the dashed lines stand out).
        ncols: panels per row.
        suptitle: figure title (a default saying what is shown when omitted).
        labels: legend names of ``poses`` and ``recon`` when ``recon`` is given.

    Returns:
        The figure, one 3-D axes per pose. The approximate skeleton is ``hand_vae.anatomy``'s.

    Raises:
        ValueError: for bad shapes or a titles/recon count that does not match.
    """
    pts = hand_joint_positions(poses) @ _TO_PLOT.T  # (n, 2, 21, 3) plot coords
    n = pts.shape[0]
    if n == 0:
        raise ValueError("poses is empty")
    rec = None
    if recon is not None:
        rec = hand_joint_positions(recon) @ _TO_PLOT.T
        if rec.shape != pts.shape:
            raise ValueError(f"recon must match poses: got {tuple(rec.shape)} vs {tuple(pts.shape)}")
    if titles is not None and len(titles) != n:
        raise ValueError(f"need {n} titles, got {len(titles)}")
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    # Same limits in every panel and equal scale on all axes, so sizes compare across panels.
    allp = pts.reshape(-1, 3) if rec is None else np.concatenate([pts, rec]).reshape(-1, 3)
    lo, hi = allp.min(0) - 0.01, allp.max(0) + 0.01  # metres, 1 cm margin
    hi = np.maximum(hi, lo + 0.06)  # keep a flat axis from collapsing
    with figure_style():
        colors = finger_colors()
        fig = new_figure((3.2 * ncols, 2.4 * nrows + 0.8))
        for i in range(n):
            ax = fig.add_subplot(nrows, ncols, i + 1, projection="3d")
            _draw(ax, pts[i], colors, dashed=False, alpha=1.0 if rec is None else 0.45)
            if rec is not None:
                _draw(ax, rec[i], colors, dashed=True)
            for hand, name in zip(pts[i], ("L", "R"), strict=True):
                ax.text(
                    *(hand[0] + np.array([0.0, -0.03, 0.0])), name, ha="center", fontsize=9, weight="bold"
                )
            for k, lim in enumerate((ax.set_xlim, ax.set_ylim, ax.set_zlim)):
                lim(lo[k], hi[k])
            ax.set_box_aspect(tuple(hi - lo), zoom=1.3)
            for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
                axis.set_pane_color((0.96, 0.96, 0.96, 1.0))
            ax.view_init(elev=_ELEVATION, azim=_AZIMUTH)
            ax.set_xticklabels([])
            ax.set_yticklabels([])
            ax.set_zticklabels([])
            ax.set_title(titles[i] if titles is not None else f"pose {i}", fontsize=10)
        handles = [Line2D([], [], color=c, linewidth=2.2, label=f) for f, c in colors.items()]
        if rec is not None:
            handles = [
                Line2D([], [], color="0.3", linewidth=2.6, alpha=0.45, label=f"{labels[0]}: solid, light"),
                Line2D([], [], color="0.15", linestyle=(0, (2.0, 1.2)), label=f"{labels[1]}: dashed"),
            ] + handles
        fig.legend(
            handles=handles, loc="outside lower center", ncol=len(handles), fontsize="small", frameon=False
        )
        default = (
            f"Hand skeletons: {labels[0]} (solid) vs {labels[1]} (dashed)"
            if rec is not None
            else "Hand skeletons"
        )
        width_cm = 100.0 * (hi[0] - lo[0])
        fig.suptitle(
            (suptitle or default)
            + f"\n(both hands palm down, fingers pointing away; box {width_cm:.0f} cm wide)"
        )
    return fig
