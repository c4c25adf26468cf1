"""95 % intervals for headline metrics: a bootstrap over patients (``scipy.stats.bootstrap``).

Frames, key frames and reports of one patient are correlated, so the patient is the unit
that is resampled. Every metric here is written as a function of per-patient statistics
that add up (counts, confusion matrices): a resample is then the sum of the resampled
patients' rows, and thousands of resamples cost milliseconds. The point estimate is the
metric of the full sample, identical to what scikit-learn gives on the per-item rows.

    stats = confusion_by_patient(y_true, y_pred, patients, n_classes=6)
    patient_bootstrap(stats, macro_f1_from_confusion, seed=cfg["seed"])
    -> {"estimate": 0.80, "ci_low": 0.71, "ci_high": 0.87, "n_patients": 18}

Interval: bias-corrected and accelerated (BCa) percentiles of 2,000 resamples; where BCa is
undefined (every resample gives the same value, e.g. a perfect score) the plain percentile
interval is used. ``INTERVAL_METHOD`` describes it for the results files.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy import stats as sps

CONFIDENCE = 0.95
N_RESAMPLES = 2000
INTERVAL_METHOD = (f"{CONFIDENCE:.0%} BCa bootstrap over patients (scipy.stats.bootstrap, {N_RESAMPLES} resamples, "
                   "seeded; percentile interval where BCa is undefined)")

__all__ = [
    "CONFIDENCE", "INTERVAL_METHOD", "N_RESAMPLES", "accuracy_from_confusion", "collapse_confusion",
    "confusion_by_patient", "macro_f1_from_confusion", "patient_bootstrap", "ratio_by_patient", "ratio_of_sums",
]


def confusion_by_patient(y_true: Any, y_pred: Any, patients: Any, n_classes: int) -> np.ndarray:
    """(n_patients, n_classes, n_classes) confusion counts (rows true), patients in sorted order."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    codes, _ = pd.factorize(pd.Series(np.asarray(patients)), sort=True)
    out = np.zeros((codes.max() + 1 if len(codes) else 0, n_classes, n_classes), dtype=np.int64)
    np.add.at(out, (codes, y_true, y_pred), 1)
    return out


def ratio_by_patient(numerator: Any, denominator: Any, patients: Any) -> np.ndarray:
    """(n_patients, 2) sums of a numerator and a denominator per patient (for ``ratio_of_sums``)."""
    df = pd.DataFrame({"p": np.asarray(patients), "num": np.asarray(numerator, dtype=float),
                       "den": np.asarray(denominator, dtype=float)})
    return df.groupby("p", sort=True)[["num", "den"]].sum().to_numpy()


def ratio_of_sums(s: np.ndarray) -> np.ndarray:
    """sum(numerator) / sum(denominator), from (..., 2) summed statistics; NaN for 0 / 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return s[..., 0] / s[..., 1]


def collapse_confusion(cm: np.ndarray, groups: Any) -> np.ndarray:
    """Merge classes: ``groups[i]`` is the new class of old class i, e.g. laterality = class // 3."""
    groups = np.asarray(groups)
    onehot = np.eye(groups.max() + 1, dtype=cm.dtype)[groups]  # (C_old, C_new)
    return np.einsum("...ij,ia,jb->...ab", cm, onehot, onehot)


def accuracy_from_confusion(cm: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.trace(cm, axis1=-2, axis2=-1) / cm.sum(axis=(-2, -1))


def macro_f1_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Macro-F1 over the classes present in truth or prediction (scikit-learn's default labels)."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(float)
    rows, cols = cm.sum(-1), cm.sum(-2)
    denom = rows + cols  # 2TP + FP + FN
    present = denom > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(present, 2 * tp / np.where(present, denom, 1), 0.0)
        return f1.sum(-1) / present.sum(-1)


def patient_bootstrap(
    per_patient: np.ndarray, metric: Callable[[np.ndarray], np.ndarray], *, seed: int,
    n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """Point estimate and interval of ``metric(sum of per-patient statistics)``.

    ``per_patient``: (n_patients, ...) additive statistics; ``metric`` maps summed statistics
    of shape (..., *per_patient.shape[1:]) to (...) values (vectorised over resamples).
    Returns {"estimate", "ci_low", "ci_high", "n_patients"}; NaN bounds with fewer than 2 patients.
    """
    per_patient = np.asarray(per_patient)
    n = len(per_patient)
    estimate = float(metric(per_patient.sum(0))) if n else float("nan")
    out = {"estimate": estimate, "ci_low": float("nan"), "ci_high": float("nan"), "n_patients": int(n)}
    if n < 2 or not np.isfinite(estimate):
        return out

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.moveaxis(np.asarray(idx, dtype=np.int64), axis, -1)  # (..., n) patient indices
        return metric(per_patient[idx].sum(axis=idx.ndim - 1))

    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # degenerate resamples: handled by the fallback
            res = sps.bootstrap((np.arange(n),), statistic, n_resamples=n_resamples, confidence_level=confidence,
                                method=method, vectorized=True, random_state=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            out.update(ci_low=low, ci_high=high)
            break
    return out


def format_interval(iv: dict[str, Any], digits: int = 3) -> str:
    """``0.803 [0.712, 0.874]``: an interval of ``patient_bootstrap`` as the tables print it."""
    return f"{iv['estimate']:.{digits}f} [{iv['ci_low']:.{digits}f}, {iv['ci_high']:.{digits}f}]"
