"""Evaluate a hand VAE on a set of poses and build every training-time figure. No Lightning: needs only the
model API of ``hand_vae.models.BaseHandVAE`` (``forward``, ``energy``, ``reconstruct``, ``sample``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from hand_vae import metrics
from hand_vae.rotations import to_flat
from hand_vae.viz import figures

BETAS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)  # for the trade-off figure (the model itself is fixed)
FIGURE_NAMES = ("energy_histogram", "latent_scatter", "loss_breakdown", "beta_sensitivity",
                "prior_samples", "reconstructions", "per_joint_geodesic_error")  # fmt: skip


@torch.no_grad()
def evaluate_for_plots(model: nn.Module, poses: torch.Tensor, seed: int = 0, num_skeletons: int = 8) -> dict:
    """Run the model on ``poses`` and collect the numpy arrays the figures need.

    The global RNG is forked (training randomness is untouched); noise, the posterior z and the prior
    samples are seeded with ``seed``.

    Args:
        model: a hand VAE in eval mode, on any device.
        poses: (N, 90) or (N, 30, 3) axis-angle, radians (moved to the model's device).
        num_skeletons: poses drawn as stick figures (prior samples and reconstructions).

    Returns:
        ``energy`` {label: (N,)} nats, ``mu`` (N, Z), ``energy_clean`` (N,), ``kl_per_dim`` (Z,),
        ``recon_nll`` (N,), ``kl`` (N,) nats, ``inputs``, ``recon``, ``samples`` (k, 90) radians,
        ``joint_err_deg`` (30,) degrees.
    """
    device = next(model.parameters()).device
    x = to_flat(poses.to(device=device, dtype=torch.float32))  # (N, 90)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        out = model(x)
        energies = {"held-out": model.energy(x)}  # (N,)
        for sigma in metrics.NOISE_LEVELS:
            energies[f"noise {sigma:g} rad"] = model.energy(x + sigma * torch.randn_like(x))
        x_hat = to_flat(model.reconstruct(x))  # (N, 90)
        gen = torch.Generator(device=device).manual_seed(seed)
        samples = to_flat(model.sample(num_skeletons, generator=gen))  # (k, 90)
    k = min(num_skeletons, x.shape[0])

    def np_(t: torch.Tensor) -> np.ndarray:
        return t.detach().float().cpu().numpy()

    return {
        "energy": {name: np_(e) for name, e in energies.items()},
        "energy_clean": np_(energies["held-out"]),
        "mu": np_(out["mu"]),
        "kl_per_dim": np_(out["kl"].mean(0)),  # (Z,) mean over poses
        "recon_nll": np_(out["recon_nll"]),
        "kl": np_(out["kl"].sum(-1)),  # (N,) total rate per pose
        "inputs": np_(x[:k]),
        "recon": np_(x_hat[:k]),
        "samples": np_(samples),
        "joint_err_deg": np_(torch.rad2deg(metrics.geodesic_error(x, x_hat)).mean(0)),
    }


def make_figures(
    model: nn.Module,
    poses: torch.Tensor,
    history: Mapping[str, Sequence[float]] | None = None,
    epochs: Sequence[int] | None = None,
    seed: int = 0,
    num_skeletons: int = 8,
    split: str = "val",
) -> dict[str, Figure]:
    """Every figure for one evaluation of ``model`` on ``poses``, ``{name: Figure}`` named as ``FIGURE_NAMES``
    (``loss_breakdown`` only with a history); the caller closes them.

    Args:
        model: hand VAE, already in eval mode.
        poses: (N, 90) or (N, 30, 3) radians; subsample a large N first (cost grows with N).
        history, epochs: logged metrics per epoch for ``loss_breakdown`` (skipped when empty).
        seed, num_skeletons: see ``evaluate_for_plots``.
        split: name of the pose set in titles ("val" or "test").
    """
    d = evaluate_for_plots(model, poses, seed=seed, num_skeletons=num_skeletons)
    energies = {(f"{split} poses" if k == "held-out" else k): v for k, v in d["energy"].items()}
    figs: dict[str, Figure] = {
        "energy_histogram": figures.energy_histogram(energies),
        "latent_scatter": figures.latent_scatter(d["mu"], d["energy_clean"], d["kl_per_dim"]),
    }
    if history and epochs:
        figs["loss_breakdown"] = figures.loss_breakdown(history, epochs)
    figs["beta_sensitivity"] = figures.beta_sensitivity(d["recon_nll"], d["kl"], BETAS)
    figs["prior_samples"] = figures.hand_skeletons(
        d["samples"],
        titles=[f"sample {i}" for i in range(len(d["samples"]))],
        suptitle="Samples from the prior: decode(z), z ~ N(0, I)",
    )
    figs["reconstructions"] = figures.hand_skeletons(
        d["inputs"],
        recon=d["recon"],
        titles=[f"{split} pose {i}" for i in range(len(d["inputs"]))],
        suptitle=f"{split} poses (solid) vs reconstructions at z = μ(x) (dashed)",
    )
    figs["per_joint_geodesic_error"] = figures.per_joint_geodesic_error(d["joint_err_deg"])
    return figs
