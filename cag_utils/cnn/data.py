"""Frames -> tensors for the stage-1 ConvNeXt, with up-front validation of the frames.

Paper setting: TrivialAugmentWide augmentation during training (torchvision, defaults:
31 magnitude bins, one random op per image). Input size and preprocessing are not in the
paper; here they are parameters: resize to ``input_size`` (square, antialiased), augment
the resized uint8 image (cheaper than at full size), scale to [0, 1], normalise.

Inputs follow the frame-table contract: ``frames`` is a uint8 array (N, H, W) (often a
``np.memmap``), ``table`` has one row per frame with ``frame_uid``, ``laterality``,
``key_frame_category``, ``label`` (index into ``CLASSES``) and ``split``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from cag_utils.data.labels import CLASSES, KEY_FRAME_CATEGORIES, LATERALITIES

__all__ = [
    "AUGMENTATIONS",
    "FrameDataset",
    "build_transform",
    "check_frames",
    "default_mean_std",
    "validate_frame",
]

AUGMENTATIONS: tuple[str, ...] = ("trivialaugment", "none")
# ImageNet statistics; a gray image uses their channel average (what an RGB network sees
# on a gray image repeated three times, up to the small spread between channels).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
REQUIRED_COLUMNS: tuple[str, ...] = ("frame_uid", "laterality", "key_frame_category", "label")


def default_mean_std(in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation statistics matching ImageNet-pretrained weights for 1 or 3 channels."""
    if in_chans == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    if in_chans == 1:
        return (float(np.mean(IMAGENET_MEAN)),), (float(np.mean(IMAGENET_STD)),)
    raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")


def validate_frame(frame: Any, frame_uid: str) -> np.ndarray:
    """Return ``frame`` as an array; ValueError naming ``frame_uid`` if it is unusable."""
    arr = np.asarray(frame)
    if arr.ndim != 2:
        raise ValueError(f"frame {frame_uid!r}: expected a 2-D grayscale image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"frame {frame_uid!r}: expected dtype uint8, got {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"frame {frame_uid!r}: empty image (shape {arr.shape})")
    return arr


def _check_table(table: pd.DataFrame) -> list[str | None]:
    """Per-row reason the label columns are unusable (None = fine)."""
    lat = table["laterality"].astype(str).to_numpy()
    kf = table["key_frame_category"].astype(str).to_numpy()
    label = pd.to_numeric(table["label"], errors="coerce").to_numpy(dtype=float)
    reasons: list[str | None] = [None] * len(table)
    for i in range(len(table)):
        if lat[i] not in LATERALITIES:
            reasons[i] = f"unknown laterality {lat[i]!r}"
        elif kf[i] not in KEY_FRAME_CATEGORIES:
            reasons[i] = f"unknown key-frame category {kf[i]!r}"
        elif not np.isfinite(label[i]) or label[i] != CLASSES.index(f"{lat[i]}_{kf[i]}"):
            reasons[i] = f"label {label[i]!r} disagrees with {lat[i]}_{kf[i]}"
    return reasons


def check_frames(frames: Any, table: pd.DataFrame) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Validate every frame and label row up front.

    Returns ``(usable, rejects)``: the usable row indices (int64, ascending) and one dict
    ``{"index", "frame_uid", "reason"}`` per rejected row. Zero usable frames is a valid
    outcome (reported in ``rejects``), not an error. A length mismatch between ``frames``
    and ``table`` or missing columns is a structural error and raises ValueError.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"frame table lacks columns {missing}")
    if len(frames) != len(table):
        raise ValueError(f"{len(frames)} frames but {len(table)} table rows; row i must describe frames[i]")
    uids = table["frame_uid"].astype(str).to_numpy()
    reasons = _check_table(table)
    arr = frames if isinstance(frames, np.ndarray) else None
    if arr is not None and arr.ndim == 3 and arr.dtype == np.uint8 and arr.shape[1] * arr.shape[2] > 0:
        pass  # one stacked uint8 array: every frame is a valid 2-D image, no per-frame reads needed
    else:
        for i in range(len(table)):
            if reasons[i] is None:
                try:
                    validate_frame(frames[i], uids[i])
                except ValueError as err:
                    reasons[i] = str(err).split(": ", 1)[1]
    rejects = [
        {"index": i, "frame_uid": str(uids[i]), "reason": r} for i, r in enumerate(reasons) if r is not None
    ]
    usable = np.array([i for i, r in enumerate(reasons) if r is None], dtype=np.int64)
    return usable, rejects


class _RepeatChannels(torch.nn.Module):
    """(1, H, W) -> (n, H, W): feeds a gray frame to an RGB stem."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(self.n, *x.shape[-2:]) if x.shape[-3] == 1 else x


def build_transform(
    input_size: int,
    train: bool,
    augment: str = "trivialaugment",
    in_chans: int = 1,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> v2.Compose:
    """uint8 (1, H, W) tensor -> float (in_chans, input_size, input_size), normalised."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    default_mean, default_std = default_mean_std(in_chans)
    ops: list[Any] = [v2.Resize((input_size, input_size), antialias=True)]
    if train and augment == "trivialaugment":
        ops.append(v2.TrivialAugmentWide())  # on uint8, as torchvision's reference recipes do
    ops += [
        v2.ToDtype(torch.float32, scale=True),
        _RepeatChannels(in_chans),
        v2.Normalize(mean=list(mean or default_mean), std=list(std or default_std)),
    ]
    return v2.Compose(ops)


class FrameDataset(Dataset):
    """``(image, label)`` pairs for the rows ``indices`` of ``frames`` (label -1 if unknown)."""

    def __init__(
        self,
        frames: Any,
        indices: Sequence[int] | np.ndarray,
        transform: v2.Compose,
        labels: Sequence[int] | np.ndarray | None = None,
        frame_uids: Sequence[str] | np.ndarray | None = None,
    ) -> None:
        self.frames = frames
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.frame_uids = None if frame_uids is None else np.asarray(frame_uids, dtype=str)

    @classmethod
    def from_table(
        cls, frames: Any, table: pd.DataFrame, indices: Sequence[int] | np.ndarray, transform: v2.Compose
    ) -> FrameDataset:
        """Dataset whose labels and frame names come from the frame table."""
        return cls(frames, indices, transform, table["label"].to_numpy(), table["frame_uid"].astype(str).to_numpy())

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        row = int(self.indices[i])
        uid = str(self.frame_uids[row]) if self.frame_uids is not None else f"#{row}"
        arr = validate_frame(self.frames[row], uid)
        # Copy: memmaps are read-only and torch wants a writable, owned buffer.
        img = torch.from_numpy(np.array(arr, copy=True))[None]
        label = int(self.labels[row]) if self.labels is not None else -1
        return self.transform(img), label
