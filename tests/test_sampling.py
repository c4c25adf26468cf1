import numpy as np
import pytest

from cag_utils.data.sampling import intensity_curves, sample_frames


def test_curves_match_numpy_for_uint8_and_float():
    frames = np.random.default_rng(0).integers(0, 256, (7, 16, 16), dtype=np.uint8)
    mean, var = intensity_curves(frames)
    np.testing.assert_allclose(mean, frames.reshape(7, -1).mean(1))
    np.testing.assert_allclose(var, frames.reshape(7, -1).var(1))
    mean_f, var_f = intensity_curves(frames.astype(np.float32))
    np.testing.assert_allclose(mean_f, mean, rtol=1e-6)


def test_curves_reject_bad_shapes():
    with pytest.raises(ValueError, match="frames"):
        intensity_curves(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError):
        intensity_curves(np.zeros((0, 4, 4), np.uint8))


def test_extrema_of_mean_and_variance_are_sampled():
    mean = np.array([10, 9, 5, 9, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10], float)
    var = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 8, 1, 1, 1], float)
    kept = sample_frames(mean, var, min_gap=5)
    assert 2 in kept and 12 in kept


def test_candidates_within_min_gap_of_a_kept_frame_are_dropped():
    mean = np.zeros(30)
    mean[[10, 12, 20]] = [-5.0, -1.0, -3.0]  # 12 is within 5 of the stronger minimum at 10
    kept = sample_frames(mean, np.zeros(30), min_gap=5)
    assert 10 in kept and 12 not in kept
    assert np.all(np.diff(kept) >= 5)


def test_gap_rule_holds_on_noise_and_output_is_sorted():
    rng = np.random.default_rng(3)
    for _ in range(20):
        kept = sample_frames(rng.normal(size=40), rng.normal(size=40), min_gap=5)
        assert np.all(np.diff(kept) >= 5) and len(kept) >= 1


def test_flat_curves_give_no_frames():
    assert len(sample_frames(np.ones(20), np.ones(20))) == 0


def test_smoothing_and_prominence_reduce_candidates():
    rng = np.random.default_rng(1)
    mean, var = rng.normal(size=60), rng.normal(size=60)
    raw = len(sample_frames(mean, var, min_gap=1))
    assert len(sample_frames(mean, var, min_gap=1, smooth=2.0)) < raw
    assert len(sample_frames(mean, var, min_gap=1, prominence=0.5)) < raw
