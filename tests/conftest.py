"""Shared fixtures: one small synthetic cohort (generated once per test session), and `require`, which
makes a committed result a precondition of the tests that read it.

The session's temporary output root and test ordering are set up in the root conftest.py.

Skips: a test may skip only where a system tool is missing (latexmk, chromium, a codec encoder), with a
reason starting "missing system tool:", or for a notebook listed in `NOT_GENERATED_YET` (reason starting
"results not generated yet:"). `.ci/run` fails on any other skip reason.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from cag_utils.run.config import load_config
from cag_utils.synth.cohort import generate_cohort

SMALL = {"n_annotation_exams": 16, "n_independent_exams": 3, "image_size": 96, "num_workers": 2}
REPO = Path(__file__).resolve().parents[1]

# The skip reasons `.ci/run` accepts (prefixes).
MISSING_TOOL = "missing system tool:"
NOT_YET = "results not generated yet:"
# A new notebook whose results have not been generated yet (nothing of it committed): stem -> why.
# Its results, figures and per-item files are then skipped, not failed. Empty while every notebook has results.
NOT_GENERATED_YET: dict[str, str] = {}

# What writes each committed file, by its name (first match wins).
_MAKERS = [
    (r"variance_02_cnn", "make variance"),
    (r"cnn_ceiling|cnn_pretrain_effect", "make ceiling"),
    (r"paper_estimate", "python benchmarks/paper_estimate.py"),
    (r"bench_", "make bench"),
    (r"budget", "make budget"),
    (r"fuzz_dicom", "python benchmarks/fuzz_dicom.py --cases 5000 --ingest-cases 1000 --seed 0"),
    (r"^models/standins/.*/README\.md$", "python -m cag_utils.run.model_cards --profile smoke"),
    (r"^models/standins/", "make standins"),
]


def make_command(relpath: str) -> str:
    """The command that writes the committed file `relpath` (relative to the repository)."""
    for pattern, command in _MAKERS:
        if re.search(pattern, relpath):
            return command
    if m := re.match(r"(?:results|figures)/(\d\d)_", relpath):
        return f"make reproduce (this step alone: python -m cag_utils.run.pipeline --profile smoke --only {m.group(1)})"
    return "make reproduce"


def require_file(relpath: str, command: str | None = None) -> Path:
    """The committed file `relpath`; the test fails naming it and the command that makes it when it is missing
    (skips only for a notebook in NOT_GENERATED_YET)."""
    path = REPO / relpath
    stem = re.match(r"(?:results|figures)/(\d\d_[a-z]+)", relpath)
    if stem and stem.group(1) in NOT_GENERATED_YET:
        if path.exists():
            pytest.fail(f"{relpath} exists, but tests/conftest.py lists {stem.group(1)} in NOT_GENERATED_YET; "
                        "remove it from there")
        pytest.skip(f"{NOT_YET} {stem.group(1)} ({NOT_GENERATED_YET[stem.group(1)]})")
    if not path.exists():
        pytest.fail(f"{relpath} is missing: it is committed evidence. Make it with `{command or make_command(relpath)}` "
                    "and commit it.", pytrace=False)
    return path


@pytest.fixture(scope="session")
def require():
    """`require(relpath, command=None) -> Path`: see `require_file`."""
    return require_file


@pytest.fixture(scope="session")
def small_cfg() -> dict:
    return load_config("smoke", "data", SMALL)


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory, small_cfg):
    """Raw export of a 19-exam cohort at 96 px (about 20 s on 2 cores)."""
    raw = tmp_path_factory.mktemp("cohort") / "raw"
    return generate_cohort(raw, small_cfg, workers=small_cfg["num_workers"], progress=False)
