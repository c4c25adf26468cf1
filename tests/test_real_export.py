"""The real-data path on a messy export tree (cag_utils.synth.export_tree): discovery, rejects,
label/report checks, and the data card's walkthrough (docs/real-data.md) run as written."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from cag_utils.data import ingest
from cag_utils.data.dataset import sampling_kwargs
from cag_utils.run.config import REPO_ROOT, load_config
from cag_utils.synth.export_tree import (EXPECTED_LABEL_PROBLEMS, EXPECTED_REJECTS, EXPECTED_REPORT_PROBLEMS,
                                         build_export)

SALT = "a-test-salt-that-is-long-enough"


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return build_export(tmp_path_factory.mktemp("fixture"))


@pytest.fixture(scope="module")
def exams(export):
    return {c: ingest.find_exams(export, c) for c in ("annotation", "independent")}


def _matches_expected(rejects: pd.DataFrame, expected: list[tuple[str, str]]) -> bool:
    got = sorted(zip(rejects["error"], rejects["reason"]))
    return len(got) == len(expected) and all(
        any(e == err and words in reason for err, reason in got) for e, words in expected)


def test_exams_are_studies_found_at_any_depth(export, exams):
    ann = exams["annotation"]
    studies = [e for e in ann if e.study]
    assert len(studies) == 6 and all(re.fullmatch(r"annotation/PT\d{6}/ST\d{6}", e.name) for e in studies)
    assert all(e.study in e.keys for e in studies)
    assert [e.name for e in ann if not e.study] == ["annotation"]  # the DICOMDIR, on its own
    assert all("." not in Path(f).name for e in studies for f in e.files)  # no extensions
    ind = [e for e in exams["independent"]]
    assert len(ind) == 3 and all(e.name.count("/") == 2 for e in ind)  # independent/<name>/<date_acc>
    assert any(f.endswith("notes.txt") for e in ind for f in e.files)  # a stray file joins its study


def test_every_xa_cine_read_and_everything_else_rejected_by_name(export, exams):
    labels, _ = ingest.check_labels(ingest.read_labels(export / "labels.csv"),
                                    {f: e.n_frames[f] for es in exams.values() for e in es for f in e.files})
    cfg = load_config("smoke", "data")
    phi = set()
    for cohort in ("annotation", "independent"):
        res = ingest.ingest_cohort(export, cohort, labels, SALT, sampling_kwargs(cfg), workers=1,
                                   progress=False, exams=exams[cohort])
        assert _matches_expected(res["rejects"], EXPECTED_REJECTS[cohort]), res["rejects"]
        n_files = sum(len(e.files) for e in exams[cohort])
        assert len(res["runs"]) + len(res["rejects"]) == n_files  # nothing skipped silently
        if cohort == "independent":
            assert (res["runs"]["converted_from"] == "RGB").sum() == 1  # grey stored as RGB, flagged
        else:
            assert (res["table"]["label"] >= 0).all() and len(res["table"]) > 50
        text = res["rejects"].to_csv() + res["runs"].astype(str).to_csv() + res["table"].to_csv()
        for e in exams[cohort]:
            for f in e.files:
                try:
                    ds = pydicom.dcmread(export / f, stop_before_pixels=True)
                except Exception:
                    continue
                phi |= {str(ds.get("PatientName", "")), str(ds.get("PatientID", "")), str(ds.get("StudyInstanceUID", ""))}
            phi |= set(e.name.split("/")[1:])
        leaked = [s for s in phi - {""} if s in text]
        assert not leaked, leaked[:3]


def test_labels_and_reports_checked_by_line(export, exams):
    found = {f: e.n_frames[f] for es in exams.values() for e in es for f in e.files}
    raw = ingest.read_labels(export / "labels.csv")
    usable, problems = ingest.check_labels(raw, found)
    assert len(usable) == len(raw) - 4 and [p["line"] for p in problems] == list(range(len(raw) - 2, len(raw) + 2))
    for p, words in zip(problems, EXPECTED_LABEL_PROBLEMS):
        assert words in p["problem"] and "/" not in p["problem"]  # no paths in messages
    keys = {k for es in exams.values() for e in es for k in e.keys}
    n, report_problems = ingest.check_reports(export / "reports.jsonl", keys)
    assert n == 9 and [words in p["problem"] for p, words in zip(report_problems, EXPECTED_REPORT_PROBLEMS)] == [True]


def test_nothing_usable_fails_naming_file_and_lines(export, exams, tmp_path):
    found = {f: e.n_frames[f] for es in exams.values() for e in es for f in e.files}
    bad = pd.read_csv(export / "labels.csv").tail(4).head(3)  # the duplicate alone would be usable
    bad.to_csv(tmp_path / "my_labels.csv", index=False)
    with pytest.raises(ValueError, match=r"my_labels.csv: no usable row left of 3 \(line 2: frame \d+ is out of range"):
        ingest.check_labels(ingest.read_labels(tmp_path / "my_labels.csv"), found, "my_labels.csv")
    (tmp_path / "r.jsonl").write_text('{"exam": "nowhere"}\nnot json\n')
    with pytest.raises(ValueError, match=r"r.jsonl: no usable row left of 2 \(line 1: exam not found.*line 2: not a JSON"):
        ingest.check_reports(tmp_path / "r.jsonl", set())


def _walkthrough() -> list[str]:
    """The commands of the data card's fixture walkthrough (docs/real-data.md), continuation lines joined."""
    card = (REPO_ROOT / "docs" / "real-data.md").read_text(encoding="utf-8")
    block = card.split("<!-- fixture-walkthrough -->", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip().startswith(".venv/bin/python")]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_data_card_walkthrough_runs_and_refuses_the_committed_salt(tmp_path):
    commands = [c.replace("/tmp/cag-fixture", str(tmp_path / "fx")) for c in _walkthrough()]
    assert len(commands) == 2 and "export_tree" in commands[0] and "--only 01" in commands[1]
    env = {**os.environ, "CAG_OUTPUT_ROOT": str(tmp_path / "out")}
    env.pop("CAG_DEID_SALT", None)
    run = lambda cmd, e: subprocess.run(cmd.replace(".venv/bin/python", sys.executable), shell=True,  # noqa: E731
                                        cwd=REPO_ROOT, env=e, capture_output=True, text=True)
    assert run(commands[0], env).returncode == 0
    refused = run(commands[1], env)  # no secret salt: only the committed one -> refused before reading
    assert refused.returncode != 0 and "CAG_DEID_SALT" in refused.stdout + refused.stderr
    done = run(commands[1], {**env, "CAG_DEID_SALT": SALT})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((tmp_path / "out/runs/real-fixture/results/01_data.json").read_text())
    processed = tmp_path / "out/data/work/smoke/processed" / results["results"]["exact"]["dataset"]
    for cohort, expected in EXPECTED_REJECTS.items():
        assert _matches_expected(pd.read_csv(processed / cohort / "rejects.csv"), expected)
    problems = pd.read_csv(processed / "problems.csv")
    assert len(problems) == len(EXPECTED_LABEL_PROBLEMS) + len(EXPECTED_REPORT_PROBLEMS)
    assert SALT not in "".join(p.read_text(errors="ignore") for p in (tmp_path / "out").rglob("*") if p.is_file()
                               and p.suffix in (".json", ".ipynb", ".csv"))
