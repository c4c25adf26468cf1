"""Self-checking caches of stages 1 and 2: a content hash written with each cache, checked on reading.

Writers record the sha256 of what they wrote, in `sha256sum` format (`<hex>  <name>`, so
`sha256sum -c` checks them by hand too):
  processed cohorts   data/work/<profile>/processed/<fp>/<cohort>/SHA256SUMS   (ingest.save_dataset)
  corpus              data/work/<profile>/corpus/SHA256SUMS                     (corpus.write_corpus)
  CNN checkpoints     <file>.sha256 beside best/last.safetensors, last_state.pt, config.json,
                      backbone.safetensors and pretrain.json (cnn.train, cnn.pretrain)
Readers check before use; a hash that differs or a file that cannot be read is either rebuilt
(training checkpoints, the pretraining cohort and backbone: logged on `cag_utils.cache`) or
stops the run with `CacheError`, which names the folder and the command that rebuilds it.
A cache written before these checks (no hash recorded) is only checked for readability.
A hash file written after its data (a crash in between) reads as damage: a rebuild, never
a silent use.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["SUMS_NAME", "CacheError", "check_file", "check_folder", "file_sha256", "fix_command", "log", "seal",
           "write_sums"]

SUMS_NAME = "SHA256SUMS"
log = logging.getLogger("cag_utils.cache")


class CacheError(RuntimeError):
    """A cache is damaged (hash differs, or unreadable) and is not rebuilt here."""

    def __init__(self, folder: str | Path, problem: str, fix: str) -> None:
        self.folder, self.problem, self.fix = str(folder), problem, fix
        super().__init__(f"damaged cache {_short(folder)}: {problem}. To rebuild it: {fix}")


def _short(folder: str | Path) -> str:
    """data/work/... when the folder lies there, else the path as given."""
    parts = Path(folder).parts
    for i in range(len(parts) - 1):
        if parts[i:i + 2] == ("data", "work"):
            return "/".join(parts[i:])
    return str(folder)


def fix_command(folder: str | Path, step: str) -> str:
    """The pipeline command that rebuilds a cache of notebook `step` lying under data/work/<profile>/."""
    parts = Path(folder).parts
    profile = next((parts[i + 2] for i in range(len(parts) - 2) if parts[i:i + 2] == ("data", "work")), None)
    where = f" --profile {profile}" if profile else ""
    return f"python -m cag_utils.run.pipeline{where} --only {step} --force"


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_sums(folder: str | Path, names: Iterable[str]) -> Path:
    """Record the sha256 of `names` (relative to `folder`) in `folder/SHA256SUMS`."""
    folder = Path(folder)
    lines = [f"{file_sha256(folder / n)}  {Path(n).as_posix()}\n" for n in sorted(names)]
    _write_atomic(folder / SUMS_NAME, "".join(lines))
    return folder / SUMS_NAME


def seal(path: str | Path) -> None:
    """Record the sha256 of one file beside it (`<file>.sha256`)."""
    path = Path(path)
    _write_atomic(path.with_name(path.name + ".sha256"), f"{file_sha256(path)}  {path.name}\n")


def _check_sums(sums: Path) -> list[str]:
    problems = []
    for i, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), start=1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            problems.append(f"{sums.name} line {i} is malformed")
        elif not (sums.parent / name).is_file():
            problems.append(f"{name} is missing")
        elif file_sha256(sums.parent / name) != digest:
            problems.append(f"{name} does not match its recorded sha256 (truncated or altered)")
    return problems


def check_folder(folder: str | Path) -> list[str]:
    """Problems with the files listed in `folder/SHA256SUMS` ([] when fine or none recorded)."""
    sums = Path(folder) / SUMS_NAME
    return _check_sums(sums) if sums.is_file() else []


def check_file(path: str | Path) -> str | None:
    """The problem with one sealed file, or None (also when no hash was recorded and the file exists)."""
    path = Path(path)
    if not path.is_file():
        return f"{path.name} is missing"
    sidecar = path.with_name(path.name + ".sha256")
    if not sidecar.is_file():
        return None
    problems = _check_sums(sidecar)
    return problems[0] if problems else None
