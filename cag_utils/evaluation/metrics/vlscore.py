"""VLScore: image-aware similarity of a generated and a reference report (Dawidowicz et al., NeurIPS 2024).

Dawidowicz, Hirsch, Tal, "Image-aware Evaluation of Generated Medical Reports" (arXiv 2410.17357).
The image ``i``, the reference report ``r`` and the generated report ``g`` are embedded in one
joint image-text space and L2-normalised. Two reports that say the same thing about *this* image
lie close to each other and to the image, so the triangle they span is small:

    T(i, r, g) = 1/2 * sqrt( |i - g|^2 |i - r|^2 - <i - g, i - r>^2 )     (Gram determinant; area)
    VLScore    = max(1 - T / C, 0)

``C`` normalises the area. The VLScore paper's constant could not be recovered from its public pages, so
we take the largest area a triangle with vertices on the unit sphere can have, an equilateral
triangle inscribed in a great circle: C = 3 * sqrt(3) / 4 (about 1.299). The score is then in
[0, 1]: 1 when the reports coincide (or all three points are collinear), 0 only for that extreme
triangle. ``C`` is a parameter, and results files record it.

Not verified against the paper's text. What could be checked (abstract, NeurIPS 2024 poster page and
secondary reviews): the three embeddings share one space (LIMITR in the paper), the similarity is
the area of their triangle, and in the paper's ablation it agreed better with radiologists than
cosine similarity, a minimal bounding sphere and an image-centred cosine. None of these sources
gives the exact expression or its normalisation; the form above is ours.

The embedder is pluggable (``Embedder``): the embedder stand-in (``vlm.embedder_standin``, a small
``SiglipModel`` folder trained on whole summaries) in the smoke profile, ConceptCLIP in the paper profile, both read by
``SiglipEmbedder.from_pretrained`` from a local folder (nothing is downloaded).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cag_utils.intervals import patient_bootstrap, ratio_by_patient, ratio_of_sums

MAX_UNIT_AREA = 3 * math.sqrt(3) / 4
FORMULA = ("VLScore = max(1 - T/C, 0), T = 1/2 sqrt(|i-g|^2 |i-r|^2 - <i-g, i-r>^2) on L2-normalised embeddings "
           "of image i, reference r, generated g; C = 3 sqrt(3)/4 (largest triangle on the unit sphere)")

__all__ = ["Embedder", "FORMULA", "MAX_UNIT_AREA", "SiglipEmbedder", "l2_normalise", "triangle_area", "vlscore",
           "vlscore_from_embeddings", "vlscore_of_texts", "vlscore_summary"]


class Embedder(Protocol):
    """Anything that puts images and texts in one space; both methods return (n, d) unit rows."""

    def embed_images(self, images: Sequence[Any]) -> np.ndarray: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def triangle_area(i: np.ndarray, r: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Area of the triangle (i, r, g) per row, in any dimension: (n, d) x 3 -> (n,)."""
    a, b = np.asarray(i, float) - np.asarray(g, float), np.asarray(i, float) - np.asarray(r, float)
    gram = np.einsum("...d,...d->...", a, a) * np.einsum("...d,...d->...", b, b) - np.einsum("...d,...d->...", a, b) ** 2
    return 0.5 * np.sqrt(np.clip(gram, 0.0, None))  # rounding can make a degenerate Gram determinant -1e-17


def vlscore_from_embeddings(image: np.ndarray, reference: np.ndarray, generated: np.ndarray,
                            c: float = MAX_UNIT_AREA) -> np.ndarray:
    """Per-item VLScore of (n, d) embeddings (normalised here, so raw features are fine)."""
    area = triangle_area(l2_normalise(image), l2_normalise(reference), l2_normalise(generated))
    return np.maximum(1.0 - area / c, 0.0)


def vlscore(embedder: Embedder, images: Sequence[Any], references: Sequence[str], generated: Sequence[str],
            c: float = MAX_UNIT_AREA) -> np.ndarray:
    """Per-item VLScore of images with their reference and generated reports."""
    if not len(images) == len(references) == len(generated):
        raise ValueError(f"lengths differ: {len(images)} images, {len(references)} references, "
                         f"{len(generated)} generated")
    if not len(images):
        return np.zeros(0)
    return vlscore_from_embeddings(embedder.embed_images(images), embedder.embed_texts(list(references)),
                                   embedder.embed_texts(list(generated)), c)


def vlscore_of_texts(embedder: Embedder, record_ids: Sequence[str], references: Sequence[str],
                     candidates: Sequence[str], images: dict[str, Any], c: float = MAX_UNIT_AREA,
                     normalise: Any = None) -> np.ndarray:
    """Per-row VLScore of ``candidates`` against ``references`` on the key frame ``images[record_id]``; each
    distinct image and (``normalise``d) text is embedded once, in sorted order, so the result does not
    depend on the row order."""
    norm = normalise or (lambda t: t)
    ids = sorted(set(record_ids))
    img = dict(zip(ids, embedder.embed_images([images[r] for r in ids])))
    texts = sorted({norm(t) for t in (*references, *candidates)})
    txt = dict(zip(texts, embedder.embed_texts(texts)))
    return vlscore_from_embeddings(np.stack([img[r] for r in record_ids]), np.stack([txt[norm(t)] for t in references]),
                                   np.stack([txt[norm(t)] for t in candidates]), c)


def vlscore_summary(scores: Sequence[float], patients: Sequence[Any], *, seed: int) -> dict[str, Any]:
    """Mean VLScore with a 95 % patient-bootstrap interval; the estimate is ``np.mean(scores)``."""
    scores = np.asarray(scores, dtype=float)
    out = patient_bootstrap(ratio_by_patient(scores, np.ones_like(scores), patients), ratio_of_sums, seed=seed)
    out["estimate"] = float(np.mean(scores)) if len(scores) else float("nan")
    return out


class SiglipEmbedder:
    """A transformers ``SiglipModel`` and its processor, read from one local folder.

    Texts are padded to the text tower's full length, as SigLIP is trained (its pooled text
    embedding is the last position), and cut at that length: ``n_truncated`` counts the texts
    that were longer, since only their beginning is embedded.
    """

    def __init__(self, model: Any, image_processor: Any, tokenizer: Any, device: str = "cpu", batch_size: int = 16):
        self.model, self.image_processor, self.tokenizer = model.eval().to(device), image_processor, tokenizer
        self.device, self.batch_size = device, batch_size
        self.max_length = int(model.config.text_config.max_position_embeddings)
        self.n_truncated = 0

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str = "cpu", batch_size: int = 16) -> "SiglipEmbedder":
        from transformers import AutoImageProcessor, AutoTokenizer, SiglipModel

        from transformers.utils import logging as hf_logging

        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"no embedder folder {folder}")
        shown = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()   # no "Loading weights" widget in notebook outputs
        try:
            model = SiglipModel.from_pretrained(folder)
        finally:
            if shown:
                hf_logging.enable_progress_bar()
        return cls(model, AutoImageProcessor.from_pretrained(folder), AutoTokenizer.from_pretrained(folder),
                   device=device, batch_size=batch_size)

    @staticmethod
    def _rgb(image: Any):
        from PIL import Image

        if isinstance(image, Image.Image):
            return image.convert("RGB")
        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            raise TypeError(f"images must be uint8 arrays or PIL images, got {arr.dtype}")
        return Image.fromarray(arr).convert("RGB")

    @staticmethod
    def _pooled(out: Any):
        return out if hasattr(out, "shape") else out.pooler_output

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        import torch

        chunks = []
        for start in range(0, len(images), self.batch_size):
            batch = [self._rgb(im) for im in images[start:start + self.batch_size]]
            pixels = self.image_processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
            with torch.inference_mode():
                chunks.append(self._pooled(self.model.get_image_features(pixel_values=pixels)).float().cpu().numpy())
        return l2_normalise(np.concatenate(chunks))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start:start + self.batch_size])
            full = self.tokenizer(batch, truncation=False)["input_ids"]
            self.n_truncated += sum(len(ids) > self.max_length for ids in full)
            ids = self.tokenizer(batch, padding="max_length", truncation=True, max_length=self.max_length,
                                 return_tensors="pt")["input_ids"].to(self.device)
            with torch.inference_mode():
                chunks.append(self._pooled(self.model.get_text_features(input_ids=ids)).float().cpu().numpy())
        return l2_normalise(np.concatenate(chunks))
