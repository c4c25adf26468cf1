"""The rule that tests never write into the repository (this file sits at the root so that
`pytest notebooks/` obeys it too).

Before anything of cag_utils is imported, `$CAG_OUTPUT_ROOT` points at a fresh temporary
folder for the whole session: the notebooks that nbval re-executes (their kernels inherit
the variable), the pipeline and every helper write results/, figures/ and data/work/ there.
`tests/test_reexecution.py` then compares those re-executed results with the committed
ones; it runs after the notebooks (tests marked `after_notebooks` follow the nbval items).
Set `CAG_TEST_OUTPUT_ROOT` to keep the session's outputs in a folder of your choice (under
pytest-xdist, one subfolder per worker: `gw0`, `gw1`).

Parallel (opt-in, `make test TEST_WORKERS=2`): `pytest_xdist_make_scheduler` below puts the
notebooks and the tests that read their outputs in one work unit, run in order by one worker.

Tiers: nbval's notebook cells are marked `slow` here, with a timeout of NOTEBOOK_CELL_TIMEOUT s each (a backstop
behind nbval's own --nbval-cell-timeout), and a `slow` test without its own timeout gets SLOW_TIMEOUT;
`make test-fast` deselects `slow` (see the Makefile).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent
_KEEP = os.environ.get("CAG_TEST_OUTPUT_ROOT")
OUTPUT_ROOT = (Path(_KEEP) / os.environ.get("PYTEST_XDIST_WORKER", "") if _KEEP
               else Path(tempfile.mkdtemp(prefix="cag-test-")))
OUTPUT_ROOT.mkdir(parents=True, exist_ok=True)
os.environ["CAG_OUTPUT_ROOT"] = str(OUTPUT_ROOT)


def git_status() -> str:
    """`git status --porcelain` of the repository ('' outside git)."""
    try:
        return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "after_notebooks: runs after nbval has re-executed the notebooks")
    config.stash[STATUS_KEY] = git_status()


STATUS_KEY = pytest.StashKey[str]()
NOTEBOOK_CELL_TIMEOUT = 1900  # s: above --nbval-cell-timeout=1800 in pyproject.toml, so nbval reports a slow cell first
SLOW_TIMEOUT = 900  # s: a `slow` test without its own @pytest.mark.timeout (the fast tier's default is in pyproject.toml)
NOTEBOOKS_KEY = pytest.StashKey[set]()
NOTEBOOK_GROUP = "notebooks"  # the xdist work unit of the nbval items and the `after_notebooks` tests
NOTEBOOK_GROUP_FILES = ("tests/test_reexecution.py",)  # where `after_notebooks` tests live (they read nbval's outputs)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the notebook cells must carry `slow` by then
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    """Order the session: the nbval items, the `after_notebooks` tests, then the rest; note which
    notebooks will be re-executed; mark the notebook cells `slow` with their timeout. An `after_notebooks` test
    must live in a file of NOTEBOOK_GROUP_FILES, so that pytest-xdist runs it on the notebooks' worker."""
    for item in items:
        if str(item.path).endswith(".ipynb"):
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.timeout(NOTEBOOK_CELL_TIMEOUT))
        elif item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))
    notebooks = [i for i in items if str(i.path).endswith(".ipynb")]
    late = [i for i in items if i.get_closest_marker("after_notebooks")]
    stray = sorted({i.nodeid for i in late if i.nodeid.split("::")[0] not in NOTEBOOK_GROUP_FILES})
    if stray:
        raise pytest.UsageError(f"after_notebooks tests outside {NOTEBOOK_GROUP_FILES} (root conftest.py): {stray}")
    first = set(notebooks) | set(late)
    # The notebooks first: under pytest-xdist their unit, the longest, is then handed out first. No test depends
    # on running before them (each that needs an empty output root makes its own).
    items[:] = notebooks + late + [i for i in items if i not in first]
    config.stash[NOTEBOOKS_KEY] = {Path(str(i.path)).stem for i in notebooks}


def notebook_scope(nodeid: str) -> str:
    """pytest-xdist's work unit of a test: the notebooks and NOTEBOOK_GROUP_FILES form one ("notebooks"), run in
    order by one worker in one output root; any other test file is its own (its module fixtures built once)."""
    path = nodeid.split("::")[0]
    return NOTEBOOK_GROUP if path.endswith(".ipynb") or path in NOTEBOOK_GROUP_FILES else path


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: without the plugin (-p no:xdist) it is never called
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """With `-n N` (`make test TEST_WORKERS=N`): scopes from `notebook_scope`, in collection order, so the
    notebooks' unit is handed out first and the other workers take the test files one at a time. On 2 cores this
    is slower than one process (docs/testing.md, two workers). (pytest-xdist's own `xdist_group` does not work
    with pytest 9.2.)"""
    from xdist.scheduler import LoadScopeScheduling

    class NotebooksFirst(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return notebook_scope(nodeid)

    config.option.loadscopereorder = False
    return NotebooksFirst(config, log)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The whole session, workers included, must leave `git status` as it found it (checked once, in the
    process that started the session; `tests/test_reexecution.py` checks it too, within one worker)."""
    if hasattr(session.config, "workerinput"):
        return
    before, now = session.config.stash.get(STATUS_KEY, ""), git_status()
    xml = getattr(session.config.option, "xmlpath", None)   # a --junitxml report the caller asked for is no leak
    if xml and Path(xml).resolve().is_relative_to(REPO):
        now = "".join(line for line in now.splitlines(keepends=True)
                      if line[3:].strip() != Path(xml).resolve().relative_to(REPO).as_posix())
    if now != before:
        changed = sorted(set(now.splitlines()) ^ set(before.splitlines()))
        session.config.get_terminal_writer().line(
            "ERROR: the tests changed the repository (git status --porcelain, lines that differ from the start):\n"
            + "\n".join(changed), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    if not _KEEP:
        shutil.rmtree(OUTPUT_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def output_root() -> Path:
    """The session's output root (what `$CAG_OUTPUT_ROOT` points at)."""
    return OUTPUT_ROOT


@pytest.fixture(scope="session")
def reexecuted_notebooks(request) -> set[str]:
    """Stems of the notebooks nbval re-executes in this session (empty when only tests/ ran)."""
    return request.config.stash.get(NOTEBOOKS_KEY, set())


@pytest.fixture(scope="session")
def status_at_start(request) -> str:
    """`git status --porcelain` when the session started."""
    return request.config.stash[STATUS_KEY]


@pytest.fixture(scope="session")
def status_now():
    """A function giving `git status --porcelain` now."""
    return git_status
