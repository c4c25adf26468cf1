"""Profile -> training config, checkpoint folder naming, split evaluation, and the GPU-check script on CPU."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cag_utils.cnn.stage import (
    PROFILE_KEYS, checkpoint_dir, evaluate_split, f1_summary, per_class_table, pick_examples, train_config,
)
from cag_utils.cnn.train import DEFAULT_CONFIG, train_classifier
from cag_utils.data.labels import CLASSES
from cag_utils.run.config import load_config
from test_cnn import TRAIN_CFG, synthetic_set

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("profile", ["smoke", "paper"])
def test_profiles_map_onto_training_config(profile):
    cfg = load_config(profile, "cnn")
    tc = train_config(cfg, progress=False)
    assert set(PROFILE_KEYS) <= set(cfg)
    assert set(PROFILE_KEYS.values()) <= set(DEFAULT_CONFIG)
    assert tc["seed"] == cfg["seed"] and tc["model_name"] == cfg["cnn_model"]
    assert tc["pretrained_file"] is None  # "" means random init
    if profile == "paper":  # the paper's setting
        assert (tc["model_name"], tc["lr"], tc["batch_size"], tc["epochs"]) == ("convnext_base", 1e-4, 128, 200)
        assert tc["augment"] == "trivialaugment" and tc["max_minutes"] is None


def test_train_config_names_missing_keys():
    cfg = load_config("smoke", "cnn")
    del cfg["cnn_lr"]
    with pytest.raises(KeyError, match="cnn_lr"):
        train_config(cfg)


def test_checkpoint_dir_changes_with_config_and_data(tmp_path):
    frames, table = synthetic_set(n_per_class=5)
    tc = train_config(load_config("smoke", "cnn"), progress=False)
    a = checkpoint_dir(tmp_path, tc, frames, table)
    assert a == checkpoint_dir(tmp_path, {**tc, "progress": True, "max_minutes": 1}, frames, table)
    assert a != checkpoint_dir(tmp_path, {**tc, "lr": tc["lr"] * 2}, frames, table)
    assert a != checkpoint_dir(tmp_path, {**tc, "num_workers": tc["num_workers"] + 2}, frames, table)
    other = frames.copy()
    other[0, 0, 0] ^= 1
    assert a != checkpoint_dir(tmp_path, tc, other, table)
    assert a != checkpoint_dir(tmp_path, tc, frames, table.assign(split="train"))
    assert a.parent == tmp_path and a.name.startswith(tc["model_name"])


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    frames, table = synthetic_set()
    out = tmp_path_factory.mktemp("stage")
    train_classifier(frames, table, {**TRAIN_CFG, "epochs": 6, "lr_schedule": "cosine", "warmup_epochs": 1}, out,
                     resume=False)
    return frames, table, out


def test_evaluate_split_and_tables(trained_dir):
    from cag_utils.cnn import load_trained

    frames, table, out = trained_dir
    model, info = load_trained(out)
    n_test = int((table["split"] == "test").sum())
    first_half = np.arange(n_test) < n_test // 2
    rows, metrics = evaluate_split(model, info, frames, table, "test", {"half": first_half})
    assert len(rows) == n_test and set(rows["split"]) == {"test"}
    probs = rows[[f"prob_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert (rows["pred"].to_numpy() == probs.argmax(1)).all()
    assert metrics["all"]["n"] == n_test and metrics["half"]["n"] == n_test // 2
    # the blocks are separable: a few epochs learn them
    assert metrics["all"]["accuracy"] > 0.8
    summary = f1_summary(metrics)
    assert list(summary.index) == ["all", "half"] and summary.loc["all", "laterality_f1"] > 0.8
    assert summary["n"].dtype.kind == "i" and summary.loc["half", "n"] == n_test // 2
    pc = per_class_table(metrics["all"])
    assert list(pc.index) == list(CLASSES) and pc["support"].sum() == n_test and pc["support"].dtype.kind == "i"
    with pytest.raises(ValueError, match="subset 'bad'"):
        evaluate_split(model, info, frames, table, "test", {"bad": np.ones(3, bool)})


def test_cosine_schedule_is_recorded(trained_dir):
    _, _, out = trained_dir
    import torch

    lrs = [row["lr"] for row in torch.load(out / "last_state.pt", weights_only=True)["history"]]
    assert lrs[0] == pytest.approx(TRAIN_CFG["lr"] / 100)  # warm-up start
    assert lrs[1] == pytest.approx(TRAIN_CFG["lr"])  # peak after one warm-up epoch
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:]))  # then decays


def test_pick_examples_is_seeded_and_capped():
    df = pd.DataFrame({"label": [0] * 5 + [1] * 1 + [3] * 4, "pred": 0})
    a, b = pick_examples(df, 2, seed=1), pick_examples(df, 2, seed=1)
    assert a.index.tolist() == b.index.tolist()
    assert a["label"].value_counts().to_dict() == {0: 2, 1: 1, 3: 2}


def test_load_annotation_says_to_run_notebook_01(tmp_path, monkeypatch):
    from cag_utils.data.dataset import load_annotation

    monkeypatch.setenv("CAG_OUTPUT_ROOT", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="run notebook 01 first"):
        load_annotation({"profile": "smoke"})


def test_contrast_distribution_marks_the_cut_off():
    import matplotlib

    matplotlib.use("Agg")
    from cag_utils.cnn.contrast import plot_contrast_distribution

    values = np.linspace(0, 1, 40)
    fig = plot_contrast_distribution(values, ["others"] * 20 + ["better"] * 20, threshold=0.25)
    ax = fig.axes[0]
    assert [line.get_xdata()[0] for line in ax.get_lines()] == [0.25]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["better", "others"]


def test_learning_curve_subsets_are_nested_and_seeded():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from cnn_learning_curve import nested_patient_subsets
    finally:
        sys.path.pop(0)
    patients = np.repeat([f"p{i:02d}" for i in range(10)], 3)
    subsets = nested_patient_subsets(patients, [1.0, 0.25, 0.5], seed=3)
    assert [len(s) for s in subsets] == [3, 5, 10]
    assert set(subsets[0]) <= set(subsets[1]) <= set(subsets[2]) == set(patients)
    again = nested_patient_subsets(patients, [0.25, 0.5, 1.0], seed=3)
    assert all((a == b).all() for a, b in zip(subsets, again))
    assert not all((a == b).all() for a, b in zip(subsets, nested_patient_subsets(patients, [0.25, 0.5, 1], 4)))


def test_ceiling_append_keeps_other_factors_and_refuses_another_recipe():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from cnn_ceiling import merge_points
    finally:
        sys.path.pop(0)
    cfg = {"lr": 2e-3, "epochs": 30, "max_minutes": 30, "progress": "epochs"}
    old = {"train_config": cfg, "points": [{"factor": 1.0, "f1": 0.9}, {"factor": 3.0, "f1": 0.95}]}
    assert merge_points(None, cfg, [10]) == []
    # the guard and the progress display do not change a finished run; rerun factors are dropped
    kept = merge_points(old, {**cfg, "max_minutes": None, "progress": False}, [3, 10])
    assert kept == [{"factor": 1.0, "f1": 0.9}]
    with pytest.raises(SystemExit, match="recipe differs"):
        merge_points(old, {**cfg, "lr": 1e-3}, [10])


def test_ceiling_results_give_the_paper_one_interval_macro_per_factor_and_metric():
    from cag_utils.run.report import leaves, macro_name

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from cnn_ceiling import paper_results
    finally:
        sys.path.pop(0)
    iv = {"estimate": 0.97, "ci_low": 0.95, "ci_high": 0.98, "n_patients": 48}
    points = [{"factor": f, "n_train_frames": 100 * f, "n_extra_exams": 9 * (f - 1), "best_epoch": 29,
               "intervals": {"test.laterality_f1": iv, "low_contrast.laterality_f1": {**iv, "estimate": 0.9}}}
              for f in (1.0, 10.0)]
    results = paper_results(points, 1523, 382, {"source": "none"})
    assert results["x10"]["n_train_frames"] == 1000 and results["x1"]["low_contrast"]["laterality_f1"]["estimate"] == 0.9
    macros = {macro_name("cnn_ceiling", path): value for path, value in leaves(results)}
    assert macros["CnnCeilingXOneZeroTestLateralityFOneCi"] == "0.970 [0.950, 0.980]"
    assert macros["CnnCeilingXOneLowContrastLateralityFOneCi"] == "0.900 [0.950, 0.980]"
    assert macros["CnnCeilingPretrainingSource"] == "none" and macros["CnnCeilingNTestFrames"] == 1523


def test_curve_plot_draws_the_intervals_of_each_point():
    import matplotlib

    matplotlib.use("Agg")
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from cnn_learning_curve import plot_curve
    finally:
        sys.path.pop(0)
    iv = [{"f1": {"ci_low": 0.80, "ci_high": 0.90}}, {"f1": {"ci_low": 0.88, "ci_high": 0.97}}]
    points = pd.DataFrame({"n_train_frames": [100, 300], "f1": [0.85, 0.93], "intervals": iv})
    ax = plot_curve(points, series=(("f1", "F1", "o-"),), ylim=(0.5, 1)).axes[0]
    (bars,) = ax.collections
    assert [seg[:, 1].tolist() for seg in bars.get_segments()] == [[0.80, 0.90], [0.88, 0.97]]
    assert ax.get_ylim() == (0.5, 1)
    no_iv = plot_curve(points.drop(columns="intervals"), series=(("f1", "F1", "o-"),)).axes[0]
    assert not no_iv.collections


def test_prediction_rows_headline_intervals_and_table(trained_dir):
    """Per-frame rows carry IDs, classes, probabilities and subsets; intervals come from them."""
    from sklearn.metrics import f1_score

    from cag_utils.cnn import load_trained
    from cag_utils.cnn.stage import headline_intervals, interval_table, prediction_rows

    frames, table, out = trained_dir
    model, info = load_trained(out)
    predictions, _ = evaluate_split(model, info, frames, table, "test")
    half = np.arange(len(predictions)) % 2 == 0
    rows = prediction_rows(predictions, {"half": half})
    assert {"frame_uid", "patient_id", "true_class", "pred_class", "half", *(f"prob_{c}" for c in CLASSES)} <= set(rows)
    headline = headline_intervals(rows, ("half",), seed=0)
    assert set(headline) == {f"{s}.{m}" for s in ("test", "half")
                             for m in ("laterality_f1", "key_frame_f1", "macro_f1", "accuracy")}
    lat = headline["test.laterality_f1"]
    assert lat["estimate"] == f1_score(rows["label"] // 3, rows["pred"] // 3, average="macro", zero_division=0)
    assert lat["ci_low"] <= lat["estimate"] <= lat["ci_high"] and lat["n_patients"] == rows["patient_id"].nunique()
    assert headline == headline_intervals(rows, ("half",), seed=0)  # seeded
    shown = interval_table(rows, headline)
    assert list(shown["Subset"]) == ["test", "half"] and shown.loc[1, "Frames"] == half.sum()
    assert re.fullmatch(r"\d\.\d{3}( \(\d\.\d{3}-\d\.\d{3}\))?", shown.loc[0, "Laterality F1"])
