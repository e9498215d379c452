"""Pure figure functions: numpy arrays in, a ``matplotlib.figure.Figure`` out. No Lightning.

Built on an Agg canvas without pyplot (see ``hand_vae.viz.style``). **The caller owns each figure
and must close it**: ``save_figure(fig, path)`` saves a PNG and closes it; TensorBoard's
``add_figure(tag, fig, step)`` closes it by default. Units: energies, NLL and KL in nats
(natural-log units), angles in degrees, skeleton coordinates in metres.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from hand_vae import anatomy
from hand_vae.losses import ACTIVE_UNIT_NATS
from hand_vae.viz.objective_figures import beta_sensitivity, loss_breakdown
from hand_vae.viz.skeleton_figure import hand_skeletons
from hand_vae.viz.style import PALETTE as _PALETTE
from hand_vae.viz.style import as_1d as _as_1d
from hand_vae.viz.style import figure_style as _style
from hand_vae.viz.style import finger_colors, new_figure, save_figure

__all__ = [
    "ACTIVE_UNIT_THRESHOLD",
    "beta_sensitivity",
    "energy_histogram",
    "hand_skeletons",
    "latent_scatter",
    "loss_breakdown",
    "per_joint_geodesic_error",
    "save_figure",
]

# A latent dimension is "active" when its mean KL exceeds this (as in `val/active_units`).
ACTIVE_UNIT_THRESHOLD = ACTIVE_UNIT_NATS  # nats, the same threshold as val/active_units


# --------------------------------------------------------------------------- energy


def _nice_ceil(x: float) -> float:
    """The smallest of 1, 2, 5 × 10^k that is >= x > 0."""
    k = np.floor(np.log10(x))
    return float(next(m * 10.0**k for m in (1.0, 2.0, 5.0, 10.0) if m * 10.0**k >= x * (1 - 1e-12)))


def _symlog_ticks(lo: float, hi: float, linthresh: float) -> np.ndarray:
    """Readable ticks for a symlog axis on [lo, hi]: about six round numbers inside ±linthresh, then
    1-2-5 steps per decade beyond it (only powers of ten over more than 3 decades)."""
    a, b = max(lo, -linthresh), min(hi, linthresh)
    lin = MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]).tick_values(a, b) if b > a else np.array([])
    top = max(abs(lo), abs(hi), linthresh)
    decades = np.arange(np.floor(np.log10(linthresh)), np.ceil(np.log10(top)) + 1)
    mantissas = (1.0,) if len(decades) > 3 else (1.0, 2.0, 5.0)  # 1-2-5 crowd in many decades
    outer = np.array([m * 10.0**k for k in decades for m in mantissas])
    outer = outer[outer > linthresh]
    ticks = np.unique(np.concatenate([lin, outer, -outer]))
    return ticks[(ticks >= lo) & (ticks <= hi)]


def energy_histogram(energies: Mapping[str, np.ndarray], bins: int = 60) -> Figure:
    """Histograms of the energy (−ELBO at z = μ) of held-out poses and of noisy copies of them.

    The first entry is the reference (held-out poses). Its 95th percentile is drawn as a dashed
    line, and each other entry's legend says what fraction of its poses lies above it (how often
    that noise would be flagged as implausible at a 5 % false-alarm rate). When the energies span
    far more than the reference's spread, the x axis is symmetric-log (linear around the
    reference, logarithmic beyond) so both the held-out peak and the noisy tails stay visible.

    Args:
        energies: label -> (N_i,) energies in nats, e.g. ``{"held-out": e0, "noise 0.02 rad": e1}``.
        bins: number of bins.

    Returns:
        The figure (one axes).
    """
    with _style():
        fig = new_figure((8.5, 5.2))
        ax = fig.add_subplot()
        draw_energy_histogram(ax, energies, bins)
        ax.set_title("Energy of held-out poses vs the same poses with axis-angle noise")
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize="small")
    return fig


def draw_energy_histogram(ax: Axes, energies: Mapping[str, np.ndarray], bins: int = 60) -> None:
    """Draw :func:`energy_histogram`'s content into ``ax`` (labelled artists, no legend, no title)."""
    if not energies:
        raise ValueError("energies is empty")
    data = {k: _as_1d(v, f"energies[{k!r}]") for k, v in energies.items()}
    data = {k: v[np.isfinite(v)] for k, v in data.items()}
    ref_name, ref = next(iter(data.items()))
    allv = np.concatenate(list(data.values()))
    lo, hi = np.percentile(allv, [0.1, 99.9]) if allv.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 1.0, hi + 1.0
    p5, p95 = np.percentile(ref, [5, 95]) if ref.size else (lo, hi)
    spread = max(p95 - p5, 1e-3)
    symlog = (hi - lo) > 30.0 * spread
    if symlog:
        # Linear within ±linthresh, which covers the held-out bulk; log beyond it.
        linthresh = _nice_ceil(max(abs(p5), abs(p95), 1.0))
        ax.set_xscale("symlog", linthresh=linthresh, linscale=1.5)
        tr = ax.xaxis.get_transform()
        edges = tr.inverted().transform(np.linspace(*tr.transform(np.array([lo, hi])), bins + 1))
        ax.set_xticks(_symlog_ticks(lo, hi, linthresh))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    else:
        edges = np.linspace(lo, hi, bins + 1)
    # Reference in blue, noise levels in an ordered (light -> dark) palette.
    colors = [sns.color_palette(_PALETTE)[0]] + sns.color_palette("flare", max(len(data) - 1, 1))
    for (name, v), c in zip(data.items(), colors, strict=False):
        label = f"{name}: median {np.median(v):,.1f}" if v.size else f"{name}: (none finite)"
        if name != ref_name and v.size:
            label += f", {100.0 * np.mean(v > p95):.0f}% above ref. p95"
        # Fraction per bin (not density per nat): bins are equal-width on the drawn axis, so the
        # area a reader sees is the share of poses. Out-of-range values go into the edge bins.
        weights = np.full(v.size, 1.0 / max(v.size, 1))
        ax.hist(
            np.clip(v, edges[0], edges[-1]),
            bins=edges,
            weights=weights,
            # Reference filled, noise levels as outlines: readable even where they overlap.
            histtype="stepfilled" if name == ref_name else "step",
            alpha=0.35 if name == ref_name else 1.0,
            color=c,
            edgecolor=c,
            linewidth=1.8,
            label=label,
        )
    ax.axvline(p95, color="k", linestyle="--", linewidth=1.2, label=f"{ref_name} 95th percentile")
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel(
        "energy = −ELBO at z = μ(x) (nats; lower = more plausible)"
        + ("; linear near 0, log beyond" if symlog else "")
    )
    ax.set_ylabel("fraction of poses per bin")


# --------------------------------------------------------------------------- latent space


def latent_scatter(
    mu: np.ndarray, energy: np.ndarray, kl_per_dim: np.ndarray, threshold: float = ACTIVE_UNIT_THRESHOLD
) -> Figure:
    """2-D PCA of posterior means coloured by energy, beside the per-dimension KL (active units).

    Args:
        mu: (N, Z) posterior means μ(x).
        energy: (N,) energies in nats (colour; clipped to its 2-98th percentiles so outliers do not
            wash out the colour scale).
        kl_per_dim: (Z,) mean KL(q(z_i|x) ‖ N(0, 1)) per latent dimension, nats.
        threshold: active-unit threshold in nats.

    Returns:
        The figure: axes[0] the scatter, axes[1] the KL bars, plus a colorbar axes.
    """
    mu = np.asarray(mu, dtype=np.float64)
    if mu.ndim != 2 or mu.shape[0] == 0:
        raise ValueError(f"mu must be (N, Z) with N > 0, got {mu.shape}")
    N, Z = mu.shape
    energy = _as_1d(energy, "energy")
    kl = _as_1d(kl_per_dim, "kl_per_dim")
    if energy.shape[0] != N or kl.shape[0] != Z:
        raise ValueError(f"need energy ({N},) and kl_per_dim ({Z},), got {energy.shape} and {kl.shape}")
    centred = mu - mu.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)  # principal axes = rows of vt
    pcs = centred @ vt[:2].T  # (N, <=2)
    if pcs.shape[1] < 2:
        pcs = np.concatenate([pcs, np.zeros((N, 2 - pcs.shape[1]))], axis=1)
    var = s**2 / max(float(np.sum(s**2)), 1e-12)
    var = np.concatenate([var, np.zeros(2)])[:2]
    vmin, vmax = np.percentile(energy, [2, 98])
    active = kl > threshold
    with _style():
        fig = new_figure((11.0, 4.6))
        ax_sc, ax_kl = fig.subplots(1, 2, width_ratios=[1.15, 1.0])
        order = np.argsort(energy)[::-1]  # draw low energy last, on top
        sc = ax_sc.scatter(
            pcs[order, 0],
            pcs[order, 1],
            c=energy[order],
            cmap="viridis_r",
            vmin=vmin,
            vmax=max(vmax, vmin + 1e-9),
            s=6,
            alpha=0.8,
            linewidths=0,
        )
        fig.colorbar(sc, ax=ax_sc, label="energy (nats; lower = more plausible; 2-98th pct.)")
        ax_sc.set_xlabel(f"PC1 of posterior mean μ ({100 * var[0]:.0f}% var., latent units)")
        ax_sc.set_ylabel(f"PC2 ({100 * var[1]:.0f}% var., latent units)")
        ax_sc.set_title(f"Posterior means μ(x), PCA of {N} poses")
        colors = sns.color_palette(_PALETTE, 2)
        idx = np.arange(Z)
        ax_kl.bar(idx[active], kl[active], color=colors[0], label="active")
        ax_kl.bar(idx[~active], np.maximum(kl[~active], 1e-6), color=colors[1], label="inactive (collapsed)")
        ax_kl.axhline(
            threshold, color="k", linestyle="--", linewidth=1.2, label=f"threshold {threshold:g} nats"
        )
        if kl.max() > 0 and kl.max() / max(min(kl.min(), threshold), 1e-6) > 100:
            ax_kl.set_yscale("log")
        ax_kl.set_xlabel("latent dimension")
        ax_kl.set_ylabel("mean KL per dimension (nats)")
        ax_kl.set_xticks(idx[:: int(np.ceil(Z / 12))])
        ax_kl.set_title(f"Per-dimension KL: {int(active.sum())}/{Z} active units")
        ax_kl.legend(loc="best", fontsize="small")
    return fig


# --------------------------------------------------------------------------- per-joint error


def per_joint_geodesic_error(err_deg: np.ndarray) -> Figure:
    """Bar chart of the mean geodesic angle between input and reconstruction, per joint.

    Args:
        err_deg: (30,) degrees, joints 0-14 left hand and 15-29 right, MANO order within a hand.

    Returns:
        The figure (one axes).
    """
    err = _as_1d(err_deg, "err_deg")
    J = len(anatomy.JOINT_NAMES)
    if err.size != 2 * J:
        raise ValueError(f"err_deg must have {2 * J} values (left then right hand), got {err.size}")
    names = [f"{side} {n}" for side in ("L", "R") for n in anatomy.JOINT_NAMES]
    palette = finger_colors()
    colors = [palette[n.rstrip("123")] for n in anatomy.JOINT_NAMES] * 2
    with _style():
        fig = new_figure((11.0, 4.2))
        ax = fig.add_subplot()
        x = np.arange(err.size)
        ax.bar(x, err, color=colors)
        ax.axvline(J - 0.5, color="0.3", linewidth=1.0)
        ax.axhline(err.mean(), color="k", linestyle="--", linewidth=1.0, label=f"mean {err.mean():.2f}°")
        top = max(float(err.max()), 1e-6)
        ax.set_ylim(0, top * 1.15)
        ax.text(J / 2 - 0.5, top * 1.07, "left hand", ha="center", fontsize="small")
        ax.text(J * 1.5 - 0.5, top * 1.07, "right hand", ha="center", fontsize="small")
        ax.set_xticks(x, names, rotation=90, fontsize="small")
        ax.set_xlim(-0.7, err.size - 0.3)
        ax.set_ylabel("geodesic error (degrees)")
        ax.set_xlabel("joint (MANO order; colour = finger)")
        ax.set_title("Per-joint geodesic angle between input and reconstruction")
        ax.legend(loc="upper right", fontsize="small")
    return fig
