"""Prior quality on three proxies: does the CLI's VAE beat every classic prior on unseen subjects?

Three synthetic proxies (``hand_vae.data.synthetic``), none of them tuned alone, all with capture
noise (``synthetic.CAPTURE_NOISE``: per-frame jitter plus rare per-joint outliers) unless
``--capture_noise off``; without it every prior scores AUC 1.000 at 0.02 rad and sharpness
cannot be judged:
  * ``small``: one subject's 6 clips (3,600 frames) to train on, its 7th clip to validate on, three
    new subjects to test on; the hands have different roles (one holds, one manipulates). It
    mimics a small real capture, where the defaults used to lose to a Gaussian.
  * ``default``: the embedded default, six subjects to train on (36,000 frames), subject06 to
    validate on, subject07 to test on.
  * ``many``: ``synthetic.many_subject_splits``, 20 subjects to train on (42,000 frames), a held-out
    clip of each to validate on, four unseen subjects to test on: the regime users train in.
    ``--subjects 1 6 20`` runs it with that many training subjects (same test subjects) and prints
    the subjects-vs-gain curve: how much data the VAE needs before its latent pays.

Each VAE is trained through the real CLI (``hand_vae.cli.train.main``) on the proxy written as a
consolidated dataset, and scored from its ``best_model.ckpt`` on ``--max_poses`` test poses:
IWAE NLL (K = ``--num_samples``), AUC of real vs noisy (σ = 0.02, 0.05 rad), top-1 among 8
hypotheses that differ in one finger, the KL carried by z, and the NLL of the same model with z
fixed at 0 (a plain Gaussian): the latent is worth having only if it beats that. Baselines
(Gaussian, Student-t, each also on mirrored train, GMM-4/8) get their diagonal floor, covariance
scale and (t) degrees of freedom chosen on validation.

    python bench/prior_quality.py                          # all proxies, CLI defaults
    python bench/prior_quality.py --proxy small --extra "--min_sigma 0.2" --name ms0.2
    python bench/prior_quality.py --subjects 1 6 20        # the many-subject curve
    python bench/prior_quality.py --smoke                  # seconds: 2 epochs, 200 poses

One JSON line per (proxy, method) is appended to ``--out``; markdown tables are printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import tempfile
import time
from pathlib import Path

import torch

from hand_vae import metrics
from hand_vae.evaluation.baselines import fit_baselines
from hand_vae.checkpoint import load_checkpoint, vae_from_checkpoint
from hand_vae.data.layouts import write_consolidated
from hand_vae.data.synthetic import (
    CAPTURE_NOISE,
    default_splits,
    many_subject_splits,
    pose_tensors,
    small_proxy_splits,
)
from hand_vae.evaluation.metrics import evaluate
from hand_vae.losses import kl_per_dim

PROXIES = ("small", "default", "many")
MANY_SUBJECTS = 20  # training subjects of the "many" proxy without --subjects
# Training protocol per proxy (the real-data check uses batch 256 for 300 epochs on ~4k frames).
# "many" gets the default proxy's 30 epochs at 42,000 frames and as many steps on fewer subjects.
PROTOCOL = {
    "small": ["--batch_size", "256", "--max_epochs", "300"],
    "default": ["--batch_size", "256", "--max_epochs", "30"],
}
MANY_STEPS_FRAMES = 30 * 42_000
SHOWN = ("nll", "auc_noise_0.02", "auc_noise_0.05", "top1_finger", "auc_backbend")


@torch.no_grad()
def latent_report(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    """KL carried by z (nats/pose), active units and the NLL of the same model with z = 0."""
    mu, logvar = model.encode(x)
    kl = kl_per_dim(mu, logvar)  # (N, Z)
    z0 = torch.zeros(x.shape[0], model.z_dim)
    nll_z0 = model.recon_nll(x.reshape(x.shape[0], -1, 3), model.decode_params(z0))
    return {
        "kl": float(kl.sum(-1).mean()),
        "active_units": int(metrics.active_units(kl.mean(0))),
        "nll_z0": float(nll_z0.double().mean()),
    }


def proxy_splits(proxy: str, noise: bool) -> dict:
    """Clips of a proxy: "small", "default" or "many<N>" (N training subjects)."""
    capture_noise = CAPTURE_NOISE if noise else None
    if proxy == "small":
        return small_proxy_splits(seed=0, capture_noise=capture_noise)
    if proxy == "default":
        return default_splits(seed=0, capture_noise=capture_noise)
    return many_subject_splits(int(proxy.removeprefix("many")), seed=0, capture_noise=capture_noise)


def run_proxy(proxy: str, extra: list[str], name: str, args: argparse.Namespace, work: Path) -> list[dict]:
    """Write the proxy, train through the CLI, score VAE and baselines; returns JSON rows."""
    from hand_vae.cli.train import main as train_main

    noise = args.capture_noise == "on"
    splits = proxy_splits(proxy, noise)
    data_dir = work / f"data_{proxy}_noise_{args.capture_noise}"
    if not data_dir.is_dir():
        source = f"bench/prior_quality.py proxy {proxy}, capture noise {args.capture_noise}"
        write_consolidated(data_dir, splits, {"source": source})
    tensors = pose_tensors(splits)
    g = torch.Generator().manual_seed(0)
    test = tensors["test"][torch.randperm(len(tensors["test"]), generator=g)[: args.max_poses]]
    if args.smoke:
        protocol = ["--max_epochs", "2"]
    elif proxy.startswith("many"):
        epochs = max(30, round(MANY_STEPS_FRAMES / len(tensors["train"])))
        protocol = ["--batch_size", "256", "--max_epochs", str(epochs)]
    else:
        protocol = PROTOCOL[proxy]
    argv = ["--consolidated_dir", str(data_dir), *protocol, "--seed", "0", *extra]
    argv += ["--no_plots", "--no_progress_bar", "--experiment_name", f"{proxy}_{name}"]
    argv += ["--checkpoint_dir", str(work / "ckpt"), "--log_dir", str(work / "logs")]
    t0 = time.perf_counter()
    if train_main(argv) != 0:
        raise RuntimeError(f"training failed: {shlex.join(argv)}")
    train_s = time.perf_counter() - t0
    ckpt = work / "ckpt" / f"{proxy}_{name}" / "best_model.ckpt"
    state = load_checkpoint(ckpt)
    model, best_epoch = vae_from_checkpoint(state, ckpt), state["epoch"]
    baselines = {} if args.no_baselines else fit_baselines(tensors["train"], val=tensors["val"])
    baselines.pop("nearest_neighbour", None)
    results, _ = evaluate(model, test, baselines, num_samples=args.num_samples, seed=0)
    rows = []
    for method, scores in results.items():
        row = {
            "proxy": proxy,
            "capture_noise": args.capture_noise,
            "method": method if method != "vae" else f"vae:{name}",
            **scores,
        }
        if method == "vae":
            row.update(flags=shlex.join(extra), best_epoch=best_epoch, train_s=round(train_s))
            row.update(latent_report(model, test))
        else:
            row["settings"] = baselines[method].settings
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: one row per method, the headline columns."""
    cols = SHOWN + ("kl", "nll_z0", "best_epoch")
    lines = ["| method | " + " | ".join(cols) + " | settings |", "|" + "---|" * (len(cols) + 2)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append(
                "–"
                if v is None or (isinstance(v, float) and math.isnan(v))
                else (
                    f"{v:.3f}"
                    if isinstance(v, float) and abs(v) < 2
                    else f"{v:.1f}"
                    if isinstance(v, float)
                    else str(v)
                )
            )
        s = r.get("settings") or {}
        setting = f"floor {s['floor']:g}, scale {s['scale']:g}" if s else r.get("flags") or "CLI defaults"
        if "nu" in s:
            setting = f"ν {s['nu']:g}, " + setting
        lines.append(f"| {r['method']} | " + " | ".join(cells) + f" | {setting} |")
    return "\n".join(lines)


def curve(rows: list[dict]) -> str:
    """Markdown: per many-subject proxy, the VAE against the best classic prior and against z = 0."""
    lines = [
        "| training subjects | VAE NLL | best classic prior | its NLL | VAE gain | KL in z | gain over z = 0 |",
        "|---|---|---|---|---|---|---|",
    ]
    for proxy in dict.fromkeys(r["proxy"] for r in rows if r["proxy"].startswith("many")):
        vae = next(r for r in rows if r["proxy"] == proxy and r["method"].startswith("vae"))
        classic = [r for r in rows if r["proxy"] == proxy and "settings" in r and r.get("nll") is not None]
        best = min(classic, key=lambda r: r["nll"], default={"method": "–", "nll": math.nan})
        lines.append(
            f"| {proxy.removeprefix('many')} | {vae['nll']:.1f} | {best['method']} | {best['nll']:.1f} | "
            f"{best['nll'] - vae['nll']:+.1f} | {vae['kl']:.1f} | {vae['nll_z0'] - vae['nll']:+.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--proxy", nargs="*", default=list(PROXIES), choices=PROXIES)
    p.add_argument(
        "--subjects",
        nargs="+",
        type=int,
        default=None,
        help="run the many-subject proxy with each of these numbers of training subjects (e.g. 1 6 20) "
        "instead of --proxy, and print the subjects-vs-gain curve",
    )
    p.add_argument("--capture_noise", choices=("on", "off"), default="on", help="synthetic capture noise")
    p.add_argument("--extra", default="", help="CLI flags on top of the defaults, e.g. '--min_sigma 0.2'")
    p.add_argument("--name", default="defaults", help="label of this VAE row")
    p.add_argument("--max_poses", type=int, default=2000)
    p.add_argument("--num_samples", type=int, default=200, help="K of the IWAE NLL")
    p.add_argument("--no_baselines", action="store_true")
    p.add_argument("--out", default="bench/results/prior_quality.jsonl")
    p.add_argument("--work_dir", default=None, help="keep data and checkpoints here (default: a temp dir)")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    if args.smoke:
        args.max_poses, args.num_samples, args.no_baselines = 200, 4, True
    logging.basicConfig(level=logging.WARNING)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if args.subjects:
        proxies = [f"many{n}" for n in args.subjects]
    else:
        proxies = [f"many{MANY_SUBJECTS}" if p == "many" else p for p in args.proxy]
    every = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        for proxy in proxies:
            rows = run_proxy(proxy, shlex.split(args.extra), args.name, args, work)
            every += rows
            with open(args.out, "a") as f:
                for r in rows:
                    f.write(json.dumps(r, default=str) + "\n")
            print(f"\n## proxy: {proxy}, capture noise {args.capture_noise}\n\n{table(rows)}", flush=True)  # noqa: T201 - a benchmark's report
    if args.subjects:
        print(f"\n## subjects vs gain (many-subject proxy)\n\n{curve(every)}", flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
