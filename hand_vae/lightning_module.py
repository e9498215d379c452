"""``HandVAELightningModule``: the training step, the epoch metrics (``train/`` objective, ``val/`` and
``test/`` −ELBO, which checkpoints monitor) and the optimiser around a plain hand VAE; manual optimisation,
replayed from a CUDA graph with ``--cuda_graphs`` (docs/design.md §6)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytorch_lightning as pl
import torch
from typing_extensions import override

from hand_vae import metrics
from hand_vae.cuda_graphs import StaticStep, lightning_step, use_cuda_graphs
from hand_vae.losses import beta_schedule, free_bits_kl
from hand_vae.models import VAEConfig, build_model
from hand_vae.models.quantiles import STATE_KEY, empty_quantiles
from hand_vae.settings import LEGACY_MODEL, OptimConfig, RunConfig

TRAIN_METRICS = ("loss", "recon_nll", "kl", "beta", "recon_sigma")
EVAL_METRICS = ("loss", "recon_nll", "kl", "energy_mean", "geodesic_deg")


def _names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


class HandVAELightningModule(pl.LightningModule):
    """``hand_vae.models.build_model(...)`` as ``self.model``, with plain-typed hyperparameters
    (``load_from_checkpoint`` works with ``weights_only=True``).

    Args:
        run: ``Settings.run_hparams()``, saved for resuming; the step reads its ``gradient_clip_val``,
            ``compile`` and ``cuda_graphs`` (``RunConfig``'s defaults if absent).
        **settings: ``VAEConfig`` and ``OptimConfig`` fields; absent ones take their defaults.
    """

    def __init__(self, run: dict | None = None, **settings: Any) -> None:
        super().__init__()
        if unknown := set(settings) - _names(VAEConfig) - _names(OptimConfig):
            raise TypeError(f"HandVAELightningModule got unknown settings {sorted(unknown)}")
        self.optim = OptimConfig(**{k: v for k, v in settings.items() if k in _names(OptimConfig)})
        self.model = build_model(**{k: v for k, v in settings.items() if k in _names(VAEConfig)})
        self.run_cfg = RunConfig(**{k: v for k, v in (run or {}).items() if k in _names(RunConfig)})
        # Saved resolved: a checkpoint rebuilds the same model even if a default changes later.
        self.save_hyperparameters({**self.model.cfg.to_dict(), **dataclasses.asdict(self.optim), "run": run})
        self.automatic_optimization = False  # our step clips and steps itself (and is graph-captured)
        # β as a device tensor filled in place: no host-to-device copy, and a captured graph reads it.
        self.register_buffer("beta", torch.zeros(()), persistent=False)
        self.train_means = metrics.RunningMean(TRAIN_METRICS)
        self.eval_means = metrics.RunningMean(EVAL_METRICS)
        self.kl_means = metrics.RunningMean([f"z{i}" for i in range(self.model.z_dim)])  # KL per dim
        self.cuda_graphs = False
        self._graph_step: StaticStep | None = None

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> HandVAELightningModule:
        """Lightning's loader, with the model settings older checkpoints lack filled in with what they
        were trained with (``settings.LEGACY_MODEL``), not today's defaults."""
        hp = torch.load(checkpoint_path, map_location="cpu", weights_only=True).get("hyper_parameters", {})
        legacy = {k: v for k, v in LEGACY_MODEL.items() if k not in hp}
        return super().load_from_checkpoint(checkpoint_path, *args, **{**legacy, **kwargs})

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Energy of poses (B, 90) or (B, 30, 3) -> (B,) nats."""
        return self.model.energy(x)

    def beta_at(self, step: int) -> float:
        """β for optimiser step ``step`` (linear warm-up per step, ``losses.beta_schedule``)."""
        batches = self.trainer.num_training_batches if self._trainer is not None else 1
        per_epoch = int(batches) if batches != float("inf") and batches > 0 else 1
        return beta_schedule(step, self.optim.beta_max, self.optim.kl_warmup_epochs, per_epoch)

    @override
    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        if self.run_cfg.compile and not getattr(self.model, "_compiled_call_impl", None):
            self.model.compile()  # compiles the module's call in place: state_dict keys unchanged
        trainer = self.trainer
        self.cuda_graphs = use_cuda_graphs(self.run_cfg.cuda_graphs, trainer.strategy.root_device,
                                           trainer.precision, trainer.world_size, self.run_cfg.compile)  # fmt: skip

    @override
    def on_train_start(self) -> None:
        # After a resume restored the optimizer: the learning rate and weight decay given now apply.
        for group in self.optimizers().optimizer.param_groups:
            group.update(lr=self.optim.learning_rate, weight_decay=self.optim.weight_decay)

    def model_step(self, batch: torch.Tensor, beta: torch.Tensor | float, free_bits: float):
        """The objective of one batch (B, 90) or (B, 30, 3), training's (β, free bits λ) or the −ELBO (1, 0):
        loss (0-dim) = mean recon_nll + β · KL_λ, its parts (3,) [loss, mean recon_nll, mean raw KL], KL (B, Z).
        """
        out = self.model(batch)  # one z ~ q(z|x) per pose
        recon, kl = out["recon_nll"].mean(), out["kl"]
        loss = recon + beta * free_bits_kl(kl, free_bits)
        return loss, torch.stack([loss, recon, kl.sum(-1).mean()]), kl

    def _train_stats(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, parts, _ = self.model_step(batch, self.beta, self.optim.free_bits)
        sigma = self.model.log_sigma.detach().exp().mean()
        return loss, torch.cat([parts.detach(), self.beta[None], sigma[None]])  # (5,) TRAIN_METRICS

    def update_step(self, batch: torch.Tensor) -> torch.Tensor:
        """One optimisation step free of host syncs (what a CUDA graph captures): (5,) ``TRAIN_METRICS``."""
        optimizer = self.optimizers().optimizer
        optimizer.zero_grad(set_to_none=False)
        loss, stats = self._train_stats(batch)
        loss.backward()
        if self.run_cfg.gradient_clip_val > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters(), self.run_cfg.gradient_clip_val)
        optimizer.step()
        return stats

    def _lightning_step(self, batch: torch.Tensor) -> torch.Tensor:
        """The same step through Lightning's optimizer, precision plugin and strategy (DDP, AMP)."""
        optimizer = self.optimizers()
        loss, stats = self._train_stats(batch)
        optimizer.zero_grad()
        self.manual_backward(loss)
        if (clip := self.run_cfg.gradient_clip_val) > 0:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        optimizer.step()
        return stats

    @override
    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.beta.fill_(self.beta_at(self.global_step))
        if self.cuda_graphs:
            self._graph_step = self._graph_step or StaticStep(self.update_step)
            stats = lightning_step(self.optimizers(), self._graph_step, batch)
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
        # At the epoch's last batch: before validation and the callbacks' epoch-end hooks (plots read these).
        if batch_idx + 1 >= self.trainer.num_training_batches:
            self._log_train_epoch()

    @override
    def on_train_epoch_end(self) -> None:
        self._log_train_epoch()  # only if the last-batch hook did not run (e.g. an empty epoch)

    @override
    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        _, parts, kl = self.model_step(batch, 1.0, 0.0)  # loss = −ELBO
        energy = self.model.energy(batch)  # (B,) nats, at z = μ
        geodesic = torch.rad2deg(metrics.reconstruction_error(self.model, batch).mean())
        B = batch.shape[0]
        self.eval_means.update(torch.cat([parts, energy.mean()[None], geodesic[None]]), B)
        self.kl_means.update(kl.mean(0), B)
        return energy.detach()

    test_step = validation_step

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

    def _log_eval_epoch(self, stage: str) -> None:
        means, kl_per_dim = self._reduced_means(self.eval_means), self._reduced_means(self.kl_means)
        if means is None:
            return
        for name, value in zip(EVAL_METRICS, means.unbind(), strict=True):
            self.log(f"{stage}/{name}", value, prog_bar=name == "loss", sync_dist=True)
        self.log(f"{stage}/active_units", metrics.active_units(kl_per_dim), sync_dist=True)

    @override
    def on_validation_epoch_end(self) -> None:
        self._log_eval_epoch("val")

    @override
    def on_test_epoch_end(self) -> None:
        self._log_eval_epoch("test")

    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Fused: one launch for all parameters; but Lightning's mixed-precision plugin will not clip for a
        # fused optimizer, so mixed precision uses foreach. capturable: the step counter stays on the device.
        mixed = self._trainer is not None and "mixed" in str(self.trainer.precision)
        return torch.optim.AdamW(self.parameters(), lr=self.optim.learning_rate, weight_decay=self.optim.weight_decay,
                                 fused=not mixed, foreach=True if mixed else None, capturable=self.cuda_graphs)  # fmt: skip

    @override
    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Checkpoints older than calibration have no quantiles: load them as NaN ("not calibrated").
        checkpoint.get("state_dict", {}).setdefault(STATE_KEY, empty_quantiles())
