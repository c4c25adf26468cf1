"""Padding collator of stage-3 batches (torch only, so that the GPU check imports no data stack).

Right padding for training, left padding (``left=True``) for generation; labels are padded with
-100. ``data`` re-exports ``Collator``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def _pad(seqs: list[torch.Tensor], value: int, left: bool) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=seqs[0].dtype)
    for i, s in enumerate(seqs):
        if left:
            out[i, width - len(s):] = s
        else:
            out[i, :len(s)] = s
    return out


@dataclass
class Collator:
    """Pads a list of ``encode`` outputs: right for training, left (``left=True``) for generation."""

    pad_token_id: int
    left: bool = False

    def __call__(self, batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        out = {"input_ids": _pad([b["input_ids"] for b in batch], self.pad_token_id, self.left),
               "attention_mask": _pad([b["attention_mask"] for b in batch], 0, self.left),
               "token_type_ids": _pad([b["token_type_ids"] for b in batch], 0, self.left)}
        if "pixel_values" in batch[0]:   # absent in the text-only control
            out["pixel_values"] = torch.stack([b["pixel_values"] for b in batch])
        if "labels" in batch[0]:
            out["labels"] = _pad([b["labels"] for b in batch], -100, self.left)
        return out
