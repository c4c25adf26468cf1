"""The root conftest.py fails a session that changed the checkout (`git status`), whatever test did it and on
whichever worker; a --junitxml report the caller asked for inside the checkout is not such a change."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from cag_utils.run.config import REPO_ROOT


@pytest.fixture
def checkout(tmp_path):
    """A git checkout holding the root conftest.py, a clean test and one that leaves a file behind."""
    shutil.copy(REPO_ROOT / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_clean.py").write_text("def test_clean():\n    assert True\n", encoding="utf-8")
    (tmp_path / "test_leak.py").write_text(
        "from pathlib import Path\n\ndef test_leak():\n    Path(__file__).with_name('leak.txt').write_text('x')\n",
        encoding="utf-8")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "t"], check=True)
    return tmp_path


def _pytest(cwd, *args):
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", *args],
                          cwd=cwd, capture_output=True, text=True)


def test_a_test_that_writes_into_the_checkout_fails_the_session(checkout):
    out = _pytest(checkout, "test_leak.py")
    assert out.returncode == 1, out.stdout
    assert "changed the repository" in out.stdout and "?? leak.txt" in out.stdout
    assert "1 passed" in out.stdout   # the test itself passed: the session check is what failed


def test_a_clean_session_with_its_junit_report_in_the_checkout_passes(checkout):
    out = _pytest(checkout, "test_clean.py", "--junitxml=report.xml")
    assert out.returncode == 0, out.stdout
    assert (checkout / "report.xml").is_file()
