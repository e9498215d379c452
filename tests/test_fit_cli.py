"""``python -m hand_vae.fit`` (hand_vae.cli.fit): the .npz it writes, its messages, its --help."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

from hand_vae.cli.fit import OUTPUT_KEYS, main
from hand_vae.evaluation.fit_bench import make_targets
from hand_vae.lightning_module import HandVAELightningModule
from hand_vae.prior import FitResult

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpt(trained_models, tmp_path_factory):
    """The tiny standard VAE as an (uncalibrated) training checkpoint."""
    model = trained_models["standard"]
    module = HandVAELightningModule(**model.cfg.to_dict())  # the same model settings
    module.model.load_state_dict(model.state_dict())
    path = tmp_path_factory.mktemp("fit_cli") / "m.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)
    return path


def keypoints(synthetic_poses, n: int, seed: int = 0) -> torch.Tensor:
    """Keypoints (n, 2, 21, 3) metres of n held-out poses under random rigid transforms."""
    test = synthetic_poses["test"]
    g = torch.Generator().manual_seed(seed)
    return make_targets(test[torch.randperm(len(test), generator=g)[:n]], g)


def test_cli_fits_and_writes_npz(tmp_path, synthetic_poses, ckpt, capsys):
    y = keypoints(synthetic_poses, 3, seed=5)
    y[1, 0] = float("nan")
    np.save(tmp_path / "j.npy", y.numpy())
    mask = np.ones((3, 2, 21), dtype=bool)
    mask[2, 1, 5:9] = False
    np.save(tmp_path / "mask.npy", mask)
    argv = ["--checkpoint", str(ckpt), "--joints", str(tmp_path / "j.npy")]
    out = tmp_path / "out" / "fitted.npz"
    assert main(argv + ["--mask", str(tmp_path / "mask.npy"), "--output", str(out), "--steps", "60"]) == 0
    assert "fitted 3 frames (5 hands present)" in capsys.readouterr().out
    got = np.load(out)
    assert got["poses"].shape == (3, 90) and got["joints"].shape == (3, 2, 21, 3)
    assert got["hand_present"].tolist() == [[True, True], [False, True], [True, True]]
    assert "plausibility" not in got  # uncalibrated checkpoint: no score rather than a wrong one
    assert set(got) == set(FitResult.__dataclass_fields__)
    # Too few steps to settle: the summary says how many frames and what to try.
    assert main(argv + ["--output", str(out), "--steps", "2"]) == 0
    assert "3 of 3 frames did not converge: try --steps 4" in capsys.readouterr().out


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such file"),
        ("shape", "expected shape (T, 2, 21, 3)"),
        ("millimetres", "look like millimetres"),
        ("centimetres", "look like centimetres"),
        ("mask", "--mask: expected shape"),
        ("all_hidden", "no visible keypoint"),
        ("checkpoint", "--checkpoint"),
    ],
)
def test_cli_errors(tmp_path, synthetic_poses, ckpt, caplog, case, message):
    y = keypoints(synthetic_poses, 2)
    arr = {
        "shape": y[:, 0].numpy(),
        "millimetres": 1000 * y.numpy(),
        "centimetres": 100 * y.numpy(),
        "all_hidden": np.full((2, 2, 21, 3), np.nan),
    }
    np.save(tmp_path / "j.npy", arr.get(case, y.numpy()))
    np.save(tmp_path / "mask.npy", np.ones((2, 21)))
    argv = ["--joints", str(tmp_path / ("nope.npy" if case == "missing" else "j.npy")), "--output", "o.npz"]
    argv += ["--checkpoint", str(tmp_path / "nope.ckpt") if case == "checkpoint" else str(ckpt)]
    if case == "mask":
        argv += ["--mask", str(tmp_path / "mask.npy")]
    assert main(argv) == 2
    assert message in caplog.text
    factor = {"millimetres": "divide by 1000", "centimetres": "divide by 100)"}.get(case)
    assert factor is None or factor in caplog.text


def test_help_lists_defaults_and_the_output_keys():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = out.getvalue()
    assert "(default: 300)" in text and "(default: 0.002)" in text and "(default: pose)" in text
    for key in [*FitResult.__dataclass_fields__, "plausibility"]:
        assert f"\n  {key} " in text, key
    assert OUTPUT_KEYS.splitlines()[0] in text
