"""Cue baselines scored with the CNN's metrics: what a frame's position, or its run's header, predicts.

A depth-4 decision tree is fitted on the training patients' frames and predicts the test split
from one cue alone:
- ``frame_index``: the frame's index in its run and its relative position (key-frame category);
- ``header_angles``: the run's C-arm primary and secondary angles from the DICOM header (laterality);
- ``run_order``: the run's number in its exam and its relative place (laterality).

Each is scored like the CNN (macro-F1 over the three key-frame categories or the two
lateralities, on the same test frames) with the same patient-bootstrap interval, so the CNN's
key-frame F1 can be compared with the frame-index baseline directly.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score
from sklearn.tree import DecisionTreeClassifier

from cag_utils.intervals import confusion_by_patient, macro_f1_from_confusion, patient_bootstrap
from cag_utils.labels import KEY_FRAME_CATEGORIES, LATERALITIES

__all__ = ["CUES", "cue_features", "cue_predictions", "cue_table", "score_cues"]

CUES: dict[str, tuple[str, ...]] = {
    "frame_index": ("frame_index", "relative_position"),
    "header_angles": ("primary_angle", "secondary_angle"),
    "run_order": ("run_number", "relative_run"),
}
TARGETS: dict[str, tuple[str, ...]] = {"key_frame_category": KEY_FRAME_CATEGORIES, "laterality": LATERALITIES}
# (cue, target) pairs reported: the cue each target could leak through
PAIRS: tuple[tuple[str, str], ...] = (("frame_index", "key_frame_category"), ("header_angles", "laterality"),
                                      ("run_order", "laterality"))


def cue_features(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The frame table with every cue column (angles joined from the run table by ``run_id``)."""
    out = table.copy()
    out["relative_position"] = out["frame_index"] / out["n_frames"].clip(lower=1)
    out["run_number"] = out["run_id"].str.rsplit("-R", n=1).str[1].astype(int)
    out["relative_run"] = out["run_number"] / out.groupby("exam_id")["run_number"].transform("max")
    angles = runs[["run_id", "primary_angle", "secondary_angle"]]
    out = out.drop(columns=[c for c in ("primary_angle", "secondary_angle") if c in out])
    return out.merge(angles, on="run_id", how="left", validate="many_to_one").set_index(table.index)


def cue_predictions(features: pd.DataFrame, cue: str, target: str, seed: int, max_depth: int = 4) -> np.ndarray:
    """Predicted ``target`` of the test rows from ``cue`` alone (tree fitted on the train rows)."""
    split = features["split"].astype(str).to_numpy()
    x = features[list(CUES[cue])].to_numpy(float)
    tree = DecisionTreeClassifier(max_depth=max_depth, random_state=seed)
    tree.fit(x[split == "train"], features.loc[split == "train", target].astype(str))
    return tree.predict(x[split == "test"])


def score_cues(features: pd.DataFrame, seed: int, pairs: tuple[tuple[str, str], ...] = PAIRS) -> dict[str, dict[str, Any]]:
    """'<cue>.<target>' -> macro-F1 on the test split with its patient-bootstrap interval."""
    test = features[features["split"].astype(str) == "test"]
    out = {}
    for cue, target in pairs:
        classes = list(TARGETS[target])
        pred = cue_predictions(features, cue, target, seed)
        y = test[target].astype(str).map(classes.index).to_numpy()
        p = np.array([classes.index(c) for c in pred])
        cm = confusion_by_patient(y, p, test["patient_id"], len(classes))
        out[f"{cue}.{target}"] = {**patient_bootstrap(cm, macro_f1_from_confusion, seed=seed),
                                  "estimate": float(f1_score(y, p, average="macro")), "cue": cue, "target": target,
                                  "features": list(CUES[cue])}
    return out


def cue_table(cues: dict[str, dict[str, Any]], headline: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Human table: each cue baseline beside the CNN's F1 on the same test frames (95 % intervals)."""
    cnn_key = {"key_frame_category": "test.key_frame_f1", "laterality": "test.laterality_f1"}

    def fmt(iv: dict[str, Any]) -> str:
        return f"{iv['estimate']:.3f} ({iv['ci_low']:.3f}-{iv['ci_high']:.3f})"

    return pd.DataFrame([{"Cue": c["cue"].replace("_", " "), "Predicts": c["target"].replace("_", " "),
                          "Features": ", ".join(c["features"]), "Cue F1": fmt(c), "CNN F1": fmt(headline[cnn_key[c["target"]]])}
                         for c in cues.values()])
