"""Figures of the data notebook: class counts, frame montage, intensity curves."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from cag_utils.data.labels import CLASSES


def class_counts(table: pd.DataFrame):
    """Bar chart of sampled frames per class and split."""
    counts = table.groupby(["split", "label"]).size().rename("frames").reset_index()
    counts["class"] = counts["label"].map(dict(enumerate(CLASSES)))
    fig, ax = plt.subplots(figsize=(7, 3))
    sns.barplot(counts, x="class", y="frames", hue="split", order=list(CLASSES), ax=ax)
    ax.set_xlabel("")
    ax.set_title("Sampled frames per class and split")
    return fig


def montage(frames: np.ndarray, table: pd.DataFrame, per_class: int = 4, seed: int = 0):
    """A grid of example frames: one row per class."""
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(CLASSES), per_class, figsize=(1.6 * per_class, 1.6 * len(CLASSES)))
    for r, name in enumerate(CLASSES):
        idx = np.flatnonzero(table["label"].to_numpy() == r)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for c in range(per_class):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(pick):
                ax.imshow(frames[pick[c]], cmap="gray", vmin=0, vmax=255)
        axes[r, 0].text(-0.08, 0.5, name, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=9)
    fig.subplots_adjust(wspace=0.03, hspace=0.03, left=0.18)
    return fig


def intensity_curves(runs: pd.DataFrame, n: int = 4, seed: int = 0):
    """Per-frame mean and variance of a few runs, with the sampled frames marked."""
    pick = runs.sample(n=min(n, len(runs)), random_state=seed)
    fig, axes = plt.subplots(2, len(pick), figsize=(3.2 * len(pick), 4), sharex="col", squeeze=False)
    for c, (_, run) in enumerate(pick.iterrows()):
        for r, (key, label) in enumerate((("mean_curve", "mean"), ("var_curve", "variance"))):
            y = np.asarray(run[key])
            ax = axes[r, c]
            ax.plot(y, lw=1.2)
            ax.plot(run["sampled"], y[run["sampled"]], "o", color="C3", ms=5, label="sampled")
            ax.set_ylabel(label if c == 0 else "")
        axes[0, c].set_title(f"{run['laterality']} run, {run['n_frames']} frames", fontsize=9)
        axes[1, c].set_xlabel("frame")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig
