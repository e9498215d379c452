"""``HandVAELightningModule``: training, validation and test around a plain hand VAE.

Metric names (seed README + DESIGN §4), all per epoch:
  * ``train/loss`` = mean(recon_nll + β · KL_freebits), the optimised objective;
  * ``train/recon_nll``, ``train/kl`` (raw KL, no free bits), ``train/beta``, ``train/recon_sigma``;
  * ``val/loss`` = the true negative ELBO (β = 1, no free bits), comparable across epochs; best
    checkpoints monitor it. ``val/recon_nll``, ``val/kl``, ``val/energy_mean``,
    ``val/geodesic_deg`` (mean per-joint angle between input and reconstruction at z = mu) and
    ``val/active_units`` (latent dims with mean KL > 0.01 nats); the same under ``test/``.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from typing_extensions import override

from hand_vae.losses import ACTIVE_UNIT_NATS, beta_schedule, free_bits_kl
from hand_vae.models import build_model
from hand_vae.reliability import NonFiniteError

TRAIN_METRICS = ("loss", "recon_nll", "kl", "beta", "recon_sigma")  # order of the per-step stats


class HandVAELightningModule(pl.LightningModule):
    """Wraps ``hand_vae.models.build_model(...)`` as ``self.model``.

    All constructor arguments are plain ``str``/``int``/``float``/``bool``/``dict`` and are saved
    as hyperparameters, so ``load_from_checkpoint(path)`` rebuilds the model with torch's default
    ``weights_only=True``.

    Args:
        model_type: "standard" or "so3".
        z_dim, hidden, num_layers, dropout, min_sigma, cov_rank, whiten: model size, likelihood and
            regularisation (see ``VAEConfig``).
        learning_rate: AdamW learning rate.
        weight_decay: AdamW decoupled weight decay.
        kl_warmup_epochs: epochs of linear β warm-up (per step).
        beta_max: final β.
        free_bits: per-dimension KL floor, nats (0 = off).
        run: the training run's settings (data source, experiment name, ...) for resuming; not
            used by the module itself.
    """

    def __init__(
        self,
        model_type: str = "standard",
        z_dim: int = 24,
        hidden: int = 256,
        num_layers: int = 2,
        dropout: float = 0.0,
        min_sigma: float = 0.005,
        cov_rank: int = 0,
        whiten: bool = False,
        learning_rate: float = 3e-4,
        weight_decay: float = 0.0,
        kl_warmup_epochs: float = 10,
        beta_max: float = 1.0,
        free_bits: float = 0.0,
        run: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = build_model(
            model_type,
            z_dim=z_dim,
            hidden=hidden,
            num_layers=num_layers,
            dropout=dropout,
            min_sigma=min_sigma,
            cov_rank=cov_rank,
            whiten=whiten,
        )
        self._kl_sum: torch.Tensor | None = None
        self._kl_count = 0
        # First global step whose training loss was NaN/inf (−1: none). Kept on the device and
        # checked once per epoch, so the training step never waits for the host.
        self._first_bad_step: torch.Tensor | None = None
        self._train_sums: torch.Tensor | None = None
        self._train_count = 0

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Energy of poses (B, 90) or (B, 30, 3) -> (B,) nats."""
        return self.model.energy(x)

    def current_beta(self) -> float:
        """β for the current optimiser step (linear warm-up, DESIGN §4)."""
        hp = self.hparams
        steps_per_epoch = int(self.trainer.num_training_batches) if self._trainer is not None else 1
        if not math.isfinite(steps_per_epoch) or steps_per_epoch <= 0:
            steps_per_epoch = 1
        return beta_schedule(self.global_step, hp.beta_max, hp.kl_warmup_epochs, steps_per_epoch)

    @override
    def setup(self, stage: str) -> None:
        whiten = getattr(self.model, "fit_whitening", None)
        if (
            stage == "fit"
            and self.hparams.whiten
            and whiten is not None
            and not bool(self.model.white_fitted)
        ):
            # From the training split only; on resume the checkpoint's buffers replace these.
            whiten(self.trainer.datamodule.split_tensor("train").to(self.device))
        if (self.hparams.run or {}).get("compile") and "_compiled" not in self.__dict__:
            # Kept out of the module tree (plain __dict__ entry) so the state_dict keys stay "model.*".
            self.__dict__["_compiled"] = torch.compile(self.model)

    def _shared_step(self, batch: torch.Tensor, stage: str) -> torch.Tensor:
        forward = self.__dict__.get("_compiled", self.model) if stage == "train" else self.model
        out = forward(batch, sample=True)
        recon, kl = out["recon_nll"], out["kl"]  # (B,), (B, Z)
        kl_raw = kl.sum(-1).mean()
        B = batch.shape[0]
        if stage == "train":
            beta = self.current_beta()
            loss = recon.mean() + beta * free_bits_kl(kl, self.hparams.free_bits)
            self._track_nonfinite(loss)
            # Accumulate B-weighted sums on the device and log once per epoch: five self.log
            # calls per step cost ~5 ms of Python, and new_full avoids a host->device copy.
            stats = torch.stack(
                [loss, recon.mean(), kl_raw, loss.new_full((), beta), self.model.log_sigma.exp().mean()]
            ).detach()
            self._train_sums = stats * B if self._train_sums is None else self._train_sums + stats * B
            self._train_count += B
            return loss
        log = dict(on_step=False, on_epoch=True, batch_size=B, sync_dist=True)
        loss = recon.mean() + kl_raw  # true −ELBO: β = 1, no free bits
        self._eval_extras(batch, out, stage, log)
        self.log(f"{stage}/loss", loss, prog_bar=True, **log)
        self.log(f"{stage}/recon_nll", recon.mean(), **log)
        self.log(f"{stage}/kl", kl_raw, **log)
        return loss

    def _log_train_epoch(self) -> None:
        """Log the epoch means of the training metrics (rank-local, like Lightning's own epoch means)."""
        if self._train_sums is None:
            return
        means = self._train_sums / max(self._train_count, 1)
        for i, name in enumerate(TRAIN_METRICS):
            self.log(f"train/{name}", means[i], on_step=False, on_epoch=True, prog_bar=name == "loss")
        self._train_sums, self._train_count = None, 0

    @override
    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # Log at the epoch's last batch, before validation and before callbacks' epoch-end hooks
        # (the plot callback reads these in on_train_epoch_end, which runs before ours).
        if batch_idx + 1 >= self.trainer.num_training_batches:
            self._log_train_epoch()

    def _eval_extras(self, batch: torch.Tensor, out: dict, stage: str, log: dict) -> None:
        params_at_mean = self.model.decode_params(out["mu"])
        energy = self.model.recon_nll(batch.reshape(batch.shape[0], -1, 3), params_at_mean) + out["kl"].sum(
            -1
        )
        x_hat = self.model.params_to_pose(params_at_mean)
        geodesic = self.model.joint_errors(batch, x_hat).mean()
        self.log(f"{stage}/energy_mean", energy.mean(), **log)
        self.log(f"{stage}/geodesic_deg", torch.rad2deg(geodesic), **log)
        kl_sum = out["kl"].detach().sum(0)  # (Z,)
        self._kl_sum = kl_sum if self._kl_sum is None else self._kl_sum + kl_sum
        self._kl_count += batch.shape[0]

    def _log_active_units(self, stage: str) -> None:
        if self._kl_sum is None:
            return
        total = self.trainer.strategy.reduce(self._kl_sum, reduce_op="sum")
        count = self.trainer.strategy.reduce(
            torch.tensor(float(self._kl_count), device=self._kl_sum.device), reduce_op="sum"
        )
        kl_per_dim = total / count.clamp_min(1)  # (Z,) mean KL per latent dimension
        active = (kl_per_dim > ACTIVE_UNIT_NATS).sum().float()
        self.log(f"{stage}/active_units", active)
        self._kl_sum, self._kl_count = None, 0

    def _track_nonfinite(self, loss: torch.Tensor) -> None:
        if self._first_bad_step is None:
            self._first_bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
        first = self._first_bad_step
        hit = ~torch.isfinite(loss.detach()) & (first < 0)
        self._first_bad_step = torch.where(hit, torch.full_like(first, self.global_step), first)

    def check_finite(self) -> None:
        """Raise ``NonFiniteError`` (on every rank) if a training loss or a weight went non-finite.

        Called before validation, i.e. before ModelCheckpoint can write the poisoned state.
        """
        if self._first_bad_step is None:
            return
        bad_weights = torch.stack([~torch.isfinite(p).all() for p in self.parameters()]).any()
        flag = torch.maximum(self._first_bad_step, torch.where(bad_weights, 0, -1))
        flag = self.trainer.strategy.reduce(flag.float(), reduce_op="max")
        if flag.item() >= 0:
            step = int(self._first_bad_step.item())
            where = f"step {step}" if step >= 0 else "a weight update"
            raise NonFiniteError(
                f"non-finite training loss at epoch {self.current_epoch}, {where}: stopped before saving, so "
                "last.ckpt still holds the previous good state. Try a lower --learning_rate or "
                "--gradient_clip_val, or resume from last.ckpt."
            )

    @override
    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking and self.trainer.state.fn == "fit":
            self.check_finite()

    @override
    def on_train_epoch_end(self) -> None:
        self.check_finite()
        self._log_train_epoch()  # only if the last-batch hook did not run (e.g. an empty epoch)

    @override
    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    @override
    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    @override
    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    @override
    def on_validation_epoch_end(self) -> None:
        self._log_active_units("val")

    @override
    def on_test_epoch_end(self) -> None:
        self._log_active_units("test")

    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        # The fused kernel updates all parameters in one launch (CUDA and, since torch 2.4, CPU).
        # Lightning's mixed-precision plugin refuses to clip gradients for an optimizer that
        # "handles unscaling" (fused ones do), so mixed precision uses the foreach kernel.
        mixed = self._trainer is not None and "mixed" in str(self.trainer.precision)
        return torch.optim.AdamW(
            self.parameters(),
            lr=hp.learning_rate,
            weight_decay=hp.weight_decay,
            fused=not mixed,
            foreach=True if mixed else None,
        )
