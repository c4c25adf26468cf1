"""Self-checking stage-3 caches: stand-in folders, assembled VLMs and LoRA adapters (issue 24, part 4).

The mechanism is ``cag_utils.run.cachecheck``'s, applied to whole folders: the writer records every
file's sha256 in ``<folder>/SHA256SUMS`` last (``seal_folder``), the reader checks it first
(``folder_problem``). A folder without SHA256SUMS (written before these checks) is only checked
for readability: every ``*.safetensors`` loads and every ``*.json`` parses.

  stand-ins         models/standins/<profile>/<part>/     make_standins.make, embedder_standin.make;
                    read by stage.load_standins, embedder_standin.load_folder: CacheError, fix `make standins`
  assembled VLMs    data/work/<profile>/vlm/<arch>-<vision>-<hash>/   standins.cached: rebuilt (logged)
  LoRA adapters     data/work/<profile>/vlm/adapters/<family>-<tag>-<hash>/   stage.finetune_family: retrained (logged)
"""
from __future__ import annotations

import json
from pathlib import Path

from cag_utils.run.cachecheck import SUMS_NAME, CacheError, check_folder, write_sums

__all__ = ["folder_problem", "require_intact", "seal_folder", "shown", "standin_fix"]


def _files(folder: Path, skip_dirs: tuple[str, ...]) -> list[str]:
    names = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and rel.as_posix() != SUMS_NAME and not p.name.endswith(".tmp") \
                and not (rel.parts and rel.parts[0] in skip_dirs):
            names.append(rel.as_posix())
    return names


def seal_folder(folder: str | Path, skip_dirs: tuple[str, ...] = ()) -> Path:
    """Record the sha256 of every file under ``folder`` (except the top-level folders ``skip_dirs``)."""
    folder = Path(folder)
    return write_sums(folder, _files(folder, skip_dirs))


def _unreadable(folder: Path) -> str | None:
    from safetensors import safe_open

    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), "pt") as fh:
                    for key in fh.keys():
                        fh.get_tensor(key)
            elif path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
        except Exception as exc:   # any failure to decode is damage
            return f"{rel} is unreadable ({type(exc).__name__})"
    return None


def folder_problem(folder: str | Path) -> str | None:
    """What is wrong with a cached folder (sha256 differs, a listed file missing, unreadable), or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder.name} is missing"
    if (folder / SUMS_NAME).is_file():
        problems = check_folder(folder)
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        return "; ".join(problems[:3]) + more if problems else None
    return _unreadable(folder)


def shown(folder: str | Path) -> str:
    """The folder relative to the repository when it lies inside it."""
    from cag_utils.run.config import REPO_ROOT

    try:
        return Path(folder).resolve().relative_to(REPO_ROOT.resolve()).as_posix()
    except ValueError:
        return str(folder)


def standin_fix(profile: str, only: str | None = None) -> str:
    extra = f" --only {only}" if only else ""
    return f"make standins (python -m cag_utils.vlm.make_standins --profile {profile}{extra})"


def require_intact(folder: str | Path, fix: str) -> None:
    """CacheError naming ``folder`` and ``fix`` when ``folder_problem`` finds something."""
    if problem := folder_problem(folder):
        raise CacheError(shown(folder), problem, fix)
