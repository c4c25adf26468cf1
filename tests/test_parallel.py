"""How `make test` splits the session over two pytest-xdist workers (the root conftest.py): the notebooks and the
tests that read their outputs form one work unit, every other test file its own."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from cag_utils.run.config import REPO_ROOT


@pytest.fixture
def root_conftest(pytestconfig):
    """The root conftest.py as pytest loaded it (executing it again would give the session a new output root)."""
    return next(p for p in pytestconfig.pluginmanager.get_plugins()
                if Path(getattr(p, "__file__", "") or "") == REPO_ROOT / "conftest.py")


def test_notebooks_and_their_readers_share_one_unit_and_other_files_are_their_own(root_conftest):
    scope = root_conftest.notebook_scope
    assert scope("notebooks/01_data.ipynb::Cell 3") == scope("notebooks/06_evaluation.ipynb::Cell 0") == "notebooks"
    assert scope("tests/test_reexecution.py::test_reexecution_within_tolerance[02_cnn]") == "notebooks"
    assert scope("tests/test_cnn.py::test_resume[a::b]") == scope("tests/test_cnn.py::test_other") == "tests/test_cnn.py"
    assert scope("tests/test_report.py::test_x") != scope("tests/test_cnn.py::test_other")


def test_every_after_notebooks_test_lives_in_a_file_of_the_notebooks_unit(root_conftest):
    for path in sorted((REPO_ROOT / "tests").glob("test_*.py")):
        rel = path.relative_to(REPO_ROOT).as_posix()
        if re.search(r"^@pytest\.mark\.after_notebooks", path.read_text(encoding="utf-8"), re.M):
            assert rel in root_conftest.NOTEBOOK_GROUP_FILES, rel
