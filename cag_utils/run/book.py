"""The book: a static site of the README, docs/, the executed notebooks (rendered as committed, never
re-executed) and the paper PDF, built with mkdocs, mkdocs-material and mkdocs-jupyter (pinned in pyproject.toml).

    python -m cag_utils.run.book              # (make book) build/book-src (staged pages) -> build/book
    python -m cag_utils.run.book --out /tmp/site --work /tmp/site-src

Open build/book/index.html in a browser: pages link file to file (use_directory_urls off), so no server is needed,
and nothing is fetched from the network, at build time or when a page opens.

mkdocs reads pages from one folder, so `stage` copies them there first: README.md becomes the home page,
docs/index.md the contents page, docs/*.md keep their names, notebooks/*.ipynb become notebooks/NN_name pages.
Relative links are written for GitHub (`../README.md`, `docs/stage1.md`, `../results/x.json`); staging rewrites
each to its page in the book, copies a linked repository file (results, code) under files/, and sends a
linked folder to the layout page. The paper page links the PDF that latexmk builds from paper/main.tex (or
paper/main.pdf of `make paper`); without LaTeX it says how to build it and links the source instead.
"""
from __future__ import annotations

import argparse
import json
import posixpath
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from cag_utils.run.config import REPO_ROOT
from cag_utils.run import sitelinks

SITE = REPO_ROOT / "build" / "book"
WORK = REPO_ROOT / "build" / "book-src"
MAX_COPY = 5_000_000   # bytes: a linked repository file larger than this is named, not copied
LATEX_TIMEOUT = 300   # s: the paper builds in a few seconds; a stuck TeX must not hold the book
PAPER_PAGE = "paper-pdf.md"
LAYOUT_PAGE = "layout.md"     # where a link to a folder of the repository goes
# Outside code: a fenced block or code span (kept as written), else a Markdown link or image.
_MD = re.compile(r"(?P<code>(?ms:^```.*?^```)|`[^`\n]*`)|(?P<head>!?\[[^\]]*\]\()(?P<target>[^)\s]+)\)")
_HEADING_CODE = re.compile(r"^#{1,6} .*`.*$", re.M)
_LIST_ITEM = re.compile(r"^(?:[-*+]|\d+\.)\s")


def book_path(repo_rel: str) -> str:
    """Where the repository file `repo_rel` (POSIX, relative to the root) lives in the book's docs folder."""
    if repo_rel == "README.md":
        return "index.md"
    if repo_rel == "docs/index.md":
        return "contents.md"
    if repo_rel.startswith("docs/") and repo_rel.endswith(".md"):
        return repo_rel.removeprefix("docs/")
    if re.fullmatch(r"notebooks/[^/]+\.ipynb", repo_rel):
        return repo_rel
    if repo_rel.startswith("paper/main."):
        return PAPER_PAGE
    return f"files/{repo_rel}"


def rewrite_target(target: str, source_rel: str, repo: Path, copies: set[str], html: bool = False) -> str:
    """The link `target`, written in the repository file `source_rel`, as a link of the book's page of it.
    Repository files it needs copied go into `copies`; `html` gives final .html URLs (for notebook pages,
    whose links mkdocs does not convert)."""
    if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:|#|/", target):   # https:, mailto:, same page, absolute
        return target
    path, hash_, fragment = target.partition("#")
    repo_rel = posixpath.normpath(posixpath.join(posixpath.dirname(source_rel), path))
    file = repo / repo_rel
    if repo_rel.startswith("..") or not file.exists():
        return target   # mkdocs --strict reports it
    if file.is_dir() or file.stat().st_size > MAX_COPY:
        dest, hash_, fragment = LAYOUT_PAGE, "", ""
    else:
        dest = book_path(repo_rel)
        if dest.startswith("files/"):
            copies.add(repo_rel)
    if html and dest.endswith((".md", ".ipynb")):
        dest = dest.rsplit(".", 1)[0] + ".html"
    return posixpath.relpath(dest, posixpath.dirname(book_path(source_rel))) + hash_ + fragment


def rewrite_markdown(text: str, source_rel: str, repo: Path, copies: set[str], html: bool = False) -> str:
    """`text` with every relative link outside code rewritten by `rewrite_target`."""
    def one(m: re.Match) -> str:
        if m.group("code"):
            return m.group(0)
        return f"{m.group('head')}{rewrite_target(m.group('target'), source_rel, repo, copies, html)})"
    return _MD.sub(one, text)


def blank_line_before_lists(text: str) -> str:
    """A blank line before a list that follows a paragraph line: GitHub starts the list there, Python-Markdown
    only after a blank line."""
    out, fenced, previous = [], False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and _LIST_ITEM.match(line) and previous.strip() and not _LIST_ITEM.match(previous) \
                and not previous.startswith((" ", "|", "#")):
            out.append("")
        out.append(line)
        previous = line
    return "\n".join(out) + "\n"


def stage_notebook(src: Path, dest: Path, repo: Path, copies: set[str]) -> None:
    """The executed notebook as committed, minus widget state (its renderer would load from a CDN; tqdm bars keep
    their text), with the links of its Markdown cells rewritten to the book's pages and headings without code
    spans (mkdocs-jupyter 0.26 drops a code span from a heading's table-of-contents anchor but not from its id)."""
    nb = json.loads(src.read_text(encoding="utf-8"))
    nb.get("metadata", {}).pop("widgets", None)
    rel = src.relative_to(repo).as_posix()
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            text = _HEADING_CODE.sub(lambda m: m.group(0).replace("`", ""), text)
            cell["source"] = rewrite_markdown(text, rel, repo, copies, html=True)
        for out in cell.get("outputs", []):
            out.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(nb, ensure_ascii=False), encoding="utf-8")


def paper_pdf(repo: Path, work: Path) -> tuple[Path | None, str]:
    """The paper PDF and how it was made: latexmk builds it from paper/main.tex into `work` (nothing written in
    paper/); without latexmk, or when it fails, paper/main.pdf from `make paper` if there is one."""
    latexmk = shutil.which("latexmk")
    if latexmk:
        out = work / "latex"
        try:
            status = subprocess.run([latexmk, "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-silent",
                                     f"-outdir={out}", "main.tex"], cwd=repo / "paper", capture_output=True,
                                    timeout=LATEX_TIMEOUT).returncode
        except subprocess.TimeoutExpired:
            status = f"no result after {LATEX_TIMEOUT} s"
        if status == 0 and (out / "main.pdf").is_file():
            return out / "main.pdf", "built by `make book` with latexmk from `paper/main.tex`"
        why = f"latexmk failed ({status}; log: `{out / 'main.log'}`)"
    else:
        why = "latexmk is not installed"
    if (repo / "paper" / "main.pdf").is_file():
        return repo / "paper" / "main.pdf", f"`paper/main.pdf` as `make paper` last built it ({why})"
    return None, why


def paper_page(pdf: Path | None, how: str) -> str:
    """The book's page of the paper."""
    head = "# The paper (PDF)\n\n"
    src = ("The manuscript is `paper/main.tex`; its numbers, tables and figures are generated from `results/` "
           "into `paper/generated/` ([The paper build](paper.md)).\n")
    if pdf is not None:
        return head + f"[Open the paper (PDF)](files/paper/main.pdf): {how}.\n\n" + src
    return head + (f"The PDF was not built: {how}. Install LaTeX (`apt-get install latexmk "
                   "texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended lmodern`), then run "
                   "`make paper` (writes `paper/main.pdf`) or `make book` again.\n\n"
                   "[The LaTeX source](files/paper/main.tex) (it `\\input`s `paper/generated/`).\n\n") + src


def nav(repo: Path) -> list:
    """Overview, the docs pages in the order docs/index.md lists them, the notebooks, the paper."""
    listed = re.findall(r"\]\(([a-z0-9-]+\.md)\)", (repo / "docs" / "index.md").read_text(encoding="utf-8"))
    pages = list(dict.fromkeys(p for p in listed if (repo / "docs" / p).is_file()))
    pages += sorted(p.name for p in (repo / "docs").glob("*.md") if p.name not in pages and p.name != "index.md")
    return [{"Overview": "index.md"},
            {"Documentation": ["contents.md", *pages]},
            {"Notebooks": [f"notebooks/{p.name}" for p in sorted((repo / "notebooks").glob("*.ipynb"))]},
            {"The paper (PDF)": PAPER_PAGE}]


def mkdocs_config(repo: Path, site: Path) -> str:
    """mkdocs.yml of the staged book: material without web fonts, notebooks rendered from their stored outputs."""
    config = {
        "site_name": "CAG-VLM compendium",
        "docs_dir": "docs",
        "site_dir": str(site),
        "use_directory_urls": False,     # page files link to page files: the site opens from file:// too
        "theme": {"name": "material", "font": False, "features": ["navigation.sections", "navigation.footer"]},
        "extra": {"generator": False},
        "plugins": ["search", {"mkdocs-jupyter": {
            "execute": False, "include": ["*.ipynb"], "include_source": False, "cache": False,
            "include_requirejs": False, "toc_depth": 2}}],
        "validation": {"links": {"not_found": "warn", "absolute_links": "warn", "unrecognized_links": "warn",
                                 "anchors": "warn"},
                       "nav": {"omitted_files": "warn", "not_found": "warn"}},
        "nav": nav(repo),
    }
    # GitHub's heading anchors, so that links written for GitHub (page.md#a-heading) land in the book too.
    slugs = ("markdown_extensions:\n  - tables\n  - toc:\n      permalink: true\n"
             "      slugify: !!python/object/apply:pymdownx.slugs.slugify {kwds: {case: lower}}\n")
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True) + slugs


def stage(repo: Path, work: Path, site: Path) -> Path:
    """Copy the pages into `work`/docs with their links rewritten and write `work`/mkdocs.yml; returns it."""
    if work.exists():
        shutil.rmtree(work)
    docs = work / "docs"
    docs.mkdir(parents=True)
    copies: set[str] = set()
    for src in [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]:
        rel = src.relative_to(repo).as_posix()
        text = rewrite_markdown(src.read_text(encoding="utf-8"), rel, repo, copies)
        (docs / book_path(rel)).write_text(blank_line_before_lists(text), encoding="utf-8")
    for src in sorted((repo / "notebooks").glob("*.ipynb")):
        stage_notebook(src, docs / book_path(src.relative_to(repo).as_posix()), repo, copies)
    pdf, how = paper_pdf(repo, work)
    (docs / PAPER_PAGE).write_text(paper_page(pdf, how), encoding="utf-8")
    (docs / "files" / "paper").mkdir(parents=True)
    shutil.copy2(pdf if pdf else repo / "paper" / "main.tex", docs / "files" / "paper" / (pdf.name if pdf else "main.tex"))
    for rel in sorted(copies):
        (docs / "files" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, docs / "files" / rel)
    config = work / "mkdocs.yml"
    config.write_text(mkdocs_config(repo, site), encoding="utf-8")
    return config


def build(repo: Path = REPO_ROOT, site: Path = SITE, work: Path = WORK) -> Path:
    """Stage the pages and build the site into `site` with `mkdocs build --strict` (a broken link or a page
    left out of the navigation fails it); returns `site`."""
    site, work = Path(site).resolve(), Path(work).resolve()
    config = stage(Path(repo).resolve(), work, site)
    # No --quiet: with it, mkdocs 1.6.1 no longer counts warnings, and --strict passes a broken link.
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "-f", str(config)],
                         cwd=work, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"mkdocs build failed (exit status {run.returncode}):\n{run.stdout}{run.stderr}")
    return site


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build the compendium's book (a static site).")
    ap.add_argument("--out", type=Path, default=SITE, help="the site (default build/book)")
    ap.add_argument("--work", type=Path, default=WORK, help="the staged pages (default build/book-src)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    site = build(REPO_ROOT, args.out, args.work)
    problems = sitelinks.broken_links(site) + sitelinks.network_loads(site)
    for line in problems:
        print(line)
    size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    pages = len(list(site.rglob("*.html")))
    print(f"{site}: {pages} pages, {size / 1e6:.1f} MB, {len(problems)} broken links or network loads, "
          f"{time.perf_counter() - start:.0f} s; open {site / 'index.html'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
