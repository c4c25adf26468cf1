"""Region-concept alignment of the ConceptCLIP stand-in (the analogue of ConceptCLIP's RC-Align).

ConceptCLIP aligns image regions with the medical concepts named in a caption, beside the usual
image-caption alignment. The stand-in does the same at small scale: the concepts of a caption
(``caption_concepts``: the artery, the view, contrast, a severe stenosis and a severe stenosis of each
AHA segment) are read from the caption text alone, each concept's phrase is embedded by the model's
own text tower, and every frame is scored against every concept by its best-matching patch token
(max over patches, multiple-instance style: a lesion is in one place). ``concept_loss`` is the
sigmoid loss of those scores against the caption's concepts; a view the caption does not name (a
frame without contrast) is left out of the loss rather than counted as absent.

The patch tokens are what a VLM's projector reads, so this is where lesion knowledge has to be.
"""
from __future__ import annotations

import torch

from cag_utils.corpus.corpus import parse_lesions
from cag_utils.synth.reports import SEGMENTS

SEVERE = 90   # percent, as the probes' "lesion of 90 % or more"
ARTERIES = ("left coronary artery", "right coronary artery")
VIEWS = ("LAO cranial view", "LAO caudal view", "RAO cranial view", "RAO caudal view", "LAO straight view",
         "RAO straight view")
CONCEPTS: tuple[str, ...] = (*ARTERIES, *VIEWS, "contrast-filled coronary artery", "severe stenosis",
                             *(f"severe stenosis of segment {s}" for s in SEGMENTS))


def caption_concepts(caption: str) -> tuple[list[float], list[float]]:
    """(labels, mask) over ``CONCEPTS`` for a concept caption (``standins.concept_caption``'s wording).
    A label is 1 when the caption names the concept; mask 0 where the caption cannot tell (the view of a
    frame without contrast)."""
    artery = "left" if caption.startswith("left") else "right"
    contrast = "without contrast" not in caption
    severe = {s for s, p in parse_lesions(caption) if p >= SEVERE}
    labels, mask = [], []
    for c in CONCEPTS:
        if c in ARTERIES:
            labels.append(float(c.startswith(artery)))
        elif c in VIEWS:
            labels.append(float(c in caption))
        elif c.startswith("contrast"):
            labels.append(float(contrast))
        elif c == "severe stenosis":
            labels.append(float(bool(severe)))
        else:
            labels.append(float(c.rsplit(" ", 1)[1] in severe))
        mask.append(0.0 if c in VIEWS and not contrast else 1.0)
    return labels, mask


def concept_targets(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels, mask), each (N, len(CONCEPTS)) float, of a list of captions."""
    pairs = [caption_concepts(c) for c in captions]
    return torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])


class ConceptHead(torch.nn.Module):
    """The training-only scale and bias of the patch-concept scores (SigLIP's own logit scale and bias
    serve the caption loss; a frame's concept score is its best patch's, a different quantity)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(2.3))   # log(10), as SigLIP initialises its scale
        self.bias = torch.nn.Parameter(torch.tensor(-5.0))   # concepts are rare: start from "absent"

    def forward(self, patches: torch.Tensor, concepts: torch.Tensor) -> torch.Tensor:
        """(B, P, D) patch tokens, (K, D) concept embeddings -> (B, K) logits (best patch per concept)."""
        p = torch.nn.functional.normalize(patches, dim=-1)
        c = torch.nn.functional.normalize(concepts, dim=-1)
        return torch.einsum("bpd,kd->bpk", p, c).amax(dim=1) * self.scale.exp() + self.bias


def concept_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked sigmoid loss of (B, K) concept logits, summed over concepts and averaged over frames
    (the scale of the caption loss, which sums over a batch's pairs per caption)."""
    per = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (per * mask).sum() / len(logits)
