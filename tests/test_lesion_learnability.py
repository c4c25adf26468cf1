"""benchmarks/lesion_learnability.py: the target, the network at both sizes, seeded training, the paired gain
and the 256 px re-rendering of the auxiliary cohort's frames (fast: one exam, tiny training sets)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
try:
    import lesion_learnability as ll
finally:
    sys.path.pop(0)


def test_severe_target_reads_the_shown_arterys_lesions():
    lesions = pd.Series(["#6 90%; #2 50%", "#6 90%; #2 50%", "#2 99%", "#7 75%", ""])
    laterality = pd.Series(["LCA", "RCA", "RCA", "LCA", "LCA"])
    assert ll.severe_target(lesions, laterality).tolist() == [True, False, True, False, False]


@pytest.mark.parametrize("size", [128, 256])
def test_network_runs_the_same_body_at_both_sizes(size):
    torch.manual_seed(0)
    model = ll.SmallCNN(size).eval()
    assert model(torch.zeros(3, 1, size, size)).shape == (3, 2)
    strided = [m for m in model if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == {128: 0, 256: 1}[size]   # one stride-2 stem per doubling: the body sees 128 px
    body = [m.weight.shape[0] for m in model if isinstance(m, torch.nn.Conv2d) and m.stride == (1, 1)]
    assert body == [16, 32, 64, 96]


def test_fit_is_seeded_and_learns_a_visible_signal():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 60, (48, 128, 128), dtype=np.uint8)
    y = np.zeros((48, 2))
    y[::2, 0] = 1
    frames[::2, 40:80, 40:80] = 255          # target 0: a bright square; target 1: nothing to see (noise)
    torch.use_deterministic_algorithms(True)
    a = ll.fit(frames, y, frames[:8], epochs=3, seed=1)
    b = ll.fit(frames, y, frames[:8], epochs=3, seed=1)
    c = ll.fit(frames, y, frames[:8], epochs=3, seed=2)
    assert len(a) == 3 and a[-1].shape == (8, 2)
    assert all(np.array_equal(x, z) for x, z in zip(a, b))
    assert not np.array_equal(a[-1], c[-1])
    assert (a[-1][::2, 0].min() > a[-1][1::2, 0].max())   # squares score above empty frames


def test_paired_gain_is_zero_for_identical_scores_and_matches_the_auroc_difference():
    rng = np.random.default_rng(3)
    patients = np.repeat(np.arange(30), 6)
    y = rng.random(len(patients)) < 0.3
    noise = rng.random(len(patients))
    same = ll.paired_gain(y, noise, noise, patients, seed=0)
    assert same["estimate"] == 0 and same["ci_low"] == same["ci_high"] == 0
    better = noise + 1.5 * y
    gain = ll.paired_gain(y, noise, better, patients, seed=0)
    from sklearn.metrics import roc_auc_score
    assert gain["estimate"] == pytest.approx(roc_auc_score(y, better) - roc_auc_score(y, noise))
    assert 0 < gain["ci_low"] < gain["estimate"] < gain["ci_high"]


def test_render_exam_replays_the_cohort_and_renders_the_same_frames_bigger():
    from cag_utils.run.config import load_config
    from cag_utils.synth import visibility as vis
    from cag_utils.vlm import make_standins

    cfg = load_config("smoke")
    tasks, bits = ll.exam_tasks(cfg, make_standins.params(cfg))
    assert len(tasks) == cfg["vlm_standin_aux_exams"] and all(k.startswith("EX-") for k in tasks)
    exam_id, task = next(iter(tasks.items()))
    exam = vis.replay_exam(task)
    picks = [(r, int(np.flatnonzero(run["truth"]["key_frame_category"] != "others")[0]))
             for r, run in enumerate(exam.runs[:2])]
    rows = pd.DataFrame({"run_id": [f"{exam_id}-R{r + 1:02d}" for r, _ in picks], "frame_index": [k for _, k in picks]})
    stored, big = ll.render_exam(task, rows, 256, bits, np.random.default_rng(0))
    assert stored.shape == (2, 128, 128) and big.shape == (2, 256, 256) and big.dtype == np.uint8
    top = 2**bits - 1
    for i, (r, k) in enumerate(picks):
        assert np.array_equal(stored[i], np.rint(exam.runs[r]["frames"][k] * 255.0 / top).astype(np.uint8))
        pooled = big[i].reshape(128, 2, 128, 2).mean((1, 3))
        assert np.corrcoef(pooled.ravel(), stored[i].ravel().astype(float))[0, 1] > 0.9   # the same scene
    rng = np.random.default_rng(0)   # the per-run loop equals visibility.render_frame frame by frame
    ref = [vis.render_frame({"shown": exam.trees[exam.runs[r]["laterality"]]}, {"run": exam.runs[r], "frame": k},
                            256, bits, 1, rng)[1][0] for r, k in picks]
    assert np.array_equal(big, np.stack(ref))
