"""Frame sampling, the paper's rule: local extrema of the per-frame intensity mean and variance.

Candidates are the local maxima and minima of both curves (lightly smoothed, and with a
prominence floor so that quantum-noise wiggles do not count as extrema); they are kept
greedily from the most prominent, dropping any candidate closer than `min_gap` frames to
one already kept (paper: 5). The first and last frames count as extrema when they are the
curve's extreme values (bolus arrival often starts or ends a run).
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks


def intensity_curves(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame mean and variance of pixel intensity of a (F, H, W) run."""
    if frames.ndim != 3 or frames.shape[0] == 0:
        raise ValueError(f"expected a (frames, height, width) array with frames > 0, got shape {frames.shape}")
    flat = frames.reshape(frames.shape[0], -1)
    if flat.dtype == np.uint8:  # exact and fast: moments from integer sums
        n = flat.shape[1]
        s1 = flat.sum(axis=1, dtype=np.int64).astype(np.float64)
        sq = np.square(flat, dtype=np.uint16)
        s2 = sq.sum(axis=1, dtype=np.int64).astype(np.float64)
        mean = s1 / n
        return mean, s2 / n - mean**2
    flat = flat.astype(np.float64)
    return flat.mean(axis=1), flat.var(axis=1)


def _extrema(curve: np.ndarray, smooth: float, prominence: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of local maxima and minima of `curve` and their prominence relative to its range."""
    c = gaussian_filter1d(curve.astype(np.float64), smooth, mode="nearest") if smooth > 0 else curve.astype(float)
    span = float(c.max() - c.min())
    if span <= 0:
        return np.array([], int), np.array([])
    # Pad with the neighbours' mirror so that an extreme first/last frame can be a peak.
    padded = np.r_[c[0] - (c[1] - c[0]) if len(c) > 1 else c[0], c, c[-1] - (c[-2] - c[-1]) if len(c) > 1 else c[-1]]
    idx, prom = [], []
    for sign in (1.0, -1.0):
        peaks, props = find_peaks(sign * padded, prominence=prominence * span)
        idx.append(peaks - 1)
        prom.append(props["prominences"] / span)
    idx_all, prom_all = np.concatenate(idx), np.concatenate(prom)
    ok = (idx_all >= 0) & (idx_all < len(c))
    return idx_all[ok], prom_all[ok]


def sample_frames(mean: np.ndarray, var: np.ndarray, min_gap: int = 5, smooth: float = 1.0,
                  prominence: float = 0.1) -> np.ndarray:
    """Sorted indices of the sampled frames of one run (see module docstring)."""
    cand, score = [], []
    for curve in (mean, var):
        i, p = _extrema(np.asarray(curve), smooth, prominence)
        cand.append(i), score.append(p)
    cand_all, score_all = np.concatenate(cand), np.concatenate(score)
    order = np.lexsort((cand_all, -score_all))  # most prominent first; ties -> earlier frame
    kept: list[int] = []
    for i in cand_all[order]:
        if all(abs(int(i) - k) >= min_gap for k in kept):
            kept.append(int(i))
    return np.array(sorted(kept), dtype=int)
