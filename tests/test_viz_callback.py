"""PlotCallback on a tiny fake VAE + datamodule: PNGs and TensorBoard images, val and test."""

from __future__ import annotations

import logging
import math

import matplotlib.pyplot as plt
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader
from typing_extensions import override

from hand_vae.viz.callback import PlotCallback
from hand_vae.viz.report import FIGURE_NAMES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
Z, D = 4, 90


class TinyVAE(nn.Module):
    """Linear VAE exposing the model API the callback relies on (``BaseHandVAE``'s)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc, self.dec = nn.Linear(D, 2 * Z), nn.Linear(Z, D)
        self.log_sigma = nn.Parameter(torch.full((D,), -1.0))
        self.model_type, self.z_dim = "standard", Z

    def encode(self, x):
        mu, logvar = self.enc(x.reshape(x.shape[0], D)).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z):
        return self.dec(z)

    def reconstruct(self, x):
        return self.decode(self.encode(x)[0])

    def sample(self, n, generator=None):
        return self.decode(torch.randn(n, Z, generator=generator))

    def _nll(self, x, x_hat):
        r = (x.reshape(x.shape[0], D) - x_hat) / self.log_sigma.exp()
        return (0.5 * r**2 + self.log_sigma + 0.5 * math.log(2 * math.pi)).sum(-1)

    def forward(self, x):
        mu, logvar = self.encode(x)
        x_hat = self.decode(mu + torch.randn_like(mu) * (0.5 * logvar).exp())
        kl = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar)  # (B, Z), Kingma & Welling 2014 App. B
        return {"recon_nll": self._nll(x, x_hat), "kl": kl, "mu": mu, "logvar": logvar, "x_hat": x_hat}

    def energy(self, x):
        mu, logvar = self.encode(x)
        return self._nll(x, self.decode(mu)) + (0.5 * (mu**2 + logvar.exp() - 1.0 - logvar)).sum(-1)


class TinyModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = TinyVAE()

    def _step(self, batch, stage):
        out = self.model(batch)
        recon, kl = out["recon_nll"].mean(), out["kl"].sum(-1).mean()
        beta = min(1.0, (self.current_epoch + 1) / 3)
        loss = recon + (beta if stage == "train" else 1.0) * kl
        kw = dict(on_step=False, on_epoch=True, batch_size=batch.shape[0])
        self.log_dict({f"{stage}/loss": loss, f"{stage}/recon_nll": recon, f"{stage}/kl": kl}, **kw)
        if stage == "train":
            self.log("train/beta", beta, **kw)
        return loss

    @override
    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    @override
    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    @override
    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    @override
    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


class TinyData(pl.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.tensors = {
            s: 0.3 * torch.randn(n, D, generator=g) for s, n in (("train", 64), ("val", 48), ("test", 40))
        }

    def split_tensor(self, stage: str) -> torch.Tensor:
        return self.tensors[stage]

    @override
    def train_dataloader(self):
        return DataLoader(self.tensors["train"], batch_size=32)

    @override
    def val_dataloader(self):
        return DataLoader(self.tensors["val"], batch_size=48)

    @override
    def test_dataloader(self):
        return DataLoader(self.tensors["test"], batch_size=40)


@pytest.mark.slow
def test_plot_callback_writes_pngs_and_tensorboard_images(tmp_path, caplog):
    logger = TensorBoardLogger(tmp_path, name="run")
    callback = PlotCallback(every_n_epochs=5, num_plot_samples=32)
    trainer = pl.Trainer(
        max_epochs=5,
        accelerator="cpu",
        logger=logger,
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module, data = TinyModule(), TinyData()
    figures_before = plt.get_fignums()
    with caplog.at_level(logging.INFO, logger="hand_vae.viz.callback"):
        trainer.fit(module, datamodule=data)
        trainer.test(module, datamodule=data)

    plots = tmp_path / "run" / "version_0" / "plots"
    # Tested with the weights and the history of the epoch-4 plots: the loss breakdown and the prior
    # samples would be the same pictures again, so they are not written twice.
    same = {"loss_breakdown", "prior_samples"}
    expected = [f"{n}_epoch004.png" for n in FIGURE_NAMES] + [
        f"test_{n}.png" for n in FIGURE_NAMES if n not in same
    ]
    assert sorted(p.name for p in plots.iterdir()) == sorted(expected)  # only epoch 4 (5th), no sanity
    assert sorted(p.name for p in callback.written) == sorted(expected)
    for name in expected:
        assert (plots / name).read_bytes()[:8] == PNG_MAGIC
    assert plt.get_fignums() == figures_before  # every figure closed
    assert module.model.training  # train mode restored

    # History: one complete row per validation epoch, train/beta included.
    assert callback.epochs == [0, 1, 2, 3, 4]
    assert callback.history["train/beta"] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 1.0])
    assert all(len(v) == 5 for v in callback.history.values())
    assert set(callback.plot_seconds) == {"epoch004", "test"}
    assert any(
        "epoch 4 plots" in r.getMessage() and "training epoch" in r.getMessage() for r in caplog.records
    )

    acc = EventAccumulator(str(logger.log_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["images"])
    assert {f"val_plots/{n}" for n in FIGURE_NAMES} <= tags
    assert {f"test_plots/{n}" for n in FIGURE_NAMES} - tags == {f"test_plots/{n}" for n in same}
    image = acc.Images("val_plots/reconstructions")[0]
    assert image.step == 4 and image.encoded_image_string[:8] == PNG_MAGIC
    assert "time/plot_seconds" in acc.Tags()["scalars"]


def test_plot_callback_rejects_bad_arguments():
    with pytest.raises(ValueError, match="every_n_epochs"):
        PlotCallback(every_n_epochs=0)
    with pytest.raises(ValueError, match="num_plot_samples"):
        PlotCallback(num_plot_samples=0)


def test_plots_slow_down_when_they_would_dominate_a_run(caplog):
    """Tiny data: an epoch takes a fraction of a second, a set of plots seconds. The cadence grows so
    plotting takes at most about as long as the training between plots, and one line says so."""
    callback = PlotCallback(every_n_epochs=5)
    callback._train_seconds = 0.5  # five quick epochs
    with caplog.at_level(logging.INFO, logger="hand_vae.viz.callback"):
        callback._slow_down(4.0)
    assert callback.every_n_epochs == 40 and callback._train_seconds == 0.0
    (line,) = [r.getMessage() for r in caplog.records if "plotting every" in r.getMessage()]
    assert "plotting every 40 epochs" in line and "--plot_every_n_epochs" in line
    callback._train_seconds = 60.0  # slow epochs: plots are cheap, the cadence stays
    callback._slow_down(4.0)
    assert callback.every_n_epochs == 40
