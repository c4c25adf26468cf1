"""Notebook 02 with `cnn_compare_start` (the paper profile's setting), on a tiny cohort: both starts are
trained, evaluated on the same test frames and tabled. The smoke profile leaves it off, so nbval does not
run this path."""
from __future__ import annotations

import json
from pathlib import Path

import papermill as pm
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_notebook_02_compares_pretrained_and_random_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("CAG_OUTPUT_ROOT", str(tmp_path))  # the kernels inherit it: outputs go under tmp_path
    run = dict(kernel_name="python3", progress_bar=False, cwd=str(NOTEBOOKS))
    pm.execute_notebook(NOTEBOOKS / "01_data.ipynb", tmp_path / "01.ipynb", **run,
                        parameters={"n_annotation_exams": 10, "n_independent_exams": 1, "image_size": 64,
                                    "realism_exams": 2, "realism_render_exams": 1, "realism_size": 128})
    pm.execute_notebook(NOTEBOOKS / "02_cnn.ipynb", tmp_path / "02.ipynb", **run,
                        parameters={"cnn_compare_start": True, "cnn_epochs": 1, "cnn_input_size": 64,
                                    "cnn_pretrain_exams": 8, "cnn_pretrain_epochs": 1})
    results = json.loads((tmp_path / "results" / "02_cnn.json").read_text())["results"]
    assert results["start"] == "none" and results["other_start"]["start"] == "synthetic_angles"
    assert results["other_start"]["status"] == "completed"
    assert results["pretraining"]["source"] == "synthetic_angles"  # the weights the other start loaded
    table = results["tables"]["pretraining_comparison"]
    assert {row["start"] for row in table} == {"none", "synthetic_angles"}
    assert set(results["other_start"]["intervals"]) == set(results["headline"])
