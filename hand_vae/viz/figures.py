"""Figure functions: numpy arrays in, a ``matplotlib.figure.Figure`` out, on an explicit Agg canvas (no pyplot
registry); the caller closes it (``save_figure`` does, as does TensorBoard's ``add_figure``). Units: nats,
degrees, metres. No Lightning. Stick figures: (X, Y, Z) = (−z, x, −y) of the kinematics frame, a proper
rotation: palms down, fingers pointing away, left hand on the left, curls bend down."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator
from mpl_toolkits.mplot3d.art3d import Line3DCollection

from hand_vae import anatomy
from hand_vae.kinematics import BONES, POINTS_PER_FINGER, hand_joint_positions
from hand_vae.losses import ACTIVE_UNIT_NATS

PALETTE = "colorblind"


def finger_colors() -> dict[str, tuple[float, float, float]]:
    """Finger name -> RGB colour (Set1 hues), the same in the skeleton and per-joint figures."""
    return dict(zip(("thumb", "index", "middle", "ring", "pinky"), sns.color_palette("Set1", 5), strict=True))


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


BELOW = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.16), "fontsize": "small"}  # legend under the axes


def _nice_ceil(x: float) -> float:
    """The smallest of 1, 2, 5 × 10^k that is >= x > 0."""
    k = np.floor(np.log10(x))
    return float(next(m * 10.0**k for m in (1.0, 2.0, 5.0, 10.0) if m * 10.0**k >= x * (1 - 1e-12)))


def _symlog_ticks(lo: float, hi: float, linthresh: float) -> np.ndarray:
    """About six round ticks inside ±linthresh, then 1-2-5 per decade beyond (only 1s over > 3 decades)."""
    a, b = max(lo, -linthresh), min(hi, linthresh)
    lin = MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]).tick_values(a, b) if b > a else np.array([])
    top = max(abs(lo), abs(hi), linthresh)
    decades = np.arange(np.floor(np.log10(linthresh)), np.ceil(np.log10(top)) + 1)
    mantissas = (1.0,) if len(decades) > 3 else (1.0, 2.0, 5.0)
    outer = np.array([m * 10.0**k for k in decades for m in mantissas])
    outer = outer[outer > linthresh]
    ticks = np.unique(np.concatenate([lin, outer, -outer]))
    return ticks[(ticks >= lo) & (ticks <= hi)]


def energy_histogram(energies: Mapping[str, np.ndarray], bins: int = 60) -> Figure:
    """Histograms of the energy (−ELBO at z = μ) of held-out poses and of noisy copies of them.

    The first entry is the reference; its 95th percentile is a dashed line and each other entry's
    legend gives the share of its poses above it (flagged at a 5 % false-alarm rate). When the
    energies span far more than the reference's spread the x axis is symmetric-log. ``energies``: label ->
    (N_i,) energies in nats, e.g. ``{"held-out": e0, "noise 0.02 rad": e1}``.
    """
    with figure_style():
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
    data = {k: as_1d(v, f"energies[{k!r}]") for k, v in energies.items()}
    data = {k: v[np.isfinite(v)] for k, v in data.items()}
    ref_name, ref = next(iter(data.items()))
    allv = np.concatenate(list(data.values()))
    lo, hi = np.percentile(allv, [0.1, 99.9]) if allv.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 1.0, hi + 1.0
    p5, p95 = np.percentile(ref, [5, 95]) if ref.size else (lo, hi)
    symlog = (hi - lo) > 30.0 * max(p95 - p5, 1e-3)
    if symlog:  # linear within ±linthresh, which covers the held-out bulk; log beyond it
        linthresh = _nice_ceil(max(abs(p5), abs(p95), 1.0))
        ax.set_xscale("symlog", linthresh=linthresh, linscale=1.5)
        tr = ax.xaxis.get_transform()
        edges = tr.inverted().transform(np.linspace(*tr.transform(np.array([lo, hi])), bins + 1))
        ax.set_xticks(_symlog_ticks(lo, hi, linthresh))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    else:
        edges = np.linspace(lo, hi, bins + 1)
    colors = [sns.color_palette(PALETTE)[0]] + sns.color_palette("flare", max(len(data) - 1, 1))
    for (name, v), c in zip(data.items(), colors, strict=False):
        label = f"{name}: median {np.median(v):,.1f}" if v.size else f"{name}: (none finite)"
        if name != ref_name and v.size:
            label += f", {100.0 * np.mean(v > p95):.0f}% above ref. p95"
        # Fraction per bin (bins equal-width on the drawn axis, so area = share); outliers in the edge bins.
        # Reference filled, noise levels as outlines: readable even where they overlap.
        ref_like = name == ref_name
        ax.hist(np.clip(v, edges[0], edges[-1]), bins=edges, weights=np.full(v.size, 1.0 / max(v.size, 1)),
                histtype="stepfilled" if ref_like else "step", alpha=0.35 if ref_like else 1.0,
                color=c, edgecolor=c, linewidth=1.8, label=label)  # fmt: skip
    ax.axvline(p95, color="k", linestyle="--", linewidth=1.2, label=f"{ref_name} 95th percentile")
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel(
        "energy = −ELBO at z = μ(x) (nats; lower = more plausible)"
        + ("; linear near 0, log beyond" if symlog else "")
    )
    ax.set_ylabel("fraction of poses per bin")


def latent_scatter(
    mu: np.ndarray, energy: np.ndarray, kl_per_dim: np.ndarray, threshold: float = ACTIVE_UNIT_NATS
) -> Figure:
    """2-D PCA of posterior means coloured by energy (axes[0]), beside the per-dimension KL, active units
    (axes[1]), plus a colorbar axes.

    Args:
        mu: (N, Z) posterior means μ(x).
        energy: (N,) energies in nats (colour, clipped to its 2-98th percentiles).
        kl_per_dim: (Z,) mean KL(q(z_i|x) ‖ N(0, 1)) per latent dimension, nats.
        threshold: active-unit threshold in nats (as ``val/active_units``).
    """
    mu = np.asarray(mu, dtype=np.float64)
    if mu.ndim != 2 or mu.shape[0] == 0:
        raise ValueError(f"mu must be (N, Z) with N > 0, got {mu.shape}")
    N, Z = mu.shape
    energy, kl = as_1d(energy, "energy"), as_1d(kl_per_dim, "kl_per_dim")
    if energy.shape[0] != N or kl.shape[0] != Z:
        raise ValueError(f"need energy ({N},) and kl_per_dim ({Z},), got {energy.shape} and {kl.shape}")
    centred = mu - mu.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)  # principal axes = rows of vt
    proj = centred @ vt[:2].T  # (N, <=2)
    pcs = np.pad(proj, ((0, 0), (0, 2 - proj.shape[1])))
    var = np.pad(s**2 / max(float(np.sum(s**2)), 1e-12), (0, 2))[:2]
    vmin, vmax = np.percentile(energy, [2, 98])
    active = kl > threshold
    with figure_style():
        fig = new_figure((11.0, 4.6))
        ax_sc, ax_kl = fig.subplots(1, 2, width_ratios=[1.15, 1.0])
        order = np.argsort(energy)[::-1]  # draw low energy last, on top
        sc = ax_sc.scatter(pcs[order, 0], pcs[order, 1], c=energy[order], cmap="viridis_r", vmin=vmin,
                           vmax=max(vmax, vmin + 1e-9), s=6, alpha=0.8, linewidths=0)  # fmt: skip
        fig.colorbar(sc, ax=ax_sc, label="energy (nats; lower = more plausible; 2-98th pct.)")
        ax_sc.set_xlabel(f"PC1 of posterior mean μ ({100 * var[0]:.0f}% var., latent units)")
        ax_sc.set_ylabel(f"PC2 ({100 * var[1]:.0f}% var., latent units)")
        ax_sc.set_title(f"Posterior means μ(x), PCA of {N} poses")
        colors = sns.color_palette(PALETTE, 2)
        idx = np.arange(Z)
        ax_kl.bar(idx[active], kl[active], color=colors[0], label="active")
        ax_kl.bar(idx[~active], np.maximum(kl[~active], 1e-6), color=colors[1], label="inactive (collapsed)")
        ax_kl.axhline(threshold, color="k", ls="--", lw=1.2, label=f"threshold {threshold:g} nats")
        if kl.max() > 0 and kl.max() / max(min(kl.min(), threshold), 1e-6) > 100:
            ax_kl.set_yscale("log")
        ax_kl.set_xlabel("latent dimension")
        ax_kl.set_ylabel("mean KL per dimension (nats)")
        ax_kl.set_xticks(idx[:: int(np.ceil(Z / 12))])
        ax_kl.set_title(f"Per-dimension KL: {int(active.sum())}/{Z} active units")
        ax_kl.legend(loc="best", fontsize="small")
    return fig


def per_joint_geodesic_error(err_deg: np.ndarray) -> Figure:
    """Bar chart of the mean geodesic angle between input and reconstruction per joint: ``err_deg`` (30,)
    degrees, joints 0-14 left hand and 15-29 right, MANO order within a hand."""
    err = as_1d(err_deg, "err_deg")
    J = len(anatomy.JOINT_NAMES)
    if err.size != 2 * J:
        raise ValueError(f"err_deg must have {2 * J} values (left then right hand), got {err.size}")
    palette = finger_colors()
    with figure_style():
        fig = new_figure((11.0, 4.2))
        ax = fig.add_subplot()
        x = np.arange(err.size)
        ax.bar(x, err, color=[palette[n.rstrip("123")] for n in anatomy.JOINT_NAMES] * 2)
        ax.axvline(J - 0.5, color="0.3", linewidth=1.0)
        ax.axhline(err.mean(), color="k", linestyle="--", linewidth=1.0, label=f"mean {err.mean():.2f}°")
        top = max(float(err.max()), 1e-6)
        ax.set_ylim(0, top * 1.15)
        ax.text(J / 2 - 0.5, top * 1.07, "left hand", ha="center", fontsize="small")
        ax.text(J * 1.5 - 0.5, top * 1.07, "right hand", ha="center", fontsize="small")
        names = [f"{side} {n}" for side in ("L", "R") for n in anatomy.JOINT_NAMES]
        ax.set_xticks(x, names, rotation=90, fontsize="small")
        ax.set_xlim(-0.7, err.size - 0.3)
        ax.set_ylabel("geodesic error (degrees)")
        ax.set_xlabel("joint (MANO order; colour = finger)")
        ax.set_title("Per-joint geodesic angle between input and reconstruction")
        ax.legend(loc="upper right", fontsize="small")
    return fig


def loss_breakdown(history: Mapping[str, Sequence[float]], epochs: Sequence[int]) -> Figure:
    """Loss components over epochs from the logged history: reconstruction NLL (axes[0]), KL and β·KL
    (axes[1]), β (axes[2], twin of axes[1]).

    Args:
        history: metric name -> one value per epoch. Uses ``val/recon_nll``, ``val/kl``, ``train/beta``
            and, when present, ``train/recon_nll``, ``train/kl``, ``val/loss``; missing keys are skipped.
        epochs: (T,) epoch numbers; one is enough (drawn as markers).
    """
    ep = np.asarray(list(epochs), dtype=np.float64)
    if ep.size == 0:
        raise ValueError("epochs is empty")

    def series(key: str) -> np.ndarray | None:
        if key not in history:
            return None
        v = np.asarray(list(history[key]), dtype=np.float64)
        if v.shape != ep.shape:
            raise ValueError(f"history[{key!r}] has {v.size} values for {ep.size} epochs")
        return v

    colors = sns.color_palette(PALETTE, 6)
    with figure_style():
        fig = new_figure((11.0, 4.8))
        ax_nll, ax_kl = fig.subplots(1, 2)
        # val −ELBO = recon NLL + KL: with a small KL the lines coincide, so the −ELBO is a pale band below.
        if (elbo := series("val/loss")) is not None:
            ax_nll.plot(ep, elbo, "-", color="0.55", linewidth=6.0, alpha=0.45, solid_capstyle="round",
                        label="val −ELBO = recon NLL + KL (band)")  # fmt: skip
        for split, ls, marker in (("val", "-", "o"), ("train", ":", "s")):
            if (v := series(f"{split}/recon_nll")) is not None:
                ax_nll.plot(ep, v, ls, marker=marker, ms=4, color=colors[0], label=f"{split} recon NLL")
        ax_nll.set_title("Reconstruction NLL (and total −ELBO)")
        kl, beta = series("val/kl"), series("train/beta")
        for split, ls in (("val", "-"), ("train", ":")):
            if (v := series(f"{split}/kl")) is not None:
                ax_kl.plot(ep, v, ls, marker="o", ms=4, color=colors[1], label=f"{split} KL")
        if kl is not None and beta is not None:
            ax_kl.plot(ep, beta * kl, "-", marker="s", ms=4, color=colors[2], label="β · val KL")
        ax_kl.set_title("KL term (rate)")
        handles, labels = ax_kl.get_legend_handles_labels()
        if beta is not None:
            ax_b = ax_kl.twinx()
            ax_b.grid(False)
            (hb,) = ax_b.plot(ep, beta, "--", marker="^", ms=4, color="0.4", label="β (right axis)")
            ax_b.set_ylabel("β (dimensionless)")
            ax_b.set_ylim(0.0, max(1.0, float(np.nanmax(beta))) * 1.05)
            handles, labels = handles + [hb], labels + ["β (right axis)"]
        for ax in (ax_nll, ax_kl):
            ax.set_xlabel("epoch")
            ax.set_ylabel("mean per pose (nats)")
            if ep.size == 1:
                ax.set_xlim(ep[0] - 1, ep[0] + 1)
            ax.xaxis.get_major_locator().set_params(integer=True)
        if ax_nll.lines:
            ax_nll.legend(ncol=2, **BELOW)
        if handles:
            ax_kl.legend(handles, labels, ncol=2, **BELOW)
        fig.suptitle("Loss components over training")
    return fig


def beta_sensitivity(recon_nll: np.ndarray, kl: np.ndarray, betas: Sequence[float]) -> Figure:
    """β trade-off of a FIXED trained model (no retraining): distortion D, rate R and D + β·R.

    D (mean recon NLL) and R (mean KL) do not depend on β; β only weighs them in ``D + β·R``. axes[0]:
    each pose in the rate-distortion plane, the mean (R, D) and per β the iso-objective line through
    it (slope −β). axes[1]: D, β·R and D + β·R against β.

    Args:
        recon_nll: (N,) per-pose reconstruction NLL (distortion), nats.
        kl: (N,) per-pose KL summed over latent dimensions (rate), nats.
        betas: β values (> 0).
    """
    D, R, b = as_1d(recon_nll, "recon_nll"), as_1d(kl, "kl"), as_1d(betas, "betas")
    if D.shape != R.shape:
        raise ValueError(f"recon_nll and kl must have the same length, got {D.size} and {R.size}")
    if np.any(b <= 0):
        raise ValueError("betas must be positive")
    b = np.sort(b)
    d_mean, r_mean = float(D.mean()), float(R.mean())
    obj = D[None, :] + b[:, None] * R[None, :]  # (nβ, N)
    with figure_style():
        fig = new_figure((11.0, 5.4))
        ax_rd, ax_b = fig.subplots(1, 2)
        ax_rd.scatter(R, D, s=5, alpha=0.25, color="0.45", linewidths=0, label="poses")
        ax_rd.scatter([r_mean], [d_mean], s=60, color="k", marker="X", zorder=5, label="mean (R, D)")
        r_lo, r_hi = np.percentile(R, [1, 99])
        span = max(r_hi - r_lo, 1e-3)
        r_line = np.linspace(max(0.0, r_lo - 0.1 * span), r_hi + 0.1 * span, 50)
        for beta, c in zip(b, sns.color_palette("rocket", len(b)), strict=True):
            ax_rd.plot(r_line, d_mean - beta * (r_line - r_mean), color=c, lw=1.3, label=f"β = {beta:g}")
        d_lo, d_hi = np.percentile(D, [1, 99])
        pad = 0.15 * max(d_hi - d_lo, 1e-3)
        ax_rd.set_ylim(d_lo - pad, d_hi + pad)
        ax_rd.set_xlabel("rate R = KL(q(z|x) ‖ p(z)) (nats)")
        ax_rd.set_ylabel("distortion D = recon NLL (nats)")
        ax_rd.set_title("Rate-distortion plane, iso-objective lines D + β·R")
        ax_rd.legend(ncol=4, **BELOW)
        ax_b.plot(b, np.full_like(b, d_mean), "-", marker="o", ms=4, label="D (recon NLL)")
        ax_b.plot(b, b * r_mean, "-", marker="o", ms=4, label="β · R (β · KL)")
        ax_b.plot(b, obj.mean(axis=1), "-", marker="o", ms=4, color="k", label="D + β · R  (−β-ELBO)")
        q25, q75 = np.percentile(obj, [25, 75], axis=1)
        ax_b.fill_between(b, q25, q75, color="k", alpha=0.12, label="D + β · R, per-pose IQR")
        if b[-1] / b[0] > 20:
            ax_b.set_xscale("log")
            ax_b.set_xticks(b, [f"{v:g}" for v in b])
            ax_b.minorticks_off()
        ax_b.set_xlabel("β (dimensionless)")
        ax_b.set_ylabel("mean per pose (nats)")
        ax_b.set_title("Objective terms vs β")
        ax_b.legend(ncol=2, **BELOW)
        fig.suptitle(
            f"β sensitivity of the FIXED trained model (objective trade-off, not a retrain), N = {D.size}"
        )
    return fig
