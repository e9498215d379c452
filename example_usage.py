#!/usr/bin/env python
"""Interactive examples of using a trained hand pose prior (``hand_vae.prior``).

python example_usage.py          # in a terminal: pick an example; otherwise: run them all
python example_usage.py --help   # the usage guide: each example, its API call, its files
"""
# ruff: noqa: T201 - the examples' output is their purpose, so it is printed (not logged)

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_CHECKPOINT = "checkpoints/demo/best_model.ckpt"
TRAIN_FIRST = "python train_hand_vae_lightning.py --max_epochs 5 --experiment_name demo"

# (title, the API call it shows, what it writes under --out_dir); the examples below, in order.
EXAMPLES = (
    ("Score poses", "prior.energy(poses)  # (B, 90) -> (B,) nats, lower = more plausible", "-"),
    ("Rank hypotheses", "energies, best = rank_hypotheses(prior, hypotheses)  # (B, K, 90)", "-"),
    ("Sample poses", "sample_poses(prior, n, generator=g)  # (n, 90)", "samples.png"),
    ("Denoise", "project_to_prior(prior, noisy, steps=50, weight=50.0)  # (B, 90)", "denoise.png"),
    ("Export", "export_energy(prior, path)  # torch.export: poses -> energy", "hand_prior_energy.pt2"),
    ("Plausibility and one hand", "plausibility(prior, poses); energy_one_hand(prior, left45, 'left')", "-"),
)


def guide() -> str:
    """The --help epilog: every example with the call it shows and the files it writes."""
    lines = ["examples (run all without a terminal, or pick one with --example N):"]
    for i, (title, call, files) in enumerate(EXAMPLES, 1):
        lines += [f"  {i}. {title}", f"       {call}", f"       writes: {files}"]
    lines.append(f"""

every example loads the prior once with: prior = load_prior(CHECKPOINT)
(from hand_vae.prior import load_prior, ...); poses are (B, 90) axis-angle radians,
[left 45 | right 45], numpy or torch, any float dtype. The README's 'Using the prior'
section explains each call.

no checkpoint yet? train one first:
  {TRAIN_FIRST}""")
    return "\n".join(lines)


def run_examples(prior, chosen: list[int], out: Path, seed: int) -> None:
    """Run the chosen examples (1-based numbers) on ``prior``, writing files under ``out``."""
    import torch

    from hand_vae.data.synthetic import generate_sequences, stack_poses
    from hand_vae.prior import (
        NotCalibratedError,
        energy_one_hand,
        export_energy,
        is_plausible,
        plausibility,
        project_to_prior,
        rank_hypotheses,
        sample_poses,
    )
    from hand_vae.rotations import geodesic_angle_axis_angle, to_joints
    from hand_vae.viz.figures import hand_skeletons, save_figure

    g = torch.Generator().manual_seed(seed)
    # Poses of a synthetic person no model here was trained on: (N, 90) axis-angle radians.
    held_out = stack_poses(generate_sequences(num_subjects=1, sequences_per_subject=2, seed=12345))[0]
    poses = torch.from_numpy(held_out)[torch.randperm(len(held_out), generator=g)[:256]]  # (256, 90)
    noisy = poses + 0.1 * torch.randn(poses.shape, generator=g)  # 0.1 rad on every angle
    for i in chosen:
        print(f"\n{i}. {EXAMPLES[i - 1][0]}: {EXAMPLES[i - 1][1]}")
        if i == 1:
            e_clean, e_noisy = prior.energy(poses), prior.energy(noisy)  # (256,), (256,)
            print(f"   held-out poses {e_clean.mean():8.2f}   the same + 0.1 rad noise {e_noisy.mean():8.2f}")
            share = 100 * (e_clean < e_noisy).float().mean()
            print(f"   the clean pose scores lower for {share:.0f}% of poses")
        elif i == 2:
            B, K = 128, 8
            hypotheses = poses[:B, None] + 0.15 * torch.randn(B, K, 90, generator=g)  # (B, K, 90)
            hypotheses[:, 0] = poses[:B]  # candidate 0 is the real pose
            _, best = rank_hypotheses(prior, hypotheses)  # (B, K), (B,)
            share = 100 * (best == 0).float().mean()
            print(f"   the real pose was chosen in {share:.0f}% of frames (chance {100 / K:.0f}%)")
        elif i == 3:
            samples = sample_poses(prior, 8, generator=g)  # (8, 90)
            titles = [f"sample {k}" for k in range(8)]
            fig = hand_skeletons(samples, titles=titles, suptitle="Poses sampled from the prior")
            print(f"   {tuple(samples.shape)} poses -> {save_figure(fig, out / 'samples.png')}")
        elif i == 4:
            clean = project_to_prior(prior, noisy[:64], steps=50, weight=50.0)  # (64, 90)
            truth = to_joints(poses[:64])
            before = geodesic_angle_axis_angle(to_joints(noisy[:64]), truth).rad2deg().mean()
            after = geodesic_angle_axis_angle(to_joints(clean), truth).rad2deg().mean()
            print(f"   mean joint error to the true pose: {before:.2f} -> {after:.2f} degrees")
            fig = hand_skeletons(clean[:4], recon=poses[:4], labels=("denoised", "true pose"))
            print(f"   picture: {save_figure(fig, out / 'denoise.png')}")
        elif i == 5:
            path = export_energy(prior, out / "hand_prior_energy.pt2")
            energy_fn = torch.export.load(path).module()  # what a program with only torch does
            with torch.no_grad():
                diff = (energy_fn(poses) - prior.energy(poses)).abs().max()
            print(f"   {path}: same energies as the prior (max difference {diff:.1e} nats)")
        elif i == 6:
            try:  # plausibility = share of validation poses with a higher energy, in [0, 1]
                p_clean, p_noisy = (plausibility(prior, x).median() for x in (poses, noisy))
                passing = is_plausible(prior, poses, level=0.99).float().mean()
                print(f"   median plausibility: held-out {p_clean:.2f}, noisy {p_noisy:.2f}")
                print(f"   {100 * passing:.0f}% of held-out poses pass the 0.99 level")
            except NotCalibratedError as err:  # a checkpoint from before calibration was stored
                print(f"   {err}")
            # Only the left hand (B, 45) is known: the right one is marginalised out.
            e_clean, e_noisy = (energy_one_hand(prior, x[:, :45], "left") for x in (poses, noisy))
            share = 100 * (e_clean < e_noisy).float().mean()
            print(f"   left hand alone: the clean hand scores lower for {share:.0f}% of poses")


def ask() -> list[int]:
    """In a terminal: list the examples and read the user's choice (a number, 'a' = all, 'q' = quit)."""
    for i, (title, call, _) in enumerate(EXAMPLES, 1):
        print(f"  {i}. {title:<26} {call}")
    while True:
        answer = input(f"example to run [1-{len(EXAMPLES)}, a = all, q = quit]: ").strip().lower()
        if answer in ("q", ""):
            return []
        if answer == "a":
            return list(range(1, len(EXAMPLES) + 1))
        if answer.isdigit() and 1 <= int(answer) <= len(EXAMPLES):
            return [int(answer)]
        print(f"   {answer!r}? type a number from 1 to {len(EXAMPLES)}, a or q")


def main(argv: list[str] | None = None) -> int:
    """Run the examples; returns the exit code (2: no usable checkpoint)."""
    parser = argparse.ArgumentParser(
        description="Examples of using a trained hand pose prior: score, rank, sample, denoise, export, "
        "plausibility. In a terminal it asks which to run; otherwise (scripts, CI) it runs them all.",
        epilog=guide(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="a .ckpt (default: %(default)s)")
    parser.add_argument("--out_dir", default="example_output", help="pictures, export (default: %(default)s)")
    parser.add_argument("--example", type=int, choices=range(1, len(EXAMPLES) + 1), help="run only this one")
    parser.add_argument("--seed", type=int, default=0, help="seed of the examples' random poses and noise")
    args = parser.parse_args(argv)

    from hand_vae.errors import UserError  # after parsing: --help stays fast
    from hand_vae.prior import load_prior

    try:
        prior = load_prior(args.checkpoint)  # the plain VAE, eval mode, read with weights_only=True
    except UserError as err:
        sys.stderr.write(f"error: {err}; train it first with: {TRAIN_FIRST}\n")
        return 2
    print(f"Loaded a {prior.model_type} hand VAE (z_dim {prior.z_dim}) from {args.checkpoint}")
    if args.example:
        chosen = [args.example]
    else:
        chosen = ask() if sys.stdin.isatty() else list(range(1, len(EXAMPLES) + 1))
    run_examples(prior, chosen, Path(args.out_dir), args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
