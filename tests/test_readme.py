"""README.md as an entry point and docs/ as the rest: the README stays short, its generated headline tables
(and those in docs/) are what results/*.json gives, and every relative link points to a file and heading
that exist (cag_utils.run.readme_tables)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from cag_utils.run import readme_tables, report
from cag_utils.run.config import REPO_ROOT

README = REPO_ROOT / "README.md"
MAX_README_LINES = 200
HEADLINE_BLOCKS = ["headline-stage1", "headline-stage2", "headline-stage3", "headline-evaluation"]
DOC_PAGES = ["index", "stage1", "reexecution", "stage2", "stage3", "evaluation", "real-data",
             "gpu-and-paper-profile", "paper", "safe-runs", "testing", "synthetic-cohort", "layout"]


def test_readme_is_an_entry_point_of_at_most_200_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def test_every_docs_page_exists_and_the_readme_has_every_headline_block():
    missing = [p for p in DOC_PAGES if not (REPO_ROOT / "docs" / f"{p}.md").is_file()]
    assert not missing, f"docs pages missing: {missing}"
    found = readme_tables.blocks(README.read_text(encoding="utf-8"))
    assert [b for b in HEADLINE_BLOCKS if len(found.get(b, [])) != 1] == []


def test_generated_blocks_equal_what_results_give():
    stale = []
    for path in readme_tables.documents():
        text = path.read_text(encoding="utf-8")
        fresh = readme_tables.blocks(readme_tables.refresh(text))
        for name, bodies in readme_tables.blocks(text).items():
            if bodies != fresh[name]:
                stale.append(f"{path.relative_to(REPO_ROOT)}: {name}")
    assert not stale, ("generated tables differ from results/*.json; refresh them with "
                       f"`{readme_tables.REFRESH_COMMAND}` and commit:\n" + "\n".join(stale))


def test_no_generated_block_reports_a_missing_result():
    broken = [f"{path.relative_to(REPO_ROOT)}: {name}: {body.strip()[:200]}"
              for path in readme_tables.documents()
              for name, bodies in readme_tables.blocks(path.read_text(encoding="utf-8")).items()
              for body in bodies if readme_tables.NOT_BUILT in body]
    assert not broken, "generated blocks that could not be built:\n" + "\n".join(broken)


# ------------------------------------------------------------------ links
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose(path.read_text(encoding="utf-8")).splitlines():
        if m := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line):
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_slug_follows_github():
    assert slug("Stage 1 recipe: how the smoke settings were chosen") == "stage-1-recipe-how-the-smoke-settings-were-chosen"
    assert slug("Ceiling study: do the labels permit laterality F1 0.96?") == \
        "ceiling-study-do-the-labels-permit-laterality-f1-096"
    assert slug("Real data (data card)") == "real-data-data-card"


def test_every_relative_link_points_to_an_existing_file_and_heading():
    broken = []
    for page in readme_tables.documents():
        for m in LINK.finditer(prose(page.read_text(encoding="utf-8"))):
            target = m.group(1) or m.group(2)
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (page.parent / unquote(file_part)).resolve() if file_part else page
            where = f"{page.relative_to(REPO_ROOT)}: ({target})"
            if not dest.exists():
                broken.append(f"{where}: no such file")
            elif REPO_ROOT.resolve() not in dest.parents and dest != REPO_ROOT.resolve():
                broken.append(f"{where}: outside the repository")
            elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
                broken.append(f"{where}: no heading #{anchor}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_link_check_sees_broken_links(tmp_path: Path):
    (tmp_path / "a.md").write_text("# Top\n\n## Part two: more\n\n[x](b.md) [y](#part-two-more) `[z](c.md)`\n")
    text = prose((tmp_path / "a.md").read_text())
    assert [m.group(1) for m in LINK.finditer(text)] == ["b.md", "#part-two-more"]
    assert anchors(tmp_path / "a.md") == {"top", "part-two-more"}


# ------------------------------------------------------------------ the generator
def test_numbers_use_the_report_formatting():
    assert readme_tables.number(1523) == "1,523"
    assert readme_tables.number(0.97189) == "0.972"
    assert readme_tables.number(-0.0033) == "-0.003"
    assert readme_tables.number(True) == "true"
    assert readme_tables.number(30.0168, 1) == "30.0"
    assert readme_tables.interval({"estimate": 0.9719, "ci_low": 0.9529, "ci_high": 0.9841}) == "0.972 [0.953, 0.984]"
    assert readme_tables.interval({"estimate": 1.0, "ci_low": None, "ci_high": None}) == "1.000"


def test_a_missing_result_gives_a_block_that_says_so(tmp_path: Path):
    (tmp_path / "02_cnn.json").write_text(json.dumps({"notebook": "02_cnn", "results": {"headline": {}}}))
    text = "a\n<!-- generated:headline-stage1 -->\nold\n<!-- /generated -->\nb\n" \
           "<!-- generated:headline-stage2 -->\n<!-- /generated -->\n"
    new = readme_tables.refresh(text, tmp_path)
    bodies = readme_tables.blocks(new)
    assert new.startswith("a\n<!-- generated:headline-stage1 -->\n") and "old" not in new and "\nb\n" in new
    assert "not built: results/02_cnn.json has no exact/n_test" in bodies["headline-stage1"][0]
    assert "results/03_extraction.json is not there" in bodies["headline-stage2"][0]


def test_the_budget_block_renders_the_benchmark_record(tmp_path: Path):
    assert "results/budget.json is not there" in readme_tables.render("budget", tmp_path)
    command = {"install_s": 150.0, "notebooks_s": {"01_data": 300.0, "02_cnn": 600.0}, "budget_s": 1200,
               "step_s_before": 0.25, "step_s_after": 0.31}
    (tmp_path / "budget.json").write_text(json.dumps({
        "git_sha": "abcdef0123", "started_at": "2026-12-06T14:10:04+0000",
        "machine": {"processor": "AMD EPYC", "cpu_count": 2},
        "commands": {"reproduce": {**command, "total_s": 1260.0, "rc": 0, "met": False},
                     "test": {**command, "budget_s": 1800, "total_s": 1700.0, "rc": 0, "met": True,
                              "counts": {"passed": 1010, "failed": 0, "skipped": 3}}}}))
    body = readme_tables.render("budget", tmp_path)
    assert "Commit abcdef0, 2 cores of an AMD EPYC, started 2026-12-06" in body
    assert "| `make reproduce` | 21.0 min | 20 min | missed | 2.5 min | 15.0 min | 0.25 s, 0.31 s |  |" in body
    assert "| `make test` | 28.3 min | 30 min | met |" in body and "1,010 passed, 0 failed, 3 skipped" in body


def test_a_results_table_block_renders_and_filters(tmp_path: Path):
    rows = [{"Model": "A", "Variant": "w/ LoRA", "n": 1200}, {"Model": "B", "Variant": "w/o LoRA", "n": 3}]
    (tmp_path / "06_evaluation.json").write_text(json.dumps({"notebook": "06_evaluation",
                                                             "results": {"tables": {"quality": rows}}}))
    body = readme_tables.render('table 06_evaluation quality Variant="w/ LoRA"', tmp_path)
    assert "| Model | Variant | n |" in body and "| A | w/ LoRA | 1,200 |" in body and "| B |" not in body


def test_model_labels_are_the_registry_labels():
    build = pytest.importorskip("cag_utils.vlm.build")
    assert readme_tables.MODELS == {name: fam.label for name, fam in build.REGISTRY.items()}


def test_report_main_rewrites_the_readme_only_for_the_committed_results(tmp_path: Path, monkeypatch):
    calls = []
    monkeypatch.setattr(readme_tables, "update", lambda *a, **k: calls.append(a) or [])
    (tmp_path / "results").mkdir()
    argv = ["--results-root", str(tmp_path / "results"), "--generated-root", str(tmp_path / "gen")]
    assert report.main(argv) == 0 and calls == []
    assert report.main(["--results-root", str(report.RESULTS_ROOT), "--generated-root", str(tmp_path / "gen")]) == 0
    assert calls == [()]


def test_the_seed_spread_block_says_when_its_spread_is_of_another_recipe(tmp_path):
    """The block shows a spread of another recipe for what it is, with no tolerance, and applies one measured with
    the committed recipe."""
    import shutil

    for name in ("02_cnn", "variance_02_cnn"):
        shutil.copy(report.RESULTS_ROOT / f"{name}.json", tmp_path / f"{name}.json")
    path = tmp_path / "variance_02_cnn.json"
    spread = json.loads(path.read_text(encoding="utf-8"))
    committed = json.loads((tmp_path / "02_cnn.json").read_text(encoding="utf-8"))["config"]
    spread["config"] = {**committed, "seed": 1, "n_seeds": 5, "cnn_epochs": committed["cnn_epochs"] + 1}
    path.write_text(json.dumps(spread), encoding="utf-8")
    body = readme_tables.render("seed-spread-stage1", tmp_path)
    assert "measured with another recipe" in body and body.count("not applied") == len(spread["results"]["metrics"])
    spread["config"]["cnn_epochs"] = committed["cnn_epochs"]
    path.write_text(json.dumps(spread), encoding="utf-8")
    body = readme_tables.render("seed-spread-stage1", tmp_path)
    assert "another recipe" not in body and "not applied" not in body and "| test.laterality_f1 |" in body
