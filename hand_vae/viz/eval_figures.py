"""Figures of ``python -m hand_vae.evaluate``: ``energy_histogram_{noise,backbend,swap}.png`` (the VAE's
energies beside every method's ROC curve) and ``summary.png``. Methods' energies are on different scales
(nats, radians), so they are compared through ROC curves, which depend only on the scores' order."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from sklearn import metrics as skm

from hand_vae.evaluation.metrics import ranked
from hand_vae.metrics import NOISE_LEVELS
from hand_vae.viz.figures import PALETTE, draw_energy_histogram, figure_style, new_figure, save_figure

KINDS = {
    "noise": {f"noise {s:g} rad": f"noise_{s:g}" for s in NOISE_LEVELS},
    "backbend": {"backbend (one finger negated)": "backbend"},
    "swap": {"hands swapped, not mirrored": "swap"},
}
LABELS = {"vae": "VAE", "gaussian": "Gaussian", "gaussian_mirrored": "Gaussian (mirrored)",
          "student_t": "Student-t", "student_t_mirrored": "Student-t (mirrored)", "gmm4": "GMM 4",
          "gmm8": "GMM 8", "nearest_neighbour": "nearest neighbour"}  # fmt: skip
STYLES = ("-", "--", ":")  # one per corrupted set of a kind
BELOW = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.14), "ncol": 2, "fontsize": "x-small"}


def roc_curve(neg: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) from (0, 0) to (1, 1) of a score that should be higher for
    ``pos`` (M,) than for ``neg`` (N,); NaN counts as +inf (``evaluation.metrics.ranked``)."""
    fpr, tpr, _ = skm.roc_curve(*ranked(neg, pos))
    return fpr, tpr


def _colors(methods: list[str]) -> dict[str, tuple]:
    palette = sns.color_palette(PALETTE, len(methods) + 1)
    return {m: ("k" if m == "vae" else palette[i]) for i, m in enumerate(methods)}


def corruption_figure(
    energies: Mapping[str, Mapping[str, np.ndarray]], kind: str, aucs: Mapping[str, Mapping[str, float]]
) -> Figure:
    """The VAE's energy histogram for one corruption kind (axes[0]), beside every method's ROC curves (axes[1]).

    Args:
        energies: method -> {"real": (N,), "<set>": (N,), ...} energies (``evaluation.metrics.evaluate``).
        kind: "noise", "backbend" or "swap".
        aucs: method -> {"auc_<set>": AUC}, quoted in the legend.
    """
    sets, vae, colors = KINDS[kind], energies["vae"], _colors(list(energies))
    with figure_style():
        fig = new_figure((15.0, 5.6))
        ax_h, ax_r = fig.subplots(1, 2, width_ratios=[1.35, 1.0])
        hist = {"held-out": vae["real"]} | {label: vae[key] for label, key in sets.items()}
        draw_energy_histogram(ax_h, hist)
        ax_h.set_title(f"VAE energy: held-out poses vs corrupted copies ({kind})")
        ax_h.legend(**BELOW)
        # One legend entry per method, with the AUC of each set in STYLES order: many methods stay legible.
        for method in energies:
            name = LABELS.get(method, method)
            scores = " / ".join(f"{aucs[method][f'auc_{key}']:.3f}" for key in sets.values())
            for i, (key, ls) in enumerate(zip(sets.values(), STYLES, strict=False)):
                fpr, tpr = roc_curve(energies[method]["real"], energies[method][key])
                ax_r.plot(fpr, tpr, ls, color=colors[method], lw=2.2 if method == "vae" else 1.4,
                          label=f"{name}: AUC {scores}" if i == 0 else None)  # fmt: skip
        for label, ls in zip(sets if len(sets) > 1 else (), STYLES, strict=False):
            ax_r.plot([], [], ls, color="0.3", label=f"{label} (line style)")
        ax_r.plot([0, 1], [0, 1], color="0.6", linewidth=0.8, label="chance: AUC 0.5")
        ax_r.set_xlim(0, 1)
        ax_r.set_ylim(0, 1.01)
        ax_r.set_aspect("equal")
        ax_r.set_xlabel("held-out poses flagged (false-positive rate)")
        ax_r.set_ylabel("corrupted poses flagged (true-positive rate)")
        ax_r.set_title(f"Every method telling real from corrupted ({kind}); higher = better")
        ax_r.legend(**BELOW)
    return fig


def summary_figure(results: Mapping[str, Mapping[str, float | None]]) -> Figure:
    """Grouped bars of each method's AUC per corruption and top-1 selection rate (higher = better) of
    ``results``: method -> {metric: value or None} (``evaluation.metrics.evaluate``'s first value)."""
    metrics = [m for m in next(iter(results.values())) if m.startswith(("auc_", "top1_"))]
    methods, x = list(results), np.arange(len(metrics))
    colors, width = _colors(methods), 0.8 / len(methods)
    with figure_style():
        fig = new_figure((12.0, 4.8))
        ax = fig.add_subplot()
        for i, method in enumerate(methods):
            values = [np.nan if results[method][m] is None else results[method][m] for m in metrics]
            ax.bar(x + (i - (len(methods) - 1) / 2) * width, values, width, color=colors[method],
                   label=LABELS.get(method, method))  # fmt: skip
        ax.axhline(0.5, color="0.5", linestyle="--", linewidth=1.0, label="AUC chance (0.5)")
        ax.axhline(1 / 8, color="0.5", linestyle=":", linewidth=1.0, label="top-1 chance (1/8)")
        names = [m.replace("auc_", "AUC ").replace("top1_", "top-1 ").replace("_", " ") for m in metrics]
        ax.set_xticks(x, names, rotation=20)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("score (1 = perfect)")
        ax.set_title(
            "Which prior tells real hand poses from corrupted ones? (held-out poses; higher = better)"
        )
        entries = len(methods) + 2
        ncol = entries if entries <= 6 else (entries + 1) // 2  # one row, or two when it would not fit
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, fontsize="small")
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
