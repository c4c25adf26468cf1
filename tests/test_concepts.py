"""The ConceptCLIP stand-in's region-concept term (cag_utils.vlm.concepts)."""
import pandas as pd
import torch

from cag_utils.vlm import concepts, standins


def labelled(caption):
    labels, mask = concepts.caption_concepts(caption)
    return {c for c, l in zip(concepts.CONCEPTS, labels) if l}, {c for c, m in zip(concepts.CONCEPTS, mask) if not m}


def row(**kw):
    base = {"laterality": "LCA", "primary_angle": 30.0, "secondary_angle": 25.0, "key_frame_category": "better",
            "lesions": "#6 90%; #7 50%; #2 100%"}
    return pd.Series({**base, **kw})


def test_concepts_are_read_from_the_concept_caption():
    cap = standins.concept_caption(row())   # #2 is an RCA segment: not in the shown artery
    on, unknown = labelled(cap)
    assert on == {"left coronary artery", "LAO cranial view", "contrast-filled coronary artery", "severe stenosis",
                  "severe stenosis of segment 6"}
    assert not unknown
    on, _ = labelled(standins.concept_caption(row(laterality="RCA", primary_angle=-30.0, secondary_angle=-20.0)))
    assert on == {"right coronary artery", "RAO caudal view", "contrast-filled coronary artery", "severe stenosis",
                  "severe stenosis of segment 2"}


def test_a_moderate_lesion_is_not_severe_and_a_frame_without_contrast_has_no_view():
    on, _ = labelled(standins.concept_caption(row(lesions="#6 75%")))
    assert "severe stenosis" not in on and not any("segment" in c for c in on)
    on, unknown = labelled(standins.concept_caption(row(key_frame_category="others")))
    assert on == {"left coronary artery"} and unknown == set(concepts.VIEWS)
    # segment names that share digits stay apart
    on, _ = labelled("left coronary angiogram, LAO cranial view, stenosis #11 99%, #1 25%")
    assert "severe stenosis of segment 11" in on and "severe stenosis of segment 1" not in on


def test_the_head_scores_a_frame_by_its_best_patch():
    head = concepts.ConceptHead()
    c = torch.eye(4)[:2]                                   # two concepts
    patches = torch.zeros(2, 5, 4)
    patches[:, :, 2] = 1.0                                 # background, unlike either concept
    patches[0, 3] = torch.tensor([1.0, 0, 0, 0])           # one patch of frame 0 shows concept 0
    logits = head(patches, c)
    assert logits[0, 0] > logits[1, 0] and torch.isclose(logits[0, 1], logits[1, 1])


def test_the_loss_rewards_right_concepts_and_ignores_masked_ones():
    labels = torch.tensor([[1.0, 0.0]])
    right, wrong = torch.tensor([[5.0, -5.0]]), torch.tensor([[-5.0, 5.0]])
    mask = torch.ones(1, 2)
    assert concepts.concept_loss(right, labels, mask) < concepts.concept_loss(wrong, labels, mask)
    masked = torch.tensor([[1.0, 0.0]])
    assert torch.isclose(concepts.concept_loss(torch.tensor([[5.0, 9.0]]), labels, masked),
                         concepts.concept_loss(torch.tensor([[5.0, -9.0]]), labels, masked))
