"""Using a trained hand VAE as a pose prior: load, score and rank, denoise, sample, export.

Every function takes ``prior``: a plain hand VAE (``hand_vae.models.BaseHandVAE``, what
``load_prior`` returns) or a ``HandVAELightningModule`` (its ``.model`` is used). Both model
types (standard and SO(3)) work. Poses are axis-angle radians in the two-hand layout of docs/design.md §1:
``(B, 90)`` = ``[left 45 | right 45]`` or ``(B, 30, 3)``. Energies are the model's ``energy(x)``:
the negative ELBO at z = mu(x), in nats, lower = more plausible.

    prior = load_prior("checkpoints/my_experiment/best_model.ckpt")
    energies, best = rank_hypotheses(prior, hypotheses)      # (B, K), (B,)
    clean = project_to_prior(prior, noisy, weight=50.0)      # (B, 90)
    poses = sample_poses(prior, 16, torch.Generator().manual_seed(0))
    export_energy(prior, "hand_prior_energy.pt2")            # loadable with torch alone
"""

from __future__ import annotations

import copy
import logging
from dataclasses import fields
from pathlib import Path

import torch
from torch import nn

from hand_vae.calibration import (
    BUFFER,
    CALIBRATE_HINT,
    empty_quantiles,
    plausibility_from_quantiles,
    threshold_at,
)
from hand_vae.models import BaseHandVAE, VAEConfig, build_model
from hand_vae.one_hand import energy_one_hand, log_prob_one_hand
from hand_vae.rotations import NUM_JOINTS, POSE_DIM, to_flat

log = logging.getLogger(__name__)

STATE_PREFIX = "model."  # HandVAELightningModule keeps the plain VAE as ``self.model``


def _as_vae(prior: nn.Module) -> BaseHandVAE:
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
    """Load the plain hand VAE from a training checkpoint, in eval mode.

    The checkpoint is read with ``torch.load(weights_only=True)``, so a file carrying arbitrary
    pickled code is refused. The model is rebuilt with ``build_model`` from the checkpoint's
    ``hyper_parameters`` and its ``model.*`` weights; no Lightning object is created.

    Args:
        checkpoint_path: a ``.ckpt`` written by ``train_hand_vae_lightning.py`` (e.g.
            ``checkpoints/NAME/best_model.ckpt``).
        map_location: device to load onto.

    Returns:
        The ``StandardHandVAE`` or ``SO3HandVAE``, in eval mode (dropout off, so ``energy`` is
        deterministic).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable hand VAE checkpoint.
    """
    from hand_vae.checkpoint import load_checkpoint

    path = Path(checkpoint_path)
    ckpt = load_checkpoint(path, map_location)  # CheckpointError (a ValueError) on any failure
    return prior_from_checkpoint(ckpt, path).to(map_location)


def prior_from_checkpoint(ckpt: dict, source: str | Path = "checkpoint") -> BaseHandVAE:
    """The plain hand VAE of an already-read checkpoint dict (``checkpoint.load_checkpoint``), in
    eval mode, on the device its tensors are on; for callers that also need the dict itself.

    Raises:
        ValueError: the weights do not match the checkpoint's hyper_parameters.
    """
    hp = ckpt["hyper_parameters"]
    cfg_keys = {f.name for f in fields(VAEConfig)}
    model = build_model(**{k: v for k, v in hp.items() if k in cfg_keys})
    state = {k[len(STATE_PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(STATE_PREFIX)}
    if BUFFER not in state:  # written before checkpoints carried the energy calibration
        state[BUFFER] = empty_quantiles()
        log.info("%s has no energy calibration; plausibility() needs: %s", source, CALIBRATE_HINT)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{source}: weights do not match its hyper_parameters ({err})") from err
    log.info("Loaded a %s hand VAE (z_dim %d) from %s", model.model_type, model.z_dim, source)
    return model.eval()


def _hypotheses_to_flat(hypotheses: torch.Tensor) -> torch.Tensor:
    """(B, K, 90) or (B, K, 30, 3) -> (B·K, 90)."""
    shape = tuple(hypotheses.shape)
    if hypotheses.dim() == 3 and shape[2] == POSE_DIM:
        B, K = shape[:2]
    elif hypotheses.dim() == 4 and shape[2:] == (NUM_JOINTS, 3):
        B, K = shape[:2]
    else:
        raise ValueError(
            f"hypotheses must have shape (B, K, {POSE_DIM}) or (B, K, {NUM_JOINTS}, 3), got {shape}"
        )
    if B == 0 or K == 0:
        raise ValueError(f"hypotheses must hold at least one pose per frame, got shape {shape}")
    return hypotheses.reshape(B * K, POSE_DIM)  # (B·K, 90)


@torch.no_grad()
def rank_hypotheses(
    prior: nn.Module, hypotheses: torch.Tensor, chunk_size: int = 65536
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score K pose hypotheses per frame and pick the most plausible one.

    Not differentiable (runs under ``no_grad``); for a differentiable score use
    ``prior.energy(x)``. A hypothesis whose energy is NaN (e.g. a NaN pose) is never picked
    unless all of its frame's hypotheses are NaN.

    Args:
        prior: a hand VAE (``load_prior``) or a ``HandVAELightningModule``; use eval mode.
        hypotheses: (B, K, 90) or (B, K, 30, 3) axis-angle poses, radians.
        chunk_size: poses scored per forward pass (bounds memory for large B·K).

    Returns:
        energies (B, K) in nats (lower = more plausible) and best (B,) int64, the index of the
        lowest-energy hypothesis of each frame.

    Raises:
        ValueError: bad shape.
    """
    vae = _as_vae(prior)
    B, K = hypotheses.shape[:2] if hypotheses.dim() >= 2 else (0, 0)
    flat = _hypotheses_to_flat(hypotheses)  # (B·K, 90)
    p = next(vae.parameters())
    flat = flat.to(device=p.device, dtype=p.dtype)
    energies = torch.cat([vae.energy(c) for c in flat.split(chunk_size)]).reshape(B, K)  # (B, K)
    # torch.argmin returns a NaN's index; rank NaN energies last instead.
    best = torch.nan_to_num(energies, nan=float("inf")).argmin(dim=1)  # (B,)
    return energies, best


def _check_poses(poses: torch.Tensor, name: str = "poses") -> torch.Tensor:
    if not isinstance(poses, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(poses).__name__}")
    if poses.dim() not in (2, 3) or poses.shape[0] == 0:
        raise ValueError(
            f"{name} must have shape (B, {POSE_DIM}) or (B, {NUM_JOINTS}, 3), got {tuple(poses.shape)}"
        )
    return to_flat(poses)  # raises ValueError naming the accepted shapes


def project_to_prior(
    prior: nn.Module,
    poses: torch.Tensor,
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
        poses: (B, 90) or (B, 30, 3) noisy axis-angle poses, radians.
        steps: optimisation steps (0 returns the input).
        weight: data-term weight, nats per rad² (> 0).
        lr: Adam step size, radians per step.

    Returns:
        (B, 90) denoised poses, radians.

    Raises:
        ValueError: bad shape, negative steps or non-positive weight / lr.
    """
    vae = _as_vae(prior)
    x0 = _check_poses(poses)  # (B, 90)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not weight > 0 or not lr > 0:
        raise ValueError(f"weight and lr must be > 0, got weight={weight}, lr={lr}")
    differentiable = poses.requires_grad and torch.is_grad_enabled()
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
    return x if differentiable else x.detach()


@torch.no_grad()
def sample_poses(prior: nn.Module, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw poses from the prior: z ~ N(0, I), decoded to the mean pose of p(x|z).

    Args:
        prior: a hand VAE (``load_prior``) or a ``HandVAELightningModule``.
        n: number of poses (>= 1).
        generator: a ``torch.Generator`` on the model's device, for reproducible samples.

    Returns:
        (n, 90) axis-angle poses, radians, ``[left 45 | right 45]``.

    Raises:
        ValueError: n < 1.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    return _as_vae(prior).sample(n, generator=generator)


@torch.no_grad()
def plausibility(prior: nn.Module, poses: torch.Tensor, chunk_size: int = 65536) -> torch.Tensor:
    """Calibrated plausibility: the share of validation poses whose energy is higher, in [0, 1].

    0.5 = as plausible as the median validation pose; 0.01 = only 1% of validation poses score
    worse. It is 1 − the empirical CDF of the validation energies stored in the checkpoint
    (``energy_quantiles``, 1001 quantiles, linear in between), so it is monotone non-increasing in
    ``energy`` and comparable across models and datasets. Not differentiable; for fitting use
    ``prior.energy``.

    Args:
        prior: a hand VAE (``load_prior``) or a ``HandVAELightningModule``, eval mode.
        poses: (B, 90) or (B, 30, 3) axis-angle, radians.
        chunk_size: poses per energy pass.

    Returns:
        (B,) float32 in [0, 1]; a NaN pose gives 0.

    Raises:
        NotCalibratedError: the checkpoint carries no quantiles (written before calibration
            existed); the message names ``python -m hand_vae.calibration``, which adds them.
    """
    vae = _as_vae(prior)
    x = _check_poses(poses).to(vae.energy_quantiles.device)
    energy = torch.cat([vae.energy(c) for c in x.split(chunk_size)])
    return plausibility_from_quantiles(energy, vae.energy_quantiles)


@torch.no_grad()
def is_plausible(prior: nn.Module, poses: torch.Tensor, level: float = 0.99) -> torch.Tensor:
    """Whether each pose's energy is at or below the ``level`` quantile of validation energies.

    At ``level = 0.99``, 99% of validation poses pass; equivalently ``plausibility >= 1 − level``.

    Args:
        prior: a hand VAE (``load_prior``) or a ``HandVAELightningModule``, eval mode.
        poses: (B, 90) or (B, 30, 3) axis-angle, radians.
        level: quantile level in [0, 1].

    Returns:
        (B,) bool; False for a NaN pose.

    Raises:
        NotCalibratedError: as for ``plausibility``.
        ValueError: level outside [0, 1].
    """
    vae = _as_vae(prior)
    threshold = threshold_at(vae.energy_quantiles, level)
    x = _check_poses(poses).to(vae.energy_quantiles.device)
    return torch.cat([vae.energy(c) for c in x.split(65536)]) <= threshold


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
    vae = copy.deepcopy(_as_vae(prior)).to(device="cpu", dtype=torch.float32).eval()
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


__all__ = [
    "EnergyFunction",
    "energy_one_hand",
    "export_energy",
    "is_plausible",
    "log_prob_one_hand",
    "plausibility",
    "load_prior",
    "project_to_prior",
    "rank_hypotheses",
    "sample_poses",
]
