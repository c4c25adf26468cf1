"""The book (cag_utils.run.book, `make book`): staging rewrites the repository's links to the book's pages, the
link check (cag_utils.run.sitelinks) finds what is broken, and the real book builds into a temporary folder with no
broken internal link, renders the committed notebook outputs, and draws in headless Chromium (slow tier)."""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cag_utils.run import book, sitelinks
from cag_utils.run.config import REPO_ROOT
from cag_utils.evaluation.rating import CHROMIUM_FLAGS

NO_CHROMIUM = pytest.mark.skipif(shutil.which("chromium") is None,
                                 reason="missing system tool: chromium (apt-get install chromium fonts-noto-cjk)")


# ------------------------------------------------------------------ staging
def fake_repo(root: Path) -> Path:
    """A repository with a README, two docs pages, a notebook, a results file and a package folder."""
    (root / "docs").mkdir(parents=True)
    (root / "notebooks").mkdir()
    (root / "results").mkdir()
    (root / "pkg").mkdir()
    (root / "paper").mkdir()
    (root / "README.md").write_text("# Top\n\n[a](docs/a.md#part) [b](docs/index.md)\n")
    (root / "docs" / "index.md").write_text("# Docs\n\n[A](a.md)\n")
    (root / "docs" / "a.md").write_text("# A\n\n## Part\n")
    (root / "docs" / "paper.md").write_text("# The paper build\n")   # the paper page links it
    (root / "results" / "r.json").write_text("{}")
    (root / "pkg" / "m.py").write_text("x = 1\n")
    (root / "paper" / "main.tex").write_text("\\documentclass{article}\n")
    return root


def test_book_paths_put_the_readme_home_and_other_files_under_files():
    assert book.book_path("README.md") == "index.md"
    assert book.book_path("docs/index.md") == "contents.md"
    assert book.book_path("docs/stage1.md") == "stage1.md"
    assert book.book_path("notebooks/02_cnn.ipynb") == "notebooks/02_cnn.ipynb"
    assert book.book_path("paper/main.pdf") == book.PAPER_PAGE
    assert book.book_path("results/02_cnn.json") == "files/results/02_cnn.json"


def test_links_written_for_github_point_to_the_book_pages(tmp_path: Path):
    repo = fake_repo(tmp_path)
    text = ("[home](../README.md) [nb](../notebooks/01_x.ipynb#Frames) [r](../results/r.json) [pkg](../pkg/)\n"
            "[self](#part) [web](https://example.org/a.md) [gone](missing.md) `[code](../README.md)`\n"
            "```\n[fenced](../README.md)\n```\n![fig](../results/r.json)\n")
    (repo / "notebooks" / "01_x.ipynb").write_text("{}")
    copies: set[str] = set()
    out = book.rewrite_markdown(text, "docs/a.md", repo, copies)
    assert out == ("[home](index.md) [nb](notebooks/01_x.ipynb#Frames) [r](files/results/r.json) [pkg](layout.md)\n"
                   "[self](#part) [web](https://example.org/a.md) [gone](missing.md) `[code](../README.md)`\n"
                   "```\n[fenced](../README.md)\n```\n![fig](files/results/r.json)\n")
    assert copies == {"results/r.json"}
    # from a notebook page (notebooks/), to the final .html files: mkdocs does not convert a notebook's links
    assert book.rewrite_markdown("[a](../docs/a.md#part) [m](../pkg/m.py)", "notebooks/01_x.ipynb", repo, copies,
                                 html=True) == "[a](../a.html#part) [m](../files/pkg/m.py)"
    assert book.rewrite_markdown("[a](docs/a.md#part)", "README.md", repo, set()) == "[a](a.md#part)"


def test_a_list_after_a_paragraph_line_gets_its_blank_line():
    text = "Intro:\n- one\n  more\n- two\n\n```\nx:\n- not a list\n```\n| a |\n- after a table row\n"
    assert book.blank_line_before_lists(text) == (
        "Intro:\n\n- one\n  more\n- two\n\n```\nx:\n- not a list\n```\n| a |\n- after a table row\n")


def test_a_staged_notebook_keeps_its_outputs_and_drops_widget_state(tmp_path: Path):
    repo = fake_repo(tmp_path)
    png = base64.b64encode(b"\x89PNG fake").decode()
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["## Loaded by `datasets`\n", "[A](../docs/a.md)"]},
                    {"cell_type": "code", "metadata": {}, "execution_count": 3, "source": "x",
                     "outputs": [{"output_type": "display_data", "metadata": {},
                                  "data": {"image/png": png, "text/plain": "fig",
                                           "application/vnd.jupyter.widget-view+json": {"model_id": "m"}}}]}],
          "metadata": {"widgets": {"application/vnd.jupyter.widget-state+json": {}}}, "nbformat": 4,
          "nbformat_minor": 5}
    (repo / "notebooks" / "01_x.ipynb").write_text(json.dumps(nb))
    book.stage_notebook(repo / "notebooks" / "01_x.ipynb", tmp_path / "out.ipynb", repo, set())
    staged = json.loads((tmp_path / "out.ipynb").read_text())
    assert "widgets" not in staged["metadata"]
    assert staged["cells"][0]["source"] == "## Loaded by datasets\n[A](../a.html)"
    assert staged["cells"][1]["outputs"][0]["data"] == {"image/png": png, "text/plain": "fig"}
    assert staged["cells"][1]["execution_count"] == 3


def test_without_latex_the_paper_page_says_how_to_build_it(tmp_path: Path, monkeypatch):
    repo = fake_repo(tmp_path / "repo")
    false = shutil.which("false")   # a latexmk that fails (looked up before `which` is patched)
    monkeypatch.setattr(book.shutil, "which", lambda name: None)
    pdf, how = book.paper_pdf(repo, tmp_path / "work")
    page = book.paper_page(pdf, how)
    assert pdf is None and "latexmk is not installed" in page and "make paper" in page
    assert "(files/paper/main.tex)" in page and "main.pdf)" not in page
    (repo / "paper" / "main.pdf").write_bytes(b"%PDF-1.5")
    pdf, how = book.paper_pdf(repo, tmp_path / "work")
    assert pdf == repo / "paper" / "main.pdf" and "(files/paper/main.pdf)" in book.paper_page(pdf, how)
    monkeypatch.setattr(book.shutil, "which", lambda name: false)
    pdf, how = book.paper_pdf(repo, tmp_path / "work")
    assert pdf == repo / "paper" / "main.pdf" and "latexmk failed (1;" in how   # falls back to make paper's PDF


def test_the_navigation_follows_docs_index(tmp_path: Path):
    repo = fake_repo(tmp_path)
    (repo / "docs" / "z.md").write_text("# Z\n")
    (repo / "notebooks" / "01_x.ipynb").write_text("{}")
    assert book.nav(repo) == [{"Overview": "index.md"}, {"Documentation": ["contents.md", "a.md", "paper.md", "z.md"]},
                              {"Notebooks": ["notebooks/01_x.ipynb"]}, {"The paper (PDF)": book.PAPER_PAGE}]
    config = book.mkdocs_config(repo, tmp_path / "site")
    assert "execute: false" in config and "use_directory_urls: false" in config and "font: false" in config


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_broken_link_fails_the_build_and_a_good_one_builds(tmp_path: Path, monkeypatch):
    repo = fake_repo(tmp_path / "repo")
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# X\n\n[A](../docs/a.md#part)"}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (repo / "notebooks" / "01_x.ipynb").write_text(json.dumps(nb))
    monkeypatch.setattr(book.shutil, "which", lambda name: None)   # no LaTeX run for this fake paper
    site = book.build(repo, tmp_path / "site", tmp_path / "src")
    assert sitelinks.broken_links(site) == [] and (site / "files" / "paper" / "main.tex").is_file()
    assert 'href="../a.html#part"' in (site / "notebooks" / "01_x.html").read_text(encoding="utf-8")
    (repo / "docs" / "a.md").write_text("# A\n\n## Part\n\n[gone](missing.md) [no heading](../README.md#nowhere)\n")
    with pytest.raises(RuntimeError, match="missing.md") as failed:
        book.build(repo, tmp_path / "site", tmp_path / "src")
    assert "nowhere" in str(failed.value)


# ------------------------------------------------------------------ the link check
def test_the_link_check_finds_missing_files_anchors_and_network_loads(tmp_path: Path):
    site = tmp_path / "site"
    (site / "sub").mkdir(parents=True)
    (site / "sub" / "index.html").write_text("<p id='here'>sub</p>")
    (site / "b.html").write_text("<h2 id='there'>B</h2><a name='old'></a>")
    (site / "a.html").write_text(
        "<a href='b.html'>ok</a> <a href='b.html#there'>ok</a> <a href='b.html#old'>ok</a> <a href='sub/'>ok</a>"
        "<a href='#top' id='top'>ok</a> <a href='https://example.org/x'>web</a> <img src='data:image/png;base64,AA'>"
        "<a href='c.html'>no file</a> <a href='b.html#nowhere'>no anchor</a> <a href='../outside.html'>out</a>"
        "<script src='https://cdn.example.org/x.js'></script> <link rel='stylesheet' href='//fonts.example.org/f.css'>"
        "<link rel='canonical' href='https://example.org/a.html'>")
    (tmp_path / "outside.html").write_text("x")
    assert sitelinks.broken_links(site) == ["a.html: c.html (no such file)", "a.html: b.html#nowhere (no element #nowhere)",
                                            "a.html: ../outside.html (outside the site)"]
    assert sitelinks.network_loads(site) == ["a.html: <script src=https://cdn.example.org/x.js>",
                                             "a.html: <link href=//fonts.example.org/f.css>"]
    assert sitelinks.main([str(site)]) == 1
    (site / "a.html").write_text("<a href='b.html#there'>ok</a>")
    assert sitelinks.main([str(site)]) == 0


# ------------------------------------------------------------------ the real book (slow tier)
@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The book of this checkout, built into a temporary folder (about 10 s on 2 cores)."""
    tmp = tmp_path_factory.mktemp("book")
    return book.build(REPO_ROOT, tmp / "site", tmp / "src")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_book_has_every_page_and_no_broken_link_or_network_load(site: Path):
    notebooks = sorted(p.stem for p in (REPO_ROOT / "notebooks").glob("*.ipynb"))
    docs = sorted(p.stem for p in (REPO_ROOT / "docs").glob("*.md") if p.stem != "index")
    missing = [p for p in ["index", "contents", "paper-pdf", *docs, *(f"notebooks/{n}" for n in notebooks)]
               if not (site / f"{p}.html").is_file()]
    assert not missing and len(notebooks) >= 6
    assert sitelinks.broken_links(site) == []
    assert sitelinks.network_loads(site) == []
    paper = (site / "paper-pdf.html").read_text(encoding="utf-8")
    assert re.search(r'href="files/paper/main\.(pdf|tex)"', paper)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_notebook_pages_show_the_committed_outputs(site: Path):
    """Rendered, not re-executed: every stored PNG of notebook 02 is in its page, byte for byte."""
    nb = json.loads((REPO_ROOT / "notebooks" / "02_cnn.ipynb").read_text(encoding="utf-8"))
    pngs = [o["data"]["image/png"].replace("\n", "") for c in nb["cells"] for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]
    page = (site / "notebooks" / "02_cnn.html").read_text(encoding="utf-8")
    assert pngs and all(png in page for png in pngs)


def chromium_dom(url: str) -> str:
    return subprocess.run(["chromium", *CHROMIUM_FLAGS, "--dump-dom", url], check=True, capture_output=True,
                          text=True, timeout=60).stdout


@pytest.mark.slow
@pytest.mark.timeout(240)
@NO_CHROMIUM
def test_the_index_and_a_notebook_page_render_in_headless_chromium(site: Path, tmp_path: Path):
    from PIL import Image

    home = chromium_dom((site / "index.html").as_uri())
    assert "<title>CAG-VLM compendium" in home and "Headline results" in home
    assert re.search(r"<table>.*?[A-Za-z0-9-]+ \(CAG-VLM\).*?</table>", home, re.S)   # the README's results table
    assert 'href="notebooks/02_cnn.html"' in home and 'href="paper-pdf.html"' in home
    page = chromium_dom((site / "notebooks" / "06_evaluation.html").as_uri())
    assert "<title>06 · Evaluation" in page and "Do the metrics measure findings" in page
    assert re.search(r'<img[^>]+src="data:image/png;base64,', page)          # a figure
    assert re.search(r'<table[^>]*class="dataframe', page)                    # a results table
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--screenshot={shot}", "--window-size=1200,1600",
                    (site / "notebooks" / "06_evaluation.html").as_uri()], check=True, capture_output=True, timeout=60)
    assert np.asarray(Image.open(shot).convert("L")).std() > 10               # drawn, not a blank page
