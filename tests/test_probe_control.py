"""Linear probes (cag_utils.vlm.probe), the positive control (cag_utils.vlm.control) and the paired image effects
of notebook 06 (cag_utils.evaluation.evaluation.image_effects)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cag_utils.evaluation import evaluation
from cag_utils.vlm import control, probe


def test_auroc_equals_sklearn_with_ties_and_has_an_interval():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    score = np.round(y * 0.3 + rng.random(300), 1)   # many ties
    patients = rng.integers(0, 30, 300)
    out = probe.auroc(y, score, patients, seed=0)
    assert out["estimate"] == pytest.approx(roc_auc_score(y, score))
    assert out["ci_low"] < out["estimate"] < out["ci_high"] and out["n_patients"] == 30
    assert out["n_positive"] == int(y.sum())
    assert np.isnan(probe.auroc(np.ones(5), np.arange(5.0), np.arange(5), seed=0)["estimate"])   # one class only
    rare = np.zeros(60, dtype=int)
    rare[[3, 17]] = 1   # two positive patients: many resamples hold none
    sparse = probe.auroc(rare, rng.random(60) + rare, np.arange(60) // 3, seed=0)
    assert sparse["interval"].startswith("percentile") and 0 <= sparse["ci_low"] <= sparse["ci_high"] <= 1


def test_severe_in_view():
    assert probe.severe_in_view("#6 90%; #7 50%") and probe.severe_in_view("#1 100%")
    assert not probe.severe_in_view("#6 75%") and not probe.severe_in_view("")


def test_probe_report_finds_a_planted_signal():
    rng = np.random.default_rng(1)
    n = 400
    lat = rng.choice(["LCA", "RCA"], n)
    severe = rng.random(n) < 0.3
    x = np.c_[(lat == "LCA") * 2.0, severe * 2.0, rng.normal(size=(n, 6))] + rng.normal(size=(n, 8)) * 0.5
    t = pd.DataFrame({"laterality": lat, "severe": severe, "patient_id": np.arange(n) // 4, "has_contrast": True})
    rep = probe.probe_report(x[:300], t[:300], x[300:], t[300:].reset_index(drop=True), seed=0)
    assert rep["laterality_accuracy"]["estimate"] > 0.9 and rep["severe_lesion_auroc"]["estimate"] > 0.9
    noise = probe.probe_report(rng.normal(size=(300, 8)), t[:300], rng.normal(size=(100, 8)),
                               t[300:].reset_index(drop=True), seed=0)
    assert abs(noise["severe_lesion_auroc"]["estimate"] - 0.5) < 0.15   # no signal, no skill


def test_control_target_round_trip():
    assert control.target("LCA", 30, 25) == "left coronary artery, LAO cranial"
    assert control.target("RCA", -30, 2) == "right coronary artery, RAO straight"
    assert control.read_target("right coronary artery, RAO caudal") == ("RCA", "RAO caudal")
    assert control.read_target("Left coronary artery, lao Cranial view") == ("LCA", "LAO cranial")
    assert control.read_target("a summary without either") == ("", "")


def test_control_examples_use_the_run_angles(tmp_path):
    records = pd.DataFrame({"frame_uid": ["a", "b"], "patient_id": ["P1", "P2"], "run_id": ["r1", "r2"],
                            "split": ["train", "test"], "file_name": ["images/a.png", "images/b.png"],
                            "laterality_true": ["LCA", None], "laterality_pred": ["LCA", "RCA"]})
    runs = pd.DataFrame({"run_id": ["r1", "r2"], "primary_angle": [40.0, -30.0], "secondary_angle": [-20.0, 25.0]})
    ex = control.control_examples(records, tmp_path, runs, "Artery and view:")
    assert [e.reference for e in ex["train"]] == ["left coronary artery, LAO caudal"]
    assert [e.reference for e in ex["test"]] == ["right coronary artery, RAO cranial"]   # CNN's laterality: truth unknown
    assert ex["test"][0].prompt == "Artery and view:" and ex["test"][0].language == "en"


def test_annotation_examples_keep_contrast_frames_and_write_them(tmp_path):
    from PIL import Image

    frames = np.stack([np.full((8, 8), v, np.uint8) for v in (10, 20, 30)])
    table = pd.DataFrame({"frame_uid": ["f0", "f1", "f2"], "patient_id": ["P1", "P1", "P2"],
                          "laterality": ["LCA", "RCA", "RCA"], "key_frame_category": ["better", "others", "bad"],
                          "primary_angle": [40.0, 0.0, -30.0], "secondary_angle": [-20.0, 0.0, 25.0]})
    ex = control.annotation_examples(frames, table, tmp_path / "frames", "Artery and view:")
    assert [e.record_id for e in ex] == ["f0", "f2"]   # the frame without contrast cannot show a view
    assert [e.reference for e in ex] == ["left coronary artery, LAO caudal", "right coronary artery, RAO cranial"]
    assert {e.split for e in ex} == {"train"} and [e.patient_id for e in ex] == ["P1", "P2"]
    with Image.open(ex[1].image_path) as im:   # the frame's own pixels, by path as the trainer reads them
        assert np.array_equal(np.asarray(im), frames[2])


def _items(truth: list[str], preds: dict[tuple[str, str], list[str]]) -> pd.DataFrame:
    rows = []
    for (family, variant), pred in preds.items():
        for k, (t, p) in enumerate(zip(truth, pred)):
            rows.append({"record_id": f"r{k}", "language": "en", "patient_id": f"P{k // 2}", "family": family,
                         "variant": variant, "lesions_shown_true": t, "lesions_shown_pred": p})
    return pd.DataFrame(rows)


def test_image_effects_are_paired_differences():
    truth = ["#6 90%", "#1 75%", "", "#11 99%", "#7 50%", "#2 90%", "#3 75%", "#13 90%"]
    wrong = ["#5 50%"] * 8
    items = _items(truth, {("m", "with_lora"): truth, ("m", "with_lora_blank_image"): wrong, ("text", "with_lora"): truth[:4] + wrong[4:]})
    eff = evaluation.image_effects(items, ["m", "text"], "text", seed=0)
    assert eff["m.real_minus_blank"]["estimate"] == pytest.approx(1.0)
    assert eff["m.real_minus_blank"]["ci_low"] == pytest.approx(1.0)
    f1_text = eff["m.real_minus_text_only"]["f1_other"]
    assert 0 < f1_text < 1 and eff["m.real_minus_text_only"]["estimate"] == pytest.approx(1 - f1_text)
    assert "text.real_minus_blank" not in eff
    table = evaluation.image_effect_table(eff, ["m"], {"m": "M"})
    assert table.loc[0, "F1 real frame"] == "1.000"
    with pytest.raises(ValueError, match="same records"):
        evaluation.image_effects(items[~((items.family == "m") & (items.record_id == "r0") & (items.variant == "with_lora"))],
                                 ["m"], None, seed=0)


def test_pooled_draws_sum_the_counts_of_each_patient_over_draws():
    truth = ["#6 90%", "#1 75%", "", "#11 99%", "#7 50%", "#2 90%", "#3 75%", "#13 90%"]
    wrong = ["#5 50%"] * 8
    a = _items(truth, {("m", "with_lora"): truth, ("m", "with_lora_blank_image"): wrong,
                       ("text", "with_lora"): truth[:4] + wrong[4:]})
    b = _items(truth, {("m", "with_lora"): truth[:2] + wrong[2:], ("m", "with_lora_blank_image"): wrong,
                       ("text", "with_lora"): truth})
    one = evaluation.image_effects(a, ["m", "text"], "text", seed=0)
    # one draw, or the same draw twice: F1 of summed counts does not change when every count doubles
    for pooled in ({"0": a}, {"0": a, "1": a}):
        eff = evaluation.image_effects(evaluation.pool_draws(pooled), ["m", "text"], "text", seed=0)
        assert eff["m.real_minus_text_only"] == pytest.approx(one["m.real_minus_text_only"])
    both = evaluation.pool_draws({"0": a, "1": b})
    assert len(both) == 2 * len(a) and both["record_id"].nunique() == 2 * a["record_id"].nunique()
    eff = evaluation.image_effects(both, ["m", "text"], "text", seed=0)["m.real_minus_text_only"]
    # by hand (7 true lesions, one per non-empty truth): draw a, m TP 7 and text TP 3, FP 4, FN 4; draw b, m TP 2,
    # FP 6 (item 2 has no lesion), FN 5 and text TP 7
    f1 = lambda tp, fp, fn: 2 * tp / (2 * tp + fp + fn)   # noqa: E731
    assert eff["estimate"] == pytest.approx(f1(9, 6, 5) - f1(10, 4, 4))
    assert eff["n_patients"] == 4 and eff["ci_low"] <= eff["estimate"] <= eff["ci_high"]
    with pytest.raises(ValueError, match="do not cover the same items"):
        evaluation.pool_draws({"0": a, "1": b.iloc[1:]})
    with pytest.raises(ValueError, match="no draws"):
        evaluation.pool_draws({})
