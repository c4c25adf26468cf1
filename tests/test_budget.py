"""The time-budget benchmark (benchmarks/budget.py): how it reads the pipeline log and pytest's JUnit report, and
the committed measurement's verdicts follow from its own numbers."""
from __future__ import annotations

import importlib.util
import json

import pytest

from cag_utils.run.config import REPO_ROOT


def _budget():
    spec = importlib.util.spec_from_file_location("budget", REPO_ROOT / "benchmarks" / "budget.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebook_times_come_from_the_pipeline_lines():
    log = ("preflight: all OK\n[01_data] ok in 346.5 s\nnoise [02_cnn] ok in 1 s\n[02_cnn] ok in 523.4 s\n"
           "[03_extraction] skipped (up to date)\n[05_finetune] ok in 681.6 s\n")
    assert _budget().pipeline_notebook_seconds(log) == {"01_data": 346.5, "02_cnn": 523.4, "05_finetune": 681.6}


def test_junit_report_is_split_into_notebooks_and_other_tests(tmp_path):
    (tmp_path / "j.xml").write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="notebooks.01_data.ipynb" name="Cell 0" time="2.5"/>'
        '<testcase classname="notebooks.01_data.ipynb" name="Cell 3" time="300"/>'
        '<testcase classname="notebooks.02_cnn.ipynb" name="Cell 6" time="600"><failure message="x"/></testcase>'
        '<testcase classname="tests.test_a" name="test_slow" time="90"/>'
        '<testcase classname="tests.test_a" name="test_skip" time="0.01"><skipped message="missing system tool: x"/></testcase>'
        '<testcase classname="tests.test_b" name="test_fast" time="1"/>'
        "</testsuite></testsuites>", encoding="utf-8")
    out = _budget().junit_summary(tmp_path / "j.xml", slowest=2)
    assert out["counts"] == {"passed": 4, "failed": 1, "skipped": 1}
    assert out["failed_tests"] == ["notebooks.02_cnn.ipynb::Cell 6"]
    assert out["skipped_tests"] == {"tests.test_a::test_skip": "missing system tool: x"}
    assert out["notebooks_s"] == {"01_data": 302.5, "02_cnn": 600.0}
    assert out["other_tests_s"] == pytest.approx(91.0, abs=0.1)
    assert [t["test"] for t in out["slowest_other_tests"]] == ["tests.test_a::test_slow", "tests.test_b::test_fast"]


def test_the_worker_count_is_read_from_the_pytest_log():
    budget = _budget()
    assert budget.pytest_workers("bringing up nodes...\ncreated: 2/2 workers\n2 workers [1019 items]\n") == 2
    assert budget.pytest_workers("collected 1019 items\n") == 1


def test_parts_add_up_to_the_total():
    record = {"command": "reproduce", "install_s": 200.0, "total_s": 1500.0, "notebooks_s": {"01_data": 300.0, "02_cnn": 700.0}}
    parts = _budget().parts(record)
    assert parts[0] == ("install", 200.0) and sum(s for _, s in parts) == pytest.approx(1500.0)
    test = {**record, "command": "test"}
    assert _budget().parts(test)[-1][0].startswith("other tests")
    assert "beside" in _budget().parts({**test, "pytest_workers": 2})[-1][0]



def test_committed_budget_verdicts_follow_from_its_numbers(require):
    record = json.loads(require("results/budget.json").read_text(encoding="utf-8"))
    bench = _budget()
    assert set(record["commands"]) <= set(bench.BUDGETS_S)
    for command, r in record["commands"].items():
        assert r["budget_s"] == bench.BUDGETS_S[command]
        assert r["met"] == (r["rc"] == 0 and r["total_s"] <= r["budget_s"]), command
        assert sum(s for _, s in bench.parts(r)) == pytest.approx(r["total_s"], abs=1.0), command
        assert r["step_s_before"] > 0 and r["step_s_after"] > 0
        if command == "reproduce" and r["rc"] == 0:   # every notebook ran, in a fresh clone
            notebooks = sorted(p.stem for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
            assert sorted(r["notebooks_s"]) == notebooks
