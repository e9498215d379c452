"""Metrics of ``python -m hand_vae.evaluate`` (docs/design.md §9): corruptions, AUC, top-1 selection,
VAE and baseline scores, the table and the verdicts. Seeded: the same command gives the same JSON.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from hand_vae import anatomy, metrics
from hand_vae.rotations import HAND_DIM, JOINTS_PER_HAND, to_flat

NOISE_LEVELS = metrics.NOISE_LEVELS  # rad
NUM_DECOYS = 7
COLUMNS = ("neg_elbo", "nll", "geodesic_deg")
COLUMNS += tuple(f"auc_noise_{s:g}" for s in NOISE_LEVELS) + ("auc_backbend", "auc_swap")
COLUMNS += ("top1_noise", "top1_backbend", "top1_finger")
LOWER_IS_BETTER = ("nll",)  # of the metrics the VAE and the baselines share
FINGER_NOISE = 0.1  # rad: σ of the noise on one finger's 9 numbers in the "finger" decoys
Energy = Callable[[torch.Tensor], torch.Tensor]


def add_noise(x: torch.Tensor, sigma: float, g: torch.Generator) -> torch.Tensor:
    """x (B, 90) + i.i.d. N(0, σ²) on every axis-angle component (σ in radians)."""
    return x + sigma * torch.randn(x.shape, generator=g, dtype=x.dtype)


def _random_fingers(batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(hand, finger) index pairs, each (B,), one random finger of the ten per pose."""
    fingers = torch.randint(0, 2 * len(anatomy.FINGERS), (batch,), generator=g)  # hand*5 + finger
    return fingers // len(anatomy.FINGERS), fingers % len(anatomy.FINGERS)


def backbend(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Negate the three joint rotations of one random finger (of 10) per pose: (B, 90) -> (B, 90).

    A flexed finger then bends backwards; a nearly straight one barely changes.
    """
    B = x.shape[0]
    hand, finger = _random_fingers(B, g)
    joint0 = hand * JOINTS_PER_HAND + 3 * finger  # first joint of the finger (MANO order)
    sign = torch.ones(B, 2 * JOINTS_PER_HAND, dtype=x.dtype)
    sign[torch.arange(B)[:, None], joint0[:, None] + torch.arange(3)] = -1.0
    return (x.reshape(B, -1, 3) * sign[..., None]).reshape(B, -1)


def perturb_finger(x: torch.Tensor, g: torch.Generator, sigma: float = FINGER_NOISE) -> torch.Tensor:
    """Add N(0, σ²) to the 9 numbers of one random finger (of 10) per pose, as a detector's candidates differ."""
    B = x.shape[0]
    hand, finger = _random_fingers(B, g)
    cols = (hand * HAND_DIM + 9 * finger)[:, None] + torch.arange(9)  # (B, 9) the finger's columns
    noise = torch.zeros_like(x)
    noise.scatter_(1, cols, sigma * torch.randn((B, 9), generator=g, dtype=x.dtype))
    return x + noise


def swap_hands(x: torch.Tensor) -> torch.Tensor:
    """Exchange the left and right 45 numbers without mirroring: (B, 90) -> (B, 90)."""
    return torch.cat([x[:, HAND_DIM:], x[:, :HAND_DIM]], dim=1)


def corrupted_sets(x: torch.Tensor, seed: int, hypothesis_noise: float) -> dict[str, torch.Tensor]:
    """Every corrupted copy of x (N, 90), seeded: AUC sets (N, 90) and decoy sets (N·7, 90)."""
    g = torch.Generator().manual_seed(seed + 1)
    sets = {f"noise_{s:g}": add_noise(x, s, g) for s in NOISE_LEVELS}
    sets["backbend"] = backbend(x, g)
    sets["swap"] = swap_hands(x)
    rep = x.repeat(NUM_DECOYS, 1)  # (7N, 90), decoy m of pose i at row m·N + i
    sets["decoys_noise"] = add_noise(rep, hypothesis_noise, g)
    sets["decoys_backbend"] = backbend(rep, g)
    sets["decoys_finger"] = perturb_finger(rep, g)
    return sets


def ranked(neg: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels (0 for ``neg`` (N,), 1 for ``pos`` (M,)) and the scores' ranks, for sklearn's ROC functions.

    Ranks keep order and ties but are finite (sklearn refuses non-finite scores); NaN counts as +inf,
    the least plausible.
    """
    s = np.nan_to_num(np.concatenate([neg, pos]).astype(np.float64), nan=np.inf, posinf=np.inf)
    return np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.unique(s, return_inverse=True)[1].reshape(-1)


def auc(neg: np.ndarray, pos: np.ndarray) -> float:
    """ROC AUC of a score that should be higher for ``pos`` than ``neg``: P(pos > neg) + ½ P(tie)."""
    return float(roc_auc_score(*ranked(neg, pos)))


def top1(real: np.ndarray, decoys: np.ndarray) -> float:
    """Share of poses whose real energy (N,) is the lowest among itself and decoys (N, M).

    A tie for the lowest counts as 1 / (number tied), i.e. a random pick among them.
    """
    real = np.nan_to_num(real, nan=np.inf)
    decoys = np.nan_to_num(decoys, nan=np.inf)
    lower = (decoys < real[:, None]).any(1)
    ties = (decoys == real[:, None]).sum(1)
    return float(np.where(lower, 0.0, 1.0 / (1.0 + ties)).mean())


@torch.no_grad()
def scores(energy: Energy, x: torch.Tensor) -> np.ndarray:
    """``energy(x)`` (N,) as float64 numpy; the energy chunks large batches itself."""
    return energy(x).detach().double().cpu().numpy()


def energy_metrics(energy: Energy, x: torch.Tensor, sets: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """AUC and top-1 metrics of one energy; also returns the energies {name: (N,)} for figures."""
    N = x.shape[0]
    e = {"real": scores(energy, x)}
    e.update({k: scores(energy, v) for k, v in sets.items()})
    out = {f"auc_{k}": auc(e["real"], e[k]) for k in sets if not k.startswith("decoys")}
    for kind in ("noise", "backbend", "finger"):
        out[f"top1_{kind}"] = top1(e["real"], e[f"decoys_{kind}"].reshape(NUM_DECOYS, N).T)
    return out, e


@torch.no_grad()
def vae_metrics(model: torch.nn.Module, x: torch.Tensor, num_samples: int, seed: int) -> dict[str, float]:
    """−ELBO, IWAE NLL (K = num_samples) and geodesic error of a VAE on x (N, 90), seeded."""
    model.eval()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        neg_elbo, nll, geo = [], [], []
        for c in x.split(4096):
            out = model(c, sample=True)
            neg_elbo.append(metrics.neg_elbo(out))
            nll.append(-model.log_prob(c, num_samples=num_samples, chunk_size=max(1, 2**16 // len(c))))
            geo.append(metrics.reconstruction_error(model, c).mean(-1))
    return {
        "neg_elbo": float(torch.cat(neg_elbo).double().mean()),
        "nll": float(torch.cat(nll).double().mean()),
        "geodesic_deg": float(torch.rad2deg(torch.cat(geo).double()).mean()),
    }


def vae_energy(model: torch.nn.Module, kind: str, samples: int, seed: int) -> Energy:
    """The VAE's energy: "elbo" = model.energy (−ELBO at z = μ), "iwae" = −log_prob (seeded)."""
    if kind == "elbo":
        return model.energy

    def iwae(x: torch.Tensor) -> torch.Tensor:  # each block of rows sees the same seeded samples
        out = []
        for c in x.split(8192):
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                out.append(-model.log_prob(c, num_samples=samples, chunk_size=max(1, 2**16 // len(c))))
        return torch.cat(out)

    return iwae


def evaluate(
    model: torch.nn.Module,
    poses: torch.Tensor,
    baselines: dict[str, object] | None = None,
    num_samples: int = 1000,
    seed: int = 0,
    energy: str = "elbo",
    energy_samples: int = 100,
    hypothesis_noise: float = 0.02,
) -> tuple[dict[str, dict[str, float | None]], dict[str, dict[str, np.ndarray]]]:
    """Every metric for the VAE and the fitted baselines on held-out poses (N, 90): {method: {column: value
    or None}} and the energies {method: {set: (N,) or (7N,)}}."""
    x = to_flat(poses).float().cpu()
    sets = corrupted_sets(x, seed, hypothesis_noise)
    results, energies = {}, {}
    row = vae_metrics(model, x, num_samples, seed)
    metrics_, energies["vae"] = energy_metrics(vae_energy(model, energy, energy_samples, seed), x, sets)
    results["vae"] = {**row, **metrics_}
    for name, prior in (baselines or {}).items():
        metrics_, energies[name] = energy_metrics(prior.energy, x, sets)
        nll = float(-prior.log_prob(x).mean()) if prior.is_density else None
        results[name] = {"neg_elbo": None, "nll": nll, "geodesic_deg": None, **metrics_}
    return {k: {c: v.get(c) for c in COLUMNS} for k, v in results.items()}, energies


def markdown_table(results: dict[str, dict[str, float | None]]) -> str:
    """One row per method, one column per metric; missing values as "–"."""
    head = "| method | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, row in results.items():
        cells = [
            "–" if row[c] is None else (f"{row[c]:.3f}" if "auc" in c or "top1" in c else f"{row[c]:.2f}")
            for c in COLUMNS
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(results: dict[str, dict[str, float | None]]) -> list[str]:
    """One line per metric the VAE and a baseline share, e.g.
    ``"auc_swap       VAE 0.981 vs gmm8 0.954: VAE better by 0.027"``."""
    lines = []
    for metric, value in results.get("vae", {}).items():
        others = {m: r[metric] for m, r in results.items() if m != "vae" and r.get(metric) is not None}
        if value is None or not others:
            continue
        lower = metric in LOWER_IS_BETTER
        best = min(others, key=others.get) if lower else max(others, key=others.get)
        gap = (others[best] - value) if lower else (value - others[best])  # > 0: the VAE is better
        unit = " nats/pose" if metric == "nll" else ""
        tol = 0.05 if metric == "nll" else 0.0005
        word = "level with" if abs(gap) < tol else ("better" if gap > 0 else "WORSE")
        tail = "" if word == "level with" else f" by {abs(gap):.3f}{unit}"
        lines.append(f"{metric:<16} VAE {value:.3f} vs {best} {others[best]:.3f}: VAE {word}{tail}")
    return lines
