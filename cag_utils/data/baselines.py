"""What one simple cue predicts: the checks that the task is not trivial (notebooks 01 and 02).

Notebook 01 checks the cohort: laterality from global image statistics (mean, std, 16-bin
histogram; logistic regression), from the C-arm angles in the header (PositionerPrimary/
SecondaryAngle) and from the run's order in its exam must stay well below what the CNN reaches;
the key-frame category must not follow from the frame's position in its run (frame index and
relative position). The cross-validated numbers keep patients together (GroupKFold);
`frame_index_predictions` fits the frame-position tree on the training patients and predicts the
test split, so that it is scored with exactly the CNN's metric (key-frame macro-F1,
`cag_utils.cnn.evaluate`).

Notebook 02 scores the cues like the CNN (``score_cues``): a depth-4 decision tree is fitted on
the training patients' frames and predicts the test split from one cue alone:
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
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from cag_utils.data.labels import KEY_FRAME_CATEGORIES, LATERALITIES
from cag_utils.intervals import confusion_by_patient, macro_f1_from_confusion, patient_bootstrap

# ------------------------------------------------------------------ notebook 01: checks of the cohort
def global_features(frames: np.ndarray, bins: int = 16) -> np.ndarray:
    """(N, 2 + bins): mean, std and the normalised intensity histogram of each frame."""
    flat = frames.reshape(len(frames), -1)
    hist = np.stack([np.bincount(f >> (8 - int(np.log2(bins))), minlength=bins) for f in flat]) / flat.shape[1]
    return np.column_stack([flat.mean(axis=1), flat.std(axis=1), hist])


def _grouped_accuracy(model, x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int) -> float:
    folds = min(folds, len(np.unique(groups)))
    return float(cross_val_score(model, x, y, groups=groups, cv=GroupKFold(folds), scoring="accuracy").mean())


def laterality_from_global_stats(frames: np.ndarray, table: pd.DataFrame, folds: int = 5) -> float:
    """Grouped-CV accuracy of LCA/RCA from global statistics alone (should stay < 0.75)."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return _grouped_accuracy(model, global_features(frames), table["laterality"].to_numpy(),
                             table["patient_id"].to_numpy(), folds)


def _frame_position(table: pd.DataFrame) -> np.ndarray:
    return np.column_stack([table["frame_index"], table["frame_index"] / table["n_frames"]])


def category_from_frame_index(table: pd.DataFrame, folds: int = 5, seed: int = 0) -> float:
    """Grouped-CV accuracy of better/bad/others from frame index and relative position alone."""
    model = DecisionTreeClassifier(max_depth=4, random_state=seed)
    return _grouped_accuracy(model, _frame_position(table), table["key_frame_category"].to_numpy(),
                             table["patient_id"].to_numpy(), folds)


def frame_index_predictions(table: pd.DataFrame, seed: int = 0, train: str = "train", test: str = "test",
                            max_depth: int = 4) -> pd.DataFrame:
    """Key-frame category of each `test` frame predicted from its position in the run alone.

    A depth-4 tree on (frame index, frame index / run length), fitted on the labelled `train`
    frames. Returns the test rows' frame_uid, true and predicted category, and `pred`: the
    class index (true laterality x predicted category, as in `cag_utils.data.labels`), so that
    `cag_utils.cnn.evaluate.classification_metrics(label, pred)["key_frame_f1"]` scores the
    baseline with the CNN's metric.
    """
    labelled = table[table["label"] >= 0] if "label" in table else table
    fit = labelled[labelled["split"].astype(str) == train]
    rows = labelled[labelled["split"].astype(str) == test]
    model = DecisionTreeClassifier(max_depth=max_depth, random_state=seed)
    model.fit(_frame_position(fit), fit["key_frame_category"].to_numpy())
    pred = model.predict(_frame_position(rows))
    lat = rows["laterality"].map(LATERALITIES.index).to_numpy()
    kf = np.array([KEY_FRAME_CATEGORIES.index(p) for p in pred])
    return pd.DataFrame({"frame_uid": rows["frame_uid"].to_numpy(), "key_frame_category": rows["key_frame_category"].to_numpy(),
                         "pred_key_frame_category": pred, "label": rows["label"].to_numpy() if "label" in rows else -1,
                         "pred": lat * len(KEY_FRAME_CATEGORIES) + kf})


def key_frame_f1(true: pd.Series | np.ndarray, pred: pd.Series | np.ndarray) -> float:
    """Macro-F1 over the key-frame categories (the definition of `key_frame_f1` in notebook 02)."""
    return float(f1_score(np.asarray(true), np.asarray(pred), average="macro", zero_division=0))


def _with_runs(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    cols = ["run_id", "primary_angle", "secondary_angle"]
    out = table.merge(runs[cols], on="run_id", how="left", validate="many_to_one")
    number = out["run_id"].str.extract(r"-R(\d+)$", expand=False).astype(int)
    n_runs = runs.groupby("exam_id")["run_id"].count()
    return out.assign(run_number=number, run_position=number / out["exam_id"].map(n_runs))


def laterality_from_angles(table: pd.DataFrame, runs: pd.DataFrame, folds: int = 5, seed: int = 0) -> float:
    """Grouped-CV accuracy of LCA/RCA from the header's C-arm angles alone (depth-4 tree, per frame)."""
    df = _with_runs(table, runs)
    model = DecisionTreeClassifier(max_depth=4, random_state=seed)
    return _grouped_accuracy(model, df[["primary_angle", "secondary_angle"]].to_numpy(), df["laterality"].to_numpy(),
                             df["patient_id"].to_numpy(), folds)


def laterality_from_run_order(table: pd.DataFrame, runs: pd.DataFrame, folds: int = 5, seed: int = 0) -> float:
    """Grouped-CV accuracy of LCA/RCA from the run's number and relative position in its exam."""
    df = _with_runs(table, runs)
    model = DecisionTreeClassifier(max_depth=4, random_state=seed)
    return _grouped_accuracy(model, df[["run_number", "run_position"]].to_numpy(), df["laterality"].to_numpy(),
                             df["patient_id"].to_numpy(), folds)


def majority_accuracy(labels: pd.Series) -> float:
    return float(labels.value_counts(normalize=True).iloc[0])


# ------------------------------------------------------------------ notebook 02: cues scored like the CNN
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
