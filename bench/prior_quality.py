"""Prior quality on two proxies: does the CLI's VAE beat every classic prior on unseen subjects?

Two synthetic proxies (``hand_vae.data.synthetic``), neither of them tuned alone:
  * ``small``: one subject's 6 clips (3,600 frames) to train on, its 7th clip to validate on, three
    new subjects to test on; the hands have different roles (one holds, one manipulates). It
    mimics a small real capture, where the defaults used to lose to a Gaussian.
  * ``default``: the embedded default, six subjects to train on (36,000 frames), subject06 to
    validate on, subject07 to test on.

Each VAE is trained through the real CLI (``hand_vae.train.main``) on the proxy written as a
consolidated dataset, and scored from its ``best_model.ckpt`` on ``--max_poses`` test poses:
IWAE NLL (K = ``--num_samples``), AUC of real vs noisy (σ = 0.02, 0.05 rad), top-1 among 8
hypotheses that differ in one finger, the KL carried by z, and the NLL of the same model with z
fixed at 0 (a plain Gaussian): the latent is worth having only if it beats that. Baselines (Gaussian,
mirrored Gaussian, GMM-4/8) get their diagonal floor and covariance scale chosen on validation.

    python bench/prior_quality.py                          # both proxies, CLI defaults
    python bench/prior_quality.py --proxy small --extra "--min_sigma 0.2" --name ms0.2
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
from hand_vae.baselines import fit_baselines
from hand_vae.checkpoint import load_checkpoint, vae_from_checkpoint
from hand_vae.data.layouts import write_consolidated
from hand_vae.data.synthetic import default_splits, pose_tensors, small_proxy_splits
from hand_vae.eval_metrics import evaluate
from hand_vae.losses import kl_per_dim

PROXIES = {"small": small_proxy_splits, "default": default_splits}
# Training protocol per proxy (the real-data check uses batch 256 for 300 epochs on ~4k frames).
PROTOCOL = {
    "small": ["--batch_size", "256", "--max_epochs", "300"],
    "default": ["--batch_size", "256", "--max_epochs", "30"],
}
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


def run_proxy(proxy: str, extra: list[str], name: str, args: argparse.Namespace, work: Path) -> list[dict]:
    """Write the proxy, train through the CLI, score VAE and baselines; returns JSON rows."""
    from hand_vae.train import main as train_main

    splits = PROXIES[proxy](seed=0)
    data_dir = work / f"data_{proxy}"
    if not data_dir.is_dir():
        write_consolidated(data_dir, splits, {"source": f"bench/prior_quality.py proxy {proxy}"})
    tensors = pose_tensors(splits)
    g = torch.Generator().manual_seed(0)
    test = tensors["test"][torch.randperm(len(tensors["test"]), generator=g)[: args.max_poses]]
    protocol = ["--max_epochs", "2"] if args.smoke else PROTOCOL[proxy]
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
        row = {"proxy": proxy, "method": method if method != "vae" else f"vae:{name}", **scores}
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
        lines.append(f"| {r['method']} | " + " | ".join(cells) + f" | {setting} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--proxy", nargs="*", default=list(PROXIES), choices=list(PROXIES))
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
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        for proxy in args.proxy:
            rows = run_proxy(proxy, shlex.split(args.extra), args.name, args, work)
            with open(args.out, "a") as f:
                for r in rows:
                    f.write(json.dumps(r, default=str) + "\n")
            print(f"\n## proxy: {proxy}\n\n{table(rows)}", flush=True)  # noqa: T201 - a benchmark's report


if __name__ == "__main__":
    main()
