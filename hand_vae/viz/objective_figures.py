"""Figures of the training objective: loss components over epochs and the β trade-off.

Pure functions, arrays in and a ``matplotlib.figure.Figure`` out (Agg canvas, no pyplot; see
``hand_vae.viz.style``). The caller closes the figure (``save_figure`` does). Units: nats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

from hand_vae.viz.style import PALETTE as _PALETTE
from hand_vae.viz.style import as_1d as _as_1d
from hand_vae.viz.style import figure_style as _style
from hand_vae.viz.style import new_figure

# --------------------------------------------------------------------------- training curves


def loss_breakdown(history: Mapping[str, Sequence[float]], epochs: Sequence[int]) -> Figure:
    """Loss components over epochs: reconstruction NLL, KL and β·KL, read from the logged history.

    Args:
        history: metric name -> one value per entry of ``epochs``. Uses ``val/recon_nll``,
            ``val/kl``, ``train/beta`` and, when present, ``train/recon_nll``, ``train/kl``,
            ``val/loss``. Missing keys are skipped; β·KL needs both ``val/kl`` and ``train/beta``.
        epochs: (T,) epoch numbers. One epoch is enough (drawn as markers).

    Returns:
        The figure: axes[0] reconstruction NLL, axes[1] KL terms, axes[2] β (twin of axes[1]).
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

    colors = sns.color_palette(_PALETTE, 6)
    with _style():
        fig = new_figure((11.0, 4.8))
        ax_nll, ax_kl = fig.subplots(1, 2)
        # val −ELBO = val recon NLL + val KL, so with a small KL the two lines coincide: the −ELBO is
        # drawn first as a wide pale band and the recon NLL on top of it, so both stay visible.
        elbo = series("val/loss")
        if elbo is not None:
            ax_nll.plot(ep, elbo, "-", color="0.55", linewidth=6.0, alpha=0.45, solid_capstyle="round",
                        label="val −ELBO = recon NLL + KL (band)")  # fmt: skip
        for key, ls, marker in (("val/recon_nll", "-", "o"), ("train/recon_nll", ":", "s")):
            v = series(key)
            if v is not None:
                ax_nll.plot(
                    ep, v, ls, marker=marker, ms=4, color=colors[0], label=f"{key.split('/')[0]} recon NLL"
                )
        ax_nll.set_title("Reconstruction NLL (and total −ELBO)")
        ax_nll.set_xlabel("epoch")
        ax_nll.set_ylabel("mean per pose (nats)")
        kl, beta = series("val/kl"), series("train/beta")
        for key, c, ls in (("val/kl", colors[1], "-"), ("train/kl", colors[1], ":")):
            v = series(key)
            if v is not None:
                ax_kl.plot(ep, v, ls, marker="o", ms=4, color=c, label=f"{key.split('/')[0]} KL")
        if kl is not None and beta is not None:
            ax_kl.plot(ep, beta * kl, "-", marker="s", ms=4, color=colors[2], label="β · val KL")
        ax_kl.set_title("KL term (rate)")
        ax_kl.set_xlabel("epoch")
        ax_kl.set_ylabel("mean per pose (nats)")
        handles, labels = ax_kl.get_legend_handles_labels()
        if beta is not None:
            ax_b = ax_kl.twinx()
            ax_b.grid(False)
            (hb,) = ax_b.plot(ep, beta, "--", marker="^", ms=4, color="0.4", label="β (right axis)")
            ax_b.set_ylabel("β (dimensionless)")
            ax_b.set_ylim(0.0, max(1.0, float(np.nanmax(beta))) * 1.05)
            handles, labels = handles + [hb], labels + ["β (right axis)"]
        for ax in (ax_nll, ax_kl):
            if ep.size == 1:
                ax.set_xlim(ep[0] - 1, ep[0] + 1)
            ax.xaxis.get_major_locator().set_params(integer=True)
        # Legends below the axes, so they never hide a curve.
        below = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.16), "ncol": 2, "fontsize": "small"}
        if ax_nll.lines:
            ax_nll.legend(**below)
        if handles:
            ax_kl.legend(handles, labels, **below)
        fig.suptitle("Loss components over training")
    return fig


def beta_sensitivity(recon_nll: np.ndarray, kl: np.ndarray, betas: Sequence[float]) -> Figure:
    """β trade-off of a FIXED trained model (no retraining): distortion D, rate R and D + β·R.

    For a trained model the mean reconstruction NLL D and mean KL R do not depend on β; what β
    changes is how the objective ``D + β·R`` (the negative β-ELBO) weighs them. The left panel
    shows each pose in the rate-distortion plane with the mean (R, D) and, for each β, the line of
    constant ``D + β·R`` through it (slope −β: the trade-off β would accept). The right panel shows
    D, β·R and D + β·R against β.

    Args:
        recon_nll: (N,) per-pose reconstruction NLL (distortion), nats.
        kl: (N,) per-pose total KL summed over latent dimensions (rate), nats.
        betas: β values to evaluate (> 0).

    Returns:
        The figure: axes[0] rate-distortion plane, axes[1] objective vs β.
    """
    D, R = _as_1d(recon_nll, "recon_nll"), _as_1d(kl, "kl")
    b = _as_1d(betas, "betas")
    if D.shape != R.shape:
        raise ValueError(f"recon_nll and kl must have the same length, got {D.size} and {R.size}")
    if np.any(b <= 0):
        raise ValueError("betas must be positive")
    b = np.sort(b)
    d_mean, r_mean = float(D.mean()), float(R.mean())
    obj = D[None, :] + b[:, None] * R[None, :]  # (nβ, N)
    colors = sns.color_palette("rocket", len(b))
    with _style():
        fig = new_figure((11.0, 5.4))
        ax_rd, ax_b = fig.subplots(1, 2)
        ax_rd.scatter(R, D, s=5, alpha=0.25, color="0.45", linewidths=0, label="poses")
        ax_rd.scatter([r_mean], [d_mean], s=60, color="k", marker="X", zorder=5, label="mean (R, D)")
        r_lo, r_hi = np.percentile(R, [1, 99])
        span = max(r_hi - r_lo, 1e-3)
        r_line = np.linspace(max(0.0, r_lo - 0.1 * span), r_hi + 0.1 * span, 50)
        for beta, c in zip(b, colors, strict=True):
            ax_rd.plot(
                r_line, d_mean - beta * (r_line - r_mean), color=c, linewidth=1.3, label=f"β = {beta:g}"
            )
        d_lo, d_hi = np.percentile(D, [1, 99])
        pad = 0.15 * max(d_hi - d_lo, 1e-3)
        ax_rd.set_ylim(d_lo - pad, d_hi + pad)
        ax_rd.set_xlabel("rate R = KL(q(z|x) ‖ p(z)) (nats)")
        ax_rd.set_ylabel("distortion D = recon NLL (nats)")
        ax_rd.set_title("Rate-distortion plane, iso-objective lines D + β·R")
        ax_rd.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="small", ncol=4)
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
        ax_b.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="small", ncol=2)
        fig.suptitle(
            f"β sensitivity of the FIXED trained model (objective trade-off, not a retrain), N = {D.size}"
        )
    return fig
