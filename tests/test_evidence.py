"""Committed evidence is required: every notebook has its results file, every figure and per-item file a results
file names is there (the paper includes the PDFs), and a missing file fails naming the command that makes it
(`require` in tests/conftest.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
RECORDS = NOTEBOOKS + ["variance_02_cnn"]


def test_a_missing_result_fails_naming_the_file_and_the_command(require):
    with pytest.raises(pytest.fail.Exception, match=r"results/07_none\.json is missing.*make reproduce.*--only 07"):
        require("results/07_none.json")
    with pytest.raises(pytest.fail.Exception, match=r"figures/cnn_ceiling_none\.png is missing.*`make ceiling`"):
        require("figures/cnn_ceiling_none.png")
    with pytest.raises(pytest.fail.Exception, match="`make standins`"):
        require("models/standins/none/standin.json")
    assert require("results/02_cnn.json").is_file()


@pytest.mark.parametrize("name", RECORDS)
def test_every_file_a_results_record_names_is_committed(name, require):
    record = json.loads(require(f"results/{name}.json").read_text(encoding="utf-8"))
    assert record["figures"], f"results/{name}.json names no figure"
    for figure in record["figures"]:
        require(figure)
        require(str(Path(figure).with_suffix(".pdf")))
    for path in record["per_item_files"]:
        require(path)
