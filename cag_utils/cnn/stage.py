"""Glue between a profile's ``cnn`` section and ``cag_utils.cnn``: config, checkpoint folder, evaluation.

Profile keys are prefixed ``cnn_`` (keys are unique across profile sections); ``train_config``
maps them onto the training config of ``cag_utils.cnn.train`` (an empty
``cnn_pretrained_file`` means random initialisation, ``cnn_max_minutes`` a wall-clock guard (0: none) that marks a run truncated; ``torch_threads`` (common) the CPU threads; ``cnn_num_workers`` DataLoader processes).

``checkpoint_dir`` names the checkpoint folder by a hash of the training config and of the
labelled frames it sees (uid, label, split and pixels of every frame), so a rerun with the
same inputs resumes (or finds finished) its own run, and any change starts a new one.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cag_utils.cnn.evaluate import classification_metrics, predict
from cag_utils.cnn.train import NOT_RECIPE_KEYS, resolve_config
from cag_utils.data.labels import CLASSES, KEY_FRAME_CATEGORIES
from cag_utils.intervals import (
    accuracy_from_confusion, collapse_confusion, confusion_by_patient, macro_f1_from_confusion, patient_bootstrap,
)

__all__ = [
    "HEADLINE_METRICS", "PROFILE_KEYS", "checkpoint_dir", "evaluate_split", "f1_summary", "headline_intervals",
    "interval_table", "per_class_table", "pick_examples", "prediction_rows", "train_config",
]

# profile key -> training config key
PROFILE_KEYS: dict[str, str] = {
    "cnn_model": "model_name",
    "cnn_model_kwargs": "model_kwargs",
    "cnn_input_size": "input_size",
    "cnn_in_chans": "in_chans",
    "cnn_epochs": "epochs",
    "cnn_batch_size": "batch_size",
    "cnn_lr": "lr",
    "cnn_lr_schedule": "lr_schedule",
    "cnn_warmup_epochs": "warmup_epochs",
    "cnn_weight_decay": "weight_decay",
    "cnn_augment": "augment",
    "cnn_label_smoothing": "label_smoothing",
    "cnn_drop_path_rate": "drop_path_rate",
    "cnn_mixed_precision": "mixed_precision",
    "cnn_pretrained_file": "pretrained_file",
    "cnn_max_minutes": "max_minutes",
    "cnn_num_workers": "num_workers",
}


def train_config(cfg: dict[str, Any], progress: bool | str = "epochs",
                 pretrained_file: str | Path | None = None) -> dict[str, Any]:
    """Training config of ``cag_utils.cnn.train`` from an effective stage config.

    ``progress``: "epochs" (default: one bar, what a notebook wants), True (epochs and batches), False.
    ``pretrained_file``: the starting weights when the profile names none (``cnn_pretrained_file``
    wins): the synthetic pretraining's backbone (``cag_utils.cnn.pretrain.pretrained_weights``).
    """
    missing = sorted(set(PROFILE_KEYS) - set(cfg))
    if missing:
        raise KeyError(f"profile lacks cnn keys {missing}")
    out = {PROFILE_KEYS[k]: cfg[k] for k in PROFILE_KEYS}
    out["pretrained_file"] = out["pretrained_file"] or (None if pretrained_file is None else str(pretrained_file))
    out["max_minutes"] = out["max_minutes"] or None
    out["seed"] = int(cfg["seed"])
    out["threads"] = cfg.get("torch_threads") or None
    out["cpu"] = cfg.get("device", "auto") == "cpu"
    out["progress"] = progress
    return resolve_config(out)


def _data_digest(frames: Any, table: pd.DataFrame) -> str:
    h = hashlib.sha256()
    cols = table[["frame_uid", "label", "split"]].astype(str)
    h.update(pd.util.hash_pandas_object(cols, index=False).to_numpy().tobytes())
    for i in range(len(table)):  # pixels too: a changed renderer must not reuse old weights
        h.update(np.ascontiguousarray(frames[i]).tobytes())
    return h.hexdigest()


def checkpoint_dir(root: str | Path, train_cfg: dict[str, Any], frames: Any, table: pd.DataFrame) -> Path:
    """``root / <model>-<hash>``; the hash covers what changes the weights (not progress bars or the budget;
    starting weights by their content).

    ``num_workers`` counts: augmentation draws come from the worker processes' generators when
    there are workers, from the training process's otherwise, so the two give different runs.
    """
    keep = {k: v for k, v in train_cfg.items() if k not in NOT_RECIPE_KEYS}
    if keep.get("pretrained_file"):  # the weights' content, not where they lie (paths differ between clones)
        keep["pretrained_file"] = hashlib.sha256(Path(keep["pretrained_file"]).read_bytes()).hexdigest()
    h = hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode())
    h.update(_data_digest(frames, table).encode())
    return Path(root) / f"{train_cfg['model_name']}-{h.hexdigest()[:12]}"


def evaluate_split(
    model: torch.nn.Module,
    info: dict[str, Any],
    frames: Any,
    table: pd.DataFrame,
    split: str = "test",
    subsets: dict[str, np.ndarray] | None = None,
    batch_size: int = 64,
) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Predictions of one split and metrics on it and on boolean ``subsets`` of its rows.

    Returns (the split's rows with ``pred`` and ``prob_<class>`` columns, {"all": metrics,
    subset name: metrics}); metrics as ``classification_metrics``.
    """
    rows = table[table["split"].astype(str) == split].copy()
    idx = rows.index.to_numpy()
    positions = table.index.get_indexer(idx)
    probs = predict(model, frames, positions, info["config"]["input_size"], batch_size, info["mean"], info["std"])
    rows["pred"] = probs.argmax(1) if len(probs) else np.zeros(0, dtype=int)
    for j, name in enumerate(info["classes"]):
        rows[f"prob_{name}"] = probs[:, j]
    y, p = rows["label"].to_numpy(), rows["pred"].to_numpy()
    metrics = {"all": classification_metrics(y, p)}
    for name, mask in (subsets or {}).items():
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(rows),):
            raise ValueError(f"subset {name!r} has shape {mask.shape}, expected ({len(rows)},)")
        metrics[name] = classification_metrics(y[mask], p[mask])
    return rows, metrics


def f1_summary(metrics: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per subset: n, accuracy, macro-F1 (6 classes), laterality F1, key-frame F1."""
    cols = ["n", "accuracy", "macro_f1", "laterality_f1", "key_frame_f1"]
    df = pd.DataFrame({name: {c: m[c] for c in cols} for name, m in metrics.items()}).T[cols].astype(float)
    return df.astype({"n": int})


def per_class_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Precision, recall, F1 and support per class, from ``classification_metrics`` output."""
    df = pd.DataFrame(metrics["per_class"]).T[["precision", "recall", "f1", "support"]].astype(float)
    return df.astype({"support": int})


def pick_examples(predictions: pd.DataFrame, per_class: int, seed: int) -> pd.DataFrame:
    """Up to ``per_class`` rows of each true class, drawn with ``seed``, ordered by class."""
    rng = np.random.default_rng(seed)
    picked = []
    for _, rows in predictions.groupby("label", sort=True):
        take = rng.choice(len(rows), size=min(per_class, len(rows)), replace=False)
        picked.append(rows.iloc[np.sort(take)])
    return pd.concat(picked) if picked else predictions.iloc[:0]


# class index = laterality * 3 + key-frame category (cag_utils.data.labels.class_index)
_LATERALITY = [i // len(KEY_FRAME_CATEGORIES) for i in range(len(CLASSES))]
_KEY_FRAME = [i % len(KEY_FRAME_CATEGORIES) for i in range(len(CLASSES))]
# Headline metrics as functions of a (..., 6, 6) confusion matrix: what the patient bootstrap resamples.
HEADLINE_METRICS = {
    "laterality_f1": lambda cm: macro_f1_from_confusion(collapse_confusion(cm, _LATERALITY)),
    "key_frame_f1": lambda cm: macro_f1_from_confusion(collapse_confusion(cm, _KEY_FRAME)),
    "macro_f1": macro_f1_from_confusion,
    "accuracy": accuracy_from_confusion,
}
_METRIC_NAMES = {"laterality_f1": "Laterality F1", "key_frame_f1": "Key-frame F1", "macro_f1": "6-class macro-F1",
                 "accuracy": "Accuracy"}


def prediction_rows(predictions: pd.DataFrame, subsets: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per-frame predictions for ``results/``: IDs, true and predicted class, probabilities, subsets."""
    out = predictions[["frame_uid", "patient_id", "exam_id", "label", "pred"]].copy()
    out.insert(4, "true_class", [CLASSES[i] for i in out["label"]])
    out["pred_class"] = [CLASSES[i] for i in out["pred"]]
    for name in CLASSES:
        out[f"prob_{name}"] = predictions[f"prob_{name}"].to_numpy()
    for name, mask in subsets.items():
        out[name] = np.asarray(mask, dtype=bool)
    return out.reset_index(drop=True)


def headline_intervals(rows: pd.DataFrame, subsets: tuple[str, ...], seed: int) -> dict[str, dict[str, Any]]:
    """``'<subset>.<metric>'`` -> patient-bootstrap interval, from ``prediction_rows`` output.

    Subset ``test`` is every row; any other name is a boolean column of ``rows``. The estimate
    is scikit-learn's (``classification_metrics``), so it can be recomputed exactly from the rows.
    """
    out = {}
    for subset in ("test", *subsets):
        part = rows if subset == "test" else rows[rows[subset].astype(bool)]
        cm = confusion_by_patient(part["label"], part["pred"], part["patient_id"], len(CLASSES))
        exact = classification_metrics(part["label"].to_numpy(), part["pred"].to_numpy())
        for name, metric in HEADLINE_METRICS.items():
            out[f"{subset}.{name}"] = {**patient_bootstrap(cm, metric, seed=seed), "estimate": exact[name]}
    return out


def _with_ci(iv: dict[str, Any]) -> str:
    if not np.isfinite(iv["ci_low"]):
        return f"{iv['estimate']:.3f}"
    return f"{iv['estimate']:.3f} ({iv['ci_low']:.3f}-{iv['ci_high']:.3f})"


def interval_table(rows: pd.DataFrame, headline: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Human table: one row per subset, frames, patients and each metric as 'estimate (95 % CI)'."""
    table = []
    for subset in dict.fromkeys(k.split(".", 1)[0] for k in headline):
        part = rows if subset == "test" else rows[rows[subset].astype(bool)]
        row = {"Subset": subset.replace("_", "-"), "Frames": len(part), "Patients": part["patient_id"].nunique()}
        row.update({label: _with_ci(headline[f"{subset}.{m}"]) for m, label in _METRIC_NAMES.items()})
        table.append(row)
    return pd.DataFrame(table)
