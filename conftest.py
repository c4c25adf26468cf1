"""The rule that tests never write into the repository (this file sits at the root so that
`pytest notebooks/` obeys it too).

Before anything of cag_utils is imported, `$CAG_OUTPUT_ROOT` points at a fresh temporary
folder for the whole session: the notebooks that nbval re-executes (their kernels inherit
the variable), the pipeline and every helper write results/, figures/ and data/work/ there.
`tests/test_reexecution.py` then compares those re-executed results with the committed
ones; it runs after the notebooks (tests marked `after_notebooks` follow the nbval items).
Set `CAG_TEST_OUTPUT_ROOT` to keep the session's outputs in a folder of your choice (under
pytest-xdist, one subfolder per worker: `gw0`, `gw1`).

Parallel: `make test` runs two pytest-xdist workers; `pytest_collection_modifyitems` below puts
the notebooks and the tests that read their outputs in one group, run in order by one worker.

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
    # pytest-xdist's own marker, registered here too so that a run without the plugin (-p no:xdist) knows it
    config.addinivalue_line("markers", "xdist_group(name): tests of one group run in order on one xdist worker")
    config.stash[STATUS_KEY] = git_status()


STATUS_KEY = pytest.StashKey[str]()
NOTEBOOK_CELL_TIMEOUT = 1900  # s: above --nbval-cell-timeout=1800 in pyproject.toml, so nbval reports a slow cell first
SLOW_TIMEOUT = 900  # s: a `slow` test without its own @pytest.mark.timeout (the fast tier's default is in pyproject.toml)
NOTEBOOKS_KEY = pytest.StashKey[set]()
NOTEBOOK_GROUP = "notebooks"  # the xdist group of the nbval items and the `after_notebooks` tests


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects and before xdist reads the groups
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    """Order and group the session: the nbval items first, then the `after_notebooks` tests, then the rest; note
    which notebooks will be re-executed; mark the notebook cells `slow` with their timeout.

    Under pytest-xdist (`make test` runs two workers with `--dist loadgroup --no-loadscope-reorder`) the notebooks
    and the tests that read their outputs form one group, so one worker runs them in order in one output root,
    while the other worker takes the test files one at a time (a file is a group, so its module fixtures are
    built once). The notebooks leave a core idle much of the time (generation and LoRA steps of the small models
    are mostly one thread), which the other worker uses."""
    for item in items:
        if str(item.path).endswith(".ipynb"):
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.timeout(NOTEBOOK_CELL_TIMEOUT))
        elif item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))
    notebooks = [i for i in items if str(i.path).endswith(".ipynb")]
    late = [i for i in items if i.get_closest_marker("after_notebooks")]
    first = set(notebooks) | set(late)
    rest = [i for i in items if i not in first]
    for item in notebooks + late:
        item.add_marker(pytest.mark.xdist_group(NOTEBOOK_GROUP))
    for item in rest:
        item.add_marker(pytest.mark.xdist_group(Path(str(item.path)).relative_to(REPO).as_posix()))
    items[:] = notebooks + late + rest
    config.stash[NOTEBOOKS_KEY] = {Path(str(i.path)).stem for i in notebooks}


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The whole session, workers included, must leave `git status` as it found it (checked once, in the
    process that started the session; `tests/test_reexecution.py` checks it too, within one worker)."""
    if hasattr(session.config, "workerinput"):
        return
    before, now = session.config.stash.get(STATUS_KEY, ""), git_status()
    if now != before:
        session.config.get_terminal_writer().line(
            f"ERROR: the tests wrote into the repository; git status --porcelain now:\n{now}", red=True)
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
