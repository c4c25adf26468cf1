"""Image-based vessel contrast: ordering on synthetic vessels, flat images, batching, the mask."""
from __future__ import annotations

import numpy as np
import pytest

from cag_utils.cnn.contrast import low_contrast_mask, se_diameter_for, vessel_contrast, vessel_contrast_batch


def line_image(depth: float, size: int = 128, width: int = 3, noise: float = 8.0, seed: int = 0) -> np.ndarray:
    """A dark vertical line ``depth`` grey levels below a bright noisy background."""
    rng = np.random.default_rng(seed)
    img = 180 + rng.normal(0, noise, (size, size))
    c = size // 2
    img[:, c - width // 2 : c - width // 2 + width] -= depth
    # a diagonal branch too, so the score is not tied to axis-aligned structures
    idx = np.arange(size // 4, 3 * size // 4)
    for dw in range(width):
        img[idx, np.clip(idx + dw - size // 8, 0, size - 1)] -= depth
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size,width", [(128, 3), (512, 10)])
def test_darker_vessel_scores_higher(size, width):
    scores = [vessel_contrast(line_image(d, size, width)) for d in (0, 20, 40, 80, 120)]
    assert all(a < b for a, b in zip(scores, scores[1:])), scores
    assert scores[-1] > 3 * scores[0]  # the vessel dominates the noise floor
    assert 0 <= scores[0] and scores[-1] <= 1


def test_flat_images_score_zero():
    for value, shape in [(150, (128, 128)), (0, (64, 64)), (255, (512, 512))]:
        assert vessel_contrast(np.full(shape, value, np.uint8)) == pytest.approx(0.0, abs=1e-9)


def test_structures_wider_than_the_element_are_background():
    img = np.full((128, 128), 180, np.uint8)
    img[:, 30:90] = 60  # a 60 px band (e.g. the spine) is not a vessel
    assert vessel_contrast(img) == pytest.approx(0.0, abs=1e-6)
    img[:, 100:103] = 60  # a 3 px vessel is
    assert vessel_contrast(img) > 0.3


def test_black_borders_and_collimator_shadows_do_not_count():
    img = line_image(0, noise=0)  # flat field
    img[:4], img[-4:], img[:, :4], img[:, -4:] = 0, 0, 0, 0  # thin black border: vessel-wide
    assert vessel_contrast(img) == pytest.approx(0.0, abs=1e-6)
    img[:, -40:] = 0  # a wide collimator shadow
    assert vessel_contrast(img) == pytest.approx(0.0, abs=1e-6)
    img[:, 60:63] = 100  # a vessel inside the field still counts (Weber 0.44, ~0.3 once smoothed)
    assert vessel_contrast(img) > 0.2
    assert vessel_contrast(np.zeros((64, 64), np.uint8)) == 0.0  # no field at all


def test_batch_matches_single_frames_and_accepts_memmap(tmp_path):
    frames = np.stack([line_image(d, seed=d) for d in (0, 30, 60, 90, 120)])
    path = tmp_path / "frames.npy"
    np.save(path, frames)
    batch = vessel_contrast_batch(np.load(path, mmap_mode="r"), batch_size=2)
    np.testing.assert_allclose(batch, [vessel_contrast(f) for f in frames])
    assert vessel_contrast_batch(np.zeros((0, 8, 8), np.uint8)).shape == (0,)


def test_parameters_and_errors():
    assert se_diameter_for(128) == 7 and se_diameter_for(256) == 13
    img = line_image(60)
    with pytest.raises(ValueError, match="2-D"):
        vessel_contrast(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="odd"):
        vessel_contrast(img, se_diameter=6)
    # a wider element also counts wider structures: the score cannot fall
    assert vessel_contrast(img, se_diameter=11) >= vessel_contrast(img, se_diameter=5) - 1e-6


def test_low_contrast_mask():
    values = np.array([5.0, 1.0, np.nan, 3.0, 2.0, 8.0, 4.0, 7.0, 6.0])
    mask = low_contrast_mask(values, quantile=0.25)
    assert mask.tolist() == [False, True, False, False, True, False, False, False, False]
    assert low_contrast_mask(values, 1.0).sum() == 8 and not low_contrast_mask([np.nan]).any()
    with pytest.raises(ValueError):
        low_contrast_mask(values, 1.5)
