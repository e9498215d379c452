"""Every training setting, defined and validated once, as typed dataclasses whose fields make the flags
(docs/design.md §5; field metadata: :func:`setting`). A mistake raises :class:`SettingError` naming the
flag. No torch here: ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import os
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hand_vae.errors import UserError

__all__ = ["VAEConfig", "OptimConfig", "DataConfig", "RunConfig", "LengthConfig", "Settings", "SettingError"]

DEFAULT_BATCH = {"standard": 8192, "so3": 4096}  # rows per batch and process, per --model_type
SMALL_BATCH_ROWS = 4096  # below it a second thread costs more than it gains (README "Slow Training")
LOGGER_NAME = "hand-vae-prior"  # TensorBoard: {log_dir}/hand-vae-prior/{experiment_name}/


class SettingError(UserError, ValueError):
    """A setting outside its valid range; the one-line message names the flag (exit code 2)."""


def setting(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field that also defines its flag ``--name`` (type: the annotation): metadata ``help``,
    ``choices``, ``metavar``, ``parse`` (the converter), ``resume="refuse"`` (a resume may not change it;
    nor any ``VAEConfig`` field) and ``saved=False`` (this invocation only, not in the checkpoint)."""
    return field(default=default, metadata={"help": help, **meta})


def add_flags(group: argparse._ActionsContainer, cls: type, with_defaults: bool = True) -> None:
    """One ``--name`` flag per field of the settings dataclass ``cls`` on ``group`` (``X | None`` gives
    type X); ``with_defaults=False`` leaves the flags not typed out of the namespace."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        kind = next((t for t in typing.get_args(hints[f.name]) if t is not type(None)), hints[f.name])
        kwargs: dict[str, Any] = {"default": f.default if with_defaults else argparse.SUPPRESS}
        help_text = f.metadata["help"]
        if kind is bool:
            # True or None (resolved later) can be turned off: --name/--no-name; False is a switch.
            kwargs["action"] = argparse.BooleanOptionalAction if f.default is not False else "store_true"
        else:
            kwargs["type"] = f.metadata.get("parse", kind)
            kwargs.update({k: f.metadata[k] for k in ("choices", "metavar") if k in f.metadata})
            if "default:" not in help_text:  # a resolved default says itself what it resolves to
                help_text += f" (default: {f.default})"
        group.add_argument(f"--{f.name}", help=help_text, **kwargs)


def number(text: str) -> int | float:
    """'10' -> 10 (batches), '0.25' -> 0.25 (a fraction), for Lightning's ``limit_*`` arguments."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _at_least(obj: Any, minimum: float, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < minimum:
            raise SettingError(f"--{name} must be >= {minimum:g}, got {value}")


def _one_of(obj: Any, name: str) -> None:
    choices = next(f.metadata["choices"] for f in fields(obj) if f.name == name)
    if getattr(obj, name) not in choices:
        raise SettingError(f"--{name} must be one of {', '.join(choices)}, got {getattr(obj, name)!r}")


@dataclass
class VAEConfig:
    """A hand VAE's settings (``hand_vae.models.build_model``), saved as the module's hyperparameters;
    None resolves to the default (``min_sigma``: of the likelihood's units, ``DEFAULT_MIN_SIGMA``)."""

    model_type: str = setting(
        "standard",
        "standard: Gaussian on (B,90) axis-angle; so3: Gaussian on rotation residuals",
        choices=("standard", "so3"),
    )
    z_dim: int = setting(24, "latent dimension")
    hidden: int = setting(256, "hidden layer width of encoder and decoder")
    num_layers: int = setting(2, "hidden layers per MLP (0: linear)")
    cov_rank: int = setting(
        0,
        "standard model: rank of a low-rank decoder covariance (0 = none; whitened is full-covariance already)",
    )
    # whiten, cov_rank and min_sigma defaults: chosen with bench/prior_quality.py (docs/design.md §4).
    whiten: bool = setting(
        True,
        "standard model: whiten poses by the training data's full-covariance Gaussian (floor and scale "
        "chosen on val), so the VAE starts at it (docs/design.md §4); --no-whiten: diagonal sigma in radians",
    )
    likelihood: str | None = setting(
        None,
        "p(x|z) on the whitened residual: student_t, a multivariate t with nu, floor and scale chosen on "
        "val (heavy tails: an unusual pose costs logarithmically), or gaussian; default: student_t, "
        "gaussian with --no-whiten",
        choices=("gaussian", "student_t"),
    )
    local_sigma: bool | None = setting(
        None,
        "standard model without --cov_rank, and SO(3): the decoder also outputs a per-dimension log-sigma "
        "offset, so the likelihood's scale depends on z (zero at the start: the model still starts at the "
        "classic prior); default: on for both",
    )
    dropout: float = setting(0.0, "dropout after each hidden layer")
    min_sigma: float | None = setting(
        None,
        "smooth floor of the likelihood scale sigma (stops it collapsing onto the training set); a fraction "
        "of the data's spread when whitened, radians with --no-whiten (default: 0.05 and 0.005)",
    )

    def __post_init__(self) -> None:
        if self.model_type != "standard":
            self.whiten, self.cov_rank = False, 0  # the SO(3) likelihood has its own whitening
        if self.min_sigma is None:
            self.min_sigma = DEFAULT_MIN_SIGMA[self.model_type != "standard" or self.whiten]
        if self.likelihood is None:
            self.likelihood = "student_t" if self.model_type != "standard" or self.whiten else "gaussian"
        if self.local_sigma is None:
            self.local_sigma = self.cov_rank == 0  # SO(3) has no cov_rank (0 above)
        _at_least(self, 1, "z_dim", "hidden")
        _at_least(self, 0, "num_layers", "cov_rank")
        _one_of(self, "likelihood")
        if self.local_sigma and self.cov_rank > 0:
            raise SettingError("--local_sigma applies to the standard model without --cov_rank, and SO(3)")
        if self.likelihood == "student_t" and self.model_type == "standard" and not self.whiten:
            raise SettingError("--likelihood student_t models the whitened residual: drop --no-whiten")
        if not 0.0 <= self.dropout < 1.0:
            raise SettingError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.min_sigma <= 0:
            raise SettingError(f"--min_sigma must be > 0, got {self.min_sigma}")
        if self.min_sigma >= 1 and (self.whiten or self.model_type != "standard"):
            # σ starts at 1 in whitened units; a floor at or above it could never be left.
            raise SettingError(
                f"--min_sigma {self.min_sigma} is in whitened units (a fraction of the data's spread) and must "
                "be < 1; for a floor in radians use the standard model with --no-whiten"
            )

    def to_dict(self) -> dict:
        return asdict(self)


# σ floor per likelihood unit: whitened units (SO(3), whitened standard) and radians (--no-whiten).
DEFAULT_MIN_SIGMA = {True: 0.05, False: 0.005}
# What a checkpoint written before a model setting existed was trained with (not today's default).
LEGACY_MODEL = {"likelihood": "gaussian", "local_sigma": False}


def saved_model_settings(hp: dict[str, Any]) -> dict[str, Any]:
    """The ``VAEConfig`` fields of saved hyperparameters, settings older checkpoints lack filled in
    with what they were trained with (``LEGACY_MODEL``)."""
    names = {f.name for f in fields(VAEConfig)}
    return {**LEGACY_MODEL, **{k: v for k, v in hp.items() if k in names}}


@dataclass
class OptimConfig:
    """How the model is optimised (AdamW, β warm-up, free bits)."""

    learning_rate: float = setting(3e-4, "AdamW learning rate")
    weight_decay: float = setting(0.0, "AdamW decoupled weight decay")
    kl_warmup_epochs: float = setting(10.0, "epochs of linear KL (beta) warm-up, per step")
    beta_max: float = setting(1.0, "final KL weight beta")
    free_bits: float = setting(0.0, "per-latent-dimension KL floor in nats (Kingma et al. 2016); 0 = off")

    def __post_init__(self) -> None:
        _at_least(self, 0, "learning_rate", "weight_decay", "kl_warmup_epochs", "beta_max", "free_bits")


@dataclass
class DataConfig:
    """Where the poses come from and how they are batched (``hand_vae.data.datamodule``)."""

    consolidated_dir: str | None = setting(None, "dir written by create_consolidated_npz.py", resume="refuse")
    splits_dir: str | None = setting(None, "directory written by create_datamodule.py", resume="refuse")
    batch_size: int | None = setting(
        None,
        f"batch size per process (default: {DEFAULT_BATCH['standard']} standard, {DEFAULT_BATCH['so3']} so3)",
    )
    num_workers: int = setting(0, "DataLoader workers (the in-memory index batches rarely need any)")
    mirror_augment: bool = setting(
        True,
        "swap+mirror the hands of a random half of each training batch (chosen with bench/prior_quality.py)",
    )
    data_on_device: str = setting(
        "auto", "keep each split on the GPU and gather batches there", choices=("auto", "always", "never")
    )
    verify_data: bool = setting(False, "check dataset shard sha256 against meta.json before training")

    def __post_init__(self) -> None:
        if self.consolidated_dir and self.splits_dir:
            raise SettingError("give --consolidated_dir or --splits_dir, not both")
        _at_least(self, 1, "batch_size")
        _at_least(self, 0, "num_workers")
        _one_of(self, "data_on_device")

    @property
    def directory(self) -> str | None:
        """The dataset dir (either flag), or None for the embedded synthetic dataset."""
        return self.consolidated_dir or self.splits_dir

    def resolved(self, model_type: str) -> DataConfig:
        """This config with the batch size filled in: ``DEFAULT_BATCH[model_type]`` when unset."""
        return self if self.batch_size else replace(self, batch_size=DEFAULT_BATCH[model_type])


@dataclass
class RunConfig:
    """The run's identity, hardware and what it writes."""

    experiment_name: str = setting("hand_vae", "name of checkpoints/{name}/ and logs/hand-vae-prior/{name}/")
    seed: int = setting(0, "seed for initialisation, shuffling and the synthetic dataset", resume="refuse")
    checkpoint_dir: str = setting("checkpoints", "root directory for checkpoints")
    log_dir: str = setting("logs", "root directory for TensorBoard logs")
    accelerator: str = setting("auto", "cpu, gpu, mps or auto")
    devices: str = setting("auto", "number of devices, a list like 0,1, or auto")
    num_nodes: int = setting(1, "number of nodes for multi-node DDP")
    strategy: str = setting("auto", "auto, ddp, ddp_spawn, ...")
    precision: str = setting(
        "32-true",
        "numeric precision; keep 32-true: this model's step is bound by kernel launches (bench/bench_gpu.py)",
        choices=("32-true", "32", "16-mixed", "bf16-mixed", "64-true", "64"),
    )
    compile: bool = setting(False, "torch.compile the model's training forward (no gain measured on a CPU)")
    cuda_graphs: str = setting(
        "auto",
        "replay the whole training step from one CUDA graph; auto and on: where graphs apply (one CUDA "
        "device, 32-true, no --compile; bench/README.md); off: eager; no effect on CPU",
        choices=("auto", "on", "off"),
    )
    gradient_clip_val: float = setting(5.0, "clip the gradient norm to this value; 0 = off")
    save_top_k: int = setting(3, "best checkpoints to keep (by val/loss)")
    plot_every_n_epochs: int = setting(
        5, "validation plots every N epochs (fewer when plotting would take longer than training)"
    )
    no_plots: bool = setting(False, "turn off validation and test plots")
    no_progress_bar: bool = setting(False, "turn off the progress bar (e.g. for batch-job logs)")
    log_every_n_steps: int = setting(50, "how often Lightning flushes step-level logs")
    threads: int = setting(
        0, "CPU threads for the maths; 0 = auto: 1 below 4096 rows per batch, else all cores but one"
    )
    overwrite: bool = setting(
        False,
        "delete an earlier run with this --experiment_name (its checkpoints and logs), then train",
        saved=False,
    )
    verbose: bool = setting(False, "also print Lightning's model summary table", saved=False)
    resume_from_checkpoint: str | None = setting(
        None,
        "continue the run saved in CKPT (e.g. checkpoints/NAME/last.ckpt) with its settings; a flag given "
        "with it applies where it can (learning rate, batch size, more epochs, hardware), else is refused "
        "(model, data, seed)",
        saved=False,
        metavar="CKPT",
    )

    def __post_init__(self) -> None:
        name = self.experiment_name
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise SettingError(
                f"--experiment_name {name!r} must be a plain name (no '/', '\\' or leading '.')"
            )
        _at_least(self, 0, "gradient_clip_val", "threads")
        _at_least(self, -1, "save_top_k")  # -1: keep every checkpoint
        _at_least(self, 1, "num_nodes", "plot_every_n_epochs", "log_every_n_steps")
        _one_of(self, "precision")
        _one_of(self, "cuda_graphs")

    @property
    def dirs(self) -> tuple[Path, Path]:
        """(checkpoint dir, TensorBoard log dir) of this run."""
        name = self.experiment_name
        return Path(self.checkpoint_dir) / name, Path(self.log_dir) / LOGGER_NAME / name

    @property
    def device_list(self) -> int | str | list[int]:
        """``--devices`` for Lightning: 2 -> 2, "0,1" -> [0, 1], "auto" -> "auto"."""
        if self.devices.isdigit():
            return int(self.devices)
        if "," in self.devices:
            return [int(v) for v in self.devices.split(",") if v.strip()]
        return self.devices


@dataclass
class LengthConfig:
    """How long the run trains."""

    max_epochs: int = setting(100, "training epochs (may be raised when resuming)")
    early_stopping_patience: int = setting(0, "stop after N epochs without val/loss improvement; 0 = off")
    limit_train_batches: int | float | None = setting(
        None, "fraction (float) or count (int) of train batches per epoch", parse=number
    )
    limit_val_batches: int | float | None = setting(
        None, "fraction (float) or count (int) of val batches per epoch", parse=number
    )

    def __post_init__(self) -> None:
        for name in ("limit_train_batches", "limit_val_batches"):  # saved as text before settings were typed
            if isinstance(getattr(self, name), str):
                setattr(self, name, number(getattr(self, name)))
        _at_least(self, 1, "max_epochs")
        _at_least(self, 0, "early_stopping_patience", "limit_train_batches", "limit_val_batches")


GROUPS = dict(model=VAEConfig, optim=OptimConfig, data=DataConfig, run=RunConfig, length=LengthConfig)


@dataclass
class Settings:
    """One run's settings: the five groups, and its dataset dir's fingerprint (sha256 of meta.json, poses
    per split; None: synthetic data)."""

    model: VAEConfig = field(default_factory=VAEConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)
    length: LengthConfig = field(default_factory=LengthConfig)
    data_meta_sha256: str | None = None
    data_counts: dict[str, int] | None = None

    def __post_init__(self) -> None:
        self.data = self.data.resolved(self.model.model_type)

    @classmethod
    def from_flags(cls, values: dict[str, Any]) -> Settings:
        """Settings from flag values by name (absent: the default); unknown names are ignored."""
        groups = {
            g: c(**{f.name: values[f.name] for f in fields(c) if f.name in values}) for g, c in GROUPS.items()
        }
        return cls(**groups)

    def flags(self) -> dict[str, Any]:
        """Every flag's value by name (``Settings().flags()``: every default, resolved)."""
        return {k: v for g in GROUPS for k, v in asdict(getattr(self, g)).items()}

    def module_hparams(self) -> dict[str, Any]:
        """The LightningModule's settings: model and optimiser fields (saved at the top level)."""
        return {**asdict(self.model), **asdict(self.optim)}

    def run_hparams(self) -> dict[str, Any]:
        """``hparams["run"]``: data, run and length settings (plain types) and the data fingerprint."""
        groups = (self.data, self.run, self.length)
        saved = {
            f.name: getattr(c, f.name) for c in groups for f in fields(c) if f.metadata.get("saved", True)
        }
        return {**saved, "data_meta_sha256": self.data_meta_sha256, "data_counts": self.data_counts}

    @classmethod
    def from_hparams(cls, hp: dict[str, Any]) -> Settings:
        """The settings a checkpoint was trained with (its ``hyper_parameters``, any version's layout):
        model settings it lacks take what it was trained with (``LEGACY_MODEL``), other keys it lacks take
        today's defaults, keys no longer known are ignored."""
        run = dict(hp.get("run") or {})
        settings = cls.from_flags(
            {**run, **{k: v for k, v in hp.items() if k != "run"}, **saved_model_settings(hp)}
        )
        settings.data_meta_sha256, settings.data_counts = run.get("data_meta_sha256"), run.get("data_counts")
        return settings


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cpu_threads(requested: int, batch_size: int, processes: int = 1) -> int:
    """Intra-op CPU threads (``--threads``): ``requested`` if > 0; else 1 below ``SMALL_BATCH_ROWS``
    rows per batch, else every core but one, shared by ``processes`` (CPU DDP)."""
    if requested > 0:
        return requested
    if batch_size < SMALL_BATCH_ROWS:
        return 1
    return max(1, (available_cores() - 1) // max(1, processes))


# ---- create_consolidated_npz.py / create_datamodule.py (flags: hand_vae/cli/data.py; work: hand_vae/data/)
FORMATS = ("amass_smplh", "amass_smplx", "grab", "array")  # raw readers (hand_vae/data/sources.py)
SCHEMES = ("ratio", "amass", "dirs")  # how sequences are split (hand_vae/data/splits.py)
DEFAULT_RATIOS = (0.8, 0.1, 0.1)
DEFAULT_SHARD_SIZE = 1_000_000  # rows per consolidated shard


@dataclass
class BuildConfig:
    """Settings of one build, one field per flag of ``hand_vae.cli.data`` (same names and defaults).
    ``input_dir`` None: the synthetic dataset; ``target_fps`` None or 0: every frame; ``source_fps``: the
    rate of files that store none (None: no subsampling)."""

    output_dir: str
    layout: str
    input_dir: str | None = None
    format: str = "auto"
    trust_pickle: bool = False
    target_fps: float | None = 30.0
    source_fps: float | None = None
    split_scheme: str = "ratio"
    split_ratios: tuple[float, float, float] = DEFAULT_RATIOS
    seed: int = 0
    shard_size: int = DEFAULT_SHARD_SIZE
    overwrite: bool = False
    strict: bool = False
