"""Shared fixtures: one small synthetic cohort (generated once per test session).

The session's temporary output root and test ordering are set up in the root conftest.py.
"""
from __future__ import annotations

import pytest

from cag_utils.config import load_config
from cag_utils.synth.cohort import generate_cohort

SMALL = {"n_annotation_exams": 16, "n_independent_exams": 3, "image_size": 96, "num_workers": 2}


@pytest.fixture(scope="session")
def small_cfg() -> dict:
    return load_config("smoke", "data", SMALL)


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory, small_cfg):
    """Raw export of a 19-exam cohort at 96 px (about 20 s on 2 cores)."""
    raw = tmp_path_factory.mktemp("cohort") / "raw"
    return generate_cohort(raw, small_cfg, workers=small_cfg["num_workers"], progress=False)
