"""Using a trained hand VAE as a pose prior: load, score and rank, denoise, sample, export.

Every function takes ``prior``: a plain hand VAE (``hand_vae.models.BaseHandVAE``, what
``load_prior`` returns) or a ``HandVAELightningModule`` (its ``.model`` is used). Both model
types (standard and SO(3)) work. Poses are axis-angle radians in the two-hand layout of
docs/design.md §1: ``(B, 90)`` = ``[left 45 | right 45]``, ``(B, 30, 3)`` or one pose ``(90,)`` /
``(30, 3)``, as a torch tensor of any float dtype on any device or a numpy array. Results come back
on the input's device (a CPU tensor for a numpy array) as float32. Energies are the model's
``energy(x)``: the negative ELBO at z = mu(x), in nats, lower = more plausible.

    prior = load_prior("checkpoints/my_experiment/best_model.ckpt")
    energies, best = rank_hypotheses(prior, hypotheses)      # (B, K), (B,)
    clean = project_to_prior(prior, noisy, weight=50.0)      # (B, 90)
    poses = sample_poses(prior, 16, torch.Generator().manual_seed(0))
    export_energy(prior, "hand_prior_energy.pt2")            # loadable with torch alone
"""

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
    if isinstance(prior, BaseHandVAE):
        return prior
    inner = getattr(prior, "model", None)
    if isinstance(inner, BaseHandVAE):
        return inner
    raise TypeError(
        f"prior must be a hand VAE (load_prior(...)) or a HandVAELightningModule, got {type(prior).__name__}"
    )


def load_prior(checkpoint_path: str | Path, map_location: str | torch.device = "cpu") -> BaseHandVAE:
    """Load the plain hand VAE from a training checkpoint, in eval mode (``checkpoint.load_vae``).

    Read with ``torch.load(weights_only=True)``: a file carrying pickled code is refused. Warns
    once when the prior was trained on the embedded synthetic demo data.

    Args:
        checkpoint_path: a ``.ckpt`` written by ``train_hand_vae_lightning.py`` (e.g.
            ``checkpoints/NAME/best_model.ckpt``).
        map_location: device to load onto.

    Returns:
        The ``StandardHandVAE`` or ``SO3HandVAE``, in eval mode (dropout off, so ``energy`` is
        deterministic).

    Raises:
        CheckpointError: (a ValueError; ``CheckpointNotFoundError`` is also a FileNotFoundError)
            no such file, a run directory, or not a readable hand VAE checkpoint.
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
    """The prior's energy (−ELBO at z = mu(x)), differentiable in ``poses``.

    The same values as ``prior.energy(poses)``; this one also warns (once per model) when most of
    the batch is far outside the calibration range, a sign of a wrong convention or units.

    Args:
        prior: a hand VAE (``load_prior``) or a ``HandVAELightningModule``; use eval mode.
        poses: (B, 90), (B, 30, 3) or one pose, radians.

    Returns:
        (B,) float32 nats, lower = more plausible, on the input's device.
    """
    vae = as_vae(prior)
    e = vae.energy(poses)
    _warn_if_outside(vae, e)
    return e


def log_prob(prior: nn.Module, poses: PoseArray, num_samples: int = 100) -> torch.Tensor:
    """Importance-weighted lower bound on log p(x) with ``num_samples`` samples (``BaseHandVAE.log_prob``).

    Returns:
        (B,) float32 nats, higher = more plausible, on the input's device.
    """
    return as_vae(prior).log_prob(poses, num_samples=num_samples)


@torch.no_grad()
def rank_hypotheses(prior: nn.Module, hypotheses: PoseArray) -> tuple[torch.Tensor, torch.Tensor]:
    """Score K pose hypotheses per frame and pick the most plausible one.

    Not differentiable (runs under ``no_grad``); for a differentiable score use
    ``prior.energy(x)``. A hypothesis whose energy is NaN (e.g. a NaN pose) is never picked
    unless all of its frame's hypotheses are NaN. Large B·K are scored in chunks.

    Args:
        prior: a hand VAE (``load_prior``) or a ``HandVAELightningModule``; use eval mode.
        hypotheses: (B, K, 90) or (B, K, 30, 3) axis-angle poses, radians, any float dtype.

    Returns:
        energies (B, K) float32 nats (lower = more plausible) and best (B,) int64, the index of the
        lowest-energy hypothesis of each frame, on the input's device.

    Raises:
        ValueError: bad shape.
    """
    vae = as_vae(prior)
    h = torch.as_tensor(hypotheses)
    shape = tuple(h.shape)
    if (
        not ((h.dim() == 3 and shape[2] == POSE_DIM) or (h.dim() == 4 and shape[2:] == (NUM_JOINTS, 3)))
        or 0 in shape[:2]
    ):
        raise ValueError(
            f"hypotheses must have shape (B, K, {POSE_DIM}) or (B, K, {NUM_JOINTS}, 3) with B, K >= 1, got {shape}"
        )
    B, K = shape[:2]
    energies = vae.energy(h.reshape(B * K, POSE_DIM)).reshape(B, K)  # (B, K)
    # torch.argmin returns a NaN's index; rank NaN energies last instead.
    return energies, torch.nan_to_num(energies, nan=float("inf")).argmin(dim=1)


def project_to_prior(
    prior: nn.Module,
    poses: PoseArray,
    steps: int = 100,
    weight: float = 50.0,
    lr: float = 0.01,
) -> torch.Tensor:
    """Denoise poses: pull each one towards plausible poses while staying close to it.

    Solves, per pose x0 independently (batched),

        x* = argmin_x  energy(x) + weight · ‖x − x0‖²

    with ``steps`` Adam steps on the 90 axis-angle numbers, starting at x = x0. ``energy`` is the
    prior's negative ELBO at z = mu(x) (nats) and ‖·‖² is the squared Euclidean distance in
    axis-angle (rad²). If x0 is x plus Gaussian noise of std s radians per number,
    ``weight = 1 / (2 s²)`` makes x* a MAP estimate with the energy standing in for −log p(x);
    the default 50 corresponds to s = 0.1 rad. A larger weight keeps x* closer to x0.

    Differentiable: when ``poses`` requires grad, the optimisation is unrolled with
    ``create_graph=True`` and the result carries gradients to ``poses`` (and to the prior's
    weights); memory then grows with ``steps``. Otherwise the result is detached and cheap.
    Axis-angle is not wrapped, so this suits poses away from the angle-π boundary (true of
    finger joints).

    Args:
        prior: a hand VAE (``load_prior``) or a ``HandVAELightningModule``; use eval mode.
        poses: (B, 90), (B, 30, 3) or one pose: noisy axis-angle, radians.
        steps: optimisation steps (0 returns the input).
        weight: data-term weight, nats per rad² (> 0).
        lr: Adam step size, radians per step.

    Returns:
        (B, 90) float32 denoised poses, radians, on the input's device ((90,) for one pose).

    Raises:
        ValueError: bad shape, negative steps or non-positive weight / lr.
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
    # Adam written out in tensor ops (Kingma & Ba, ICLR 2015) so the unrolled steps stay
    # differentiable; the objective is a sum over poses, so every pose is optimised independently.
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    x = x0.clone()
    m = torch.zeros_like(x)
    v = torch.zeros_like(x)
    with torch.enable_grad():
        for t in range(1, steps + 1):
            if not differentiable:
                x = x.detach().requires_grad_(True)
            objective = vae.energy(x) + weight * (x - x0).square().sum(-1)  # (B,)
            (g,) = torch.autograd.grad(objective.sum(), x, create_graph=differentiable)
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g.square()
            m_hat = m / (1 - beta1**t)
            v_hat = v / (1 - beta2**t)
            # eps inside the sqrt: sqrt has an infinite derivative at 0, which would give NaN
            # second-order gradients for a coordinate whose gradient is exactly zero.
            x = x - lr * m_hat / torch.sqrt(v_hat + eps**2)
    return back(x if differentiable else x.detach())


@torch.no_grad()
def sample_poses(prior: nn.Module, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw poses from the prior: z ~ N(0, I), decoded to the mean pose of p(x|z).

    Args:
        prior: a hand VAE (``load_prior``) or a ``HandVAELightningModule``.
        n: number of poses (>= 1).
        generator: a ``torch.Generator`` on the model's device, for reproducible samples.

    Returns:
        (n, 90) axis-angle poses, radians, ``[left 45 | right 45]``, on the model's device.

    Raises:
        ValueError: n < 1.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    return as_vae(prior).sample(n, generator=generator)


@torch.no_grad()
def plausibility(prior: nn.Module, poses: PoseArray) -> torch.Tensor:
    """Calibrated plausibility: the share of validation poses whose energy is higher, in [0, 1].

    0.5 = as plausible as the median validation pose; 0.01 = only 1% of validation poses score
    worse. It is 1 − the empirical CDF of the validation energies stored in the checkpoint
    (``energy_quantiles``, 1001 quantiles, linear in between), so it is monotone non-increasing in
    ``energy`` and comparable across models and datasets. Not differentiable; for fitting use
    ``prior.energy``. Warns once per model when most of a batch is far outside the validation range.

    Args:
        prior: a hand VAE (``load_prior``) or a ``HandVAELightningModule``, eval mode.
        poses: (B, 90), (B, 30, 3) or one pose, radians.

    Returns:
        (B,) float32 in [0, 1] on the input's device; a NaN pose gives 0.

    Raises:
        NotCalibratedError: the checkpoint carries no quantiles (written before calibration
            existed); the message names ``python -m hand_vae.calibration``, which adds them.
    """
    vae = as_vae(prior)
    e = energy(vae, poses)
    return plausibility_from_quantiles(e, vae.energy_quantiles)


@torch.no_grad()
def is_plausible(prior: nn.Module, poses: PoseArray, level: float = 0.99) -> torch.Tensor:
    """Whether each pose's energy is at or below the ``level`` quantile of validation energies.

    At ``level = 0.99``, 99% of validation poses pass; equivalently ``plausibility >= 1 − level``.

    Args:
        prior: a hand VAE (``load_prior``) or a ``HandVAELightningModule``, eval mode.
        poses: (B, 90), (B, 30, 3) or one pose, radians.
        level: quantile level in [0, 1].

    Returns:
        (B,) bool on the input's device; False for a NaN pose.

    Raises:
        NotCalibratedError: as for ``plausibility``.
        ValueError: level outside [0, 1].
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
    """Save the prior's energy function with ``torch.export``, loadable without this package.

    Load it with torch alone::

        energy_fn = torch.export.load("hand_prior_energy.pt2").module()
        e = energy_fn(poses)  # (B, 90) float32 CPU -> (B,) nats

    Limits:
        * Input is exactly (B, 90) float32 on CPU (no (B, 30, 3), no float64, no GPU); B is a
          dynamic dimension (any B >= 1).
        * The file holds the eval-mode forward graph of ``energy`` and the weights; nothing else
          (no ``encode``/``sample``, no training state). Shape checks of the Python API are gone:
          a wrong shape fails inside the graph with a torch error.
        * The file format is torch's ``.pt2``: it needs a torch of the same or a newer version
          to load. For C++, compile it with AOTInductor
          (``torch._inductor.aoti_compile_and_package``) and run it with libtorch's
          ``AOTIModelPackageLoader``; that route is not tested here. TorchScript
          (``torch.jit``) is deprecated in torch 2.x and is not used.

    Args:
        prior: a hand VAE (``load_prior``) or a ``HandVAELightningModule``.
        path: output file; ``.pt2`` by convention. Its parent directory is created.

    Returns:
        The path written.
    """
    vae = copy.deepcopy(as_vae(prior)).to(device="cpu", dtype=torch.float32).eval()
    fn = EnergyFunction(vae).eval()
    example = torch.zeros(2, POSE_DIM)  # (2, 90); B = 2 because torch.export specialises 0 and 1
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.export.export(fn, (example,), dynamic_shapes={"x": {0: batch}})
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, out)
    log.info("Exported the %s prior's energy to %s", vae.model_type, out)
    return out
