"""Linear probes: what a frozen image encoder's pooled features know about a frame.

A logistic regression (scikit-learn, standardised features) on the encoder's pooled output
(``SiglipVisionModel.pooler_output``, what its contrastive head sees), trained on frames of some
patients and scored on frames of others. Two targets:
- ``laterality``: LCA or RCA, scored as accuracy;
- ``severe_lesion``: a lesion of 90 % or more in the artery the frame shows, scored as AUROC.
Both carry a 95 % patient-bootstrap interval. AUROC is written as a function of additive
per-patient statistics (positives and negatives per score rank), so the bootstrap sums rows like
every other interval of the compendium (``cag_utils.intervals``); the estimate equals
scikit-learn's ``roc_auc_score``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cag_utils.corpus.corpus import parse_lesions
from cag_utils.intervals import N_RESAMPLES, patient_bootstrap, ratio_by_patient, ratio_of_sums
from cag_utils.vlm.standins import pixel_tensor

SEVERE = 90   # percent: "a lesion of 90 % or more in the shown artery"


def severe_in_view(lesions_in_view: str, threshold: int = SEVERE) -> bool:
    """True when the shown artery's lesions (``'#6 90%; #7 50%'``) hold one of ``threshold`` % or more."""
    return any(p >= threshold for _, p in parse_lesions(lesions_in_view))


@torch.no_grad()
def pooled_features(folder: str | Path, frames: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, d) pooled features of a SigLIP(-vision) folder for (N, H, W) uint8 frames."""
    from transformers import SiglipVisionModel

    model = SiglipVisionModel.from_pretrained(folder).eval()
    size = model.config.image_size
    out = []
    for i in range(0, len(frames), batch_size):
        px = pixel_tensor(np.asarray(frames[i:i + batch_size]), size).expand(-1, 3, -1, -1)
        out.append(model(pixel_values=px).pooler_output.float().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.hidden_size), np.float32)


def fit_probe(x: np.ndarray, y: np.ndarray, seed: int):
    """Standardised logistic regression (L2, C=1) fitted on (x, y)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=seed)).fit(x, y)


def auroc_by_patient(y: np.ndarray, score: np.ndarray, patients: Any) -> np.ndarray:
    """(n_patients, 2, n_ranks): positives and negatives per patient at each distinct score (sorted)."""
    ranks = np.unique(np.asarray(score), return_inverse=True)[1]
    k = int(ranks.max()) + 1 if len(ranks) else 0
    df = pd.DataFrame({"p": np.asarray(patients), "r": ranks, "y": np.asarray(y).astype(bool)})
    out = []
    for _, g in df.groupby("p", sort=True):
        out.append([np.bincount(g.loc[g["y"], "r"], minlength=k), np.bincount(g.loc[~g["y"], "r"], minlength=k)])
    return np.asarray(out, dtype=np.int64).reshape(-1, 2, k)


def auroc_from_counts(s: np.ndarray) -> np.ndarray:
    """AUROC (ties count one half) from summed (..., 2, n_ranks) counts; NaN without both classes."""
    pos, neg = s[..., 0, :].astype(float), s[..., 1, :].astype(float)
    below = np.cumsum(neg, axis=-1) - neg
    pairs = pos.sum(-1) * neg.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, (pos * (below + 0.5 * neg)).sum(-1) / np.where(pairs > 0, pairs, 1), np.nan)


def auroc(y: np.ndarray, score: np.ndarray, patients: Any, *, seed: int) -> dict[str, Any]:
    """AUROC with a 95 % patient-bootstrap interval, plus the class counts.

    With few positive patients some resamples hold no positive frame and have no AUROC; BCa is then
    undefined, and the interval is the percentile interval of the resamples that hold both classes
    (``interval``: "bca" or "percentile, resamples with both classes")."""
    per = auroc_by_patient(y, score, patients)
    out = patient_bootstrap(per, auroc_from_counts, seed=seed)
    out["interval"] = "bca"
    if len(per) > 1 and np.isfinite(out["estimate"]) and not (np.isfinite(out["ci_low"]) and np.isfinite(out["ci_high"])):
        idx = np.random.default_rng(seed).integers(0, len(per), (N_RESAMPLES, len(per)))
        values = auroc_from_counts(per[idx].sum(1))
        values = values[np.isfinite(values)]
        out.update(ci_low=float(np.percentile(values, 2.5)), ci_high=float(np.percentile(values, 97.5)),
                   interval="percentile, resamples with both classes")
    out.update(n_positive=int(np.sum(y)), n_negative=int(len(y) - np.sum(y)))
    return out


def accuracy(y: np.ndarray, pred: np.ndarray, patients: Any, *, seed: int) -> dict[str, Any]:
    correct = (np.asarray(y) == np.asarray(pred)).astype(float)
    return patient_bootstrap(ratio_by_patient(correct, np.ones_like(correct), patients), ratio_of_sums, seed=seed)


def probe_report(train_x: np.ndarray, train: pd.DataFrame, test_x: np.ndarray, test: pd.DataFrame, *,
                 seed: int) -> dict[str, Any]:
    """Laterality accuracy and severe-lesion AUROC of probes trained on ``train`` rows and scored on ``test``.

    Both tables need ``laterality``, ``severe`` (bool) and ``patient_id``; the lesion probe is trained on
    contrast frames only (``has_contrast``), where a lesion can show.
    """
    lat = fit_probe(train_x, train["laterality"].to_numpy(), seed)
    contrast = train["has_contrast"].to_numpy(bool)
    if train.loc[contrast, "severe"].nunique() < 2:
        raise ValueError("the probe's training frames hold only one severe-lesion class")
    sev = fit_probe(train_x[contrast], train.loc[contrast, "severe"].to_numpy(bool), seed)
    score = sev.predict_proba(test_x)[:, 1]
    return {"laterality_accuracy": accuracy(test["laterality"].to_numpy(), lat.predict(test_x), test["patient_id"],
                                            seed=seed),
            "severe_lesion_auroc": auroc(test["severe"].to_numpy(bool), score, test["patient_id"], seed=seed),
            "n_train": int(len(train)), "n_train_contrast": int(contrast.sum()), "n_test": int(len(test))}
