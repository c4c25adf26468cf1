"""Inference and metrics for the stage-1 frame classifier.

Paper setting: the headline is an F1 of 0.96 on laterality (LCA vs RCA). Besides the
6-class metrics we therefore collapse predictions to laterality (LCA/RCA, macro-F1 over the
two) and to key-frame category (better/bad/others, macro-F1 over the three).

Macro averages run over the classes present in ``y_true`` or ``y_pred`` (scikit-learn's
default), so a small test set lacking a class is not penalised for it; per-class rows are
reported for all six classes (support 0 where absent).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support
from torch.utils.data import DataLoader

from cag_utils.cnn.data import FrameDataset, build_transform
from cag_utils.cnn.model import model_in_chans
from cag_utils.data.labels import CLASSES, KEY_FRAME_CATEGORIES

__all__ = ["classification_metrics", "plot_confusion_matrix", "plot_training_curves", "predict"]


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    frames: Any,
    indices: Sequence[int] | np.ndarray,
    input_size: int,
    batch_size: int = 64,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str | torch.device | None = None,
    num_workers: int = 0,
) -> np.ndarray:
    """Softmax probabilities (len(indices), num_classes) for ``frames[indices]``.

    Uses the evaluation transform (resize + normalise, no augmentation) and the model's
    own input channel count. ``device`` defaults to the model's device.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    transform = build_transform(input_size, train=False, in_chans=model_in_chans(model), mean=mean, std=std)
    loader = DataLoader(FrameDataset(frames, indices, transform), batch_size=batch_size, num_workers=num_workers)
    was_training = model.training
    model.eval()
    out = [torch.softmax(model(x.to(device)).float(), dim=1).cpu() for x, _ in loader]
    model.train(was_training)
    n_classes = getattr(model, "num_classes", len(CLASSES))
    return torch.cat(out).numpy() if out else np.zeros((0, n_classes), dtype=np.float32)


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0)) if len(y_true) else float("nan")


def classification_metrics(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> dict[str, Any]:
    """6-class, laterality and key-frame metrics of integer class predictions.

    Returns ``accuracy``, ``macro_f1``, ``per_class`` ({class name: precision, recall, f1,
    support}), ``laterality_f1``, ``key_frame_f1``, ``confusion_matrix`` (6x6 list, rows =
    true class, normalised by row; all-zero rows for absent classes) and
    ``confusion_matrix_counts``.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    labels = list(range(len(CLASSES)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    n_kf = len(KEY_FRAME_CATEGORIES)  # class index = laterality * 3 + key-frame category
    empty = len(y_true) == 0
    return {
        "n": int(len(y_true)),
        "accuracy": float("nan") if empty else float(accuracy_score(y_true, y_pred)),
        "macro_f1": _macro_f1(y_true, y_pred),
        "laterality_f1": _macro_f1(y_true // n_kf, y_pred // n_kf),
        "key_frame_f1": _macro_f1(y_true % n_kf, y_pred % n_kf),
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(CLASSES)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels, normalize="true").tolist()
        if not empty
        else np.zeros((len(labels), len(labels))).tolist(),
        "confusion_matrix_counts": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def plot_confusion_matrix(
    cm: Sequence[Sequence[float]] | np.ndarray, class_names: Sequence[str] = CLASSES, title: str = ""
) -> Figure:
    """Seaborn heatmap of a (row-normalised) confusion matrix; rows = true class."""
    import matplotlib.pyplot as plt  # local imports: plotting libraries only load for figures
    import seaborn as sns

    cm = np.asarray(cm, dtype=float)
    fig, ax = plt.subplots(figsize=(1.1 * len(class_names) + 1.5, 1.0 * len(class_names) + 1))
    sns.heatmap(
        cm, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=max(1.0, float(cm.max(initial=0))),
        xticklabels=class_names, yticklabels=class_names, square=True, cbar=True, ax=ax,
    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_training_curves(history: Sequence[Mapping[str, float]] | pd.DataFrame) -> Figure:
    """Loss (train/val) and validation macro-F1/accuracy per epoch."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    h = pd.DataFrame(history)
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(10, 3.5))
    for col in ("train_loss", "val_loss"):
        if col in h:
            ax_loss.plot(h["epoch"], h[col], marker="o", label=col)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.legend()
    for col in ("val_macro_f1", "val_accuracy"):
        if col in h:
            ax_score.plot(h["epoch"], h[col], marker="o", label=col)
    ax_score.set_xlabel("epoch")
    ax_score.set_ylim(0, 1.02)
    ax_score.legend()
    for ax in (ax_loss, ax_score):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig
