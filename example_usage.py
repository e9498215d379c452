#!/usr/bin/env python
"""Short examples of using a trained hand pose prior, one after the other.

Train the README's first model, then run the examples on it:

    python train_hand_vae_lightning.py --max_epochs 5 --experiment_name demo
    python example_usage.py                          # uses checkpoints/demo/best_model.ckpt
    python example_usage.py --checkpoint checkpoints/NAME/best_model.ckpt

Each example is a few lines of ``hand_vae.prior``; the README ("Using the prior") explains every call.
Pictures and the exported energy go to ``--out_dir`` (default ``example_output/``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

DEFAULT_CHECKPOINT = "checkpoints/demo/best_model.ckpt"
TRAIN_FIRST = "python train_hand_vae_lightning.py --max_epochs 5 --experiment_name demo"


def say(*args: object) -> None:
    """The examples' output is their purpose, so it is printed (not logged)."""
    print(*args)  # noqa: T201


def main(argv: list[str] | None = None) -> int:
    """Run every example; returns the exit code (2: no usable checkpoint)."""
    parser = argparse.ArgumentParser(
        description="Short examples of using a trained hand pose prior: score poses, rank hypotheses, "
        "sample, denoise and export. The README's 'Using the prior' section explains each call.",
        epilog=f"Train the checkpoint first: {TRAIN_FIRST}",
    )
    parser.add_argument(
        "--checkpoint", default=DEFAULT_CHECKPOINT, help=f"a .ckpt (default: {DEFAULT_CHECKPOINT})"
    )
    parser.add_argument(
        "--out_dir", default="example_output", help="pictures and the export (default: example_output)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the examples' random poses and noise")
    args = parser.parse_args(argv)

    from hand_vae.checkpoint import CheckpointError
    from hand_vae.data.synthetic import generate_sequences, stack_poses
    from hand_vae.prior import export_energy, load_prior, project_to_prior, rank_hypotheses, sample_poses
    from hand_vae.rotations import geodesic_angle_axis_angle, to_joints
    from hand_vae.viz.skeleton_figure import hand_skeletons
    from hand_vae.viz.style import save_figure

    try:
        prior = load_prior(args.checkpoint)  # the plain VAE, eval mode, read with weights_only=True
    except CheckpointError as err:
        sys.stderr.write(f"error: {err}; train it first with: {TRAIN_FIRST}\n")
        return 2
    say(f"Loaded a {prior.model_type} hand VAE (z_dim {prior.z_dim}) from {args.checkpoint}")
    g = torch.Generator().manual_seed(args.seed)
    out = Path(args.out_dir)
    # Poses of a synthetic person no model here was trained on: (N, 90) axis-angle radians.
    held_out = torch.from_numpy(
        stack_poses(generate_sequences(num_subjects=1, sequences_per_subject=2, seed=12345))[0]
    )
    poses = held_out[torch.randperm(len(held_out), generator=g)[:256]]  # (256, 90)

    say("\n1. Score poses: energy (nats), lower = more plausible")
    noisy = poses + 0.1 * torch.randn(poses.shape, generator=g)  # 0.1 rad on every angle
    with torch.no_grad():
        e_clean, e_noisy = prior.energy(poses), prior.energy(noisy)  # (256,), (256,)
    say(f"   held-out poses {e_clean.mean():8.2f}   the same + 0.1 rad noise {e_noisy.mean():8.2f}")
    say(f"   the clean pose scores lower for {100 * (e_clean < e_noisy).float().mean():.0f}% of poses")

    say("\n2. Rank hypotheses: pick the most plausible of K candidates per frame")
    B, K = 128, 8
    hypotheses = poses[:B, None] + 0.15 * torch.randn(B, K, 90, generator=g)  # (B, K, 90)
    hypotheses[:, 0] = poses[:B]  # candidate 0 is the real pose
    energies, best = rank_hypotheses(prior, hypotheses)  # (B, K), (B,)
    say(
        f"   the real pose was chosen in {100 * (best == 0).float().mean():.0f}% of frames (chance {100 / K:.0f}%)"
    )

    say("\n3. Sample poses from the prior and draw them")
    samples = sample_poses(prior, 8, generator=g)  # (8, 90)
    fig = hand_skeletons(
        samples, titles=[f"sample {i}" for i in range(8)], suptitle="Poses sampled from the prior"
    )
    say(f"   {tuple(samples.shape)} poses -> {save_figure(fig, out / 'samples.png')}")

    say("\n4. Denoise: argmin_x energy(x) + weight * |x - noisy|^2, with weight = 1 / (2 * 0.1^2)")
    clean = project_to_prior(prior, noisy[:64], steps=50, weight=50.0)  # (64, 90)
    err_before = geodesic_angle_axis_angle(to_joints(noisy[:64]), to_joints(poses[:64])).rad2deg().mean()
    err_after = geodesic_angle_axis_angle(to_joints(clean), to_joints(poses[:64])).rad2deg().mean()
    say(f"   mean joint error to the true pose: {err_before:.2f} -> {err_after:.2f} degrees")
    fig = hand_skeletons(clean[:4], recon=poses[:4], labels=("denoised", "true pose"))
    say(f"   picture: {save_figure(fig, out / 'denoise.png')}")

    say("\n5. Export the energy for programs that only have torch")
    path = export_energy(prior, out / "hand_prior_energy.pt2")
    energy_fn = torch.export.load(path).module()  # what the other program does
    with torch.no_grad():
        diff = (energy_fn(poses) - prior.energy(poses)).abs().max()
    say(f"   {path}: same energies as the prior (max difference {diff:.1e} nats)")

    say("\n6. Plausibility (calibrated on validation poses) and scoring one hand alone")
    from hand_vae.calibration import NotCalibratedError
    from hand_vae.prior import energy_one_hand, is_plausible, plausibility

    try:  # plausibility = share of validation poses with a higher energy, in [0, 1]
        p_clean, p_noisy = plausibility(prior, poses), plausibility(prior, noisy)  # (256,), (256,)
        passing = is_plausible(prior, poses, level=0.99).float().mean()  # 99% of validation poses pass
        say(f"   median plausibility: held-out {p_clean.median():.2f}, noisy {p_noisy.median():.2f}")
        say(f"   {100 * passing:.0f}% of held-out poses pass the 0.99 level")
    except NotCalibratedError as err:  # a checkpoint from before calibration was stored
        say(f"   {err}")
    with torch.no_grad():  # only the left hand (B, 45) is known: the right one is marginalised out
        e_left = energy_one_hand(prior, poses[:, :45], "left")  # (256,) nats
        e_left_noisy = energy_one_hand(prior, noisy[:, :45], "left")
    lower = 100 * (e_left < e_left_noisy).float().mean()
    say(f"   left hand alone: the clean hand scores lower for {lower:.0f}% of poses")
    return 0


if __name__ == "__main__":
    sys.exit(main())
