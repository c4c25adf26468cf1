"""Grad-CAM heatmaps of the stage-1 ConvNeXt (the ``grad-cam`` library).

Shows which image regions drive a class score, e.g. whether an LCA/RCA call rests on the
vessel tree rather than on the catheter or the spine. Target layer: the last ConvNeXt stage
(7x7 at 224 input), whose NCHW output Grad-CAM weights by its spatially pooled gradients.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from cag_utils.cnn.data import build_transform, validate_frame
from cag_utils.cnn.model import last_stage, model_in_chans
from cag_utils.data.labels import CLASSES

__all__ = ["gradcam_heatmaps", "plot_gradcam_overlays"]


def gradcam_heatmaps(
    model: torch.nn.Module,
    frames: Sequence[np.ndarray] | np.ndarray,
    target_classes: Sequence[int],
    input_size: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    target_layer: torch.nn.Module | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """Grad-CAM maps (N, H, W) float32 in [0, 1] at each frame's own resolution.

    ``frames``: N uint8 gray frames of one size (H, W); ``target_classes``: one class index
    per frame (e.g. the prediction or the true label). Each map is min-max scaled per frame
    (Grad-CAM's convention), so maps compare locations, not strengths, across frames.
    Resolution is coarse: the last stage is ``input_size / 32`` wide (7x7 at 224), so
    ``input_size`` may exceed the training size (the network is fully convolutional).
    """
    if input_size < 64:  # ConvNeXt's total stride is 32: below 64 px the map is 1x1 and CAM is all zero
        raise ValueError(f"input_size {input_size} too small for Grad-CAM on ConvNeXt; use >= 64")
    if len(frames) != len(target_classes):
        raise ValueError(f"{len(frames)} frames but {len(target_classes)} target classes")
    arrays = [validate_frame(f, f"#{i}") for i, f in enumerate(frames)]
    if not arrays:
        return np.zeros((0, 0, 0), dtype=np.float32)
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"frames must share one size, got {sorted(shapes)}")
    (h, w), device = shapes.pop(), next(model.parameters()).device
    transform = build_transform(input_size, train=False, in_chans=model_in_chans(model), mean=mean, std=std)
    was_training = model.training
    maps = []
    with GradCAM(model=model, target_layers=[target_layer or last_stage(model)]) as cam:  # sets eval mode
        for start in range(0, len(arrays), batch_size):
            chunk = arrays[start : start + batch_size]
            x = torch.stack([transform(torch.from_numpy(np.array(a, copy=True))[None]) for a in chunk]).to(device)
            targets = [ClassifierOutputTarget(int(c)) for c in target_classes[start : start + batch_size]]
            m = torch.from_numpy(cam(input_tensor=x, targets=targets))  # (B, input_size, input_size)
            # Back to the frame's resolution; bilinear interpolation stays inside [0, 1].
            maps.append(F.interpolate(m[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0])
    model.train(was_training)
    return torch.cat(maps).clamp_(0, 1).numpy().astype(np.float32)


def plot_gradcam_overlays(
    frames: Sequence[np.ndarray] | np.ndarray,
    heatmaps: np.ndarray,
    titles: Sequence[str] | None = None,
    target_classes: Sequence[int] | None = None,
    alpha: float = 0.4,
    ncols: int = 4,
    **imshow_kwargs: Any,
) -> Figure:
    """Grid of gray frames with their heatmaps overlaid (jet colormap, ``alpha`` opacity)."""
    import matplotlib.pyplot as plt  # local import: only figures need pyplot

    n = len(frames)
    ncols = max(1, min(ncols, n))
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.3 * ncols, 2.3 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(np.asarray(frames[i]), cmap="gray", vmin=0, vmax=255)
        ax.imshow(heatmaps[i], cmap="jet", alpha=alpha, vmin=0, vmax=1, **imshow_kwargs)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
        elif target_classes is not None:
            ax.set_title(CLASSES[int(target_classes[i])], fontsize=9)
    fig.tight_layout()
    return fig
