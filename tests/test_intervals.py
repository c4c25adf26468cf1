"""Patient-bootstrap intervals: estimates equal scikit-learn's, intervals behave."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from cag_utils.intervals import (
    accuracy_from_confusion, collapse_confusion, confusion_by_patient, macro_f1_from_confusion, patient_bootstrap,
    ratio_by_patient, ratio_of_sums,
)


def _predictions(seed: int, n: int = 400, n_classes: int = 6, skill: float = 0.7):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    p = np.where(rng.random(n) < skill, y, rng.integers(0, n_classes, n))
    return y, p, rng.integers(0, 20, n)


@pytest.mark.parametrize("seed", range(5))
def test_confusion_metrics_equal_sklearn(seed):
    y, p, patients = _predictions(seed)
    y[y == 2] = 0  # a class absent from the truth: sklearn's macro runs over classes present in y or p
    cm = confusion_by_patient(y, p, patients, 6).sum(0)
    assert macro_f1_from_confusion(cm) == pytest.approx(f1_score(y, p, average="macro"), abs=1e-12)
    assert accuracy_from_confusion(cm) == pytest.approx(accuracy_score(y, p), abs=1e-12)
    lat = collapse_confusion(cm, [0, 0, 0, 1, 1, 1])
    assert macro_f1_from_confusion(lat) == pytest.approx(f1_score(y // 3, p // 3, average="macro"), abs=1e-12)


def test_interval_brackets_estimate_is_seeded_and_narrows_with_patients():
    y, p, patients = _predictions(0, n=2000)
    cm = confusion_by_patient(y, p, patients, 6)
    a = patient_bootstrap(cm, macro_f1_from_confusion, seed=1)
    assert a == patient_bootstrap(cm, macro_f1_from_confusion, seed=1)
    assert a != patient_bootstrap(cm, macro_f1_from_confusion, seed=2)
    assert a["ci_low"] < a["estimate"] < a["ci_high"] and a["n_patients"] == 20
    few = patient_bootstrap(cm[:5], macro_f1_from_confusion, seed=1)
    assert few["ci_high"] - few["ci_low"] > a["ci_high"] - a["ci_low"]


def test_resampling_unit_is_the_patient():
    """Frames of one patient move together: one patient carrying all errors widens the interval."""
    y = np.zeros(400, dtype=int)
    patients = np.repeat(np.arange(20), 20)
    spread_errors = y.copy(); spread_errors[::20] = 1               # one wrong frame per patient
    clustered = y.copy(); clustered[:20] = 1                        # patient 0 entirely wrong
    width = {}
    for name, pred in (("spread", spread_errors), ("clustered", clustered)):
        iv = patient_bootstrap(confusion_by_patient(y, pred, patients, 2), accuracy_from_confusion, seed=0)
        assert iv["estimate"] == pytest.approx(0.95)
        width[name] = iv["ci_high"] - iv["ci_low"]
    assert width["spread"] == pytest.approx(0.0) and width["clustered"] > 0.05


def test_degenerate_and_tiny_samples():
    y = np.arange(60) % 6
    perfect = patient_bootstrap(confusion_by_patient(y, y, np.arange(60) % 10, 6), macro_f1_from_confusion, seed=0)
    assert perfect == {"estimate": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n_patients": 10}
    one = patient_bootstrap(confusion_by_patient(y, y, np.zeros(60), 6), macro_f1_from_confusion, seed=0)
    assert one["estimate"] == 1.0 and np.isnan(one["ci_low"]) and one["n_patients"] == 1


def test_ratio_of_sums_per_patient():
    stats = ratio_by_patient([1, 0, 1, 1, 0], [1, 1, 1, 1, 1], ["a", "a", "b", "c", "c"])
    assert stats.tolist() == [[1, 2], [1, 1], [1, 2]]
    iv = patient_bootstrap(stats, ratio_of_sums, seed=0)
    assert iv["estimate"] == pytest.approx(3 / 5) and 0 <= iv["ci_low"] <= iv["ci_high"] <= 1
