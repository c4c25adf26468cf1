"""Lesion visibility (cag_utils.synth.visibility): the replay gives the cohort's frames, and d' sees what it should."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cag_utils.run.config import load_config
from cag_utils.synth import anatomy, cohort, imaging, visibility as vis
from cag_utils.synth.reports import Lesion


def _settings(tmp_path: Path) -> dict:
    return {**cohort.generator_settings(load_config("smoke", "data")), "raw_dir": str(tmp_path)}


def _task(tmp_path: Path, index: int) -> cohort.ExamTask:
    t = cohort._tasks(load_config("smoke", "data"), tmp_path)[index]
    return cohort.ExamTask(t.cohort, t.index, t.patient, t.seed, _settings(tmp_path))


def test_replay_gives_the_frames_of_the_cohort_files(tmp_path: Path):
    task = _task(tmp_path, 1)
    cohort._generate_exam(task)
    files = sorted(tmp_path.rglob("run_*.dcm"))
    replayed = vis.replay_exam(task)
    assert len(files) == len(replayed.runs) > 1
    for path, run in zip(files, replayed.runs):
        assert np.array_equal(pydicom.dcmread(path).pixel_array.reshape(run["frames"].shape), run["frames"])


def _case(lesions: tuple[Lesion, ...], seed: int = 4) -> dict:
    """A replay-like case: an LCA frame at full opacification (the bolus has reached every segment)."""
    rng = np.random.default_rng(seed)
    geometry = anatomy.sample_geometry(rng)
    tree = anatomy.build_tree("LCA", "right", lesions, rng, geometry=geometry)
    spec = imaging.sample_run_spec(rng, "LCA", imaging.LCA_VIEWS[0], 7.5, (2.0, 2.0), 0.0, 1.0)
    spec = dataclasses.replace(spec, inject_start_s=-3.0, inject_duration_s=6.0)
    task = cohort.ExamTask("annotation", 0, {"PatientID": "P"}, (0,), {})
    exam = vis.ReplayedExam(task, "right", lesions, False, geometry, {"LCA": tree}, [])
    run = {"index": 0, "laterality": "LCA", "spec": spec, "state": np.random.default_rng(seed).bit_generator.state,
           "truth": {"key_frame_category": np.array(["better"] * spec.n_frames), "fill": np.ones(spec.n_frames)}}
    return {"exam": exam, "laterality": "LCA", "lesions": list(lesions), "run": run, "frame": 5}


def _dprime(case: dict, a: str, b: str, size: int = 64, n_noise: int = 24) -> float:
    trees = vis.case_trees(case)
    clean, noisy = vis.render_frame(trees, case, size, 10, n_noise, np.random.default_rng(0))
    return vis.dprime(clean[a] - clean[b], noisy)


def test_dprime_is_zero_for_identical_renders():
    case = _case((Lesion("1", 90),))          # an RCA segment: the LCA frame does not change without it
    assert _dprime(case, "shown", "without_0") == 0.0
    assert vis.null_dprime(np.zeros((4, 4)), np.zeros((3, 4, 4))) == 0.0


def test_dprime_grows_with_severity():
    values = [_dprime(_case((Lesion("6", g),)), "shown", "without_0") for g in (25, 75, 99)]
    assert values[0] < values[1] < values[2]
    assert values[2] > vis.DPRIME_SEEN


def test_the_occlusion_control_is_seen_and_noise_alone_is_not():
    case = _case((Lesion("7", 50),))
    rows = vis.measure_case(case, (64, 32), 10, 24, np.random.default_rng(1))
    control = rows[-1]
    assert control["kind"] == "control" and control["segment"] == "6" and control["percent"] == 100
    for mode in ("64", "32", "64to32"):
        assert control[f"dprime_{mode}"] > 10 * vis.DPRIME_SEEN
        assert control[f"deficit_{mode}"] > 0.8                  # the proximal LAD's contrast is gone downstream
        assert abs(control[f"null_dprime_{mode}"]) < vis.DPRIME_SEEN


def test_dprime_is_signal_over_noise_for_white_noise():
    rng = np.random.default_rng(0)
    delta = np.zeros((16, 16))
    delta[6:10, 6:10] = 0.5                               # ||delta|| = 2
    noisy = rng.normal(0, 0.25, (4000, 16, 16))           # sigma = 0.25 -> d' = ||delta|| / sigma = 8
    assert vis.dprime(delta, noisy) == pytest.approx(8.0, rel=0.05)
    assert abs(vis.null_dprime(delta, noisy)) < 4


def test_contrast_deficit_is_the_share_of_the_vessel_contrast_removed():
    vessel = np.zeros((5, 5))
    vessel[2, :] = 10.0
    gone = np.zeros((5, 5))
    gone[2, 2] = 10.0
    assert vis.contrast_deficit(gone, vessel) == (1.0, (2, 2))
    assert vis.contrast_deficit(gone * 0.3, vessel)[0] == pytest.approx(0.3)
    assert vis.contrast_deficit(np.zeros((5, 5)), vessel)[0] == 0.0
