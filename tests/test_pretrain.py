"""The synthetic pretraining stand-in: disjoint patients, a timm-loadable backbone, a cached and deterministic run."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cag_utils.cnn.model import build_model
from cag_utils.cnn.pretrain import (
    PRETRAIN_TASKS, aux_cohort_settings, check_disjoint, export_backbone, load_backbone, pretrain_backbone,
    pretrained_weights,
)
from cag_utils.cnn.stage import checkpoint_dir, train_config
from cag_utils.run.config import load_config
from test_cnn import TRAIN_CFG, synthetic_set


def angle_set(n: int = 48, size: int = 32, seed: int = 0):
    """Frames whose dark bar's position encodes two 'angles'; half the patients in val."""
    frames, table = synthetic_set(n_per_class=n // 6, size=size, seed=seed)
    table = table.assign(primary_angle=(table["label"] % 3) * 30.0 - 30.0, secondary_angle=(table["label"] // 3) * 40.0 - 20.0,
                         split=np.where(table["split"] == "train", "train", "val"))
    return frames, table


def test_aux_cohort_has_its_own_seed_and_no_independent_exams():
    data = load_config("smoke", "data")
    aux = aux_cohort_settings(data, 12, 96)
    assert aux["seed"] != data["seed"] and aux == aux_cohort_settings(data, 12, 96)
    assert (aux["n_annotation_exams"], aux["n_independent_exams"], aux["image_size"]) == (12, 0, 96)


def test_check_disjoint_names_the_shared_cohort():
    check_disjoint(["PT-a", "PT-b"], train=["PT-c"], independent=np.array(["PT-d"]))
    with pytest.raises(ValueError, match="test cohort"):
        check_disjoint(["PT-a", "PT-b"], train=["PT-c"], test=["PT-b"])


def test_exported_backbone_loads_like_an_imagenet_checkpoint(tmp_path):
    """Through timm's pretrained overlay (RGB stem summed back to gray, fresh head) the features are unchanged."""
    torch.manual_seed(0)
    source = build_model("convnext_atto", num_classes=2, in_chans=1).eval()
    weights = export_backbone(source.state_dict(), source)
    assert "head.fc.weight" not in weights and weights["stem.0.weight"].shape[1] == 3
    from safetensors.torch import save_file
    path = tmp_path / "backbone.safetensors"
    save_file(weights, str(path))
    loaded = build_model("convnext_atto", num_classes=6, in_chans=1, pretrained_file=path).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_features(x), source.forward_features(x), rtol=1e-4, atol=1e-5)
    assert loaded.head.fc.out_features == 6


def test_pretraining_learns_angles_is_deterministic_and_feeds_the_classifier(tmp_path):
    frames, table = angle_set()
    cfg = {**TRAIN_CFG, "epochs": 4, "lr": 2e-3, "augment": "none", "threads": 1}
    h1 = pretrain_backbone(frames, table, "synthetic_angles", cfg, tmp_path / "a")
    h2 = pretrain_backbone(frames, table, "synthetic_angles", cfg, tmp_path / "b")
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in h1] == \
           [{k: v for k, v in r.items() if k != "seconds"} for r in h2]
    a, b = load_backbone(tmp_path / "a/backbone.safetensors"), load_backbone(tmp_path / "b/backbone.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert h1[-1]["val_mae_deg"] < h1[-1]["val_mae_deg_baseline"]  # better than predicting the mean angle
    assert set(PRETRAIN_TASKS["synthetic_angles"]) == {"primary_angle", "secondary_angle"}
    # the classifier's checkpoint folder follows the weights' content, not their path
    tc = train_config(load_config("smoke", "cnn"), progress=False, pretrained_file=tmp_path / "a/backbone.safetensors")
    tc_copy = {**tc, "pretrained_file": str(tmp_path / "b/backbone.safetensors")}
    assert checkpoint_dir(tmp_path, tc, frames, table) == checkpoint_dir(tmp_path, tc_copy, frames, table)
    assert checkpoint_dir(tmp_path, tc, frames, table) != checkpoint_dir(tmp_path, {**tc, "pretrained_file": None},
                                                                         frames, table)


def test_profile_file_wins_and_none_means_random_init(tmp_path):
    cfg = load_config("smoke", "cnn")
    tc = train_config(cfg, progress=False)
    user = tmp_path / "imagenet.safetensors"
    res = pretrained_weights({**cfg, "cnn_pretrained_file": str(user)}, tc, 128)
    assert (res.path, res.source) == (user, "user_file")
    assert train_config({**cfg, "cnn_pretrained_file": str(user)}, pretrained_file="other")["pretrained_file"] == str(user)
    res = pretrained_weights({**cfg, "cnn_pretrain": "none"}, tc, 128)
    assert res.path is None and res.source == "none"
    with pytest.raises(ValueError, match="cnn_pretrain"):
        pretrained_weights({**cfg, "cnn_pretrain": "imagenet"}, tc, 128)
