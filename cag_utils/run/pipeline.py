"""Run the numbered notebooks in order with papermill, skipping the ones that are up to date.

    python -m cag_utils.pipeline --profile smoke              # every notebooks/NN_*.ipynb
    python -m cag_utils.pipeline -p cnn_epochs=3              # a run of its own: runs/cnn_epochs-3/
    python -m cag_utils.pipeline --profile paper --from 02 --to 04 -p epochs=3
    python -m cag_utils.pipeline --only 03 --force            # rerun one step
    python -m cag_utils.pipeline --list                       # steps, sections, up to date?
    python -m cag_utils.pipeline --profile paper --check      # preflight alone: what the steps need

A step is one notebook. Its section (which profile section it reads) comes from its
`parameters`-tagged cell (`section = "data"`); it receives `profile` plus the `-p`
overrides of that section or of `common`. All overrides are checked before any step runs
(exit 2). Then the preflight (cag_utils.preflight) checks what each step the run will execute
needs (checkpoints, a CUDA device for `device: cuda`, disk space, the salt of real exams,
labels and reports files, each step's settings) and prints one table; a problem stops the run
before its first step (exit 2). `--check` prints that table alone. The default profile
executes the notebooks in place (they carry the smoke outputs); other profiles write
`notebooks/<profile>/NN_name.ipynb`. Timing metadata is stripped so reruns do not churn git.

Safe runs: a step executes into a staging output root `data/work/<profile>/staging/NN_name-*`
(the kernel's `$CAG_OUTPUT_ROOT`, whose `data/work` links the real one, so caches and
checkpoints are shared and a step resumes). Its executed notebook and the files it wrote
under results/ and figures/ replace the previous ones only when it succeeds; a failure,
Ctrl-C or SIGTERM leaves them byte-identical, keeps the partial notebook in
`data/work/<profile>/failed/` and stops the run (exit 1, or 130/143 when interrupted).
One run at a time: a run holds a lock on `data/work/<profile>` (cag_utils.runlock); a second
run on the same profile waits for it with a message, or with `--no-wait` stops (exit 3).
The manifest `data/work/<profile>/pipeline_manifest.json` records a hash of the step's
inputs (source cells, parameters, package code, profile YAML, results of earlier steps)
and the sha256 of each output: a step is skipped only when both still match.

Overrides on the default profile are runs of their own: `-p` writes results/, figures/,
notebooks/ and the manifest to `runs/<name>/` (name from `--run-name`, else from the
overrides: `cnn_epochs=3` -> `cnn_epochs-3`); `--update-committed` writes the committed
outputs instead. Steps of a run read the run's results first, then the committed ones.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import html
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
from cag_utils.runlock import RunLockedError, run_lock
from cag_utils.staging import (
    Terminated, deferred_signals, kernel_output_root, new_stage, place, remove_stage, sigterm_raises, stamp,
)

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
# Honour $CAG_OUTPUT_ROOT like the notebooks do (cag_utils.config.output_root).
RESULTS_ROOT = output_root() / "results"
FIGURES_ROOT = output_root() / "figures"
WORK_ROOT = output_root() / "data" / "work"
# Runs of their own (overrides on the default profile): runs/<name>/{results,figures,notebooks}.
RUNS_ROOT = output_root() / "runs"
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
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
    outputs: dict[str, str] | None = None   # ok: {"results/NN_name.json": sha256, ...}


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

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _widget_text(state: Mapping[str, Any], model_id: str) -> str | None:
    """The final text of a tqdm progress-bar widget (HBox: prefix HTML, progress, suffix HTML)."""
    box = state.get(model_id, {}).get("state", {})
    parts = [state.get(str(c).removeprefix("IPY_MODEL_"), {}).get("state", {}) for c in box.get("children", [])]
    texts = []
    for part in parts:
        if part.get("max"):   # the progress bar itself: ten cells, as tqdm's text bar
            filled = round(10 * min(max(float(part.get("value") or 0) / float(part["max"]), 0.0), 1.0))
            texts.append("|" + "█" * filled + " " * (10 - filled) + "|")
        elif "value" in part:
            texts.append(html.unescape(str(part["value"])).replace("\u2007", " ").rstrip())
    return "".join(texts) if any(t.strip("| ") for t in texts) else None


def flatten_widgets(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Replace progress-bar widgets by their final text; drop the saved widget state; in place.

    tqdm.auto draws ipywidgets in Jupyter; papermill saves every bar's state (random model ids,
    ~1 KB each) in the notebook metadata, which bloats the committed notebooks and their diffs.
    The output keeps its text/plain fallback, set to the bar's last text, e.g.
    "100%|██████████| 30/30 [06:12<00:00, 12.10s/it, f1=0.675, loss=0.028]"."""
    state = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            view = output.get("data", {}).pop(WIDGET_VIEW, None)
            if view is not None:
                final = _widget_text(state, str(view.get("model_id", "")))
                if final:
                    output["data"]["text/plain"] = final
    return nb


def strip_timing(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop run-specific metadata (times, paths, random ids of papermill's cells, progress-bar
    widget state); in place."""
    flatten_widgets(nb)
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


def _describe_failure(exc: BaseException, nb: nbformat.NotebookNode | None, last_started: int | None) -> str:
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


# ---------------------------------------------------------------- where outputs go

def override_run_name(overrides: Mapping[str, Any]) -> str:
    """A folder name from the overrides: {'cnn_epochs': 3} -> 'cnn_epochs-3', several joined by '+'."""
    parts = []
    for key in sorted(overrides):
        value = overrides[key] if isinstance(overrides[key], str) else json.dumps(overrides[key])
        parts.append(f"{key}-{re.sub(r'[^A-Za-z0-9._]+', '-', value).strip('-')}")
    name = "+".join(parts)
    return name if len(name) <= 80 else f"{name[:67]}-{_digest(name)[:12]}"


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


def _out_of_date(recorded: Mapping[str, Any], parts: Mapping[str, str], digest: str, layout: Layout,
                 results_json: Path) -> str:
    """Why a step is out of date in `layout` ('' when it is not): manifest entry, inputs, outputs."""
    changed = [k for k in parts if recorded.get("components", {}).get(k) != parts[k]]
    return ("never run" if not recorded
            else "no results JSON" if not results_json.is_file()
            else f"{', '.join(changed)} changed" if changed
            else "inputs changed" if recorded.get("hash") != digest
            else _outputs_problem(recorded.get("outputs"), layout))


def _outputs_problem(outputs: Mapping[str, str] | None, layout: Layout) -> str:
    """'' when every recorded output is in place with its recorded sha256, else what is wrong."""
    if not outputs:
        return "outputs not recorded"
    for key, sha in sorted(outputs.items()):
        path = layout.path(key) if key.split("/", 1)[0] in layout.roots else None
        if path is None or not path.is_file():
            return f"{key} missing"
        if _digest(path.read_bytes()) != sha:
            return f"{key} changed"
    return ""


# ---------------------------------------------------------------- committing a step

def _commit(stage: Path, stamps: Mapping[Path, tuple[int, int, int]], layout: Layout,
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
                outputs[key] = _digest(src.read_bytes())
                place(src, layout.path(key))
    for key in sorted(set(previous) - set(outputs)):
        if key.split("/", 1)[0] in layout.roots:
            layout.path(key).unlink(missing_ok=True)
    return outputs


# ---------------------------------------------------------------- the pipeline

def _rel(path: Path) -> str:
    """A path for messages: relative to the output root or the repository where it can be."""
    for root in (output_root(), REPO_ROOT):
        try:
            return Path(path).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            continue
    return str(path)


def run_pipeline(
    profile: str = DEFAULT_PROFILE, *, start: str | None = None, stop: str | None = None,
    only: Sequence[str] | None = None, overrides: Mapping[str, Any] | None = None,
    force: bool = False, dry_run: bool = False, cell_timeout: int = 3600,
    run_name: str | None = None, update_committed: bool = False,
    notebooks_dir: Path = NOTEBOOKS_DIR, profiles_dir: Path | None = None,
    results_root: Path = RESULTS_ROOT, figures_root: Path = FIGURES_ROOT, work_root: Path = WORK_ROOT,
    runs_root: Path = RUNS_ROOT, package_dir: Path = PACKAGE_DIR,
    kernel_name: str = "python3", log: Callable[[str], None] = print, executed_root: Path | None = EXECUTED_ROOT,
    wait: bool = True,
) -> list[StepOutcome]:
    """Run (or with `dry_run`, only assess) the selected steps; ConfigError before any runs.

    With `dry_run` the outcome status is 'up to date' or 'out of date (why)'. Ctrl-C and
    SIGTERM propagate as KeyboardInterrupt (`Terminated`) after the step's cleanup. A run (not a
    dry run) holds the lock of `work_root/profile`: with `wait=False` RunLockedError when another
    run holds it, else it waits.
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
    run = run_folder_name(profile, checked, run_name, update_committed)
    layout = output_layout(profile, run, results_root, figures_root, executed_root or notebooks_dir,
                           work_root, runs_root)
    if run and not dry_run:
        log(f"run {run}: outputs go to {_rel(Path(runs_root) / run)} (the committed ones stay as they are)")

    # One run at a time per data folder, taken before the manifest is read (cag_utils.runlock).
    with (contextlib.nullcontext() if dry_run else run_lock(work_root, profile, wait=wait, log=log)):
        sub = output_subdir(profile)
        manifest = _load_manifest(layout.manifest)
        # A run of its own reuses the committed outputs of a step it would run with the same inputs.
        committed = None if run is None else output_layout(profile, None, results_root, figures_root,
                                                           executed_root or notebooks_dir, work_root, runs_root)
        committed_steps = _load_manifest(committed.manifest)["steps"] if committed else {}
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
            inputs = {}
            for s in steps[:steps.index(step)]:
                found = [p for folder in layout.read_results if (p := folder / f"{s.name}.json").is_file()]
                inputs[s.name] = _digest(found[0].read_bytes()) if found else "missing"
            nb = nbformat.read(step.path, as_version=4)
            parts = step_components(nb, params, code, profile_yaml, inputs)
            digest = step_hash(nb, params, code, profile_yaml, inputs)
            results_json = layout.roots["results"] / sub / f"{step.name}.json"
            output = layout.roots["notebooks"] / sub / step.path.name
            recorded = manifest["steps"].get(step.name, {})
            why = _out_of_date(recorded, parts, digest, layout, results_json)
            inherited = bool(why) and committed is not None and not _out_of_date(
                committed_steps.get(step.name, {}), parts, digest, committed,
                committed.roots["results"] / sub / results_json.name)
            if dry_run:
                status = ("up to date (committed outputs)" if inherited else f"out of date ({why})" if why
                          else "out of date (an earlier step reruns)" if stale_before else "up to date")
                stale_before = stale_before or not status.startswith("up to date")
                outcomes.append(StepOutcome(step.name, step.section, status, output=output))
                continue
            if (inherited or not why) and not force:
                outcomes.append(StepOutcome(step.name, step.section, "skipped", output=output))
                log(f"[{step.name}] skipped ({'the committed outputs are ' if inherited else ''}up to date)")
                continue

            def record(outputs: dict[str, str], seconds: float, name: str = step.name) -> None:
                manifest["steps"][name] = {"hash": digest, "components": parts, "parameters": params,
                                           "seconds": round(seconds, 1), "outputs": outputs}
                _save_manifest(layout.manifest, manifest)

            with sigterm_raises():
                outcome = _run_step(step, params, layout, work_root, profile, notebooks_dir, kernel_name,
                                    cell_timeout, log, recorded.get("outputs") or {}, record)
            if outcome.status == "ok" and not results_json.is_file():
                log(f"[{step.name}] warning: it wrote no {_rel(results_json)}, so it never counts as up to date")
            outcomes.append(outcome)
        return outcomes


def _run_step(step: Step, params: Mapping[str, Any], layout: Layout, work_root: Path, profile: str,
              notebooks_dir: Path, kernel_name: str, cell_timeout: int, log: Callable[[str], None],
              previous: Mapping[str, str], record: Callable[[dict[str, str], float], None]) -> StepOutcome:
    """Execute one step in a staging folder; only if it succeeds, move its outputs into place and
    `record` them in the manifest (both before a Ctrl-C or SIGTERM that arrives meanwhile)."""
    sub = output_subdir(profile)
    t0 = time.perf_counter()
    stage, stamps = new_stage(work_root, profile, step.name, layout.read_results)
    staged = stage / "notebooks" / sub / step.path.name
    try:
        staged.parent.mkdir(parents=True, exist_ok=True)
        try:
            with kernel_output_root(stage):
                pm.execute_notebook(
                    step.path, staged, parameters=dict(params), kernel_name=kernel_name, cwd=notebooks_dir,
                    execution_timeout=cell_timeout, progress_bar=False, log_output=False,
                )
        except (Exception, KeyboardInterrupt) as exc:  # any failure stops the pipeline with a report
            seconds = time.perf_counter() - t0
            try:
                executed, last_started = _strip_output(staged)
            except Exception:   # a notebook cut off while papermill wrote it
                executed, last_started = None, None
            message = _describe_failure(exc, executed, last_started)
            kept = layout.failed / step.path.name
            if executed is not None:
                kept.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, kept)
            word = "INTERRUPTED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            log(f"[{step.name}] {word} after {seconds:.1f} s at {message}")
            log("    outputs unchanged" + (f"; partial notebook: {_rel(kept)}" if executed is not None else ""))
            if isinstance(exc, KeyboardInterrupt):
                raise
            return StepOutcome(step.name, step.section, "failed", seconds,
                               kept if executed is not None else None, message)
        seconds = time.perf_counter() - t0
        _strip_output(staged)
        with deferred_signals():
            outputs = _commit(stage, stamps, layout, previous)
            record(outputs, seconds)
        lost = sorted(p.name for p in stage.iterdir() if p.name not in (*layout.roots, "data"))
        if lost:
            log(f"[{step.name}] warning: it wrote {', '.join(lost)} outside results/ and figures/; not kept")
    finally:
        remove_stage(stage)
    log(f"[{step.name}] ok in {seconds:.1f} s")
    return StepOutcome(step.name, step.section, "ok", seconds, layout.roots["notebooks"] / sub / step.path.name,
                       outputs=outputs)


def _preflight(profile: str, kw: dict[str, Any], check: bool) -> int:
    """Print the preflight table of the steps this command would execute; return its number of problems.
    Wrong overrides stop a run as before (ConfigError); with `check` the table names them."""
    from cag_utils import preflight

    steps = select_steps(discover_steps(kw["notebooks_dir"]), kw["start"], kw["stop"], kw["only"])
    try:   # what the run would skip as up to date (the same assessment as --list)
        skip = [o.name for o in run_pipeline(profile, dry_run=True, **kw) if o.status.startswith("up to date")]
    except ConfigError:
        if not check:
            raise
        skip = []
    rows = preflight.check_steps(profile, steps, {k: v for k, v in kw["overrides"].items() if v is not None},
                                 kw["profiles_dir"], [] if kw["force"] else skip)
    print(f"preflight of profile {profile}:\n" + preflight.format_table(rows), flush=True)
    return sum(not r.ok for r in rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cag_utils.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="configs/profiles/<name>.yaml")
    parser.add_argument("--from", dest="start", metavar="NN", help="first step (number or name)")
    parser.add_argument("--to", dest="stop", metavar="NN", help="last step (inclusive)")
    parser.add_argument("--only", action="append", metavar="NN", help="run only this step (repeatable)")
    parser.add_argument("-p", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one profile setting (YAML value), repeatable; on the default "
                             "profile the run writes to runs/<name>/")
    parser.add_argument("--run-name", metavar="NAME",
                        help="write this run's outputs to runs/NAME/ (default with -p: from the overrides)")
    parser.add_argument("--update-committed", action="store_true",
                        help="with -p on the default profile: replace the committed outputs anyway")
    parser.add_argument("--force", action="store_true", help="rerun steps that are up to date")
    parser.add_argument("--list", action="store_true", help="list steps, sections and state; run nothing")
    parser.add_argument("--check", action="store_true",
                        help="preflight only: check what the selected steps need (checkpoints, GPU, disk, salt, "
                             "input files, settings), print the table, run nothing; exit 2 on a problem. "
                             "Every run does this first and stops before its first step on a problem")
    parser.add_argument("--cell-timeout", type=int, default=3600, metavar="S", help="seconds per cell")
    parser.add_argument("--no-wait", action="store_true",
                        help="stop at once (exit 3) when another run uses data/work/<profile>, instead of waiting")
    # Folders, for tests and odd layouts.
    parser.add_argument("--notebooks-dir", type=Path, default=NOTEBOOKS_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--profiles-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--results-root", type=Path, default=RESULTS_ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--figures-root", type=Path, default=FIGURES_ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--work-root", type=Path, default=WORK_ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--runs-root", type=Path, default=RUNS_ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--executed-root", type=Path, default=EXECUTED_ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--package-dir", type=Path, default=PACKAGE_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.only and (args.start or args.stop):
        parser.error("--only cannot be combined with --from/--to")
    try:
        overrides = dict(parse_override(text) for text in args.overrides)
        kw = dict(start=args.start, stop=args.stop, only=args.only, overrides=overrides, force=args.force,
                  run_name=args.run_name, update_committed=args.update_committed,
                  notebooks_dir=args.notebooks_dir, profiles_dir=args.profiles_dir,
                  results_root=args.results_root, figures_root=args.figures_root, work_root=args.work_root,
                  runs_root=args.runs_root, executed_root=args.executed_root, package_dir=args.package_dir)
        if args.check or not args.list:
            problems = _preflight(args.profile, kw, args.check)
            if args.check or problems:
                return 2 if problems else 0
        outcomes = run_pipeline(args.profile, dry_run=args.list, cell_timeout=args.cell_timeout,
                                wait=not args.no_wait, **kw)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunLockedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'SIGINT'}): outputs unchanged; rerun the same command to resume",
              file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    if args.list:
        run = run_folder_name(args.profile, {k: v for k, v in overrides.items() if v is not None},
                              args.run_name, args.update_committed)
        width = max(len(o.name) for o in outcomes)
        print(f"profile {args.profile}" + (f", run {run} (runs/{run}/)" if run else "") + f": {len(outcomes)} step(s)")
        for o in outcomes:
            print(f"  {o.name:<{width}}  {o.section:<10}  {o.status}")
        return 0
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
