"""Run the numbered notebooks in order with papermill, skipping the ones that are up to date.

    python -m cag_utils.run.pipeline --profile smoke          # every notebooks/NN_*.ipynb
    python -m cag_utils.run.pipeline -p cnn_epochs=3          # a run of its own: runs/cnn_epochs-3/
    python -m cag_utils.run.pipeline --profile paper --from 02 --to 04 -p epochs=3
    python -m cag_utils.run.pipeline --only 03 --force        # rerun one step
    python -m cag_utils.run.pipeline --list                   # steps, sections, up to date?
    python -m cag_utils.run.pipeline --profile paper --check  # preflight alone: what the steps need

A step is one notebook. Its section (which profile section it reads) comes from its
`parameters`-tagged cell (`section = "data"`); it receives `profile` plus the `-p`
overrides of that section or of `common`. All overrides are checked before any step runs
(exit 2). Then the preflight (cag_utils.run.preflight) checks what each step the run will execute
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
One run at a time: a run holds a lock on `data/work/<profile>` (cag_utils.run.runlock); a second
run on the same profile waits for it with a message, or with `--no-wait` stops (exit 3).
The manifest `data/work/<profile>/pipeline_manifest.json` records a hash of the step's
inputs (source cells, parameters, package code, profile YAML, results of earlier steps)
and the sha256 of each output: a step is skipped only when both still match.

Overrides on the default profile are runs of their own: `-p` writes results/, figures/,
notebooks/ and the manifest to `runs/<name>/` (name from `--run-name`, else from the
overrides: `cnn_epochs=3` -> `cnn_epochs-3`); `--update-committed` writes the committed
outputs instead. Steps of a run read the run's results first, then the committed ones.

This module runs the steps; `cag_utils.run.steps` finds them and hashes their inputs, and
`cag_utils.run.layout` says where their outputs go and moves them into place.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import nbformat
import papermill as pm

from cag_utils.run.config import (
    DEFAULT_PROFILE, REPO_ROOT, ConfigError, output_root, load_profile, output_subdir, parse_override, profile_path,
    validate_overrides,
)
from cag_utils.run.layout import Layout, commit_outputs, out_of_date, output_layout, override_run_name, run_folder_name
from cag_utils.run.runlock import RunLockedError, run_lock
from cag_utils.run.staging import (
    Terminated, deferred_signals, kernel_output_root, new_stage, remove_stage, sigterm_raises,
)
from cag_utils.run.steps import (
    NOTEBOOKS_DIR, PACKAGE_DIR, WIDGET_STATE, WIDGET_VIEW, Step, code_digests, describe_failure,
    discover_steps, flatten_widgets, load_manifest, notebook_parameters, notebook_section, save_manifest, sha256_hex,
    format_slowest, select_steps, slowest_cells, source_digest, step_components, step_hash, step_parameters,
    strip_output, strip_timing,
)

# The names of the steps and layout modules that tests and scripts reach through this module.
__all__ = [
    "EXECUTED_ROOT", "FIGURES_ROOT", "NOTEBOOKS_DIR", "PACKAGE_DIR", "RESULTS_ROOT", "RUNS_ROOT", "WIDGET_STATE",
    "WIDGET_VIEW", "WORK_ROOT", "Layout", "Step", "StepOutcome", "code_digests", "discover_steps", "flatten_widgets",
    "known_parameters", "main", "notebook_parameters", "notebook_section", "output_layout", "override_run_name",
    "run_folder_name", "run_pipeline", "select_steps", "source_digest", "step_components", "step_hash", "step_parameters",
    "strip_timing",
]

# Honour $CAG_OUTPUT_ROOT like the notebooks do (cag_utils.run.config.output_root).
RESULTS_ROOT = output_root() / "results"
FIGURES_ROOT = output_root() / "figures"
WORK_ROOT = output_root() / "data" / "work"
# Runs of their own (overrides on the default profile): runs/<name>/{results,figures,notebooks}.
RUNS_ROOT = output_root() / "runs"
# Executed notebooks: in place (notebooks/, or notebooks/<profile>/) in the repository; under
# $CAG_OUTPUT_ROOT/notebooks when that is set, so a run elsewhere never rewrites the committed ones.
EXECUTED_ROOT = output_root() / "notebooks" if os.environ.get("CAG_OUTPUT_ROOT") else None


@dataclass
class StepOutcome:
    name: str
    section: str
    status: str    # ok | skipped | failed | not run (dry run: up to date | out of date (why))
    seconds: float = 0.0
    output: Path | None = None
    message: str = ""
    outputs: dict[str, str] | None = None   # ok: {"results/NN_name.json": sha256, ...}


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

    # One run at a time per data folder, taken before the manifest is read (cag_utils.run.runlock).
    with (contextlib.nullcontext() if dry_run else run_lock(work_root, profile, wait=wait, log=log)):
        sub = output_subdir(profile)
        manifest = load_manifest(layout.manifest)
        # A run of its own reuses the committed outputs of a step it would run with the same inputs.
        committed = None if run is None else output_layout(profile, None, results_root, figures_root,
                                                           executed_root or notebooks_dir, work_root, runs_root)
        committed_steps = load_manifest(committed.manifest)["steps"] if committed else {}
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
                inputs[s.name] = sha256_hex(found[0].read_bytes()) if found else "missing"
            nb = nbformat.read(step.path, as_version=4)
            parts = step_components(nb, params, code, profile_yaml, inputs)
            digest = step_hash(nb, params, code, profile_yaml, inputs)
            results_json = layout.roots["results"] / sub / f"{step.name}.json"
            output = layout.roots["notebooks"] / sub / step.path.name
            recorded = manifest["steps"].get(step.name, {})
            why = out_of_date(recorded, parts, digest, layout, results_json)
            inherited = bool(why) and committed is not None and not out_of_date(
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
                save_manifest(layout.manifest, manifest)

            with sigterm_raises():
                outcome = _run_step(step, params, layout, work_root, profile, notebooks_dir, kernel_name,
                                    cell_timeout, log, recorded.get("outputs") or {}, record)
            if outcome.status == "ok" and not results_json.is_file():
                log(f"[{step.name}] warning: it wrote no {_rel(results_json)}, so it never counts as up to date")
            outcomes.append(outcome)
        return outcomes


class _KnownParameters(logging.Filter):
    """Drops papermill's "Passed unknown parameter: K" for the keys the pipeline has already checked against
    the profile (`step_parameters`): the notebooks read any profile key, not only those in their parameters cell."""

    def __init__(self, names: Sequence[str]):
        super().__init__()
        self.names = set(names)

    def filter(self, record: logging.LogRecord) -> bool:
        message, prefix = record.getMessage(), "Passed unknown parameter: "
        return not (message.startswith(prefix) and message[len(prefix):] in self.names)


@contextlib.contextmanager
def known_parameters(params: Mapping[str, Any]):
    """While papermill runs: its warning about parameters outside the parameters cell, silenced for ``params``."""
    log, flt = logging.getLogger("papermill"), _KnownParameters(list(params))
    log.addFilter(flt)
    try:
        yield
    finally:
        log.removeFilter(flt)


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
            with kernel_output_root(stage), known_parameters(params):
                pm.execute_notebook(
                    step.path, staged, parameters=dict(params), kernel_name=kernel_name, cwd=notebooks_dir,
                    execution_timeout=cell_timeout, progress_bar=False, log_output=False,
                )
        except (Exception, KeyboardInterrupt) as exc:  # any failure stops the pipeline with a report
            seconds = time.perf_counter() - t0
            try:
                executed, last_started = strip_output(staged)
            except Exception:   # a notebook cut off while papermill wrote it
                executed, last_started = None, None
            message = describe_failure(exc, executed, last_started)
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
        slowest = slowest_cells(nbformat.read(staged, as_version=4))
        strip_output(staged)
        with deferred_signals():
            outputs = commit_outputs(stage, stamps, layout, previous)
            record(outputs, seconds)
        lost = sorted(p.name for p in stage.iterdir() if p.name not in (*layout.roots, "data"))
        if lost:
            log(f"[{step.name}] warning: it wrote {', '.join(lost)} outside results/ and figures/; not kept")
    finally:
        remove_stage(stage)
    log(f"[{step.name}] ok in {seconds:.1f} s" + (f"; slowest: {format_slowest(slowest)}" if slowest else ""))
    return StepOutcome(step.name, step.section, "ok", seconds, layout.roots["notebooks"] / sub / step.path.name,
                       outputs=outputs)


def _preflight(profile: str, kw: dict[str, Any], check: bool) -> int:
    """Print the preflight table of the steps this command would execute; return its number of problems.
    Wrong overrides stop a run as before (ConfigError); with `check` the table names them."""
    from cag_utils.run import preflight

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
    parser = argparse.ArgumentParser(prog="python -m cag_utils.run.pipeline", description=__doc__.split("\n\n")[0])
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
