"""3-D stick figures of both hands, from forward kinematics on the generic skeleton.

The kinematics frame (fingers +x, palm +y, right thumb +z) is drawn rotated, (X, Y, Z) = (−z, x, −y), a
proper rotation (not mirrored): palms down, fingers pointing away, left hand on the left, curls bend down.
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

_TO_PLOT = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # rows are the plot axes
_ELEVATION, _AZIMUTH = 22.0, -62.0  # degrees: from behind the wrists, above and to the right
_DASH = (0, (2.0, 1.2))
_BONE_FINGERS = [anatomy.FINGERS[(child - 1) // POINTS_PER_FINGER] for _, child in BONES]


def _draw(ax, points: np.ndarray, colors: dict[str, tuple], dashed: bool, alpha: float = 1.0) -> None:
    """Draw one two-hand skeleton, points (2, 21, 3) in plot coordinates (metres), each bone in its
    finger's colour, solid (input) or dashed (reconstruction); one collection keeps a grid fast."""
    segments = points[:, np.array(BONES)].reshape(-1, 2, 3)  # (2 hands * 20 bones, 2, 3)
    seg_colors = [colors[f] for f in _BONE_FINGERS] * len(points)
    if dashed:
        lines = Line3DCollection(segments, colors=seg_colors, linestyles=_DASH, linewidths=1.6)
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
    """A grid of 3-D stick figures of both hands (``hand_vae.anatomy``'s skeleton), one axes per pose.

    Args:
        poses: (n, 90) or (n, 30, 3) axis-angle poses in radians, ``[left 45 | right 45]``.
        titles: n panel titles (default "pose i").
        recon: same shape as ``poses``; drawn dashed in the same finger colours over lighter inputs.
        ncols: panels per row.
        suptitle: figure title (a default saying what is shown when omitted).
        labels: legend names of ``poses`` and ``recon`` when ``recon`` is given.

    Raises:
        ValueError: for bad shapes or a titles/recon count that does not match.
    """
    pts = hand_joint_positions(poses) @ _TO_PLOT.T  # (n, 2, 21, 3) plot coords
    n = pts.shape[0]
    if n == 0:
        raise ValueError("poses is empty")
    rec = None if recon is None else hand_joint_positions(recon) @ _TO_PLOT.T
    if rec is not None and rec.shape != pts.shape:
        raise ValueError(f"recon must match poses: got {tuple(rec.shape)} vs {tuple(pts.shape)}")
    if titles is not None and len(titles) != n:
        raise ValueError(f"need {n} titles, got {len(titles)}")
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    # Same limits in every panel and equal scale on all axes, so sizes compare across panels.
    allp = (pts if rec is None else np.concatenate([pts, rec])).reshape(-1, 3)
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
                ax.text(*(hand[0] - [0.0, 0.03, 0.0]), name, ha="center", fontsize=9, weight="bold")
            ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), zlim=(lo[2], hi[2]))
            ax.set_box_aspect(tuple(hi - lo), zoom=1.3)
            for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
                axis.set_pane_color((0.96, 0.96, 0.96, 1.0))
            ax.view_init(elev=_ELEVATION, azim=_AZIMUTH)
            ax.set(xticklabels=[], yticklabels=[], zticklabels=[])
            ax.set_title(titles[i] if titles is not None else f"pose {i}", fontsize=10)
        handles = [Line2D([], [], color=c, linewidth=2.2, label=f) for f, c in colors.items()]
        default = "Hand skeletons"
        if rec is not None:
            handles = [
                Line2D([], [], color="0.3", linewidth=2.6, alpha=0.45, label=f"{labels[0]}: solid, light"),
                Line2D([], [], color="0.15", linestyle=_DASH, label=f"{labels[1]}: dashed"),
            ] + handles
            default += f": {labels[0]} (solid) vs {labels[1]} (dashed)"
        fig.legend(
            handles=handles, loc="outside lower center", ncol=len(handles), fontsize="small", frameon=False
        )
        note = f"both hands palm down, fingers pointing away; box {100.0 * (hi[0] - lo[0]):.0f} cm wide"
        fig.suptitle(f"{suptitle or default}\n({note})")
    return fig
