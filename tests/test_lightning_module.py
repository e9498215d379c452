"""HandVAELightningModule's evaluation: epoch metrics against the model's own functions, the
validation-energy quantiles stored for calibration, and loading checkpoints that predate them."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch

from hand_vae import metrics
from hand_vae.data.datamodule import HandPoseDataModule
from hand_vae.lightning_module import HandVAELightningModule
from hand_vae.models.quantiles import STATE_KEY, energy_quantiles
from hand_vae.training import EnergyQuantiles


def _fit_one_epoch(tmp_path):
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    data = 0.3 * torch.randn(1500, 90, generator=torch.Generator().manual_seed(0))
    dm = HandPoseDataModule(batch_size=128)
    dm.load_arrays = lambda: {"train": data[:1000], "val": data[1000:1300], "test": data[1300:]}
    pl.seed_everything(0, verbose=False)
    module = HandVAELightningModule(z_dim=4, hidden=32, whiten=False, run={"gradient_clip_val": 5.0})
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
                         use_distributed_sampler=False, callbacks=[EnergyQuantiles()])  # fmt: skip
    trainer.fit(module, datamodule=dm)
    return trainer, module, data[1000:1300]


def test_validation_metrics_and_stored_quantiles_match_the_model(tmp_path):
    trainer, module, val = _fit_one_epoch(tmp_path)
    model = module.model.eval()
    with torch.no_grad():
        energy = model.energy(val)  # the weights have not changed since validation ran
        kl_per_dim = model(val, sample=False)["kl"].mean(0)
        geodesic = metrics.reconstruction_error(model, val).mean().rad2deg()
    logged = trainer.callback_metrics
    torch.testing.assert_close(logged["val/energy_mean"], energy.mean(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(logged["val/geodesic_deg"], geodesic, rtol=1e-5, atol=1e-4)
    assert logged["val/active_units"] == metrics.active_units(kl_per_dim)
    stored = model.energy_quantiles
    assert stored.shape == (1001,) and torch.isfinite(stored).all()
    torch.testing.assert_close(stored, energy_quantiles(energy), rtol=1e-5, atol=1e-4)
    assert {f"train/{k}" for k in ("loss", "recon_nll", "kl", "beta", "recon_sigma")} <= set(logged)


def test_a_checkpoint_without_quantiles_loads_as_uncalibrated(tmp_path):
    trainer, module, _ = _fit_one_epoch(tmp_path)
    path = tmp_path / "old.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    del ckpt["state_dict"][STATE_KEY]  # as written before calibration existed
    torch.save(ckpt, path)
    loaded = HandVAELightningModule.load_from_checkpoint(path)
    assert torch.isnan(loaded.model.energy_quantiles).all()
    torch.testing.assert_close(loaded.model.decoder[0].weight, module.model.decoder[0].weight)
