"""Non-triviality checks of the cohort: what simple cues alone can predict.

Laterality from global image statistics (mean, std, 16-bin histogram; logistic regression)
must stay well below what the CNN reaches, and the key-frame category must not follow
from the frame's position in its run (frame index and relative position; decision tree).
Both are cross-validated with patients kept together (GroupKFold).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier


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


def category_from_frame_index(table: pd.DataFrame, folds: int = 5, seed: int = 0) -> float:
    """Grouped-CV accuracy of better/bad/others from frame index and relative position alone."""
    x = np.column_stack([table["frame_index"], table["frame_index"] / table["n_frames"]])
    model = DecisionTreeClassifier(max_depth=4, random_state=seed)
    return _grouped_accuracy(model, x, table["key_frame_category"].to_numpy(), table["patient_id"].to_numpy(), folds)


def majority_accuracy(labels: pd.Series) -> float:
    return float(labels.value_counts(normalize=True).iloc[0])
