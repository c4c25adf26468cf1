"""`make paper` builds: the manuscript compiles from the committed results, and no generated number is missing.

The LaTeX inputs are generated from `results/` into a temporary folder (`cag_utils.run.report.generate`) and
`paper/main.tex` is compiled there with latexmk, next to a link to `figures/`; nothing in the repository is
written. Skipped where latexmk is not installed (`.ci/run` installs it).

A `\\result{Name}` whose macro does not exist prints a bold ?? and logs "Missing result: Name". That is allowed
only while the notebook the macro belongs to has not written its results yet (e.g. before notebook 06 is run);
a missing macro of an existing results file is a typo or a renamed key and fails the test.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cag_utils.run.report import generate, macro_words, notebook_stem

REPO = Path(__file__).resolve().parent.parent

LATEX = "latexmk texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended lmodern"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600),
              pytest.mark.skipif(shutil.which("latexmk") is None,
                                 reason=f"missing system tool: latexmk (apt-get install {LATEX})")]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    (root / "paper").mkdir()
    shutil.copy(REPO / "paper" / "main.tex", root / "paper" / "main.tex")
    (root / "figures").symlink_to(REPO / "figures", target_is_directory=True)
    generate("smoke", REPO / "results", root / "paper" / "generated")
    proc = subprocess.run(["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "main.tex"],
                          cwd=root / "paper", capture_output=True, text=True, timeout=300)
    log = (root / "paper" / "main.log").read_text(encoding="utf-8", errors="replace")
    assert proc.returncode == 0, f"latexmk failed:\n{proc.stdout[-3000:]}\n{log[-3000:]}"
    return root / "paper", log


def _notebook_prefixes() -> dict[str, str]:
    """Macro prefix -> results file of every notebook whose results exist ('Evaluation' -> 06_evaluation.json)."""
    out = {}
    for path in sorted((REPO / "results").glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(record, dict) and isinstance(record.get("results"), dict):
            out[macro_words(notebook_stem(str(record.get("notebook") or path.stem)))] = path.name
    return out


def test_paper_compiles_into_a_pdf(built):
    folder, log = built
    assert (folder / "main.pdf").stat().st_size > 10_000
    assert "Output written on main.pdf" in log


def test_no_missing_number_of_an_existing_results_file(built):
    _, log = built
    missing = sorted(set(re.findall(r"Missing result: (\w+)", log)))
    prefixes = _notebook_prefixes()
    broken = [(name, file) for name in missing for prefix, file in prefixes.items() if name.startswith(prefix)]
    assert not broken, f"\\result names a macro its results file does not define: {broken}"


def test_no_undefined_reference_or_citation(built):
    """Labels of generated floats are named after their notebook ('tab:06_evaluation_metrics'); a reference to a
    float of a notebook without results yet may stay undefined, any other may not."""
    _, log = built
    undefined = set(re.findall(r"(?:Reference|Citation) `([^']+)' on page \d+ undefined", log))
    pending = {label for label in undefined if (m := re.match(r"(?:tab|fig):(\d\d_[a-z]+?)_", label))
               and not (REPO / "results" / f"{m.group(1)}.json").is_file()}
    assert not undefined - pending, sorted(undefined - pending)


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="missing system tool: pdftotext (apt-get install poppler-utils)")
def test_no_question_marks_for_generated_results(built):
    folder, log = built
    text = subprocess.run(["pdftotext", str(folder / "main.pdf"), "-"], capture_output=True, text=True,
                          check=True).stdout
    allowed = len(set(re.findall(r"Missing result: (\w+)", log)))   # checked above: none of an existing file
    if allowed == 0:
        assert "??" not in text
