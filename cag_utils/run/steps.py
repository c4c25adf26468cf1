"""The numbered notebooks as pipeline steps: which there are, what each receives, and the hash that
says whether one is up to date (`cag_utils.run.pipeline` runs them).

A step is one notebook `notebooks/NN_name.ipynb`; its section (which profile section it reads)
comes from its `parameters`-tagged cell (`section = "data"`). Its hash covers its source cells,
its parameters, every `*.py` of the package (by path under `cag_utils/`, so a moved module counts as
changed code), the profile YAML and the results of the steps before it. Executed notebooks are
saved without timing metadata or progress-bar widget state, so reruns do not churn git.
"""
from __future__ import annotations

import ast
import hashlib
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import nbformat
import papermill as pm

from cag_utils.run.config import REPO_ROOT, ConfigError, key_sections

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
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

def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def source_digest(nb: nbformat.NotebookNode) -> str:
    """Hash of the cells' type and source; outputs and papermill's own cells do not count."""
    cells = [[c.cell_type, c.source] for c in nb.cells
             if not set(c.metadata.get("tags", [])) & set(GENERATED_TAGS)]
    return sha256_hex(json.dumps(cells))


def code_digests(package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """Hash of every `*.py` under the package, by relative path."""
    return {p.relative_to(package_dir).as_posix(): sha256_hex(p.read_bytes())
            for p in sorted(Path(package_dir).rglob("*.py"))}


def step_components(nb: nbformat.NotebookNode, parameters: Mapping[str, Any], code: Mapping[str, str],
                    profile_yaml: str, inputs: Mapping[str, str]) -> dict[str, str]:
    """One digest per thing a step depends on (kept in the manifest to say what changed)."""
    return {
        "source": source_digest(nb),
        "parameters": sha256_hex(json.dumps(parameters, sort_keys=True)),
        "code": sha256_hex(json.dumps(dict(code), sort_keys=True)),
        "profile": sha256_hex(profile_yaml),
        "inputs": sha256_hex(json.dumps(dict(inputs), sort_keys=True)),
    }


def step_hash(nb: nbformat.NotebookNode, parameters: Mapping[str, Any], code: Mapping[str, str],
              profile_yaml: str, inputs: Mapping[str, str]) -> str:
    """The hash that decides whether a step is up to date."""
    return sha256_hex(json.dumps(step_components(nb, parameters, code, profile_yaml, inputs), sort_keys=True))


def load_manifest(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"steps": {}}


def save_manifest(path: Path, manifest: dict[str, Any]) -> None:
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


def strip_output(path: Path) -> tuple[nbformat.NotebookNode | None, int | None]:
    """Rewrite an executed notebook without timing; return it and the last cell papermill started."""
    if not path.is_file():
        return None, None
    nb = nbformat.read(path, as_version=4)
    started = [i for i, c in enumerate(nb.cells) if c.metadata.get("papermill", {}).get("start_time")]
    nbformat.write(strip_timing(nb), path)
    return nb, (started[-1] if started else None)


def slowest_cells(nb: nbformat.NotebookNode, top: int = 3) -> list[tuple[int, float, str]]:
    """The `top` code cells that took longest, as papermill timed them (before `strip_timing`):
    (cell index, seconds, first source line), slowest first."""
    timed = [(i, float(c.metadata.get("papermill", {}).get("duration") or 0.0), _first_line(c.source))
             for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    return sorted((t for t in timed if t[1] > 0), key=lambda t: -t[1])[:top]


def format_slowest(cells: Sequence[tuple[int, float, str]]) -> str:
    """'cell 10 512.3 s (result = train_classifier(...)); ...' for the pipeline's log."""
    return "; ".join(f"cell {i} {s:.1f} s ({line[:60]})" for i, s, line in cells)


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def describe_failure(exc: BaseException, nb: nbformat.NotebookNode | None, last_started: int | None) -> str:
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
