"""Figures of ``python -m hand_vae.evaluate``: ROC curves against the AUC, baselines beside the VAE."""

from __future__ import annotations

import numpy as np
import pytest

from hand_vae.evaluation.metrics import auc
from hand_vae.viz.eval_figures import corruption_figure, roc_curve, save_evaluation_figures, summary_figure


@pytest.mark.parametrize("ties", [False, True])
def test_roc_area_is_the_mann_whitney_auc(ties):
    rng = np.random.default_rng(0)
    neg, pos = rng.normal(0, 1, 300), rng.normal(0.7, 1.3, 200)
    if ties:
        neg, pos = np.round(neg), np.round(pos)
    neg[0] = np.nan  # a non-finite energy counts as the least plausible
    fpr, tpr = roc_curve(neg, pos)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # trapezoids: ties count one half
    assert area == pytest.approx(auc(neg, pos), abs=1e-12)


def _fake(methods=("vae", "gaussian", "nearest_neighbour")):
    rng = np.random.default_rng(1)
    sets = ("noise_0.02", "noise_0.05", "noise_0.1", "backbend", "swap")
    energies = {
        m: {"real": rng.normal(0, 1, 100), **{k: rng.normal(1, 1, 100) for k in sets}} for m in methods
    }
    results = {
        m: {"nll": None if m == "nearest_neighbour" else -1.0,
            **{f"auc_{k}": auc(e["real"], e[k]) for k in sets}, "top1_noise": 0.5, "top1_backbend": 0.6}
        for m, e in energies.items()
    }  # fmt: skip
    return energies, results


def test_every_method_has_a_roc_curve_beside_the_vae(tmp_path):
    energies, results = _fake()
    fig = corruption_figure(energies, "backbend", results)
    ax_hist, ax_roc = fig.axes
    labels = [ln.get_label() for ln in ax_roc.lines]
    for method, name in (
        ("vae", "VAE"),
        ("gaussian", "Gaussian"),
        ("nearest_neighbour", "nearest neighbour"),
    ):
        assert f"{name}: AUC {results[method]['auc_backbend']:.3f}" in labels, labels
    assert "VAE energy" in ax_hist.get_title() and "nats" in ax_hist.get_xlabel()
    bars = summary_figure(results).axes[0]
    assert {t.get_text() for t in bars.get_legend().get_texts()} >= {"VAE", "Gaussian", "nearest neighbour"}
    paths = save_evaluation_figures(energies, results, tmp_path)
    assert [p.name for p in paths] == [
        "energy_histogram_noise.png", "energy_histogram_backbend.png", "energy_histogram_swap.png", "summary.png"
    ]  # fmt: skip
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
