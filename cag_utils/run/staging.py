"""Staging folders and signal handling: a pipeline step never half-writes its outputs.

A step runs with `$CAG_OUTPUT_ROOT` pointing at a fresh staging folder whose `data/work`
links the real one (shared caches, resumable checkpoints). What it writes there is moved
into place only when it succeeds (`cag_utils.run.pipeline`), one file at a time by copy and
rename (`place`). SIGTERM is raised as `Terminated` (a KeyboardInterrupt) so that cleanup
runs, and Ctrl-C or SIGTERM during the final moves waits until they are done.
"""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from cag_utils.run.config import output_subdir

__all__ = ["Terminated", "deferred_signals", "kernel_output_root", "new_stage", "place", "remove_stage",
           "sigterm_raises", "stamp"]


def stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


def new_stage(work_root: Path, profile: str, step_name: str, read_results: Sequence[Path]) -> tuple[Path, dict]:
    """A fresh output root for one step, and the stamps of the results copied into it.

    Its data/work links the real data/work (shared caches, resumable checkpoints). The results
    that steps read are copied in (copies, not links: a notebook may rewrite a file in place);
    only files the step writes differ from these stamps and count as its outputs.
    """
    parent = Path(work_root) / profile / "staging"
    parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f"{step_name}-", dir=parent))
    (stage / "data").mkdir()
    (stage / "data" / "work").symlink_to(Path(work_root).resolve(), target_is_directory=True)
    results = stage / "results" / output_subdir(profile)
    results.mkdir(parents=True)
    for folder in reversed(read_results):
        for path in sorted(folder.glob("*")) if folder.is_dir() else []:
            if path.is_file():
                shutil.copyfile(path, results / path.name)
    return stage, {p: stamp(p) for p in results.iterdir()}


def remove_stage(stage: Path) -> None:
    (stage / "data" / "work").unlink(missing_ok=True)   # the link first: never walk the real data/work
    shutil.rmtree(stage, ignore_errors=True)


def place(src: Path, dest: Path) -> None:
    """Copy then rename, so `dest` is either the old file or the whole new one."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.partial")
    shutil.copyfile(src, partial)
    os.replace(partial, dest)


@contextmanager
def kernel_output_root(stage: Path) -> Iterator[None]:
    """The kernel inherits the environment: its cag_utils.run.config.output_root() is the stage."""
    previous = os.environ.get("CAG_OUTPUT_ROOT")
    os.environ["CAG_OUTPUT_ROOT"] = str(stage)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("CAG_OUTPUT_ROOT", None)
        else:
            os.environ["CAG_OUTPUT_ROOT"] = previous


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the staging folder is cleaned up and outputs stay whole."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(signal.Signals(signum).name)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM (kill, a job scheduler's time limit) into `Terminated` while steps run."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Ctrl-C or SIGTERM while outputs move into place takes effect once they all have."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    handlers = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if caught:
            signal.raise_signal(caught[0])
