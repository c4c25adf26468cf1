"""Patient-level train/validation/test splits (stricter than the paper's per-video split)."""
from __future__ import annotations

import numpy as np
import pandas as pd

SPLITS: tuple[str, ...] = ("train", "val", "test")


def patient_split(
    patient_ids: pd.Series, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
) -> pd.Series:
    """Assign every row a split so that all rows of one patient share it.

    Patients are shuffled with `seed` and cut by `fractions` (train, val, test); each split
    gets at least one patient when there are three or more.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    patients = np.array(sorted(pd.unique(patient_ids)))
    rng = np.random.default_rng(seed)
    rng.shuffle(patients)
    n = len(patients)
    n_val = int(round(fractions[1] * n))
    n_test = int(round(fractions[2] * n))
    if n >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    n_train = n - n_val - n_test
    assignment = {p: "train" for p in patients[:n_train]}
    assignment.update({p: "val" for p in patients[n_train : n_train + n_val]})
    assignment.update({p: "test" for p in patients[n_train + n_val :]})
    return patient_ids.map(assignment).rename("split")
