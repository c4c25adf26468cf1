"""Run the numbered notebooks in order with papermill, skipping the ones that are up to date.

    python -m cag_utils.pipeline --profile smoke              # every notebooks/NN_*.ipynb
    python -m cag_utils.pipeline --profile paper --from 02 --to 04 -p epochs=3
    python -m cag_utils.pipeline --only 03 --force            # rerun one step
    python -m cag_utils.pipeline --list                       # steps, sections, up to date?

A step is one notebook. Its section (which profile section it reads) comes from its
`parameters`-tagged cell (`section = "data"`); it receives `profile` plus the `-p`
overrides of that section or of `common`. All overrides are checked before any step runs
(exit 2). The default profile executes the notebooks in place (they carry the smoke
outputs); other profiles write `notebooks/<profile>/NN_name.ipynb`. Timing metadata is
stripped so reruns do not churn git. A step is skipped when the hash of its source cells,
parameters, package code, profile YAML and the results of earlier steps matches
`data/work/<profile>/pipeline_manifest.json` and its `results/.../NN_name.json` exists.
A failing step stops the run (exit 1); results JSONs it wrote become `*.json.failed`.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import nbformat
import papermill as pm

from cag_utils.config import (
    DEFAULT_PROFILE, REPO_ROOT, ConfigError, output_root, key_sections, load_profile, output_subdir,
    parse_override, profile_path, validate_overrides,
)

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
# Honour $CAG_OUTPUT_ROOT like the notebooks do (cag_utils.config.output_root).
RESULTS_ROOT = output_root() / "results"
WORK_ROOT = output_root() / "data" / "work"
# Executed notebooks: in place (notebooks/, or notebooks/<profile>/) in the repository; under
# $CAG_OUTPUT_ROOT/notebooks when that is set, so a run elsewhere never rewrites the committed ones.
EXECUTED_ROOT = output_root() / "notebooks" if os.environ.get("CAG_OUTPUT_ROOT") else None
PACKAGE_DIR = REPO_ROOT / "cag_utils"
STEP_PATTERN = re.compile(r"^(\d+)_.+\.ipynb$")
# Cells papermill adds itself: not part of a notebook's source.
GENERATED_TAGS = ("injected-parameters", "papermill-error-cell-tag")
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


@dataclass(frozen=True)
class Step:
    number: str    # "01"
    name: str      # "01_data": notebook stem, also the name of its results JSON
    path: Path
    section: str   # profile section the notebook reads


@dataclass
class StepOutcome:
    name: str
    section: str
    status: str    # ok | skipped | failed | not run (dry run: up to date | out of date (why))
    seconds: float = 0.0
    output: Path | None = None
    message: str = ""


# ---------------------------------------------------------------- steps and parameters

def notebook_parameters(nb_path: Path) -> dict[str, Any]:
    """Literal assignments of the notebook's `parameters`-tagged cell."""
    nb = nbformat.read(nb_path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise ConfigError(f"{nb_path.name}: no cell tagged 'parameters'")
    values: dict[str, Any] = {}
    try:
        body = ast.parse(cells[0].source).body
    except SyntaxError as exc:
        raise ConfigError(f"{nb_path.name}: parameters cell is not valid Python ({exc.msg})") from exc
    for node in body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                values[node.targets[0].id] = None
    return values


def notebook_section(nb_path: Path) -> str:
    """The profile section a notebook reads: `section = "..."` in its parameters cell."""
    section = notebook_parameters(nb_path).get("section")
    if not isinstance(section, str) or not section:
        raise ConfigError(f"{nb_path.name}: parameters cell has no line section = \"...\"")
    return section


def discover_steps(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Step]:
    """`NN_*.ipynb` of the folder (not its subfolders), ordered by NN."""
    found = [(int(m.group(1)), p) for p in Path(notebooks_dir).glob("*.ipynb")
             if (m := STEP_PATTERN.match(p.name))]
    steps = [Step(p.name.split("_", 1)[0], p.stem, p, notebook_section(p)) for _, p in sorted(found)]
    numbers = [int(s.number) for s in steps]
    if len(set(numbers)) != len(numbers):
        dupes = sorted({s.name for s in steps if numbers.count(int(s.number)) > 1})
        raise ConfigError(f"two notebooks share a number: {', '.join(dupes)}")
    return steps


def _matches(step: Step, token: str) -> bool:
    return token == step.name or (token.isdigit() and int(token) == int(step.number))


def select_steps(steps: Sequence[Step], start: str | None = None, stop: str | None = None,
                 only: Sequence[str] | None = None) -> list[Step]:
    """Steps from `start` to `stop` (inclusive), or the `only` ones; tokens are NN or names."""
    def index(token: str) -> int:
        for i, step in enumerate(steps):
            if _matches(step, token):
                return i
        raise ConfigError(f"no notebook {token!r}; steps: {', '.join(s.name for s in steps)}")

    if only:
        wanted = {index(t) for t in only}
        return [s for i, s in enumerate(steps) if i in wanted]
    lo = index(start) if start else 0
    hi = index(stop) if stop else len(steps) - 1
    return list(steps[lo:hi + 1])


def step_parameters(step: Step, profile: str, overrides: Mapping[str, Any],
                    profiles_dir: Path | None = None) -> dict[str, Any]:
    """`profile` plus the (validated) overrides whose key is in the step's section or `common`."""
    owners = key_sections(profile, profiles_dir)
    params: dict[str, Any] = {"profile": profile}
    for key in sorted(overrides):
        if overrides[key] is not None and owners.get(key) in (step.section, "common"):
            params[key] = overrides[key]
    return params


# ---------------------------------------------------------------- hashing and manifest

def _digest(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def source_digest(nb: nbformat.NotebookNode) -> str:
    """Hash of the cells' type and source; outputs and papermill's own cells do not count."""
    cells = [[c.cell_type, c.source] for c in nb.cells
             if not set(c.metadata.get("tags", [])) & set(GENERATED_TAGS)]
    return _digest(json.dumps(cells))


def code_digests(package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """Hash of every `*.py` under the package, by relative path."""
    return {p.relative_to(package_dir).as_posix(): _digest(p.read_bytes())
            for p in sorted(Path(package_dir).rglob("*.py"))}


def step_components(nb: nbformat.NotebookNode, parameters: Mapping[str, Any], code: Mapping[str, str],
                    profile_yaml: str, inputs: Mapping[str, str]) -> dict[str, str]:
    """One digest per thing a step depends on (kept in the manifest to say what changed)."""
    return {
        "source": source_digest(nb),
        "parameters": _digest(json.dumps(parameters, sort_keys=True)),
        "code": _digest(json.dumps(dict(code), sort_keys=True)),
        "profile": _digest(profile_yaml),
        "inputs": _digest(json.dumps(dict(inputs), sort_keys=True)),
    }


def step_hash(nb: nbformat.NotebookNode, parameters: Mapping[str, Any], code: Mapping[str, str],
              profile_yaml: str, inputs: Mapping[str, str]) -> str:
    """The hash that decides whether a step is up to date."""
    return _digest(json.dumps(step_components(nb, parameters, code, profile_yaml, inputs), sort_keys=True))


def _load_manifest(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"steps": {}}


def _save_manifest(path: Path, manifest: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


# ---------------------------------------------------------------- notebooks

def strip_timing(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop run-specific metadata (times, paths, random ids of papermill's cells); in place."""
    papermill_meta = nb.metadata.get("papermill", {})
    if papermill_meta:
        nb.metadata["papermill"] = {"parameters": papermill_meta.get("parameters", {})}
    nb.metadata["kernelspec"] = {**nb.metadata.get("kernelspec", {}), **KERNELSPEC}
    for i, cell in enumerate(nb.cells):
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags:
            cell["id"] = "injected-parameters"
        elif "papermill-error-cell-tag" in tags:
            cell["id"] = f"papermill-error-{i}"
    return nb


def _strip_output(path: Path) -> tuple[nbformat.NotebookNode | None, int | None]:
    """Rewrite an executed notebook without timing; return it and the last cell papermill started."""
    if not path.is_file():
        return None, None
    nb = nbformat.read(path, as_version=4)
    started = [i for i, c in enumerate(nb.cells) if c.metadata.get("papermill", {}).get("start_time")]
    nbformat.write(strip_timing(nb), path)
    return nb, (started[-1] if started else None)


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def _describe_failure(exc: Exception, nb: nbformat.NotebookNode | None, last_started: int | None) -> str:
    """'cell In [n] (index i): first line' and the error; for timeouts, the last cell started."""
    if isinstance(exc, pm.PapermillExecutionError):
        count, index, source = exc.exec_count, exc.cell_index, exc.source or ""
        error = f"{exc.ename}: {exc.evalue}"
    elif nb is not None and last_started is not None:
        cell = nb.cells[last_started]
        count, index, source = cell.get("execution_count"), last_started, cell.source
        error = f"{type(exc).__name__}: {_first_line(str(exc))}"
    else:
        return f"start: {type(exc).__name__}: {_first_line(str(exc))}"
    return f"cell In [{count}] (index {index}): {_first_line(source)}\n    {error}"


def _snapshot(folder: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.glob("*.json")} if folder.is_dir() else {}


def _quarantine_new_results(folder: Path, before: Mapping[Path, tuple[int, int]]) -> list[Path]:
    """Rename every results JSON written since `before` to `*.json.failed`."""
    moved = []
    for path, stamp in _snapshot(folder).items():
        if before.get(path) != stamp:
            target = path.with_name(path.name + ".failed")
            path.replace(target)
            moved.append(target)
    return sorted(moved)


# ---------------------------------------------------------------- the pipeline

def _rel(path: Path) -> str:
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def run_pipeline(
    profile: str = DEFAULT_PROFILE, *, start: str | None = None, stop: str | None = None,
    only: Sequence[str] | None = None, overrides: Mapping[str, Any] | None = None,
    force: bool = False, dry_run: bool = False, cell_timeout: int = 3600,
    notebooks_dir: Path = NOTEBOOKS_DIR, profiles_dir: Path | None = None,
    results_root: Path = RESULTS_ROOT, work_root: Path = WORK_ROOT, package_dir: Path = PACKAGE_DIR,
    kernel_name: str = "python3", log: Callable[[str], None] = print, executed_root: Path | None = EXECUTED_ROOT,
) -> list[StepOutcome]:
    """Run (or with `dry_run`, only assess) the selected steps; ConfigError before any runs.

    With `dry_run` the outcome status is 'up to date' or 'out of date (why)'.
    """
    notebooks_dir = Path(notebooks_dir)
    steps = discover_steps(notebooks_dir)
    if not steps:
        raise ConfigError(f"no notebooks NN_*.ipynb in {notebooks_dir}")
    selected = select_steps(steps, start, stop, only)
    if not selected:
        raise ConfigError(f"no step between {start!r} and {stop!r}")
    raw = load_profile(profile, profiles_dir)
    for step in selected:
        if step.section not in raw:
            raise ConfigError(f"{step.name}: profile {profile!r} has no section {step.section!r}")
    checked = validate_overrides(profile, overrides or {}, tuple(sorted({s.section for s in selected})),
                                 profiles_dir)

    results_dir = Path(results_root) / output_subdir(profile)
    out_dir = Path(executed_root or notebooks_dir) / output_subdir(profile)
    manifest_path = Path(work_root) / profile / "pipeline_manifest.json"
    manifest = _load_manifest(manifest_path)
    code = code_digests(package_dir)
    profile_yaml = profile_path(profile, profiles_dir).read_text(encoding="utf-8")

    outcomes: list[StepOutcome] = []
    stale_before = False   # dry run: an earlier step will rerun, so this one's inputs will change
    for step in selected:
        if outcomes and outcomes[-1].status in ("failed", "not run"):
            outcomes.append(StepOutcome(step.name, step.section, "not run"))
            log(f"[{step.name}] not run (an earlier step failed)")
            continue
        params = step_parameters(step, profile, checked, profiles_dir)
        # Inputs: the results of every earlier step, so a rerun upstream invalidates this one.
        inputs = {s.name: _digest(p.read_bytes()) if (p := results_dir / f"{s.name}.json").is_file()
                  else "missing" for s in steps[:steps.index(step)]}
        nb = nbformat.read(step.path, as_version=4)
        parts = step_components(nb, params, code, profile_yaml, inputs)
        digest = step_hash(nb, params, code, profile_yaml, inputs)
        results_json = results_dir / f"{step.name}.json"
        output = out_dir / step.path.name
        recorded = manifest["steps"].get(step.name, {})
        up_to_date = recorded.get("hash") == digest and results_json.is_file()
        if dry_run:
            changed = [k for k in parts if recorded.get("components", {}).get(k) != parts[k]]
            status = ("out of date (never run)" if not recorded
                      else "out of date (no results JSON)" if not results_json.is_file()
                      else f"out of date ({', '.join(changed)} changed)" if not up_to_date
                      else "out of date (an earlier step reruns)" if stale_before else "up to date")
            stale_before = stale_before or status != "up to date"
            outcomes.append(StepOutcome(step.name, step.section, status, output=output))
            continue
        if up_to_date and not force:
            outcomes.append(StepOutcome(step.name, step.section, "skipped", output=output))
            log(f"[{step.name}] skipped (up to date)")
            continue

        output.parent.mkdir(parents=True, exist_ok=True)
        before = _snapshot(results_dir)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(
                step.path, output, parameters=params, kernel_name=kernel_name, cwd=notebooks_dir,
                execution_timeout=cell_timeout, progress_bar=False, log_output=False,
            )
        except (Exception, KeyboardInterrupt) as exc:  # any failure stops the pipeline with a report
            seconds = time.perf_counter() - t0
            executed, last_started = _strip_output(output)
            moved = _quarantine_new_results(results_dir, before)
            message = _describe_failure(exc, executed, last_started)
            log(f"[{step.name}] FAILED after {seconds:.1f} s at {message}")
            log(f"    partial output: {_rel(output)}"
                + (f"; results set aside: {', '.join(_rel(p) for p in moved)}" if moved else ""))
            if isinstance(exc, KeyboardInterrupt):
                raise
            outcomes.append(StepOutcome(step.name, step.section, "failed", seconds, output, message))
            continue
        seconds = time.perf_counter() - t0
        _strip_output(output)
        manifest["steps"][step.name] = {"hash": digest, "components": parts, "parameters": params,
                                        "seconds": round(seconds, 1)}
        _save_manifest(manifest_path, manifest)
        log(f"[{step.name}] ok in {seconds:.1f} s")
        if not results_json.is_file():
            log(f"[{step.name}] warning: it wrote no {_rel(results_json)}, so it never counts as up to date")
        outcomes.append(StepOutcome(step.name, step.section, "ok", seconds, output))
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cag_utils.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="configs/profiles/<name>.yaml")
    parser.add_argument("--from", dest="start", metavar="NN", help="first step (number or name)")
    parser.add_argument("--to", dest="stop", metavar="NN", help="last step (inclusive)")
    parser.add_argument("--only", action="append", metavar="NN", help="run only this step (repeatable)")
    parser.add_argument("-p", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one profile setting (YAML value), repeatable")
    parser.add_argument("--force", action="store_true", help="rerun steps that are up to date")
    parser.add_argument("--list", action="store_true", help="list steps, sections and state; run nothing")
    parser.add_argument("--cell-timeout", type=int, default=3600, metavar="S", help="seconds per cell")
    # Folders, for tests and odd layouts.
    parser.add_argument("--notebooks-dir", type=Path, default=NOTEBOOKS_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--profiles-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--results-root", type=Path, default=RESULTS_ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--work-root", type=Path, default=WORK_ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.only and (args.start or args.stop):
        parser.error("--only cannot be combined with --from/--to")
    try:
        overrides = dict(parse_override(text) for text in args.overrides)
        outcomes = run_pipeline(
            args.profile, start=args.start, stop=args.stop, only=args.only, overrides=overrides,
            force=args.force, dry_run=args.list, cell_timeout=args.cell_timeout,
            notebooks_dir=args.notebooks_dir, profiles_dir=args.profiles_dir,
            results_root=args.results_root, work_root=args.work_root,
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.list:
        width = max(len(o.name) for o in outcomes)
        print(f"profile {args.profile}: {len(outcomes)} step(s)")
        for o in outcomes:
            print(f"  {o.name:<{width}}  {o.section:<10}  {o.status}")
        return 0
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
