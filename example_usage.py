#!/usr/bin/env python
"""Interactive and scripted examples of using a trained hand pose prior (``hand_vae.prior``).

python example_usage.py              # numbered menu (in a terminal)
python example_usage.py --all        # run every example, no prompts
python example_usage.py --help       # the detailed usage guide
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from hand_vae.models import BaseHandVAE

GUIDE = """\
Workflow: data -> training -> loading -> scoring. Every command runs from the repository root.

1. Data (optional: with no data flag, training uses the embedded SYNTHETIC two-hand dataset,
   which is for trying the tool and for tests, not a real hand prior)
     python create_consolidated_npz.py --input_dir RAW --output_dir consolidated   # Option A: shards
     python create_datamodule.py --input_dir RAW --output_dir dataset_splits       # Option B: per sequence
     python create_consolidated_npz.py --output_dir test_consolidated             # synthetic, for a quick test
   RAW holds AMASS (SMPL+H *_poses.npz, SMPL-X *_stageii.npz), GRAB (--trust_pickle) or plain
   (N,90) .npy/.npz arrays. See `python create_consolidated_npz.py --help`.

2. Training (checkpoints/NAME/best_model.ckpt, TensorBoard logs under logs/hand-vae-prior/NAME/)
     python train_hand_vae_lightning.py --max_epochs 5 --experiment_name quick_test
     python train_hand_vae_lightning.py --consolidated_dir consolidated --experiment_name my_prior
     python train_hand_vae_lightning.py --model_type so3 --splits_dir dataset_splits --experiment_name my_so3
     python train_hand_vae_lightning.py --resume_from_checkpoint checkpoints/my_prior/last.ckpt
     tensorboard --logdir logs/

3. Evaluation against classic priors (Gaussian, GMM, nearest neighbour)
     python -m hand_vae.evaluate --help

4. Loading and scoring in Python
     from hand_vae.prior import load_prior, rank_hypotheses, project_to_prior, sample_poses, export_energy
     prior = load_prior("checkpoints/my_prior/best_model.ckpt")      # eval-mode nn.Module
     energy = prior.energy(poses)              # (B,90) or (B,30,3) radians -> (B,) nats, lower = better
     energies, best = rank_hypotheses(prior, hypotheses)   # (B,K,90) -> (B,K), (B,)
     denoised = project_to_prior(prior, noisy, weight=50.0) # argmin_x energy(x) + weight*|x - noisy|^2
     samples = sample_poses(prior, 16, torch.Generator().manual_seed(0))   # (16, 90)
     export_energy(prior, "energy.pt2")        # then: torch.export.load("energy.pt2").module()(poses)

5. These examples
     python example_usage.py --all                                   # trains a tiny model first
     python example_usage.py --example 2 --checkpoint checkpoints/my_prior/best_model.ckpt
     python example_usage.py --example 6 --checkpoint A.ckpt --compare_checkpoint B.ckpt
   Without --checkpoint, a tiny model is trained on the synthetic data into OUTPUT_DIR/checkpoints/
   (about 15 s on 2 CPU cores) and reused on the next run. Pictures and exports go to --output_dir.
"""

EXAMPLES = {
    1: "Load a checkpoint and score poses",
    2: "Rank hypotheses and pick the best",
    3: "Sample poses and save a skeleton picture",
    4: "Denoise a noisy pose",
    5: "Export the energy (torch.export)",
    6: "Compare two checkpoints' energies",
}
TINY_NAME = "example_tiny"


def say(*args: object, **kwargs) -> None:
    """The examples' user-facing output (the script's purpose, so plain print, not logging)."""
    print(*args, **kwargs)  # noqa: T201


class Context:
    """What the examples share: the output dir, the checkpoint(s) and some held-out poses."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.output_dir)
        self.generator = torch.Generator().manual_seed(args.seed)
        self._prior = None
        self._poses: torch.Tensor | None = None

    @property
    def checkpoint(self) -> Path:
        if self.args.checkpoint is None:
            self.args.checkpoint = str(train_tiny_model(self.out))
        return Path(self.args.checkpoint)

    @property
    def prior(self) -> BaseHandVAE:
        if self._prior is None:
            from hand_vae.prior import load_prior

            self._prior = load_prior(self.checkpoint)
        return self._prior

    @property
    def poses(self) -> torch.Tensor:
        """(N, 90) poses: --poses FILE, else a fresh synthetic subject the model never saw."""
        if self._poses is None:
            if self.args.poses:
                arr = np.load(self.args.poses, allow_pickle=False)
                if arr.ndim != 2 or arr.shape[1] != 90:
                    raise ValueError(f"--poses must hold an (N, 90) array, got shape {arr.shape}")
                self._poses = torch.from_numpy(arr.astype(np.float32))
            else:
                from hand_vae.data.synthetic import generate_sequences, stack_poses

                seqs = generate_sequences(num_subjects=1, sequences_per_subject=4, seed=12345)
                self._poses = torch.from_numpy(stack_poses(seqs)[0])
        return self._poses

    def pick(self, n: int) -> torch.Tensor:
        idx = torch.randperm(len(self.poses), generator=self.generator)[:n]
        return self.poses[idx]  # (n, 90)

    def noise(self, x: torch.Tensor, std: float) -> torch.Tensor:
        return x + std * torch.randn(x.shape, generator=self.generator)


def train_tiny_model(out: Path) -> Path:
    """Train (or reuse) a tiny standard VAE on the synthetic default; returns best_model.ckpt."""
    ckpt_dir = out / "checkpoints" / TINY_NAME
    best = ckpt_dir / "best_model.ckpt"
    if best.is_file():
        say(f"No --checkpoint given: reusing the tiny model trained earlier, {best}")
        return best
    say(
        "No --checkpoint given: training a tiny model (3 epochs, hidden 64, z_dim 8) on the SYNTHETIC "
        f"default data into {ckpt_dir}/ first ..."
    )
    from hand_vae.train import main as train_main

    t0 = time.perf_counter()
    argv = [
        "--max_epochs",
        "3",
        "--hidden",
        "64",
        "--z_dim",
        "8",
        "--batch_size",
        "1024",
        "--no_plots",
        "--no_progress_bar",
    ]
    argv += [
        "--limit_val_batches",
        "2",
        "--accelerator",
        "cpu",
        "--devices",
        "1",
        "--experiment_name",
        TINY_NAME,
    ]
    argv += ["--checkpoint_dir", str(out / "checkpoints"), "--log_dir", str(out / "logs")]
    code = train_main(argv)
    if code != 0 or not best.is_file():
        raise SystemExit(f"error: training the tiny model failed (exit code {code})")
    say(f"Trained in {time.perf_counter() - t0:.0f} s: {best}")
    return best


def example_score(ctx: Context) -> None:
    from hand_vae.rotations import to_flat

    prior = ctx.prior
    say(f"Loaded a {prior.model_type} prior (z_dim {prior.z_dim}) from {ctx.checkpoint}")
    clean = ctx.pick(256)  # (256, 90)
    with torch.no_grad():
        for label, x in (("held-out poses", clean), ("+ 0.1 rad noise", ctx.noise(clean, 0.1))):
            e = prior.energy(x)  # (256,) nats
            say(f"  {label:<16} energy mean {e.mean():8.2f} nats  (median {e.median():8.2f})")
        e_joints = prior.energy(to_flat(clean).reshape(-1, 30, 3))  # the (B, 30, 3) layout works too
    say(f"  (B,30,3) layout gives the same values: {torch.allclose(e_joints, prior.energy(clean))}")
    say("  Lower energy = more plausible. It is differentiable, so it can be a term in pose fitting.")


def example_rank(ctx: Context) -> None:
    from hand_vae.prior import rank_hypotheses

    B, K, std = 200, 8, 0.15
    clean = ctx.pick(B)
    hyp = clean[:, None].repeat(1, K, 1)  # (B, K, 90)
    hyp[:, 1:] = ctx.noise(hyp[:, 1:], std)  # hypothesis 0 is the clean pose
    perm = torch.stack([torch.randperm(K, generator=ctx.generator) for _ in range(B)])  # (B, K)
    hyp = torch.gather(hyp, 1, perm[..., None].expand(B, K, 90))
    energies, best = rank_hypotheses(ctx.prior, hyp)
    truth = perm.argmin(dim=1)  # where hypothesis 0 went
    acc = (best == truth).float().mean().item()
    say(
        f"{B} frames x {K} hypotheses (1 clean + {K - 1} with {std} rad noise): energies {tuple(energies.shape)}"
    )
    say(f"  the clean pose was picked in {100 * acc:.1f}% of frames (chance {100 / K:.1f}%)")


def example_sample(ctx: Context) -> None:
    from hand_vae.prior import sample_poses
    from hand_vae.viz import hand_skeletons, save_figure

    samples = sample_poses(ctx.prior, 8, generator=ctx.generator)  # (8, 90)
    say(f"Sampled {tuple(samples.shape)} poses; max |angle| {samples.abs().max():.2f} rad")
    fig = hand_skeletons(
        samples, titles=[f"sample {i}" for i in range(8)], suptitle="Poses sampled from the prior"
    )
    say(f"  picture: {save_figure(fig, ctx.out / 'samples.png')}")


def example_denoise(ctx: Context) -> None:
    from hand_vae.prior import project_to_prior
    from hand_vae.rotations import geodesic_angle_axis_angle, to_joints
    from hand_vae.viz import hand_skeletons, save_figure

    std = 0.1
    clean = ctx.pick(64)
    noisy = ctx.noise(clean, std)
    denoised = project_to_prior(ctx.prior, noisy, steps=50, weight=1 / (2 * std**2))
    with torch.no_grad():
        e0, e1 = ctx.prior.energy(noisy).mean(), ctx.prior.energy(denoised).mean()
    g0 = geodesic_angle_axis_angle(to_joints(noisy), to_joints(clean)).mean().rad2deg()
    g1 = geodesic_angle_axis_angle(to_joints(denoised), to_joints(clean)).mean().rad2deg()
    say(f"64 poses + {std} rad noise, project_to_prior(weight={1 / (2 * std**2):.0f}, steps=50):")
    say(f"  energy      {e0:8.2f} -> {e1:8.2f} nats")
    say(f"  joint error {g0:8.2f} -> {g1:8.2f} degrees (mean geodesic angle to the clean pose)")
    fig = hand_skeletons(
        torch.cat([noisy[:2], denoised[:2]]),
        titles=["noisy 0", "noisy 1", "denoised 0", "denoised 1"],
        recon=torch.cat([clean[:2], clean[:2]]),
        suptitle="Denoising: pose (solid) vs clean pose (dashed)",
    )
    say(f"  picture: {save_figure(fig, ctx.out / 'denoise.png')}")


def example_export(ctx: Context) -> None:
    from hand_vae.prior import export_energy

    path = export_energy(ctx.prior, ctx.out / "hand_prior_energy.pt2")
    energy_fn = torch.export.load(path).module()  # what another program does, with torch only
    x = ctx.pick(16)
    with torch.no_grad():
        diff = (energy_fn(x) - ctx.prior.energy(x)).abs().max().item()
    say(f"Exported to {path} ({path.stat().st_size / 1024:.0f} KiB); max |difference| {diff:.2e} nats")
    say('  load it anywhere with torch: torch.export.load("hand_prior_energy.pt2").module()(poses)')


def _other_checkpoint(ckpt: Path) -> Path | None:
    """Another checkpoint of the same run: the earliest epoch's, for a before/after comparison."""
    epochs = sorted(p for p in ckpt.parent.glob("hand_vae_epoch_*.ckpt") if p.resolve() != ckpt.resolve())
    return epochs[0] if epochs else None


def example_compare(ctx: Context) -> None:
    from hand_vae.prior import load_prior

    first = ctx.checkpoint
    other = Path(ctx.args.compare_checkpoint) if ctx.args.compare_checkpoint else _other_checkpoint(first)
    if other is None:
        say(f"No second checkpoint next to {first}; pass --compare_checkpoint PATH. Skipped.")
        return
    clean = ctx.pick(256)
    noisy = ctx.noise(clean, 0.1)
    say("Comparing on 256 held-out poses and the same poses + 0.1 rad noise:")
    for path in (first, other):
        prior = load_prior(path)
        with torch.no_grad():
            ec, en = prior.energy(clean), prior.energy(noisy)
        sep = (ec < en).float().mean().item()
        say(
            f"  {path.name:<44} clean {ec.mean():8.2f}  noisy {en.mean():8.2f} nats;"
            f" clean < noisy for {100 * sep:.0f}% of poses"
        )
    say("  Energies of different models are on different scales; compare how they separate poses.")


RUNNERS: dict[int, Callable[[Context], None]] = {
    1: example_score,
    2: example_rank,
    3: example_sample,
    4: example_denoise,
    5: example_export,
    6: example_compare,
}


def menu_text() -> str:
    lines = ["Hand VAE prior examples:"]
    lines += [f"  {n}. {title}" for n, title in EXAMPLES.items()]
    lines.append("  a. all of them    q. quit")
    return "\n".join(lines)


def run_examples(ctx: Context, numbers: list[int]) -> None:
    for n in numbers:
        say(f"\n=== Example {n}: {EXAMPLES[n]} ===")
        t0 = time.perf_counter()
        RUNNERS[n](ctx)
        say(f"  ({time.perf_counter() - t0:.1f} s)")


def interactive(ctx: Context) -> int:
    while True:
        say(menu_text())
        try:
            choice = input("Choose 1-6, a or q: ").strip().lower()
        except EOFError:
            return 0
        if choice in ("q", "quit", ""):
            return 0
        if choice in ("a", "all"):
            run_examples(ctx, list(EXAMPLES))
        elif choice.isdigit() and int(choice) in EXAMPLES:
            run_examples(ctx, [int(choice)])
        else:
            say(f"Unknown choice {choice!r}")
        say()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Examples of using a trained hand pose prior: " + "; ".join(EXAMPLES.values()) + ".",
        epilog=GUIDE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--example", type=int, choices=list(EXAMPLES), help="run one example, no prompt")
    which.add_argument("--all", action="store_true", help="run every example, no prompt")
    parser.add_argument(
        "--checkpoint", help="a .ckpt from train_hand_vae_lightning.py (default: train a tiny one)"
    )
    parser.add_argument(
        "--compare_checkpoint", help="second checkpoint for example 6 (default: an earlier epoch)"
    )
    parser.add_argument(
        "--poses", help="an (N, 90) .npy of poses to use (default: a synthetic unseen subject)"
    )
    parser.add_argument("--output_dir", default="example_output", help="pictures, exports, the tiny model")
    parser.add_argument("--seed", type=int, default=0, help="seed of the examples' random choices")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for path in (args.checkpoint, args.compare_checkpoint, args.poses):
        if path and not Path(path).is_file():
            say(f"error: no such file: {path}", file=sys.stderr)
            return 2
    ctx = Context(args)  # output dirs are created only when something is written
    try:
        if args.all:
            run_examples(ctx, list(EXAMPLES))
        elif args.example:
            run_examples(ctx, [args.example])
        elif sys.stdin is not None and sys.stdin.isatty():
            return interactive(ctx)
        else:
            say(menu_text())
            say(
                "\nstdin is not a terminal, so nothing was run: use --example N or --all (--help for the guide)."
            )
    except (FileNotFoundError, ValueError) as err:
        say(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
