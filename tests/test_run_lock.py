"""One run at a time per data folder (cag_utils.run.runlock), with two real processes: one holds
the lock briefly, the other is the pipeline CLI with --no-wait, or a waiting run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from cag_utils.run.config import REPO_ROOT
from cag_utils.run.runlock import RunLockedError, run_lock

HOLD = """
import sys, time
from pathlib import Path
from cag_utils.run.runlock import run_lock
root, release = Path(sys.argv[1]), Path(sys.argv[2])
with run_lock(root, "smoke"):
    print("held", flush=True)
    deadline = time.monotonic() + 30
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
print("released", flush=True)
"""

WAIT = """
import sys
from cag_utils.run.runlock import run_lock
with run_lock(sys.argv[1], "smoke", wait=True, poll_s=0.05):
    print("acquired", flush=True)
"""


def _start(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _holder(work: Path, release: Path) -> subprocess.Popen:
    proc = _start(HOLD, str(work), str(release))
    assert proc.stdout.readline().strip() == "held", proc.stderr.read()
    return proc


def _tiny_repo(root: Path) -> list[str]:
    """CLI folder arguments of a throwaway compendium whose one notebook would write a results file."""
    (root / "profiles").mkdir(parents=True)
    (root / "profiles" / "smoke.yaml").write_text("common:\n  seed: 1\na:\n  n: 1\n")
    (root / "pkg").mkdir()
    (root / "notebooks").mkdir()
    head = nbformat.v4.new_code_cell('profile = "smoke"\nsection = "a"\nn = None')
    head.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell("from cag_utils.run.config import results_dir\n"
                                     "results_dir(profile).mkdir(parents=True, exist_ok=True)\n"
                                     "(results_dir(profile) / '01_x.json').write_text('{}')")
    nb = nbformat.v4.new_notebook(cells=[head, body])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "notebooks" / "01_x.ipynb")
    return ["--notebooks-dir", str(root / "notebooks"), "--profiles-dir", str(root / "profiles"),
            "--results-root", str(root / "results"), "--figures-root", str(root / "figures"),
            "--work-root", str(root / "work"), "--runs-root", str(root / "runs"),
            "--executed-root", str(root / "notebooks"), "--package-dir", str(root / "pkg")]


def test_second_pipeline_with_no_wait_refuses_at_once(tmp_path):
    folders = _tiny_repo(tmp_path / "repo")
    release = tmp_path / "release"
    holder = _holder(tmp_path / "repo" / "work", release)
    try:
        t0 = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "cag_utils.run.pipeline", "--profile", "smoke", "--no-wait",
                                 *folders], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert second.returncode == 3, second.stderr
        assert "another run (process" in second.stderr and "--no-wait" in second.stderr
        assert str(holder.pid) in second.stderr
        assert not (tmp_path / "repo" / "results").exists()  # nothing ran
        assert time.monotonic() - t0 < 60
    finally:
        release.touch()
        holder.communicate(timeout=30)
    assert holder.returncode == 0


def test_second_run_waits_with_a_message_until_the_first_ends(tmp_path):
    work, release = tmp_path / "work", tmp_path / "release"
    holder = _holder(work, release)
    waiter = _start(WAIT, str(work))
    try:
        time.sleep(1.5)  # the waiter has started and met the lock
        assert waiter.poll() is None  # still waiting
        release.touch()
        out, err = waiter.communicate(timeout=30)
    finally:
        release.touch()
        holder.communicate(timeout=30)
        if waiter.poll() is None:
            waiter.kill()
    assert waiter.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("another run (process") and "waiting for it to finish" in lines[0]
    assert lines[-1] == "acquired" and "other run finished" in lines[-2]


def test_lock_is_per_profile_and_released_after_the_block(tmp_path):
    with run_lock(tmp_path, "smoke", log=lambda m: None):
        with run_lock(tmp_path, "paper", wait=False):  # another data folder: no clash
            pass
    with run_lock(tmp_path, "smoke", wait=False):  # released: free again
        assert json.loads((tmp_path / "smoke" / ".run.lock.json").read_text())["pid"] == os.getpid()
    assert not (tmp_path / "smoke" / ".run.lock.json").exists()


def test_no_wait_raises_in_process_while_another_process_holds_it(tmp_path):
    release = tmp_path / "release"
    holder = _holder(tmp_path, release)
    try:
        with pytest.raises(RunLockedError, match="another run"):
            with run_lock(tmp_path, "smoke", wait=False):
                pass
    finally:
        release.touch()
        holder.communicate(timeout=30)
