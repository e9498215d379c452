"""Figures of ``python -m hand_vae.evaluate``: the VAE beside the classic priors it is compared with.

* ``energy_histogram_{noise,backbend,swap}.png``: left, the VAE's energy of held-out poses against
  corrupted copies of them; right, the ROC curve of every method (VAE and baselines) telling the
  real poses from those copies, with each curve's AUC in the legend.
* ``summary.png``: every method's AUC per corruption and top-1 hypothesis selection, side by side.

Energies of different methods are on different scales (nats for densities, radians for the
nearest-neighbour distance), so they are compared through ROC curves, which depend only on the order
of the scores, never on one shared energy axis. Pure functions, arrays in and figures out (Agg canvas,
no pyplot); ``save_evaluation_figures`` saves and closes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

from hand_vae.metrics import NOISE_LEVELS
from hand_vae.viz.figures import draw_energy_histogram
from hand_vae.viz.style import PALETTE, figure_style, new_figure, save_figure

KINDS = {
    "noise": {f"noise {s:g} rad": f"noise_{s:g}" for s in NOISE_LEVELS},
    "backbend": {"backbend (one finger negated)": "backbend"},
    "swap": {"hands swapped, not mirrored": "swap"},
}
LABELS = {
    "vae": "VAE",
    "gaussian": "Gaussian",
    "gmm4": "GMM 4",
    "gmm8": "GMM 8",
    "nearest_neighbour": "nearest neighbour",
}


def roc_curve(neg: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve of a score that should be higher for ``pos`` than for ``neg``.

    Args:
        neg: (N,) scores of real poses; NaN counts as +inf (a non-finite energy is implausible).
        pos: (M,) scores of corrupted poses.

    Returns:
        (false-positive rate, true-positive rate), each (K,) from (0, 0) to (1, 1), one point per
        distinct threshold, so tied scores give a straight segment (the AUC's ½-for-ties).
    """
    neg = np.nan_to_num(np.asarray(neg, np.float64), nan=np.inf)
    pos = np.nan_to_num(np.asarray(pos, np.float64), nan=np.inf)
    thresholds = np.unique(np.concatenate([neg, pos]))[::-1]  # high to low: flag score >= t
    neg_sorted, pos_sorted = np.sort(neg), np.sort(pos)
    fpr = 1.0 - np.searchsorted(neg_sorted, thresholds, side="left") / max(neg.size, 1)
    tpr = 1.0 - np.searchsorted(pos_sorted, thresholds, side="left") / max(pos.size, 1)
    return np.concatenate([[0.0], fpr, [1.0]]), np.concatenate([[0.0], tpr, [1.0]])


def _colors(methods: list[str]) -> dict[str, tuple]:
    palette = sns.color_palette(PALETTE, len(methods) + 1)
    return {m: ("k" if m == "vae" else palette[i]) for i, m in enumerate(methods)}


def corruption_figure(
    energies: Mapping[str, Mapping[str, np.ndarray]], kind: str, aucs: Mapping[str, Mapping[str, float]]
) -> Figure:
    """The VAE's energy histogram for one corruption kind, beside every method's ROC curves.

    Args:
        energies: method -> {"real": (N,), "<set>": (N,), ...} energies (``eval_metrics.evaluate``).
        kind: "noise", "backbend" or "swap".
        aucs: method -> {"auc_<set>": AUC}, the numbers of the report, quoted in the legend.

    Returns:
        The figure: axes[0] the VAE histogram, axes[1] the ROC curves.
    """
    sets = KINDS[kind]
    vae = energies["vae"]
    methods = list(energies)
    colors = _colors(methods)
    styles = ["-", "--", ":"]
    with figure_style():
        fig = new_figure((15.0, 5.6))
        ax_h, ax_r = fig.subplots(1, 2, width_ratios=[1.35, 1.0])
        draw_energy_histogram(
            ax_h, {"held-out": vae["real"], **{label: vae[key] for label, key in sets.items()}}
        )
        ax_h.set_title(f"VAE energy: held-out poses vs corrupted copies ({kind})")
        ax_h.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize="x-small")
        for method in methods:
            for (label, key), ls in zip(sets.items(), styles, strict=False):
                fpr, tpr = roc_curve(energies[method]["real"], energies[method][key])
                auc = aucs[method][f"auc_{key}"]
                name = LABELS.get(method, method) + (f", {label}" if len(sets) > 1 else "")
                ax_r.plot(fpr, tpr, ls, color=colors[method], linewidth=2.2 if method == "vae" else 1.4,
                          label=f"{name}: AUC {auc:.3f}")  # fmt: skip
        ax_r.plot([0, 1], [0, 1], color="0.6", linewidth=0.8, label="chance: AUC 0.5")
        ax_r.set_xlim(0, 1)
        ax_r.set_ylim(0, 1.01)
        ax_r.set_aspect("equal")
        ax_r.set_xlabel("held-out poses flagged (false-positive rate)")
        ax_r.set_ylabel("corrupted poses flagged (true-positive rate)")
        ax_r.set_title(f"Every method telling real from corrupted ({kind}); higher = better")
        ax_r.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize="x-small")
    return fig


def summary_figure(results: Mapping[str, Mapping[str, float | None]]) -> Figure:
    """Grouped bars: each method's AUC per corruption and top-1 selection rate (higher = better).

    Args:
        results: method -> {metric: value or None} (``eval_metrics.evaluate``'s first return value).

    Returns:
        The figure (one axes).
    """
    metrics = [m for m in next(iter(results.values())) if m.startswith(("auc_", "top1_"))]
    methods = list(results)
    colors = _colors(methods)
    width = 0.8 / len(methods)
    x = np.arange(len(metrics))
    with figure_style():
        fig = new_figure((12.0, 4.8))
        ax = fig.add_subplot()
        for i, method in enumerate(methods):
            values = [np.nan if results[method][m] is None else results[method][m] for m in metrics]
            ax.bar(x + (i - (len(methods) - 1) / 2) * width, values, width, color=colors[method],
                   label=LABELS.get(method, method))  # fmt: skip
        ax.axhline(0.5, color="0.5", linestyle="--", linewidth=1.0, label="AUC chance (0.5)")
        ax.axhline(1 / 8, color="0.5", linestyle=":", linewidth=1.0, label="top-1 chance (1/8)")
        ax.set_xticks(
            x,
            [m.replace("auc_", "AUC ").replace("top1_", "top-1 ").replace("_", " ") for m in metrics],
            rotation=20,
        )
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("score (1 = perfect)")
        ax.set_title(
            "Which prior tells real hand poses from corrupted ones? (held-out poses; higher = better)"
        )
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=len(methods) + 2, fontsize="small")
    return fig


def save_evaluation_figures(
    energies: Mapping[str, Mapping[str, np.ndarray]],
    results: Mapping[str, Mapping[str, float | None]],
    out_dir: str | Path,
) -> list[Path]:
    """Write every evaluation figure into ``out_dir``; returns the paths, in order."""
    out = Path(out_dir)
    paths = [
        save_figure(corruption_figure(energies, k, results), out / f"energy_histogram_{k}.png") for k in KINDS
    ]
    return paths + [save_figure(summary_figure(results), out / "summary.png")]
