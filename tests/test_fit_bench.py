"""The fitting benchmark (python -m hand_vae.evaluate --task fit): corruptions, metrics, report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hand_vae.cli.evaluate import main
from hand_vae.evaluation.fit_bench import CORRUPTIONS, corrupt, make_targets
from hand_vae.kinematics import KEYPOINT_NAMES, hands_fk


def test_targets_are_rigidly_moved_keypoints(synthetic_poses):
    poses = synthetic_poses["test"][:5]
    y = make_targets(poses, torch.Generator().manual_seed(0))
    local = hands_fk(poses)
    # Rigid motion: every pairwise distance within a hand is kept.
    torch.testing.assert_close(torch.cdist(y, y), torch.cdist(local, local), atol=1e-5, rtol=0)


def test_corruptions_hide_what_they_say(synthetic_poses):
    y = make_targets(synthetic_poses["test"][:50], torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    _, vis, sigma = corrupt(y, "sparse", g)
    assert (vis.sum(-1) == 21 - 13).all() and sigma == 0.002
    obs, vis, _ = corrupt(y, "partial", g)
    assert (vis.sum(-1) == 21 - 8).all() and vis[..., 0].all()  # two fingers of 4 keypoints, wrist kept
    hidden_fingers = (~vis[..., 1:]).reshape(50, 2, 5, 4)
    assert (hidden_fingers.all(-1).sum(-1) == 2).all() and (hidden_fingers.any(-1).sum(-1) == 2).all()
    assert torch.isnan(obs[~vis]).all() and torch.equal(obs[vis], y[vis])
    _, vis, _ = corrupt(y, "tips", g)
    visible_names = {KEYPOINT_NAMES[i] for i in torch.nonzero(vis[0, 0]).flatten().tolist()}
    assert visible_names == {"wrist"} | {f"{f}_tip" for f in ("index", "middle", "pinky", "ring", "thumb")}
    obs, vis, sigma = corrupt(y, "noisy_5mm", g)
    assert vis.all() and sigma == 0.005
    assert abs(float((obs - y).std()) - 0.005) < 0.0005
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(y, "blur", g)


def test_fit_task_writes_the_report(tmp_path, trained_models, synthetic_poses, capsys, caplog):
    from hand_vae.lightning_module import HandVAELightningModule

    model = trained_models["standard"]
    module = HandVAELightningModule(**model.cfg.to_dict())  # the same model settings
    module.model.load_state_dict(model.state_dict())  # uncalibrated: the val split calibrates it
    torch.save(
        {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, tmp_path / "m.ckpt"
    )
    np.save(tmp_path / "poses.npy", synthetic_poses["test"][::300].numpy())  # 20 held-out poses
    argv = ["--task", "fit", "--checkpoint", str(tmp_path / "m.ckpt"), "--poses", str(tmp_path / "poses.npy")]
    argv += ["--max_poses", "4", "--fit_steps", "15", "--output_dir", str(tmp_path / "out")]
    assert main(argv) == 0
    report = json.loads((tmp_path / "out" / "fit_benchmark.json").read_text())
    assert set(report["fit"]) == set(CORRUPTIONS) and report["num_poses"] == 4 and report["steps"] == 15
    assert set(report["fit"]["tips"]) == {"none", "gaussian", "vae", "vae_latent"}
    assert report["fit"]["noisy_2mm"]["vae"]["mpjpe_hidden_mm"] is None
    assert "val split" in report["calibration"]
    assert 0 <= report["plausibility_pass_0.99"]["clean"] <= 1
    assert set(report["auc_noise_0.02"]) >= {"two_hands", "one_hand_left", "one_hand_right"}
    out = capsys.readouterr().out
    assert "| tips | vae |" in out and (tmp_path / "out" / "fit_benchmark.md").is_file()
    assert main(argv) == 2  # an earlier report is kept unless --overwrite
    assert "already holds fit_benchmark.json" in caplog.text
