"""``HandVAELightningModule``: training, validation and test around a plain hand VAE.

Metrics, all per epoch (batch-weighted means accumulated on the device, logged once an epoch):
  * ``train/loss`` = mean(recon_nll + β · KL_freebits), the optimised objective;
    ``train/recon_nll``, ``train/kl`` (raw KL, no free bits), ``train/beta``, ``train/recon_sigma``;
  * ``val/loss`` = the negative ELBO (β = 1, no free bits, one z ~ q(z|x)), comparable across
    epochs; best checkpoints monitor it. ``val/recon_nll``, ``val/kl``, ``val/energy_mean`` (the
    model's ``energy``), ``val/geodesic_deg`` (mean per-joint angle between input and
    reconstruction at z = μ) and ``val/active_units`` (``hand_vae.metrics``); the same under
    ``test/``.
Each validation epoch also stores the quantiles of the validation energies in the model's
``energy_quantiles`` buffer (``hand_vae.models.quantiles``), so every checkpoint carries its calibration.

The training step is ours (manual optimisation): zero the gradients, forward, backward, clip the
gradient norm, AdamW. It never waits for the host, and with ``--cuda_graphs`` it is replayed from
one CUDA graph (``hand_vae.cuda_graphs``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytorch_lightning as pl
import torch
from typing_extensions import override

from hand_vae import metrics
from hand_vae.config import OptimConfig
from hand_vae.cuda_graphs import StaticStep, use_cuda_graphs
from hand_vae.losses import beta_schedule, free_bits_kl
from hand_vae.models import VAEConfig, build_model
from hand_vae.models.quantiles import STATE_KEY, empty_quantiles, energy_quantiles
from hand_vae.reliability import NonFiniteGuard
from hand_vae.rotations import swap_and_mirror_hands

log = logging.getLogger(__name__)

TRAIN_METRICS = ("loss", "recon_nll", "kl", "beta", "recon_sigma")
EVAL_METRICS = ("loss", "recon_nll", "kl", "energy_mean", "geodesic_deg")


class HandVAELightningModule(pl.LightningModule):
    """Wraps ``hand_vae.models.build_model(...)`` as ``self.model``.

    All constructor arguments are plain ``str``/``int``/``float``/``bool``/``dict`` and are saved
    as hyperparameters, so ``load_from_checkpoint(path)`` rebuilds the model with torch's default
    ``weights_only=True``.

    Args:
        run: the training run's settings (``config.SETTINGS`` outside the model and optimiser
            groups), saved for resuming. The module reads ``gradient_clip_val``, ``compile`` and
            ``cuda_graphs`` from it; absent keys mean no clipping, no compile, ``auto``.
        **settings: ``VAEConfig`` fields (the model) and ``OptimConfig`` fields (learning rate,
            weight decay, β warm-up, free bits); anything not given takes those classes' defaults,
            so every default is defined once.
    """

    def __init__(self, run: dict | None = None, **settings: Any) -> None:
        super().__init__()
        model_keys = {f.name for f in dataclasses.fields(VAEConfig)}
        optim_keys = {f.name for f in dataclasses.fields(OptimConfig)}
        unknown = set(settings) - model_keys - optim_keys
        if unknown:
            raise TypeError(f"HandVAELightningModule got unknown settings {sorted(unknown)}")
        self.optim = OptimConfig(**{k: v for k, v in settings.items() if k in optim_keys})
        self.model = build_model(**{k: v for k, v in settings.items() if k in model_keys})
        # Saved resolved (every field, defaults included), so a checkpoint rebuilds the same model
        # even if a default changes later.
        self.save_hyperparameters({**self.model.cfg.to_dict(), **dataclasses.asdict(self.optim), "run": run})
        # Our step clips and steps itself (the same code is captured in a CUDA graph); Lightning
        # still counts steps, moves data, runs the precision plugin and DDP.
        self.automatic_optimization = False
        run = run or {}
        self.clip = float(run.get("gradient_clip_val") or 0.0)
        # β of the current step as a device tensor, filled in place: no host-to-device copy per step,
        # and a captured graph reads the new value.
        self.register_buffer("beta", torch.zeros(()), persistent=False)
        self.train_means = metrics.RunningMean(TRAIN_METRICS)
        self.eval_means = metrics.RunningMean(EVAL_METRICS)
        self.kl_means = metrics.RunningMean(
            [f"z{i}" for i in range(self.model.z_dim)]
        )  # mean KL per dimension
        self.energies: list[torch.Tensor] = []  # this evaluation epoch's energies, on the device
        self.cuda_graphs = False
        self._graph_step: StaticStep | None = None
        self._compiled = False

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Energy of poses (B, 90) or (B, 30, 3) -> (B,) nats."""
        return self.model.energy(x)

    def beta_at(self, step: int) -> float:
        """β for optimiser step ``step`` (linear warm-up per step, ``losses.beta_schedule``)."""
        opt = self.optim
        batches = self.trainer.num_training_batches if self._trainer is not None else 1
        per_epoch = int(batches) if batches != float("inf") and batches > 0 else 1
        return beta_schedule(step, opt.beta_max, opt.kl_warmup_epochs, per_epoch)

    @override
    def configure_callbacks(self) -> list[pl.Callback]:
        # Lightning calls this again for trainer.test(); one guard is enough (and a second one makes
        # Lightning print an "override" notice on every run).
        if self._trainer is not None and any(isinstance(c, NonFiniteGuard) for c in self.trainer.callbacks):
            return []
        return [NonFiniteGuard()]

    def _fit_whitening(self) -> None:
        """Start the model at the validation-tuned Gaussian of the distribution it trains on
        (train ∪ mirrored train with mirroring). On resume the checkpoint's buffers replace it."""
        dm = self.trainer.datamodule
        train = dm.split_tensor("train", device=None)
        if dm.hparams.mirror_augment:
            train = torch.cat([train, swap_and_mirror_hands(train)])
        chosen = self.model.fit_whitening(train, dm.split_tensor("val", device=None))
        log.info(
            "starting from the full-covariance Gaussian with %s",
            ", ".join(f"{k} {v:.3g}" for k, v in chosen.items()),
        )

    @override
    def setup(self, stage: str) -> None:
        run = self.hparams.run or {}
        if stage == "fit" and not bool(getattr(self.model, "white_fitted", True)):
            self._fit_whitening()
        if run.get("compile") and not self._compiled:
            self.model.compile()  # compiles the module's call in place: state_dict keys unchanged
            self._compiled = True
        if stage == "fit":
            trainer = self.trainer
            self.cuda_graphs = use_cuda_graphs(
                run.get("cuda_graphs", "auto"),
                trainer.strategy.root_device,
                trainer.precision,
                trainer.world_size,
                self._compiled,
            )

    # ------------------------------------------------------------------ the objective
    def model_step(
        self, batch: torch.Tensor, beta: torch.Tensor | float, free_bits: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The objective of one batch, shared by training (β, free bits) and evaluation (1, 0).

        Args:
            batch: (B, 90) or (B, 30, 3) poses.
            beta: KL weight (a 0-dim device tensor in training).
            free_bits: per-dimension KL floor λ, nats.

        Returns:
            loss (0-dim) = mean recon_nll + β · KL_λ (Kingma & Welling 2014; free bits: Kingma
            et al. 2016), its parts (3,) = [loss, mean recon_nll, mean raw KL], and the KL (B, Z).
        """
        out = self.model(batch)  # one z ~ q(z|x) per pose
        recon, kl = out["recon_nll"].mean(), out["kl"]
        loss = recon + beta * free_bits_kl(kl, free_bits)
        return loss, torch.stack([loss, recon, kl.sum(-1).mean()]), kl

    def _train_stats(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, parts, _ = self.model_step(batch, self.beta, self.optim.free_bits)
        sigma = self.model.log_sigma.detach().exp().mean()
        return loss, torch.cat([parts.detach(), self.beta[None], sigma[None]])  # (5,) TRAIN_METRICS

    # ------------------------------------------------------------------ training
    def update_step(self, batch: torch.Tensor) -> torch.Tensor:
        """One optimisation step in plain torch calls, free of host syncs: what a CUDA graph captures.

        Gradients are zeroed in place (their addresses stay fixed) and the optimizer is the raw
        AdamW. Returns the (5,) ``TRAIN_METRICS`` of the batch.
        """
        optimizer = self.optimizers().optimizer
        optimizer.zero_grad(set_to_none=False)
        loss, stats = self._train_stats(batch)
        loss.backward()
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters(), self.clip)
        optimizer.step()
        return stats

    def _lightning_step(self, batch: torch.Tensor) -> torch.Tensor:
        """The same step through Lightning's optimizer, precision plugin and strategy (DDP, AMP)."""
        optimizer = self.optimizers()
        loss, stats = self._train_stats(batch)
        optimizer.zero_grad()
        self.manual_backward(loss)
        if self.clip > 0:
            self.clip_gradients(optimizer, gradient_clip_val=self.clip, gradient_clip_algorithm="norm")
        optimizer.step()
        return stats

    @override
    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.beta.fill_(self.beta_at(self.global_step))
        if self.cuda_graphs:
            if self._graph_step is None:
                self._graph_step = StaticStep(self.update_step)
            optimizer = self.optimizers()
            # Lightning counts optimizer steps (global_step) in these two hooks of its optimizer's
            # step(); the captured graph performs the update itself.
            optimizer._on_before_step()
            stats = self._graph_step(batch)
            optimizer._on_after_step()
        else:
            stats = self._lightning_step(batch)
        self.train_means.update(stats, batch.shape[0])
        return stats[0]

    def _log_train_epoch(self) -> None:
        """Log the epoch means of the training metrics (rank-local, like Lightning's own epoch means)."""
        for name, value in self.train_means.compute().items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, prog_bar=name == "loss")
        self.train_means.reset()

    @override
    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # Log at the epoch's last batch, before validation and before callbacks' epoch-end hooks
        # (the plot callback reads these in on_train_epoch_end, which runs before ours).
        if batch_idx + 1 >= self.trainer.num_training_batches:
            self._log_train_epoch()

    @override
    def on_train_epoch_end(self) -> None:
        self._log_train_epoch()  # only if the last-batch hook did not run (e.g. an empty epoch)

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: torch.Tensor) -> None:
        _, parts, kl = self.model_step(batch, 1.0, 0.0)  # loss = −ELBO
        energy = self.model.energy(batch)  # (B,) nats, at z = μ
        geodesic = torch.rad2deg(metrics.reconstruction_error(self.model, batch).mean())
        B = batch.shape[0]
        self.eval_means.update(torch.cat([parts, energy.mean()[None], geodesic[None]]), B)
        self.kl_means.update(kl.mean(0), B)
        self.energies.append(energy.detach())

    @override
    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._eval_step(batch)

    @override
    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._eval_step(batch)

    def _reduced_means(self, acc: metrics.RunningMean) -> torch.Tensor | None:
        """Means over every process of a running mean, which is then reset; None if it is empty."""
        sums = acc.sums()
        acc.reset()
        if sums is None:
            return None
        total, count = sums
        packed = self.trainer.strategy.reduce(
            torch.cat([total, total.new_full((1,), count)]), reduce_op="sum"
        )
        return packed[:-1] / packed[-1].clamp_min(1)

    def _gathered_energies(self) -> torch.Tensor:
        """This epoch's energies of every process, (N,); processes may hold different counts."""
        local = torch.cat(self.energies) if self.energies else self.beta.new_empty((0,))
        self.energies = []
        world = self.trainer.world_size
        if world == 1:
            return local
        sizes = self.all_gather(local.new_full((1,), local.numel(), dtype=torch.long)).reshape(world)
        padded = local.new_full((int(sizes.max()),), float("nan"))
        padded[: local.numel()] = local
        everything = self.all_gather(padded)  # (world, max size)
        return torch.cat([everything[r, : int(sizes[r])] for r in range(world)])

    def _log_eval_epoch(self, stage: str) -> None:
        means = self._reduced_means(self.eval_means)
        kl_per_dim = self._reduced_means(self.kl_means)
        energies = self._gathered_energies()
        if means is None:
            return
        for name, value in zip(EVAL_METRICS, means.unbind(), strict=True):
            self.log(f"{stage}/{name}", value, prog_bar=name == "loss", sync_dist=True)
        self.log(f"{stage}/active_units", metrics.active_units(kl_per_dim), sync_dist=True)
        if stage == "val" and not self.trainer.sanity_checking and energies.numel():
            self.model.energy_quantiles.copy_(energy_quantiles(energies))

    @override
    def on_validation_epoch_end(self) -> None:
        self._log_eval_epoch("val")

    @override
    def on_test_epoch_end(self) -> None:
        self._log_eval_epoch("test")

    # ------------------------------------------------------------------ optimiser, checkpoints
    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        # The fused kernel updates all parameters in one launch (CUDA and, since torch 2.4, CPU).
        # Lightning's mixed-precision plugin refuses to clip gradients for an optimizer that
        # "handles unscaling" (fused ones do), so mixed precision uses the foreach kernel.
        # capturable: the step counter stays on the device, as graph capture requires.
        mixed = self._trainer is not None and "mixed" in str(self.trainer.precision)
        return torch.optim.AdamW(
            self.parameters(),
            lr=self.optim.learning_rate,
            weight_decay=self.optim.weight_decay,
            fused=not mixed,
            foreach=True if mixed else None,
            capturable=self.cuda_graphs,
        )

    @override
    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Checkpoints written before calibration existed have no quantiles: load them as NaN
        # ("not calibrated") instead of failing the strict state_dict load.
        checkpoint.get("state_dict", {}).setdefault(STATE_KEY, empty_quantiles())
