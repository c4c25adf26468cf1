"""No path that leaves the repository: code, notebooks, docs and tests cite published sources (paper, DOI,
URL) or files inside the repository, never a folder a user of the repository does not have (the
development machine's reference notes, a home folder).

A line may hold such a path on purpose (an example for a path scanner) when it ends with ALLOW.
The patterns are built from pieces so that this file does not match them itself.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCANNED = ["cag_utils", "notebooks", "tests", "docs", "paper", "benchmarks", "configs", ".ci",
           "README.md", "Makefile", "conftest.py", "pyproject.toml", "environment.yml", "CITATION.cff"]
BINARY = {".png", ".pdf", ".jpg", ".gz", ".npz", ".safetensors", ".dcm", ".pt", ".bin"}
ALLOW = "out-of-repo path " + "on purpose"

_ROOTS = "|".join(["work", "home", "Users", "root"])
OUTSIDE = re.compile("|".join([
    re.escape("shared" + "/" + "reference"),            # the development notes
    re.escape(".." + "/" + "shared"),                   # a sibling folder of the checkout
    r"(?<![\w./~-])/(?:" + _ROOTS + r")/",              # an absolute path on a machine ("data/work/..." is fine)
    r"\b[A-Z]:" + r"\\{1,2}" + "Users",                 # a Windows home folder
]))


def tracked_files() -> list[Path]:
    """The tracked files under SCANNED (every file there outside git)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", *SCANNED], cwd=REPO, capture_output=True,
                             check=True).stdout.decode()
        return [REPO / name for name in out.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        found = [p for name in SCANNED for p in ([REPO / name] if (REPO / name).is_file()
                                                  else (REPO / name).rglob("*"))]
        return [p for p in found if p.is_file() and "__pycache__" not in p.parts]


def outside_paths(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line naming a path outside the repository, unless it ends with ALLOW."""
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)
            if OUTSIDE.search(line) and not line.rstrip().rstrip('",').endswith(ALLOW)]


def test_the_scan_finds_outside_paths_only():
    bad = ["see " + "shared" + "/reference/paper.md", "(" + ".." + "/shared/x)", "/" + "work/main/results",
           "open('/" + "home/ana/cag')", "C:" + "\\Users\\ana"]
    good = ["data/work/smoke/corpus", "results/06_evaluation.json", "https://doi.org/10.1161/01.CIR.51.4.5",
            "python benchmarks/x.py --dir /tmp/lc/data/work/smoke", "src/home/x", "~/work/x"]
    assert [bool(outside_paths(line)) for line in bad] == [True] * len(bad)
    assert [bool(outside_paths(line)) for line in good] == [False] * len(good)
    assert not outside_paths(bad[0] + "  # " + ALLOW)


def test_no_tracked_file_names_a_path_outside_the_repository():
    hits = []
    for path in tracked_files():
        if path.suffix in BINARY or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        hits += [f"{path.relative_to(REPO)}:{n}: {line[:160]}" for n, line in outside_paths(text)]
    assert not hits, ("paths outside the repository (cite the published source, or a file in the repository):\n"
                      + "\n".join(hits))
