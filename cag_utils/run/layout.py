"""Where a run's outputs go, and moving a finished step's outputs into place (`cag_utils.run.pipeline`).

The default profile writes the committed folders (results/, figures/, notebooks/); another profile
its subfolders; overrides on the default profile are runs of their own under `runs/<name>/`
(the name from `--run-name`, else from the overrides: `cnn_epochs=3` -> `cnn_epochs-3`), which
read the run's results first, then the committed ones. The manifest names an output
'<kind>/<path under its root>' with its sha256; a step is up to date only while each is in place.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from cag_utils.run.config import DEFAULT_PROFILE, ConfigError, output_subdir
from cag_utils.run.staging import place, stamp
from cag_utils.run.steps import sha256_hex

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")


# ---------------------------------------------------------------- where outputs go

def override_run_name(overrides: Mapping[str, Any]) -> str:
    """A folder name from the overrides: {'cnn_epochs': 3} -> 'cnn_epochs-3', several joined by '+'."""
    parts = []
    for key in sorted(overrides):
        value = overrides[key] if isinstance(overrides[key], str) else json.dumps(overrides[key])
        parts.append(f"{key}-{re.sub(r'[^A-Za-z0-9._]+', '-', value).strip('-')}")
    name = "+".join(parts)
    return name if len(name) <= 80 else f"{name[:67]}-{sha256_hex(name)[:12]}"


def run_folder_name(profile: str, overrides: Mapping[str, Any], run_name: str | None = None,
                    update_committed: bool = False) -> str | None:
    """Name of the run's own folder under runs/, or None when it writes the profile's usual outputs.

    Overrides on the default profile would otherwise replace the committed reference outputs
    with another configuration's, so they get a folder unless `update_committed` says otherwise.
    """
    if run_name is not None and update_committed:
        raise ConfigError("--run-name and --update-committed exclude each other")
    if run_name is None:
        if update_committed or profile != DEFAULT_PROFILE or not overrides:
            return None
        run_name = override_run_name(overrides)
    if not RUN_NAME.match(run_name):
        raise ConfigError(f"run name {run_name!r}: use letters, digits and . _ + - (at most 100)")
    return run_name


@dataclass(frozen=True)
class Layout:
    """Where a run's outputs live. The manifest names an output '<kind>/<path under its root>'."""
    roots: dict[str, Path]    # results, figures, notebooks
    manifest: Path
    failed: Path              # partial notebooks of failed or interrupted steps
    read_results: tuple[Path, ...]   # results folders steps read, first match wins

    def path(self, key: str) -> Path:
        kind, rel = key.split("/", 1)
        return self.roots[kind] / rel


def output_layout(profile: str, run_name: str | None, results_root: Path, figures_root: Path,
                  executed_root: Path, work_root: Path, runs_root: Path) -> Layout:
    """The committed (or profile) folders, or those of runs/<run_name>/ reading committed results too."""
    sub = output_subdir(profile)
    committed = Path(results_root) / sub
    if run_name is None:
        return Layout({"results": Path(results_root), "figures": Path(figures_root), "notebooks": Path(executed_root)},
                      Path(work_root) / profile / "pipeline_manifest.json", Path(work_root) / profile / "failed",
                      (committed,))
    run = Path(runs_root) / run_name
    return Layout({kind: run / kind for kind in ("results", "figures", "notebooks")}, run / "pipeline_manifest.json",
                  Path(work_root) / profile / "failed" / run_name, (run / "results" / sub, committed))


def out_of_date(recorded: Mapping[str, Any], parts: Mapping[str, str], digest: str, layout: Layout,
                 results_json: Path) -> str:
    """Why a step is out of date in `layout` ('' when it is not): manifest entry, inputs, outputs."""
    changed = [k for k in parts if recorded.get("components", {}).get(k) != parts[k]]
    return ("never run" if not recorded
            else "no results JSON" if not results_json.is_file()
            else f"{', '.join(changed)} changed" if changed
            else "inputs changed" if recorded.get("hash") != digest
            else outputs_problem(recorded.get("outputs"), layout))


def outputs_problem(outputs: Mapping[str, str] | None, layout: Layout) -> str:
    """'' when every recorded output is in place with its recorded sha256, else what is wrong."""
    if not outputs:
        return "outputs not recorded"
    for key, sha in sorted(outputs.items()):
        path = layout.path(key) if key.split("/", 1)[0] in layout.roots else None
        if path is None or not path.is_file():
            return f"{key} missing"
        if sha256_hex(path.read_bytes()) != sha:
            return f"{key} changed"
    return ""


# ---------------------------------------------------------------- committing a step

def commit_outputs(stage: Path, stamps: Mapping[Path, tuple[int, int, int]], layout: Layout,
            previous: Mapping[str, str]) -> dict[str, str]:
    """Move what the step wrote into place; return {output: sha256}.

    Outputs of the step's previous run that it no longer writes are removed, so that no
    stale figure or table stays beside the new ones.
    """
    outputs: dict[str, str] = {}
    for kind in layout.roots:
        base = stage / kind
        for src in sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else []:
            if stamps.get(src) != stamp(src):
                key = f"{kind}/{src.relative_to(base).as_posix()}"
                outputs[key] = sha256_hex(src.read_bytes())
                place(src, layout.path(key))
    for key in sorted(set(previous) - set(outputs)):
        if key.split("/", 1)[0] in layout.roots:
            layout.path(key).unlink(missing_ok=True)
    return outputs
