"""Every training setting, defined once: the CLI parser, the checkpoint's hparams and resume read
this table (one source of truth).

Each setting belongs to a group:
  * ``model``: shapes the network; a resume that contradicts the checkpoint is an error.
  * ``optim``: saved in the module's hparams; a resume keeps the checkpoint's values.
  * ``data``: where the data comes from and how it is batched; a resume keeps the checkpoint's.
  * ``run``: the run's identity and its hardware; restored on resume, but hardware flags
    (accelerator, devices, precision, ...) may be changed when resuming on another machine.
  * ``length``: how long to run; may be changed on resume (e.g. extend ``--max_epochs``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from typing import Any

from hand_vae.models.base import VAEConfig


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    group: str
    type: Any = None
    choices: tuple | None = None
    action: str | None = None
    nargs: str | None = None


@dataclass
class OptimConfig:
    """How the model is optimised: the one definition of these settings and their defaults.

    The CLI flags derive from these fields and the LightningModule reads them (``optim`` group: a
    resume keeps the checkpoint's values).
    """

    learning_rate: float = field(default=3e-4, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW decoupled weight decay"})
    kl_warmup_epochs: float = field(
        default=10.0, metadata={"help": "epochs of linear KL (beta) warm-up, per step"}
    )
    beta_max: float = field(default=1.0, metadata={"help": "final KL weight beta"})
    free_bits: float = field(
        default=0.0, metadata={"help": "per-latent-dimension KL floor in nats (Kingma et al. 2016); 0 = off"}
    )


def _from_dataclass(cls: type, group: str | None = None) -> tuple[Setting, ...]:
    """CLI settings derived from a config dataclass's fields (help, group, choices in the metadata)."""
    out = []
    for f in fields(cls):
        meta = f.metadata
        kind = {"int": int, "float": float, "str": str}.get(str(f.type).split(" |")[0], float)
        out.append(
            Setting(
                f.name,
                f.default,
                meta["help"],
                meta.get("group", group),
                None if meta.get("action") else kind,
                meta.get("choices"),
                meta.get("action"),
            )
        )
    return tuple(out)


SETTINGS: tuple[Setting, ...] = (
    *_from_dataclass(VAEConfig),
    *_from_dataclass(OptimConfig, "optim"),
    # --- data ------------------------------------------------------------------------------------
    Setting("consolidated_dir", None, "directory written by create_consolidated_npz.py", "data", str),
    Setting("splits_dir", None, "directory written by create_datamodule.py", "data", str),
    Setting("batch_size", None, "batch size per process (default: 8192 standard, 4096 so3)", "data", int),
    Setting(
        "num_workers", 0, "DataLoader workers (the in-memory index batches rarely need any)", "data", int
    ),
    Setting(
        "mirror_augment",
        True,
        "swap+mirror the hands of a random half of each training batch (the mirrored Gaussian scores 13 nats "
        "better on the small proxy's unseen subjects, bench/prior_quality.py; --no-mirror_augment turns it off)",
        "data",
        action="bool_optional",
    ),
    Setting(
        "data_on_device",
        "auto",
        "keep each split on the GPU and gather batches there",
        "data",
        str,
        ("auto", "always", "never"),
    ),
    Setting(
        "verify_data",
        False,
        "check dataset shard sha256 against meta.json before training",
        "data",
        action="store_true",
    ),
    # --- run ------------------------------------------------------------------------------------
    Setting(
        "experiment_name",
        "hand_vae",
        "name of checkpoints/{name}/ and logs/hand-vae-prior/{name}/",
        "run",
        str,
    ),
    Setting("seed", 0, "seed for initialisation, shuffling and the synthetic dataset", "run", int),
    Setting("checkpoint_dir", "checkpoints", "root directory for checkpoints", "run", str),
    Setting("log_dir", "logs", "root directory for TensorBoard logs", "run", str),
    Setting("accelerator", "auto", "cpu, gpu, mps or auto", "run", str),
    Setting("devices", "auto", "number of devices, a list like 0,1, or auto", "run", str),
    Setting("num_nodes", 1, "number of nodes for multi-node DDP", "run", int),
    Setting("strategy", "auto", "auto, ddp, ddp_spawn, ...", "run", str),
    Setting(
        "precision",
        "32-true",
        "numeric precision. Keep 32-true for this model size: its step is bound by kernel launches, not "
        "matmuls, and bf16-mixed adds cast kernels (measured slower on an H100: 8.1 vs 6.2 ms/step)",
        "run",
        str,
        ("32-true", "32", "16-mixed", "bf16-mixed", "64-true", "64"),
    ),
    Setting(
        "compile",
        False,
        "torch.compile the model's training forward (off: no measured gain on CPU)",
        "run",
        action="store_true",
    ),
    Setting(
        "cuda_graphs",
        "auto",
        "replay the whole training step (forward, backward, clipping, AdamW) from one CUDA graph; "
        "auto: on where graphs apply (one CUDA device, 32-true, no --compile), see bench/README.md; "
        "on: the same; off: eager; no effect on CPU",
        "run",
        str,
        ("auto", "on", "off"),
    ),
    Setting("gradient_clip_val", 5.0, "clip the gradient norm to this value; 0 = off", "run", float),
    Setting("save_top_k", 3, "best checkpoints to keep (by val/loss)", "run", int),
    Setting("plot_every_n_epochs", 5, "validation plots every N epochs", "run", int),
    Setting("no_plots", False, "turn off validation and test plots", "run", action="store_true"),
    Setting(
        "no_progress_bar",
        False,
        "turn off the progress bar (e.g. for batch-job logs)",
        "run",
        action="store_true",
    ),
    Setting("log_every_n_steps", 50, "how often Lightning flushes step-level logs", "run", int),
    Setting(
        "threads",
        0,
        "CPU threads for the maths; 0 = auto: 1 below 4096 rows per batch, else all cores but one",
        "run",
        int,
    ),
    Setting(
        "overwrite",
        False,
        "delete an earlier run with this --experiment_name (its checkpoints and logs), then train",
        "run",
        action="store_true",
    ),
    Setting("verbose", False, "also print Lightning's model summary table", "run", action="store_true"),
    # --- length ----------------------------------------------------------------------------------
    Setting("max_epochs", 100, "training epochs (may be raised when resuming)", "length", int),
    Setting(
        "early_stopping_patience",
        0,
        "stop after N epochs without val/loss improvement; 0 = off",
        "length",
        int,
    ),
    Setting(
        "limit_train_batches",
        None,
        "fraction (float) or count (int) of train batches per epoch",
        "length",
        str,
    ),
    Setting(
        "limit_val_batches", None, "fraction (float) or count (int) of val batches per epoch", "length", str
    ),
)

SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}
MODEL_KEYS = tuple(s.name for s in SETTINGS if s.group == "model")
MODULE_KEYS = MODEL_KEYS + tuple(s.name for s in SETTINGS if s.group == "optim")
HARDWARE_KEYS = (
    "accelerator",
    "devices",
    "num_nodes",
    "strategy",
    "precision",
    "num_workers",
    "data_on_device",
    "threads",
)

EPILOG = """examples:
  python train_hand_vae_lightning.py --max_epochs 5 --experiment_name quick_test
  python train_hand_vae_lightning.py --model_type so3 --consolidated_dir test_consolidated
  python train_hand_vae_lightning.py --accelerator gpu --devices 2 --strategy ddp --batch_size 8192
  python train_hand_vae_lightning.py --resume_from_checkpoint checkpoints/quick_test/last.ckpt --max_epochs 10
With neither --consolidated_dir nor --splits_dir, it trains on the embedded SYNTHETIC dataset (for trying
the tool and for tests, not a real hand prior)."""


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The training CLI's parser.

    Args:
        suppress_defaults: leave unset flags out of the namespace, to tell which flags the user
            actually typed (resume uses this).
    """
    parser = argparse.ArgumentParser(
        prog="train_hand_vae_lightning.py",
        description="Train a hand pose VAE prior (standard or SO(3)) with PyTorch Lightning.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS if suppress_defaults else None,
    )
    groups = {g: parser.add_argument_group(g) for g in ("model", "optim", "data", "run", "length")}
    for s in SETTINGS:
        kwargs: dict[str, Any] = {"help": f"{s.help} (default: {s.default})"}
        if not suppress_defaults:
            kwargs["default"] = s.default
        if s.action:
            kwargs["action"] = argparse.BooleanOptionalAction if s.action == "bool_optional" else s.action
        else:
            kwargs["type"] = s.type
            if s.choices:
                kwargs["choices"] = s.choices
        groups[s.group].add_argument(f"--{s.name}", **kwargs)
    resume = parser.add_argument_group("resume")
    kwargs = {} if suppress_defaults else {"default": None}
    resume.add_argument(
        "--resume_from_checkpoint",
        metavar="CKPT",
        help="continue the run saved in CKPT (e.g. checkpoints/NAME/last.ckpt) with its own settings",
        **kwargs,
    )
    return parser


def parse_number(value: str | None) -> int | float | None:
    """'0.25' -> 0.25, '10' -> 10, None -> None (for Lightning's limit_* arguments)."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return float(value)
