"""The bad-input table: one list drives both README's Troubleshooting table and the tests.

    python tests/bad_input_cases.py          # print the table
    python tests/bad_input_cases.py --write  # rewrite it in README.md between the markers

``tests/test_bad_inputs.py`` runs every case and checks that README.md holds exactly this table.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
START, END = "<!-- bad-inputs:start -->", "<!-- bad-inputs:end -->"


@dataclass(frozen=True)
class Case:
    """One user mistake: run ``script argv`` in a directory prepared by ``setup``."""

    what: str
    script: str
    argv: tuple[str, ...]
    message: str  # what the user sees (a substring of stderr / the log)
    fix: str
    exit_code: int = 2
    setup: Callable[[Path], None] | None = None
    skip_reason: Callable[[], str | None] | None = None  # why the case cannot run on this machine


# --------------------------------------------------------------------------- setups


def _tiny_checkpoint(root: Path) -> None:
    from hand_vae.lightning_module import HandVAELightningModule

    module = HandVAELightningModule(z_dim=4, hidden=16, run={"experiment_name": "old"})
    torch.save(
        {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, root / "std.ckpt"
    )


def _truncated_checkpoint(root: Path) -> None:
    _tiny_checkpoint(root)
    data = (root / "std.ckpt").read_bytes()
    (root / "cut.ckpt").write_bytes(data[: len(data) // 2])


def _text_file(root: Path) -> None:
    (root / "notes.ckpt").write_text("these are my notes\n")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _evil_checkpoint(root: Path) -> None:
    torch.save({"state_dict": {}, "hyper_parameters": {"x": _Evil()}}, root / "evil.ckpt")


def _dir_without_meta(root: Path) -> None:
    (root / "half").mkdir()
    np.savez(root / "half" / "train_000.npz", hand_pose=np.zeros((3, 90), np.float32))


def _raw(root: Path, name: str, writer: Callable[[Path], None]) -> None:
    (root / "raw").mkdir(exist_ok=True)
    writer(root / "raw" / name)


def _wrong_dims(root: Path) -> None:
    _raw(root, "a.npy", lambda p: np.save(p, np.zeros((50, 63), np.float32)))


def _truncated_npz(root: Path) -> None:
    good = np.random.default_rng(0).normal(0.0, 0.3, size=(60, 90)).astype(np.float32)
    for i in range(3):  # enough good clips for a train, a val and a test sequence
        _raw(root, f"good{i}.npy", lambda p, i=i: np.save(p, good + i))
    buf = root / "full.npz"
    np.savez(buf, poses=good)
    _raw(root, "t.npz", lambda p: p.write_bytes(buf.read_bytes()[:100]))


def _grab_like(root: Path) -> None:
    params = {"params": {"fullpose": np.zeros((20, 45))}}
    obj = np.empty((), dtype=object)
    obj[()] = params
    _raw(root, "s1_grab.npz", lambda p: np.savez(p, lhand=obj, rhand=obj, framerate=np.array(120.0)))


def _nan_only(root: Path) -> None:
    _raw(root, "n.npy", lambda p: np.save(p, np.full((30, 90), np.nan, np.float32)))


def _one_clip(root: Path) -> None:
    clip = np.random.default_rng(0).normal(0.0, 0.3, size=(60, 90)).astype(np.float32)
    _raw(root, "only.npy", lambda p: np.save(p, clip))


def _taken_name(root: Path) -> None:
    (root / "checkpoints" / "taken").mkdir(parents=True)
    (root / "checkpoints" / "taken" / "last.ckpt").write_bytes(b"an earlier run's checkpoint")


def _dataset_nearby(root: Path) -> None:
    from hand_vae.data.layouts import write_consolidated
    from hand_vae.data.synthetic import default_splits

    splits = default_splits(0, num_subjects=3, sequences_per_subject=1, frames_per_sequence=20)
    write_consolidated(root / "test_consolidated", splits, {})


def _empty_val_split(root: Path) -> None:
    from hand_vae.data.layouts import write_consolidated
    from hand_vae.data.synthetic import default_splits

    splits = default_splits(0, num_subjects=3, sequences_per_subject=1, frames_per_sequence=20)
    write_consolidated(root / "data", {**splits, "val": []}, {})


def _empty_dir(root: Path) -> None:
    (root / "raw").mkdir()


def _occupied_output(root: Path) -> None:
    (root / "out").mkdir()
    (root / "out" / "mine.txt").write_text("keep me")


TRAIN = "train_hand_vae_lightning.py"
CONS = "create_consolidated_npz.py"
SPLITS = "create_datamodule.py"

CASES: tuple[Case, ...] = (
    Case(
        "experiment name with a path",
        TRAIN,
        ("--experiment_name", "../runs/x"),
        "must be a plain name",
        "use a plain name such as `my_run`; outputs go under checkpoints/ and logs/",
    ),
    Case(
        "resume from a missing file",
        TRAIN,
        ("--resume_from_checkpoint", "gone/last.ckpt"),
        "no such checkpoint",
        "check the path; checkpoints live in checkpoints/NAME/",
    ),
    Case(
        "resume from a truncated checkpoint",
        TRAIN,
        ("--resume_from_checkpoint", "cut.ckpt"),
        "is not a readable checkpoint",
        "resume from another file in the same dir (last.ckpt or a top-k file)",
        setup=_truncated_checkpoint,
    ),
    Case(
        "resume from a file that is not a checkpoint",
        TRAIN,
        ("--resume_from_checkpoint", "notes.ckpt"),
        "is not a readable checkpoint",
        "pass a .ckpt written by this tool",
        setup=_text_file,
    ),
    Case(
        "checkpoint carrying a pickle payload",
        TRAIN,
        ("--resume_from_checkpoint", "evil.ckpt"),
        "is not a readable checkpoint",
        "checkpoints load with weights_only=True; never trust such a file",
        setup=_evil_checkpoint,
    ),
    Case(
        "resume with a conflicting model type",
        TRAIN,
        ("--resume_from_checkpoint", "std.ckpt", "--model_type", "so3"),
        "different model shape",
        "drop --model_type/--z_dim/--hidden when resuming, or start a new --experiment_name",
        setup=_tiny_checkpoint,
    ),
    Case(
        "experiment name used by an earlier run",
        TRAIN,
        ("--experiment_name", "taken"),
        "--experiment_name taken is taken",
        "resume it (`--resume_from_checkpoint checkpoints/taken/last.ckpt`), pick another name, or add `--overwrite`",
        setup=_taken_name,
    ),
    Case(
        "both data flags",
        TRAIN,
        ("--consolidated_dir", "a", "--splits_dir", "b"),
        "not both",
        "pick one data source",
    ),
    Case(
        "data dir that does not exist",
        TRAIN,
        ("--consolidated_dir", "nowhere"),
        "nowhere",
        "create it with `python create_consolidated_npz.py --output_dir nowhere`",
    ),
    Case(
        "mistyped data dir",
        TRAIN,
        ("--consolidated_dir", "test_consolidate"),
        "did you mean test_consolidated?",
        "fix the name; nothing was written",
        setup=_dataset_nearby,
    ),
    Case(
        "dataset with an empty split",
        TRAIN,
        ("--consolidated_dir", "data"),
        "the val split of data is empty",
        "rebuild it from at least 3 sequences (the create_*.py scripts refuse to build such a dir)",
        setup=_empty_val_split,
    ),
    Case(
        "data dir without meta.json (interrupted build)",
        TRAIN,
        ("--consolidated_dir", "half"),
        "meta.json",
        "re-run the create_*.py script with --overwrite",
        setup=_dir_without_meta,
    ),
    Case(
        "unknown precision",
        TRAIN,
        ("--precision", "8-bit"),
        "invalid choice: '8-bit'",
        "use 32-true, 16-mixed (GPU), bf16-mixed or 64-true",
    ),
    Case(
        "GPU asked for on a machine without one",
        TRAIN,
        ("--accelerator", "gpu"),
        "no CUDA GPU is available",
        "drop --accelerator gpu (auto picks the CPU) or run on a GPU machine",
        skip_reason=lambda: "this machine has a CUDA GPU" if torch.cuda.is_available() else None,
    ),
    Case(
        "zero latent size",
        TRAIN,
        ("--z_dim", "0"),
        "--z_dim must be >= 1",
        "use a positive size (default 24)",
    ),
    Case(
        "non-positive sigma floor",
        TRAIN,
        ("--min_sigma", "0"),
        "--min_sigma must be > 0",
        "use a small positive floor (default 0.05 whitened units; 0.005 rad with --no-whiten)",
    ),
    Case(
        "input dir that does not exist",
        CONS,
        ("--input_dir", "nope", "--output_dir", "out"),
        "is not a directory",
        "point --input_dir at your raw data folder",
    ),
    Case(
        "one clip: val and test would be empty",
        CONS,
        ("--input_dir", "raw", "--output_dir", "out"),
        "would be empty",
        "add clips (at least 3 in all), or `--split_scheme dirs` with your own train/ val/ test/ folders",
        setup=_one_clip,
    ),
    Case(
        "empty input dir",
        CONS,
        ("--input_dir", "raw", "--output_dir", "out"),
        "holds no .npz/.npy files",
        "check --input_dir; omit it to write the synthetic dataset",
        setup=_empty_dir,
    ),
    Case(
        "output dir already holds data",
        CONS,
        ("--output_dir", "out"),
        "already holds data",
        "pass --overwrite or pick another --output_dir",
        setup=_occupied_output,
    ),
    Case(
        "array with the wrong shape (N, 63)",
        SPLITS,
        ("--input_dir", "raw", "--output_dir", "out"),
        "expected (N, 90)",
        "export both hands as (N, 90) [left 45 | right 45], or left/right (N, 45) keys",
        setup=_wrong_dims,
    ),
    Case(
        "truncated .npz",
        SPLITS,
        ("--input_dir", "raw", "--output_dir", "out"),
        "truncated or corrupt",
        "re-download or re-export the file; the rest is still converted",
        exit_code=1,
        setup=_truncated_npz,
    ),
    Case(
        "GRAB file without the trust flag",
        CONS,
        ("--input_dir", "raw", "--output_dir", "out"),
        "--trust_pickle",
        "pass --trust_pickle only for files from a source you trust",
        setup=_grab_like,
    ),
    Case(
        "only NaN frames",
        CONS,
        ("--input_dir", "raw", "--output_dir", "out"),
        "nothing written",
        "fix the export; NaN/inf frames are dropped and counted",
        setup=_nan_only,
    ),
)


def render_table(cases: tuple[Case, ...] = CASES) -> str:
    """The markdown table README.md carries between the markers."""
    rows = ["| mistake | script | what you see | what to do |", "|---|---|---|---|"]
    for c in cases:
        rows.append(f"| {c.what} | `{c.script}` | `{c.message}` (exit {c.exit_code}) | {c.fix} |")
    return "\n".join(rows)


def readme_section() -> str | None:
    text = README.read_text()
    if START not in text or END not in text:
        return None
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def write_readme() -> None:
    text = README.read_text()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    README.write_text(f"{head}{START}\n{render_table()}\n{END}{tail}")


if __name__ == "__main__":
    if "--write" in sys.argv:
        write_readme()
    else:
        print(render_table())
