"""Using a trained hand VAE as a pose prior: load, score and rank, denoise, sample, export.

``prior``: a plain hand VAE (``load_prior``) or a ``HandVAELightningModule``. Poses: axis-angle radians
``[left 45 | right 45]`` (docs/design.md §1), (B, 90), (B, 30, 3) or one pose, numpy or a tensor of any
float dtype and device; results are float32 on the input's device (the CPU for numpy)."""

from __future__ import annotations

import copy
import logging
import weakref
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hand_vae.checkpoint import load_vae
from hand_vae.models import BaseHandVAE
from hand_vae.models.base import as_pose_batch
from hand_vae.models.quantiles import is_calibrated, plausibility_from_quantiles, threshold_at
from hand_vae.rotations import NUM_JOINTS, POSE_DIM

log = logging.getLogger(__name__)

PoseArray = torch.Tensor | np.ndarray
OUTSIDE_LEVEL = 0.999  # a batch mostly above this validation quantile gets one warning per model
_warned_outside: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def as_vae(prior: nn.Module) -> BaseHandVAE:
    """The plain VAE inside ``prior`` (itself, or a LightningModule's ``.model``)."""
    for vae in (prior, getattr(prior, "model", None)):
        if isinstance(vae, BaseHandVAE):
            return vae
    raise TypeError(
        f"prior must be a hand VAE (load_prior(...)) or a HandVAELightningModule, got {type(prior).__name__}"
    )


def load_prior(checkpoint_path: str | Path, map_location: str | torch.device = "cpu") -> BaseHandVAE:
    """Load the plain hand VAE of a training checkpoint (e.g. ``checkpoints/NAME/best_model.ckpt``).

    Read with ``weights_only=True`` (pickled code is refused); returned in eval mode, so ``energy``
    is deterministic. Warns once when the prior was trained on the embedded synthetic demo data. Raises
    ``CheckpointError`` (a ValueError; ``CheckpointNotFoundError`` is also a FileNotFoundError): no such
    file, a run directory, or not a readable hand VAE checkpoint.
    """
    return load_vae(checkpoint_path, map_location)[0]


def _warn_if_outside(vae: BaseHandVAE, energies: torch.Tensor) -> None:
    """One warning per model when most of a batch is less plausible than 99.9% of validation poses."""
    q = vae.energy_quantiles
    if vae in _warned_outside or energies.numel() == 0 or not is_calibrated(q):
        return
    if (energies.detach() > threshold_at(q, OUTSIDE_LEVEL)).float().mean() > 0.5:
        _warned_outside.add(vae)
        log.warning(
            "these poses are less plausible than %.1f%% of validation poses: wrong convention, units or data? "
            "(two-hand axis-angle radians [left 45 | right 45]; an SMPL+H pose's hands are [:, 66:156])",
            100 * OUTSIDE_LEVEL,
        )


def energy(prior: nn.Module, poses: PoseArray) -> torch.Tensor:
    """``prior.energy(poses)`` (−ELBO at z = mu(x)), (B,) nats, differentiable; lower = more plausible.

    Also warns (once per model) when most of the batch is far outside the calibration range, a
    sign of a wrong convention or units.
    """
    vae = as_vae(prior)
    e = vae.energy(poses)
    _warn_if_outside(vae, e)
    return e


def log_prob(prior: nn.Module, poses: PoseArray, num_samples: int = 100) -> torch.Tensor:
    """Importance-weighted lower bound on log p(x) with ``num_samples`` samples: (B,) nats."""
    return as_vae(prior).log_prob(poses, num_samples=num_samples)


@torch.no_grad()
def rank_hypotheses(prior: nn.Module, hypotheses: PoseArray) -> tuple[torch.Tensor, torch.Tensor]:
    """Score K pose hypotheses per frame, (B, K, 90) or (B, K, 30, 3) radians, and pick the most plausible
    one (no gradients): energies (B, K) nats and best (B,) int64, the lowest-energy index per frame; a NaN
    energy is picked only when the whole frame is NaN.
    """
    vae = as_vae(prior)
    h = torch.as_tensor(hypotheses)
    if tuple(h.shape[2:]) not in ((POSE_DIM,), (NUM_JOINTS, 3)) or 0 in h.shape[:2]:
        raise ValueError(f"hypotheses must have shape (B, K, {POSE_DIM}) or (B, K, {NUM_JOINTS}, 3) with "
                         f"B, K >= 1, got {tuple(h.shape)}")  # fmt: skip
    B, K = h.shape[:2]
    energies = vae.energy(h.reshape(B * K, POSE_DIM)).reshape(B, K)  # chunked inside
    # torch.argmin returns a NaN's index; rank NaN energies last instead.
    return energies, torch.nan_to_num(energies, nan=float("inf")).argmin(dim=1)


def project_to_prior(
    prior: nn.Module, poses: PoseArray, steps: int = 100, weight: float = 50.0, lr: float = 0.01
) -> torch.Tensor:
    """Denoise: ``argmin_x energy(x) + weight · ‖x − x0‖²`` per pose, by ``steps`` Adam steps from x0.

    ``weight = 1 / (2 s²)`` is the MAP choice for noise of std s rad per number (default: s = 0.1).
    When ``poses`` requires grad, the steps are unrolled and the result is differentiable
    (memory grows with ``steps``); otherwise it is detached. Axis-angle is not wrapped.

    Args:
        poses: (B, 90), (B, 30, 3) or one pose, radians.
        weight: nats per rad² (> 0); lr: radians per step (> 0).

    Returns:
        (B, 90) denoised poses ((90,) for one pose).
    """
    vae = as_vae(prior)
    x0, back = as_pose_batch(poses, next(vae.parameters()), name="poses")  # (B, 90)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not weight > 0 or not lr > 0:
        raise ValueError(f"weight and lr must be > 0, got weight={weight}, lr={lr}")
    differentiable = isinstance(poses, torch.Tensor) and poses.requires_grad and torch.is_grad_enabled()
    if not differentiable:
        x0 = x0.detach()
    # Adam in tensor ops (Kingma & Ba 2015) so unrolled steps stay differentiable; the objective is
    # a sum over poses, so each pose is optimised independently.
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    x, m, v = x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0)
    with torch.enable_grad():
        for t in range(1, steps + 1):
            if not differentiable:
                x = x.detach().requires_grad_(True)
            objective = vae.energy(x) + weight * (x - x0).square().sum(-1)  # (B,)
            (g,) = torch.autograd.grad(objective.sum(), x, create_graph=differentiable)
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g.square()
            # eps inside the sqrt: sqrt'(0) = inf would make second-order gradients NaN.
            x = x - lr * (m / (1 - beta1**t)) / torch.sqrt(v / (1 - beta2**t) + eps**2)
    return back(x if differentiable else x.detach())


@torch.no_grad()
def sample_poses(prior: nn.Module, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` poses: z ~ N(0, I) decoded to the mean of p(x|z), (n, 90) radians on the model's device.

    ``generator`` (on the model's device) makes the samples reproducible.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    return as_vae(prior).sample(n, generator=generator)


@torch.no_grad()
def plausibility(prior: nn.Module, poses: PoseArray) -> torch.Tensor:
    """Share of validation poses with a higher energy, (B,) in [0, 1]; 0.5 = the median pose, NaN -> 0.

    1 − the empirical CDF of the checkpoint's validation energies (``energy_quantiles``), monotone
    in ``energy``; not differentiable. Warns like ``energy``. Raises ``NotCalibratedError`` when the
    checkpoint has no quantiles (``python -m hand_vae.calibration`` adds them).
    """
    vae = as_vae(prior)
    return plausibility_from_quantiles(energy(vae, poses), vae.energy_quantiles)


@torch.no_grad()
def is_plausible(prior: nn.Module, poses: PoseArray, level: float = 0.99) -> torch.Tensor:
    """(B,) bool: energy at or below the ``level`` quantile of validation energies (False for NaN).

    ``level`` in [0, 1]; at 0.99, 99% of validation poses pass. Raises as ``plausibility``.
    """
    vae = as_vae(prior)
    e = energy(vae, poses)  # first: a wrong shape is the first thing to fix
    return e <= threshold_at(vae.energy_quantiles, level)


class EnergyFunction(nn.Module):
    """``forward(x)``: (B, 90) float32 axis-angle poses -> (B,) energies in nats."""

    def __init__(self, vae: BaseHandVAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.energy(x, chunk_size=None)  # no data-dependent branch in the graph


def export_energy(prior: nn.Module, path: str | Path) -> Path:
    """Save the energy with ``torch.export`` (``.pt2``, parent created); returns the path.

    Load with torch alone: ``torch.export.load(path).module()(poses)``. The input must be (B, 90)
    float32 on CPU, B dynamic; only ``energy`` is exported, without the Python shape checks; it
    loads with the same or a newer torch (README "Using the prior" for C++).
    """
    vae = copy.deepcopy(as_vae(prior)).to(device="cpu", dtype=torch.float32).eval()
    example = torch.zeros(2, POSE_DIM)  # B = 2: torch.export specialises 0 and 1
    with torch.no_grad():
        program = torch.export.export(
            EnergyFunction(vae).eval(),
            (example,),
            dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}},
        )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, out)
    log.info("Exported the %s prior's energy to %s", vae.model_type, out)
    return out
