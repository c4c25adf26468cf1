"""VLScore: the triangle-area formula on hand-made embeddings, and the SigLIP folder adapter."""
from __future__ import annotations

import math

import numpy as np
import pytest

from cag_utils.evaluation.metrics.vlscore import (MAX_UNIT_AREA, SiglipEmbedder, triangle_area, vlscore,
                                       vlscore_from_embeddings, vlscore_summary)

E1, E2, E3 = np.eye(3)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def test_triangle_area_matches_geometry():
    # three orthonormal vectors: an equilateral triangle of side sqrt(2)
    assert triangle_area(E1[None], E2[None], E3[None])[0] == pytest.approx(math.sqrt(3) / 2)
    # collinear points span no area
    assert triangle_area(E1[None], (0.5 * E1)[None], (-E1)[None])[0] == pytest.approx(0.0)


def test_largest_triangle_on_the_unit_sphere_scores_zero():
    angles = np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
    i, r, g = (np.array([[np.cos(a), np.sin(a), 0.0]]) for a in angles)
    assert triangle_area(i, r, g)[0] == pytest.approx(MAX_UNIT_AREA)
    assert vlscore_from_embeddings(i, r, g)[0] == pytest.approx(0.0, abs=1e-12)


def test_identical_reports_score_best():
    rng = np.random.default_rng(0)
    image, reference = rng.normal(size=(20, 8)), rng.normal(size=(20, 8))
    same = vlscore_from_embeddings(image, reference, reference)
    other = vlscore_from_embeddings(image, reference, rng.normal(size=(20, 8)))
    assert np.allclose(same, 1.0)
    assert np.all(other < same) and np.all((other >= 0) & (other <= 1))


def test_report_that_moves_toward_the_image_scores_higher():
    """Generated reports equally far from the reference; the more their offset points to the image, the better."""
    image, reference, t = E1, E2, 0.6
    scores, cosines = [], []
    for phi in np.linspace(0, np.pi / 2, 7):  # offset direction: toward the image (phi = 0) ... away (pi / 2)
        u = np.cos(phi) * E1 + np.sin(phi) * E3
        generated = _unit(np.cos(t) * reference + np.sin(t) * u)
        assert np.dot(generated, reference) == pytest.approx(np.cos(t))
        scores.append(vlscore_from_embeddings(image[None], reference[None], generated[None])[0])
        cosines.append(np.dot(generated, image))
    assert np.all(np.diff(scores) < 0) and np.all(np.diff(cosines) < 0)


def test_summary_estimate_is_the_mean():
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.6, 0.85])
    out = vlscore_summary(scores, ["a", "a", "b", "c", "c", "d"], seed=1)
    assert out["estimate"] == float(np.mean(scores)) and out["n_patients"] == 4
    assert out["ci_low"] <= out["estimate"] <= out["ci_high"]


@pytest.fixture(scope="module")
def tiny_siglip(tmp_path_factory):
    """A randomly initialised SiglipModel with a word-level tokenizer, saved as a local folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (PreTrainedTokenizerFast, SiglipConfig, SiglipImageProcessor, SiglipModel,
                              SiglipProcessor)

    words = "<pad> <eos> <bos> <unk> #6 90% stenosis plan PCI to right-dominant LAD no".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                        bos_token="<bos>", unk_token="<unk>")
    torch.manual_seed(0)
    config = SiglipConfig(
        text_config=dict(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=8, pad_token_id=0, eos_token_id=1,
                         bos_token_id=2),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, num_channels=3))
    folder = tmp_path_factory.mktemp("siglip")
    SiglipModel(config).save_pretrained(folder)
    proc = SiglipImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    SiglipProcessor(image_processor=proc, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def test_siglip_embedder_reads_a_local_folder(tiny_siglip):
    embedder = SiglipEmbedder.from_pretrained(tiny_siglip, batch_size=2)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 40), dtype=np.uint8) for _ in range(3)]
    img = embedder.embed_images(images)
    txt = embedder.embed_texts(["#6 90% stenosis", "plan PCI to #6", "no stenosis"])
    assert img.shape == (3, 32) and txt.shape == (3, 32)
    assert np.allclose(np.linalg.norm(img, axis=1), 1) and np.allclose(np.linalg.norm(txt, axis=1), 1)
    assert np.allclose(embedder.embed_texts(["plan PCI to #6"]), txt[1:2], atol=1e-6)  # batch-independent

    refs = ["#6 90% stenosis plan PCI to #6"] * 3
    same = vlscore(embedder, images, refs, refs)
    other = vlscore(embedder, images, refs, ["no stenosis"] * 3)
    assert np.allclose(same, 1.0) and np.all(other <= 1.0) and np.all(other >= 0.0)
    assert embedder.n_truncated == 0
    embedder.embed_texts(["#6 90% stenosis " * 4])
    assert embedder.n_truncated == 1


def test_siglip_embedder_needs_an_existing_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        SiglipEmbedder.from_pretrained(tmp_path / "absent")
