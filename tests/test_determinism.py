"""Two runs of notebook 01 on one machine give identical results files apart from timing."""
from __future__ import annotations

import json
from pathlib import Path

import papermill as pm
import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "01_data.ipynb"


def _run(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    tmp.mkdir(parents=True)
    with monkeypatch.context() as m:
        m.setenv("CAG_OUTPUT_ROOT", str(tmp))  # the kernel inherits it: outputs go under tmp
        pm.execute_notebook(NOTEBOOK, tmp / "out.ipynb", kernel_name="python3", progress_bar=False,
                            cwd=str(NOTEBOOK.parent),
                            parameters={"n_annotation_exams": 6, "n_independent_exams": 2, "image_size": 64,
                                        # the realism renders (40 exams, 3 at 512 px: 17 s a run) at toy size
                                        "realism_exams": 4, "realism_render_exams": 1, "realism_size": 128})
    record = json.loads((tmp / "results" / "01_data.json").read_text())
    record["provenance"].pop("timing")
    return record


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_notebook_01_reruns_identically(tmp_path, monkeypatch):
    first, second = _run(tmp_path / "a", monkeypatch), _run(tmp_path / "b", monkeypatch)
    assert first["config"]["n_annotation_exams"] == 6  # the override reached the results
    assert first == second
    png_a = sorted((tmp_path / "a" / "figures").glob("*.png"))
    assert png_a and all(p.read_bytes() == (tmp_path / "b" / "figures" / p.name).read_bytes() for p in png_a)
