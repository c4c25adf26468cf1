"""One run at a time per data folder: a file lock on `data/work/<profile>`.

The pipeline (`python -m cag_utils.run.pipeline`) holds `data/work/<profile>/.run.lock` (the
`filelock` package: an OS lock, released when the process ends, even when it is killed)
from before it reads the manifest until its last step is done. A second run on the same
profile waits, saying so once, or with `--no-wait` stops at once with `RunLockedError`
(exit 3). `--list` takes no lock. The holder's process id and start time are kept beside the
lock (`.run.lock.json`) only to name it in that message.
"""
from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

__all__ = ["LOCK_NAME", "RunLockedError", "run_lock"]

LOCK_NAME = ".run.lock"


class RunLockedError(RuntimeError):
    """Another run holds the data folder and the caller asked not to wait."""


def _holder(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.with_suffix(".lock.json").read_text(encoding="utf-8"))
        return f"process {info['pid']} on {info['host']}, started {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def run_lock(work_root: str | Path, profile: str, wait: bool = True, log: Callable[[str], None] = print,
             poll_s: float = 0.5) -> Iterator[Path]:
    """Hold the lock of `work_root/profile` for the block; yields the lock file's path.

    wait=False: RunLockedError at once when another process holds it; else wait (logged once)."""
    folder = Path(work_root) / profile
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        where = f"data/work/{profile}" if Path(work_root).name == "work" else str(folder)
        if not wait:
            raise RunLockedError(f"another run ({_holder(path)}) is using {where}; wait for it, or rerun "
                                 f"without --no-wait to wait for it automatically") from None
        log(f"another run ({_holder(path)}) is using {where}: waiting for it to finish "
            f"(Ctrl-C stops; --no-wait refuses instead)")
        t0 = time.monotonic()
        lock.acquire(poll_interval=poll_s)
        log(f"the other run finished after {time.monotonic() - t0:.0f} s waiting; starting")
    info = path.with_suffix(".lock.json")
    try:
        info.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                    "since": time.strftime("%Y-%m-%d %H:%M:%S")}), encoding="utf-8")
        yield path
    finally:
        info.unlink(missing_ok=True)
        lock.release()
