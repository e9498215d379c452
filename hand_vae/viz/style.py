"""Shared figure plumbing: figures on an explicit Agg canvas (no pyplot registry, no display, nothing can
leak), seaborn styling local to a ``with`` block, and saving."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PALETTE = "colorblind"
FINGER_COLOR_ORDER = ("thumb", "index", "middle", "ring", "pinky")  # Set1 hues, the same in every figure


def finger_colors() -> dict[str, tuple[float, float, float]]:
    """Finger name -> RGB colour, shared by the skeleton and per-joint figures."""
    return dict(zip(FINGER_COLOR_ORDER, sns.color_palette("Set1", len(FINGER_COLOR_ORDER)), strict=True))


@contextmanager
def figure_style() -> Iterator[None]:
    """Seaborn whitegrid look, local to the figure being built inside the ``with`` block."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        yield


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A bare Figure (constrained layout, ``figsize`` in inches) on an Agg canvas."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Save ``fig`` as a PNG at ``path`` (parent folders created), close it and return the path."""
    import matplotlib.pyplot as plt  # only to close; a no-op for figures pyplot does not manage

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    plt.close(fig)
    return path


def as_1d(a: np.ndarray | Sequence[float], name: str) -> np.ndarray:
    """Flatten to a float64 vector; raises ValueError naming ``name`` when empty."""
    arr = np.asarray(a, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    return arr
