"""Stage-1 ConvNeXt: model, frame validation, metrics, training/resume/determinism, Grad-CAM."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display in CI

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from huggingface_hub import ModelCard
from matplotlib.figure import Figure
from safetensors.torch import save_file

from cag_utils.cnn.data import FrameDataset, build_transform, check_frames
from cag_utils.cnn.evaluate import classification_metrics, plot_confusion_matrix, plot_training_curves, predict
from cag_utils.cnn.gradcam import gradcam_heatmaps, plot_gradcam_overlays
from cag_utils.cnn.model import build_model
from cag_utils.cnn.train import load_trained, train_classifier
from cag_utils.data.labels import CLASSES, split_class

SIZE = 32
TRAIN_CFG = dict(input_size=SIZE, epochs=3, batch_size=16, lr=3e-4, augment="trivialaugment", progress=False, seed=7)


def synthetic_set(n_per_class: int = 20, size: int = SIZE, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """6 separable classes: a dark block whose position (2 rows x 3 columns) is the class."""
    rng = np.random.default_rng(seed)
    frames, rows = [], []
    for c in range(len(CLASSES)):
        lat, kf = split_class(c)
        r0, c0 = (c // 3) * (size // 2), (c % 3) * (size // 3)
        for k in range(n_per_class):
            img = 200 + rng.normal(0, 10, (size, size))
            img[r0 : r0 + size // 2, c0 : c0 + size // 3] -= 120
            frames.append(np.clip(img, 0, 255).astype(np.uint8))
            split = ("train", "train", "train", "val", "test")[k % 5]
            rows.append(dict(frame_uid=f"c{c}_f{k}", patient_id=f"p{k}", exam_id=f"e{k}", run_id=f"r{k}",
                             frame_index=k, laterality=lat, key_frame_category=kf, label=c, split=split))
    return np.stack(frames), pd.DataFrame(rows)


def strip_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, pd.DataFrame]:
    return synthetic_set()


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    frames, table = data
    out = tmp_path_factory.mktemp("run_a")
    return train_classifier(frames, table, TRAIN_CFG, out, resume=False)


# ---------------------------------------------------------------- model
def test_gray_model_outputs_six_logits():
    model = build_model("convnext_atto", in_chans=1).eval()
    with torch.no_grad():
        assert model(torch.randn(3, 1, 64, 64)).shape == (3, len(CLASSES))


def test_local_pretrained_file_adapts_rgb_stem_to_gray(tmp_path):
    source = timm.create_model("convnext_atto", pretrained=False)  # stands in for ImageNet weights
    path = tmp_path / "imagenet.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = build_model("convnext_atto", in_chans=1, pretrained_file=path)
    # timm sums the RGB kernels: the 1-channel stem sees a gray image as the RGB net sees it x3.
    torch.testing.assert_close(model.stem[0].weight, source.stem[0].weight.sum(dim=1, keepdim=True))
    torch.testing.assert_close(model.stages[-1].blocks[0].conv_dw.weight, source.stages[-1].blocks[0].conv_dw.weight)
    assert model.head.fc.out_features == len(CLASSES)
    with pytest.raises(FileNotFoundError):
        build_model("convnext_atto", pretrained_file=tmp_path / "missing.safetensors")


# ---------------------------------------------------------------- data validation
def test_check_frames_names_bad_frames_and_survives_zero_usable():
    table = pd.DataFrame(dict(frame_uid=["ok", "rgb", "float", "empty", "badlabel"],
                              laterality=["LCA", "LCA", "RCA", "RCA", "RCA"],
                              key_frame_category=["better"] * 5, label=[0, 0, 3, 3, 0]))
    frames = [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.float32),
              np.zeros((0, 8), np.uint8), np.zeros((8, 8), np.uint8)]
    usable, rejects = check_frames(frames, table)
    assert usable.tolist() == [0]
    reasons = {r["frame_uid"]: r["reason"] for r in rejects}
    assert set(reasons) == {"rgb", "float", "empty", "badlabel"}
    assert "2-D" in reasons["rgb"] and "uint8" in reasons["float"] and "empty" in reasons["empty"]
    assert "disagrees" in reasons["badlabel"]

    usable, rejects = check_frames(frames[1:4], table.iloc[1:4].reset_index(drop=True))
    assert len(usable) == 0 and len(rejects) == 3  # reported, no exception
    with pytest.raises(ValueError, match="row i must describe"):
        check_frames(frames[:2], table)


def test_dataset_error_names_the_frame():
    table = pd.DataFrame(dict(frame_uid=["good", "run7_frame12"], label=[0, 1]))
    frames = [np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.int16)]
    ds = FrameDataset.from_table(frames, table, [0, 1], build_transform(16, train=False))
    x, y = ds[0]
    assert x.shape == (1, 16, 16) and x.dtype == torch.float32 and y == 0
    with pytest.raises(ValueError, match="run7_frame12.*uint8"):
        ds[1]


def test_transform_three_channels_and_augmentation_keeps_shape():
    torch.manual_seed(0)
    img = torch.randint(0, 256, (1, 40, 50), dtype=torch.uint8)
    for _ in range(40):  # TrivialAugmentWide draws one of 14 ops per call
        assert build_transform(24, train=True, in_chans=3)(img).shape == (3, 24, 24)
    with pytest.raises(ValueError, match="augment"):
        build_transform(24, train=True, augment="randaugment")


# ---------------------------------------------------------------- metrics
def test_metrics_against_hand_computed_values():
    y_true = [0, 0, 1, 1, 3, 3]
    y_pred = [0, 1, 1, 1, 3, 0]
    m = classification_metrics(y_true, y_pred)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # class 0: P 1/2 R 1/2 F1 1/2; class 1: P 2/3 R 1 F1 4/5; class 3: P 1 R 1/2 F1 2/3
    assert m["per_class"]["LCA_better"] == dict(precision=0.5, recall=0.5, f1=0.5, support=2)
    assert m["per_class"]["LCA_bad"]["f1"] == pytest.approx(0.8)
    assert m["per_class"]["RCA_better"]["recall"] == pytest.approx(0.5)
    assert m["per_class"]["LCA_others"]["support"] == 0
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)  # over classes present
    # laterality: LCA F1 8/9, RCA F1 2/3; key frame: better F1 6/7, bad F1 4/5
    assert m["laterality_f1"] == pytest.approx((8 / 9 + 2 / 3) / 2)
    assert m["key_frame_f1"] == pytest.approx((6 / 7 + 0.8) / 2)
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (6, 6)
    np.testing.assert_allclose(cm[0], [0.5, 0.5, 0, 0, 0, 0])
    np.testing.assert_allclose(cm[3], [0.5, 0, 0, 0.5, 0, 0])
    np.testing.assert_allclose(cm[2], 0)  # absent class: zero row, not NaN


def test_key_frame_errors_leave_laterality_perfect_and_vice_versa():
    y_true = np.arange(6).repeat(3)
    kf_wrong = (y_true // 3) * 3 + (y_true % 3 + 1) % 3  # same laterality, other key-frame class
    m = classification_metrics(y_true, kf_wrong)
    assert m["laterality_f1"] == 1.0 and m["key_frame_f1"] == 0.0 and m["macro_f1"] == 0.0
    lat_wrong = (y_true + 3) % 6  # other laterality, same key-frame class
    m = classification_metrics(y_true, lat_wrong)
    assert m["laterality_f1"] == 0.0 and m["key_frame_f1"] == 1.0 and m["accuracy"] == 0.0


# ---------------------------------------------------------------- training
def test_training_learns_and_writes_checkpoints(trained, data):
    frames, table = data
    h = trained.history
    assert trained.status == "completed" and trained.epochs_completed == 3
    assert [r["epoch"] for r in h] == [1, 2, 3]
    assert set(h[0]) == {"epoch", "lr", "train_loss", "val_loss", "val_macro_f1", "val_accuracy", "seconds"}
    assert all(r["lr"] == TRAIN_CFG["lr"] for r in h)  # constant schedule (the default)
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert trained.best_val_macro_f1 > 0.5  # chance is ~1/6
    for name in ("best.safetensors", "config.json", "last.safetensors", "last_state.pt"):
        assert (trained.out_dir / name).is_file()
    info = json.loads((trained.out_dir / "config.json").read_text())
    assert info["classes"] == list(CLASSES) and info["best_epoch"] == trained.best_epoch
    assert info["config"]["model_name"] == "convnext_atto"
    card = ModelCard.load(trained.out_dir / "README.md")   # its model card (cag_utils.cnn.card), from config.json
    assert card.data.library_name == "timm" and f"(epoch {trained.best_epoch}, validation macro-F1" in card.text

    model, _ = load_trained(trained.out_dir)
    test_idx = np.flatnonzero(table["split"] == "test")
    probs = predict(model, frames, test_idx, input_size=SIZE, batch_size=32)
    assert probs.shape == (len(test_idx), 6)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    m = classification_metrics(table["label"].to_numpy()[test_idx], probs.argmax(1))
    assert m["macro_f1"] > 0.5


def test_two_seeded_runs_give_identical_history(trained, data, tmp_path):
    frames, table = data
    again = train_classifier(frames, table, TRAIN_CFG, tmp_path, resume=False)
    assert strip_seconds(again.history) == strip_seconds(trained.history)


def test_resume_continues_epoch_count_and_matches_uninterrupted_run(trained, data, tmp_path):
    frames, table = data
    first = train_classifier(frames, table, {**TRAIN_CFG, "epochs": 2}, tmp_path)
    assert first.epochs_completed == 2
    resumed = train_classifier(frames, table, TRAIN_CFG, tmp_path)  # epochs=3: one more
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    # per-epoch reseeding: stop + resume == one uninterrupted run
    assert strip_seconds(resumed.history) == strip_seconds(trained.history)
    with pytest.raises(ValueError, match="model_name"):
        train_classifier(frames, table, {**TRAIN_CFG, "model_name": "convnext_femto"}, tmp_path)


def test_time_budget_no_validation_and_no_data_are_reported(data, tmp_path):
    frames, table = data
    with pytest.warns(RuntimeWarning, match="TRUNCATED"):
        r = train_classifier(frames, table, {**TRAIN_CFG, "max_minutes": 1e-4}, tmp_path / "budget")
    assert r.status == "truncated" and r.epochs_completed == 1 and r.best_path is not None
    no_val = table.assign(split=table["split"].replace({"val": "train"}))
    r = train_classifier(frames, no_val, {**TRAIN_CFG, "epochs": 2}, tmp_path / "noval")
    assert r.best_epoch == 2 and np.isnan(r.best_val_macro_f1)  # no validation: best = last
    assert json.loads((r.out_dir / "config.json").read_text())["best_val_macro_f1"] is None
    bad = frames.astype(np.float32)  # every frame rejected
    r = train_classifier(bad, table, TRAIN_CFG, tmp_path / "nodata")
    assert r.status == "no_data" and r.epochs_completed == 0 and len(r.rejects) == len(table)
    with pytest.raises(ValueError, match="unknown training config"):
        train_classifier(frames, table, {"learning_rate": 1e-3}, tmp_path / "typo")


# ---------------------------------------------------------------- figures and Grad-CAM
def test_plots_return_figures(trained):
    m = classification_metrics([0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 4])
    assert isinstance(plot_confusion_matrix(m["confusion_matrix"]), Figure)
    assert isinstance(plot_training_curves(trained.history), Figure)


def test_gradcam_maps_have_frame_shape_and_unit_range(trained):
    model, _ = load_trained(trained.out_dir)
    frames, _ = synthetic_set(n_per_class=1, size=48, seed=1)
    # 128 px input: a 4x4 last stage (the model is fully convolutional; it trained at 32)
    maps = gradcam_heatmaps(model, frames, list(range(6)), input_size=128)
    assert maps.shape == (6, 48, 48) and maps.dtype == np.float32  # back at frame resolution
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert (maps.max(axis=(1, 2)) > 0.5).all()  # each map is min-max scaled, not all zero
    assert isinstance(plot_gradcam_overlays(frames, maps, target_classes=list(range(6))), Figure)
    with pytest.raises(ValueError, match="too small"):
        gradcam_heatmaps(model, frames, list(range(6)), input_size=SIZE)


_FRESH_RUN = """
import json, sys
sys.path.insert(0, {tests!r})
from test_cnn import TRAIN_CFG, synthetic_set, strip_seconds
from cag_utils.cnn.train import train_classifier
frames, table = synthetic_set()
r = train_classifier(frames, table, {{**TRAIN_CFG, "epochs": 2, "threads": 2}}, sys.argv[1], resume=False)
print(json.dumps(strip_seconds(r.history)))
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_fresh_processes_give_identical_training(tmp_path):
    """What a re-execution does: a new interpreter, the same config (threads fixed) -> the same bits."""
    import subprocess
    import sys

    script = _FRESH_RUN.format(tests=str(Path(__file__).resolve().parent))
    runs = [subprocess.run([sys.executable, "-c", script, str(tmp_path / name)], capture_output=True, text=True,
                           check=True).stdout.strip().splitlines()[-1] for name in ("a", "b")]
    assert runs[0] == runs[1] and len(json.loads(runs[0])) == 2
    assert (tmp_path / "a" / "best.safetensors").read_bytes() == (tmp_path / "b" / "best.safetensors").read_bytes()
