"""Key-frame extraction (notebook 03): the rule, the exam table, intervals, disjoint patients,
and every committed headline number recomputed from the per-candidate file."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cag_utils.corpus import extraction
from cag_utils.data import ingest
from cag_utils.data.dataset import sampling_kwargs
from cag_utils.data.labels import CLASSES, class_index
from cag_utils.data.splits import patient_split


def _cands(rows):
    """rows: (run_id, frame_index, laterality, category, {class: prob})."""
    out = []
    for run, frame, lat, cat, probs in rows:
        exam = run.rsplit("-R", 1)[0]
        rec = {"frame_uid": f"{run}-F{frame:03d}", "patient_id": "PT-" + exam[3:], "exam_id": exam, "run_id": run,
               "frame_index": frame, "laterality": lat, "key_frame_category": cat, "label": class_index(lat, cat)}
        rec.update({f"prob_{c}": probs.get(c, 0.0) for c in CLASSES})
        out.append(rec)
    return pd.DataFrame(out)


RULE = {"threshold": 0.5, "max_per_run": 2, "min_gap": 5}


def test_rule_majority_laterality_threshold_k_and_gap():
    c = _cands([
        ("EX-a-R01", 0, "LCA", "others", {"LCA_others": 0.9, "RCA_better": 0.1}),
        ("EX-a-R01", 6, "LCA", "better", {"LCA_better": 0.55, "RCA_better": 0.45}),
        ("EX-a-R01", 8, "LCA", "better", {"LCA_better": 0.9, "LCA_bad": 0.1}),   # best
        ("EX-a-R01", 10, "LCA", "bad", {"LCA_better": 0.8, "LCA_bad": 0.2}),     # too close to 8
        ("EX-a-R01", 20, "RCA", "better", {"RCA_better": 0.95, "LCA_bad": 0.05}),  # minority laterality: score P(LCA_better)=0
        ("EX-a-R02", 3, "RCA", "better", {"RCA_better": 0.49, "RCA_bad": 0.51}),  # below threshold
    ])
    out = extraction.pick_key_frames(c, c[extraction.PROB_COLUMNS], **RULE)
    assert out["run_laterality"].tolist() == ["LCA"] * 5 + ["RCA"]
    assert out["picked"].tolist() == [False, False, True, False, False, False]
    out = extraction.pick_key_frames(c, c[extraction.PROB_COLUMNS], threshold=0.5, max_per_run=3, min_gap=2)
    assert out["picked"].tolist() == [False, True, True, True, False, False]  # 8, then 10, then 6 (score order)
    out = extraction.pick_key_frames(c, c[extraction.PROB_COLUMNS], threshold=0.5, max_per_run=1, min_gap=5)
    assert out["picked"].sum() == 1


def test_laterality_tie_goes_to_larger_probability():
    c = _cands([("EX-a-R01", 0, "RCA", "bad", {"LCA_bad": 0.6, "RCA_bad": 0.4}),
                ("EX-a-R01", 9, "RCA", "better", {"RCA_better": 0.99, "LCA_bad": 0.01})])
    assert extraction.run_laterality(c[extraction.PROB_COLUMNS], c["run_id"]).tolist() == ["RCA", "RCA"]


def test_oracle_picks_truly_better_frames_and_exam_table_lists_every_exam():
    c = _cands([
        ("EX-a-R01", 2, "LCA", "bad", {"LCA_better": 0.7, "LCA_bad": 0.3}),
        ("EX-a-R01", 9, "LCA", "better", {"LCA_better": 0.2, "LCA_bad": 0.8}),
        ("EX-b-R01", 4, "RCA", "others", {"RCA_others": 1.0}),
    ])
    picks = extraction.apply_rules(c, RULE)
    assert picks["cnn_picked"].tolist() == [True, False, False]
    assert picks["oracle_picked"].tolist() == [False, True, False]
    runs = pd.DataFrame({"exam_id": ["EX-a", "EX-b"], "patient_id": ["PT-a", "PT-b"], "run_id": ["EX-a-R01", "EX-b-R01"]})
    rejects = pd.DataFrame({"exam_id": ["EX-c", "EX-c"], "file_number": [1, 2], "error": ["NotDicomError"] * 2,
                            "reason": ["not a DICOM file"] * 2})
    exams = extraction.exam_table(picks, runs, rejects).set_index("exam_id")
    assert exams["status"].to_dict() == {"EX-a": "ok", "EX-b": "no_key_frame", "EX-c": "no_readable_run"}
    assert "all 2 files rejected: not a DICOM file" == exams.at["EX-c", "reason"]
    assert "oracle rule found none either" in exams.at["EX-b", "reason"]
    head = extraction.headline_intervals(picks, exams.reset_index(), seed=0)
    assert head["cnn_rule.key_frames_per_exam"]["estimate"] == 0.5  # EX-c (unreadable) is not in the denominator
    assert head["cnn_rule.precision_better"]["estimate"] == 0.0
    assert head["oracle_rule.precision_better"]["estimate"] == 1.0
    assert head["cnn_rule.exams_without_key_frame"]["estimate"] == 0.5


def test_overlap_is_detected():
    ann = pd.DataFrame({"patient_id": ["PT-1", "PT-2"], "split": ["train", "test"]})
    assert extraction.patient_overlap(ann, pd.DataFrame({"patient_id": ["PT-2", "PT-3"]})).to_dict("records") == [
        {"patient_id": "PT-2", "split": "test"}]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_independent_patients_are_in_no_cnn_split(small_cohort, small_cfg):
    labels = ingest.read_labels(small_cohort / "labels.csv")
    res = {c: ingest.ingest_cohort(small_cohort, c, labels, small_cfg["deid_salt"], sampling_kwargs(small_cfg),
                                   workers=1, progress=False)["table"] for c in ("annotation", "independent")}
    ann = res["annotation"].assign(split=lambda t: patient_split(t["patient_id"], tuple(small_cfg["split_fractions"]), 0))
    assert set(ann["split"]) == {"train", "val", "test"} and len(res["independent"])
    assert extraction.patient_overlap(ann, res["independent"]).empty


# ---------------------------------------------------------------- committed results
@pytest.fixture(scope="module")
def committed(require):
    record = json.loads(require("results/03_extraction.json").read_text(encoding="utf-8"))
    picks = pd.read_csv(require("results/03_extraction_picks.csv"))
    return record["results"], record["config"], picks


def test_every_headline_number_follows_from_the_picks_file(committed):
    results, _, picks = committed
    got = {}
    per_exam = picks.groupby("exam_id")[["cnn_picked", "oracle_picked"]].sum()
    for rule, col in (("cnn_rule", "cnn_picked"), ("oracle_rule", "oracle_picked")):
        picked = picks[picks[col]]
        lat = picked[col.replace("picked", "laterality")]
        got[f"{rule}.key_frames_per_exam"] = per_exam[col].mean()
        got[f"{rule}.precision_better"] = (picked["true_category"] == "better").mean()
        got[f"{rule}.laterality_accuracy"] = (lat == picked["true_laterality"]).mean()
        got[f"{rule}.exams_without_key_frame"] = (per_exam[col] == 0).mean()
    assert set(got) == set(results["headline"])
    for name, value in got.items():
        assert results["headline"][name]["estimate"] == value, name
        assert results["headline"][name]["n_patients"] > 1
    ex = results["exact"]
    assert ex["n_candidates"] == len(picks) and ex["n_key_frames_cnn"] == picks["cnn_picked"].sum()
    assert ex["n_key_frames_oracle"] == picks["oracle_picked"].sum()
    assert ex["n_exams"] - ex["n_exams_without_readable_run"] == picks["exam_id"].nunique()
    assert ex["n_patients_shared_with_cnn_splits"] == 0


def test_picks_file_reproduces_the_rule(committed):
    _, config, picks = committed
    rule = {"threshold": config["extract_threshold"], "max_per_run": config["extract_max_per_run"],
            "min_gap": config["extract_min_gap"]}
    table = picks.rename(columns={"true_laterality": "laterality", "true_category": "key_frame_category",
                                  "true_class": "label"})
    again = extraction.apply_rules(table, rule)
    assert (again["cnn_picked"] == picks["cnn_picked"]).all()
    assert (again["oracle_picked"] == picks["oracle_picked"]).all()
    assert (again["cnn_laterality"] == picks["cnn_laterality"]).all()


def test_picks_file_holds_only_pseudonyms(committed):
    _, _, picks = committed
    assert picks["patient_id"].str.fullmatch(r"PT-[0-9a-f]{12}").all()
    assert picks["exam_id"].str.fullmatch(r"EX-[0-9a-f]{12}").all()
    assert (picks["run_id"].str.rsplit("-R", n=1).str[0] == picks["exam_id"]).all()
