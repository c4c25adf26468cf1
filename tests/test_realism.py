"""The realism table and its peak-fill renders (cag_utils.data.realism)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cag_utils.data import realism


@pytest.fixture(scope="module")
def peaks():
    return realism.sample_peak_runs(6, 96, seed=3, n_render=1)


def test_peak_frames_are_filled_and_masked(peaks):
    rendered = [p for p in peaks if p["frame"] is not None]
    assert rendered and all(p["frame"] is None for p in peaks if p["exam"] >= 1)
    for p in rendered:
        frame, mask = p["frame"].astype(float), p["mask"]
        assert 0.005 < mask.mean() < 0.2
        assert frame[mask].mean() < frame[~mask & (frame > 0)].mean()   # opacified lumen is dark
    assert rendered[0]["spec"].artefacts["sternal_wires"] and rendered[0]["spec"].artefacts["ecg"]


def _cohort_tables(n_frames: int, frame_ms: float, rca_secondary: float):
    runs = pd.DataFrame({"exam_id": ["E1"] * 7 + ["E2"] * 7, "laterality": (["LCA"] * 5 + ["RCA"] * 2) * 2,
                         "n_frames": n_frames, "frame_time_ms": frame_ms,
                         "secondary_angle": ([30.0] * 5 + [rca_secondary, 0.0]) * 2})
    frames = pd.DataFrame({"exam_id": ["E1", "E2"], "access": ["radial", "femoral"]})
    reports = pd.DataFrame({"dominance": ["right"] * 17 + ["left"] * 3})
    return runs, frames, reports


def test_table_compares_with_the_published_ranges(peaks):
    table = realism.realism_table(*_cohort_tables(45, 1000 / 15, 25.0), peaks, frame_rate=15.0).set_index("statistic")
    assert set(table.index) == set(realism.PUBLISHED)
    assert table.loc["frames per run, median", "synthetic"] == 45 and table.loc["frames per run, median", "inside"]
    assert table.loc["run duration, median (s)", "synthetic"] == pytest.approx(3.0)
    assert table.loc["RCA runs with cranial angulation (%)", "synthetic"] == 50.0
    assert table.loc["radial access (%)", "synthetic"] == 50.0
    # too few frames per run at this frame rate: outside, and the table says why
    short = realism.realism_table(*_cohort_tables(20, 1000 / 7.5, 0.0), peaks, frame_rate=7.5).set_index("statistic")
    assert not short.loc["frames per run, median", "inside"]
    assert short.loc["frames per run, median", "note"]
    for name in ("left main diameter (mm)", "proximal LAD diameter (mm)", "proximal RCA diameter, right-dominant (mm)"):
        assert table.loc[name, "inside"], (name, table.loc[name, "synthetic"])   # Dodge 1992 calibres
    assert np.isfinite(table["synthetic"].astype(float)).all()


def test_view_panel_shows_both_arteries(peaks):
    fig = realism.view_panel(peaks, n=4)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert any(t.startswith("LCA") for t in titles) and any(t.startswith("RCA") for t in titles)
