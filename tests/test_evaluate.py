"""``python -m hand_vae.evaluate``: metrics against hand-computed cases, the CLI on tiny data, the goal's sign."""

from __future__ import annotations

import json

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from scipy.stats import multivariate_normal

from hand_vae.cli.evaluate import main
from hand_vae.data.layouts import write_consolidated
from hand_vae.data.synthetic import generate_sequences, split_by_subject
from hand_vae.evaluation.baselines import NearestNeighbourPrior
from hand_vae.evaluation.metrics import COLUMNS, auc, backbend, evaluate, swap_hands, top1, verdicts
from hand_vae.lightning_module import HandVAELightningModule
from hand_vae.metrics import subsample


def test_auc_and_top1_hand_computed() -> None:
    assert auc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 0.0
    assert auc(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.5
    assert auc(np.array([0.0, 2.0]), np.array([1.0, 3.0])) == 0.75
    assert auc(np.array([0.0]), np.array([np.nan])) == 1.0  # a non-finite energy is implausible
    real = np.array([0.0, 5.0, 1.0])
    decoys = np.array([[1.0, 2.0], [1.0, 9.0], [1.0, 1.0]])  # win, lose, three-way tie
    assert top1(real, decoys) == pytest.approx((1.0 + 0.0 + 1.0 / 3.0) / 3.0)


@pytest.mark.parametrize("seed", range(4))
def test_auc_equals_a_brute_force_pairwise_count(seed) -> None:
    """P(pos > neg) + ½ P(tie) over every (neg, pos) pair, with ties, NaN and ±inf among the scores."""
    rng = np.random.default_rng(seed)
    neg, pos = np.round(rng.normal(0, 1, 57), 1), np.round(rng.normal(0.5, 1, 41), 1)
    neg[:3], pos[:2] = (np.nan, np.inf, -np.inf), (np.inf, np.nan)
    n, p = np.where(np.isnan(neg), np.inf, neg)[:, None], np.where(np.isnan(pos), np.inf, pos)[None, :]
    oracle = ((p > n) + 0.5 * (p == n)).mean()
    assert auc(neg, pos) == pytest.approx(oracle, abs=1e-12)


def test_corruptions() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 90, generator=g) + 0.1  # no zeros, so every negation shows
    bent = backbend(x, g)
    changed = (bent != x).reshape(64, 30, 3).all(-1)  # (64, 30) joints that flipped
    assert (changed.sum(1) == 3).all()
    first = changed.float().argmax(1)  # first flipped joint: a finger's base, within one hand
    assert (first % 3 == 0).all()
    assert torch.equal(changed.nonzero()[:, 1].reshape(64, 3), first[:, None] + torch.arange(3))
    torch.testing.assert_close(bent.reshape(64, 30, 3)[changed], -x.reshape(64, 30, 3)[changed])
    sw = swap_hands(x)
    assert torch.equal(sw[:, :45], x[:, 45:]) and torch.equal(swap_hands(sw), x)


def _tiny_checkpoint(path, run: dict) -> None:
    pl.seed_everything(0, verbose=False)
    module = HandVAELightningModule(z_dim=4, hidden=16, num_layers=1, run=run)
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": pl.__version__,
        },
        path,
    )


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A consolidated dir of 3 synthetic subjects (train 400 poses) and a checkpoint."""
    root = tmp_path_factory.mktemp("eval")
    seqs = generate_sequences(num_subjects=3, sequences_per_subject=4, frames_per_sequence=100, seed=1)
    write_consolidated(root / "cons", split_by_subject(seqs), {})
    _tiny_checkpoint(root / "tiny.ckpt", {"seed": 1})
    return root


def test_cli_json_figures_and_gaussian_matches_scipy(tiny_data, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["--checkpoint", str(tiny_data / "tiny.ckpt"), "--consolidated_dir", str(tiny_data / "cons")]
    argv += ["--baselines", "--num_samples", "8", "--max_poses", "60", "--output_dir", str(out)]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "| gaussian |" in stdout
    report = json.loads((out / "evaluation.json").read_text())
    assert {"checkpoint", "data", "num_poses", "settings", "results", "verdicts", "figures"} <= report.keys()
    # The output dir and every file written are printed; a verdict line per shared metric.
    assert f"Wrote 5 files to {out}/:" in stdout and f"  {out / 'evaluation.json'}" in stdout
    for name in ("energy_histogram_noise", "energy_histogram_backbend", "energy_histogram_swap", "summary"):
        assert f"  {out / name}.png" in stdout and (out / f"{name}.png").is_file()
    assert len(report["verdicts"]) == 9 and all(v in stdout for v in report["verdicts"])
    results = report["results"]
    assert set(results) == {"vae", "gaussian", "gaussian_mirrored", "student_t", "student_t_mirrored"} | {
        "gmm4",
        "gmm8",
        "nearest_neighbour",
    }
    for name, row in results.items():
        assert set(row) == set(COLUMNS)
        for col in COLUMNS:
            if col.startswith(("auc", "top1")):
                assert 0.0 <= row[col] <= 1.0, (name, col)
    assert results["nearest_neighbour"]["nll"] is None and results["gmm4"]["nll"] is not None
    assert all(np.isfinite(results["vae"][c]) for c in ("neg_elbo", "nll", "geodesic_deg"))
    assert len(report["figures"]) == 4 and all((out / p.split("/")[-1]).is_file() for p in report["figures"])
    # The Gaussian's NLL is scipy's on the same poses, with the training split's mean and covariance.
    from hand_vae.data.layouts import load_dataset_dir

    arrays = load_dataset_dir(tiny_data / "cons")
    train = arrays["train"][0].astype(np.float64)
    test = subsample(torch.from_numpy(arrays["test"][0]), 60, 0).double().numpy()
    chosen = report["baseline_settings"]["gaussian"]  # floor and scale chosen on val
    cov = chosen["scale"] ** 2 * (np.cov(train, rowvar=False, bias=True) + chosen["floor"] * np.eye(90))
    ref = -multivariate_normal.logpdf(test, mean=train.mean(0), cov=cov).mean()
    assert results["gaussian"]["nll"] == pytest.approx(ref, rel=1e-9)
    # Same command, same numbers.
    assert main(argv[:-1] + [str(tmp_path / "again"), "--no_figures"]) == 0
    assert json.loads((tmp_path / "again" / "evaluation.json").read_text())["results"] == results


def test_cli_errors(tiny_data, tmp_path, caplog) -> None:
    ckpt = str(tiny_data / "tiny.ckpt")
    assert main(["--checkpoint", str(tmp_path / "missing.ckpt")]) == 2
    assert "no such checkpoint" in caplog.text
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((5, 7), np.float32))
    assert main(["--checkpoint", ckpt, "--poses", str(bad), "--output_dir", str(tmp_path)]) == 2
    assert "(N, 90)" in caplog.text
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    assert main(["--checkpoint", str(tmp_path / "junk.ckpt")]) == 2
    assert "junk.ckpt is not a readable checkpoint" in caplog.text
    assert main(["--checkpoint", ckpt, "--splits_dir", str(tmp_path / "nowhere")]) == 2


def test_an_earlier_result_is_kept_unless_overwrite(tiny_data, tmp_path, caplog) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "evaluation.json").write_text("{}")
    argv = ["--checkpoint", str(tiny_data / "tiny.ckpt"), "--consolidated_dir", str(tiny_data / "cons")]
    argv += ["--num_samples", "2", "--max_poses", "10", "--no_figures", "--output_dir", str(out)]
    assert main(argv) == 2
    assert f"--output_dir {out} already holds evaluation.json" in caplog.text and "--overwrite" in caplog.text
    assert (out / "evaluation.json").read_text() == "{}"  # untouched
    assert main([*argv, "--overwrite"]) == 0
    assert json.loads((out / "evaluation.json").read_text())["num_poses"] == 10


def test_verdicts_name_the_best_baseline_and_the_gap() -> None:
    results = {
        "vae": {"neg_elbo": -50.0, "nll": -100.0, "auc_swap": 0.9, "top1_noise": 0.5},
        "gaussian": {"neg_elbo": None, "nll": -120.0, "auc_swap": 0.8, "top1_noise": 0.5},
        "nearest_neighbour": {"neg_elbo": None, "nll": None, "auc_swap": 0.95, "top1_noise": 0.2},
    }
    assert verdicts(results) == [
        "nll              VAE -100.000 vs gaussian -120.000: VAE WORSE by 20.000 nats/pose",  # lower is better
        "auc_swap         VAE 0.900 vs nearest_neighbour 0.950: VAE WORSE by 0.050",
        "top1_noise       VAE 0.500 vs gaussian 0.500: VAE level with",
    ]
    assert verdicts({"vae": results["vae"]}) == []  # no baselines, no verdict


def test_low_rank_decoder_likelihood_matches_scipy() -> None:
    """The structured decoder covariance (cov_rank) used for the goal: Woodbury == dense density."""
    from hand_vae.models import build_model
    from hand_vae.models.standard import low_rank_gaussian_nll

    g = torch.Generator().manual_seed(0)
    x, mean = (
        torch.randn(4, 90, generator=g, dtype=torch.float64),
        torch.randn(4, 90, generator=g, dtype=torch.float64),
    )
    log_sigma = -2.0 + 0.3 * torch.randn(90, generator=g, dtype=torch.float64)
    w = 0.1 * torch.randn(90, 6, generator=g, dtype=torch.float64)
    cov = (torch.diag(torch.exp(2 * log_sigma)) + w @ w.T).numpy()
    ref = [-multivariate_normal.logpdf(x[i].numpy(), mean[i].numpy(), cov) for i in range(4)]
    np.testing.assert_allclose(low_rank_gaussian_nll(x, mean, log_sigma, w).numpy(), ref, rtol=1e-10)
    model = build_model("standard", z_dim=4, hidden=16, cov_rank=3)
    assert model.energy(torch.zeros(2, 90)).shape == (2,)
    assert model.log_prob(torch.zeros(2, 90), num_samples=5).isfinite().all()


def test_short_run_on_small_proxy_beats_nearest_neighbour_on_backbend() -> None:
    """The CLI's standard model (whitened at the val-tuned Gaussian of train ∪ mirrored train) after
    a short run on the small proxy: one subject's 3,600 frames, scored on unseen subjects."""
    from hand_vae.data.synthetic import pose_tensors, small_proxy_splits
    from hand_vae.losses import free_bits_kl
    from hand_vae.models import build_model
    from hand_vae.rotations import swap_and_mirror_hands

    splits = pose_tensors(small_proxy_splits(seed=0))
    train = splits["train"]
    torch.manual_seed(0)
    model = build_model("standard", z_dim=16, hidden=128, whiten=True, min_sigma=0.05)
    model.fit_whitening(torch.cat([train, swap_and_mirror_hands(train)]), splits["val"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g, step = torch.Generator().manual_seed(0), 0
    for _ in range(3):
        for idx in torch.randperm(len(train), generator=g).split(256):
            out = model(train[idx])
            loss = out["recon_nll"].mean() + min(1.0, step / 30) * free_bits_kl(out["kl"], 0.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    test = splits["test"][::40]  # 315 poses of three unseen subjects
    nn = NearestNeighbourPrior().fit(train)
    results, _ = evaluate(model.eval(), test, {"nearest_neighbour": nn}, num_samples=4)
    assert results["vae"]["auc_backbend"] > results["nearest_neighbour"]["auc_backbend"]
