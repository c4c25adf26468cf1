"""cag_utils.run.pipeline on throwaway notebooks and profiles in a tmp folder (real papermill runs)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import nbformat
import pytest

from cag_utils.run import pipeline
from cag_utils.run import steps as pipeline_steps
from cag_utils.run.config import ConfigError

PROFILE = """\
common:
  seed: 1
a:
  n: 2
  scale: 1.5
b:
  label: "x"
"""


def write_notebook(path: Path, section: str, params: dict, body: list[str]) -> Path:
    nb = nbformat.v4.new_notebook()
    head = nbformat.v4.new_code_cell(
        "\n".join([f'profile = "smoke"', f'section = "{section}"', *(f"{k} = None" for k in params)]))
    head.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}"), head,
                *(nbformat.v4.new_code_cell(src) for src in body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def saving(name: str, value: str) -> str:
    """A cell that writes results/<subdir>/<name>.json like cag_utils.run.results.Run.save: under
    cag_utils.run.config.results_dir, which the pipeline points at the step's staging folder."""
    return ("import json\nfrom cag_utils.run.config import results_dir\n"
            "out = results_dir(profile)\n"
            "out.mkdir(parents=True, exist_ok=True)\n"
            f"(out / '{name}.json').write_text(json.dumps({{'notebook': '{name}', 'results': {{'v': {value}}}}}))")


@pytest.fixture
def repo(tmp_path: Path) -> dict:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "smoke.yaml").write_text(PROFILE)
    (tmp_path / "profiles" / "other.yaml").write_text(PROFILE)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("X = 1\n")
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    results = tmp_path / "results"
    write_notebook(nbs / "01_first.ipynb", "a", {"n": 0, "scale": 0}, [saving("01_first", "n")])
    write_notebook(nbs / "02_second.ipynb", "b", {"label": 0}, [saving("02_second", "label")])
    log: list[str] = []
    kwargs = dict(notebooks_dir=nbs, profiles_dir=tmp_path / "profiles", results_root=results,
                  figures_root=tmp_path / "figures", work_root=tmp_path / "work", runs_root=tmp_path / "runs",
                  package_dir=tmp_path / "pkg", log=log.append, executed_root=None)
    return {"root": tmp_path, "nbs": nbs, "results": results, "kwargs": kwargs, "log": log}


def statuses(outcomes) -> list[str]:
    return [o.status for o in outcomes]


def test_discovery_is_by_number_and_reads_sections(tmp_path: Path):
    for name, section in [("10_late", "c"), ("02_b", "b"), ("1_a", "a"), ("notes", "x")]:
        write_notebook(tmp_path / f"{name}.ipynb", section, {}, [])
    (tmp_path / "other").mkdir()
    write_notebook(tmp_path / "other" / "00_x.ipynb", "a", {}, [])
    steps = pipeline.discover_steps(tmp_path)
    assert [(s.name, s.section) for s in steps] == [("1_a", "a"), ("02_b", "b"), ("10_late", "c")]
    assert pipeline.notebook_section(tmp_path / "02_b.ipynb") == "b"
    assert [s.name for s in pipeline.select_steps(steps, start="2", stop="10")] == ["02_b", "10_late"]
    assert [s.name for s in pipeline.select_steps(steps, only=["02_b"])] == ["02_b"]
    with pytest.raises(ConfigError, match="'07'"):
        pipeline.select_steps(steps, only=["07"])


def test_step_parameters_keep_own_section_and_common(repo):
    step = pipeline.discover_steps(repo["nbs"])[1]
    params = pipeline.step_parameters(step, "smoke", {"seed": 3, "n": 5, "label": "y"},
                                      repo["kwargs"]["profiles_dir"])
    assert params == {"profile": "smoke", "label": "y", "seed": 3}


@pytest.mark.parametrize("override, key", [({"nope": 1}, "nope"), ({"n": "three"}, "n"), ({"n": 1.5}, "n")])
def test_bad_overrides_fail_before_anything_runs(repo, override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        pipeline.run_pipeline("smoke", overrides=override, **repo["kwargs"])
    assert not repo["results"].exists() and repo["log"] == []


def test_override_of_an_unselected_section_is_an_error(repo):
    with pytest.raises(ConfigError, match="'label'"):
        pipeline.run_pipeline("smoke", only=["01"], overrides={"label": "y"}, **repo["kwargs"])


def cli(repo, *args: str) -> list[str]:
    kw = repo["kwargs"]
    return ["--notebooks-dir", str(kw["notebooks_dir"]), "--profiles-dir", str(kw["profiles_dir"]),
            "--results-root", str(kw["results_root"]), "--figures-root", str(kw["figures_root"]),
            "--work-root", str(kw["work_root"]), "--runs-root", str(kw["runs_root"]),
            "--executed-root", str(kw["notebooks_dir"]), "--package-dir", str(kw["package_dir"]), *args]


def test_main_exits_2_naming_the_key(repo, capsys):
    assert pipeline.main(cli(repo, "-p", "nonsense=1")) == 2
    assert "'nonsense'" in capsys.readouterr().err
    assert pipeline.main(cli(repo, "-p", "scale=big")) == 2
    assert "'scale'" in capsys.readouterr().err
    assert not repo["results"].exists()
    assert pipeline.main(cli(repo, "--list")) == 0
    out = capsys.readouterr().out
    assert "01_first" in out and "out of date (never run)" in out


def test_run_skip_force_and_parameter_change(repo):
    kw, results = repo["kwargs"], repo["results"]
    first = pipeline.run_pipeline("smoke", **kw)
    assert statuses(first) == ["ok", "ok"]
    assert json.loads((results / "01_first.json").read_text())["results"] == {"v": None}
    manifest = json.loads((repo["root"] / "work" / "smoke" / "pipeline_manifest.json").read_text())
    assert sorted(manifest["steps"]) == ["01_first", "02_second"]
    assert repo["log"][0].startswith("[01_first] ok in ") and "; slowest: cell " in repo["log"][0]

    # In place for the default profile, with the injected parameters and no timing metadata.
    nb = nbformat.read(repo["nbs"] / "01_first.ipynb", as_version=4)
    assert nb.metadata["papermill"] == {"parameters": {"profile": "smoke"}}
    assert nb.metadata["kernelspec"]["display_name"] == "Python 3 (ipykernel)"
    assert all("execution" not in c.metadata and "papermill" not in c.metadata for c in nb.cells)

    assert statuses(pipeline.run_pipeline("smoke", **kw)) == ["skipped", "skipped"]
    assert repo["log"][-1] == "[02_second] skipped (up to date)"
    listed = pipeline.run_pipeline("smoke", dry_run=True, **kw)
    assert statuses(listed) == ["up to date", "up to date"]
    assert statuses(pipeline.run_pipeline("smoke", force=True, only=["02"], **kw)) == ["ok"]

    # A new value of a section-a key reruns 01, and 02 because its input (01's results) changed.
    # (--update-committed: on the committed outputs, not in a run folder of its own.)
    on_committed = dict(overrides={"n": 7}, update_committed=True, **kw)
    assert statuses(pipeline.run_pipeline("smoke", dry_run=True, **on_committed)) == [
        "out of date (parameters changed)", "out of date (an earlier step reruns)"]
    assert statuses(pipeline.run_pipeline("smoke", **on_committed)) == ["ok", "ok"]
    assert json.loads((results / "01_first.json").read_text())["results"] == {"v": 7}
    # Package code is an input of every step.
    (kw["package_dir"] / "mod.py").write_text("X = 2\n")
    assert statuses(pipeline.run_pipeline("smoke", dry_run=True, **on_committed))[0] == "out of date (code changed)"


def test_other_profiles_write_to_a_subfolder(repo):
    before = (repo["nbs"] / "01_first.ipynb").read_text()
    assert statuses(pipeline.run_pipeline("other", only=["01"], **repo["kwargs"])) == ["ok"]
    assert (repo["nbs"] / "other" / "01_first.ipynb").is_file()
    assert (repo["results"] / "other" / "01_first.json").is_file()
    assert (repo["nbs"] / "01_first.ipynb").read_text() == before
    assert [s.name for s in pipeline.discover_steps(repo["nbs"])] == ["01_first", "02_second"]


def test_executed_root_keeps_committed_notebooks(repo):
    """With $CAG_OUTPUT_ROOT (executed_root) the default profile's notebooks are not rewritten in place."""
    before = (repo["nbs"] / "01_first.ipynb").read_text()
    kwargs = {**repo["kwargs"], "executed_root": repo["root"] / "elsewhere" / "notebooks"}
    assert statuses(pipeline.run_pipeline("smoke", only=["01"], **kwargs)) == ["ok"]
    assert (repo["root"] / "elsewhere" / "notebooks" / "01_first.ipynb").is_file()
    assert (repo["nbs"] / "01_first.ipynb").read_text() == before


def test_failure_names_notebook_and_cell_and_keeps_outputs(repo):
    nbs, results = repo["nbs"], repo["results"]
    write_notebook(nbs / "02_second.ipynb", "b", {"label": 0},
                   [saving("02_second", "label"), "x = 1\nraise RuntimeError('boom')"])
    write_notebook(nbs / "03_third.ipynb", "b", {}, [saving("03_third", "1")])
    source = (nbs / "02_second.ipynb").read_bytes()
    outcomes = pipeline.run_pipeline("smoke", **repo["kwargs"])
    assert statuses(outcomes) == ["ok", "failed", "not run"]
    failed = next(line for line in repo["log"] if "FAILED" in line)
    assert failed.startswith("[02_second] FAILED") and "x = 1" in failed and "RuntimeError: boom" in failed
    assert "In [4]" in failed   # parameters, injected parameters, save, failing cell
    # Nothing of the failed step reaches the outputs: no results, the notebook as it was.
    assert sorted(p.name for p in results.iterdir()) == ["01_first.json"]
    assert (nbs / "02_second.ipynb").read_bytes() == source
    assert "02_second" not in json.loads(
        (repo["root"] / "work" / "smoke" / "pipeline_manifest.json").read_text())["steps"]
    # The partial notebook is kept aside to inspect, with the traceback, and the user is told where.
    kept = repo["root"] / "work" / "smoke" / "failed" / "02_second.ipynb"
    assert outcomes[1].output == kept and "partial notebook:" in repo["log"][-2]
    nb = nbformat.read(kept, as_version=4)
    assert any(o.get("ename") == "RuntimeError" for c in nb.cells for o in c.get("outputs", []))
    assert not any((repo["root"] / "work" / "smoke" / "staging").iterdir())
    # Through the CLI: exit 1, 01 is up to date and skipped, 02 fails again.
    assert pipeline.main(cli(repo)) == 1


def test_strip_timing_removes_run_specific_fields():
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"parameters": {"profile": "smoke"}, "start_time": "t", "end_time": "t",
                                "duration": 1.0, "exception": None, "input_path": "/a", "default_parameters": {}}
    nb.metadata["kernelspec"] = {"name": "venv", "display_name": "My venv", "language": "python"}
    cell = nbformat.v4.new_code_cell("1")
    cell.metadata.update({"papermill": {"duration": 1}, "execution": {"iopub.status.busy": "t"},
                          "tags": ["injected-parameters"]})
    nb.cells = [cell, nbformat.v4.new_markdown_cell("m")]
    out = pipeline.strip_timing(nb)
    assert out.metadata["papermill"] == {"parameters": {"profile": "smoke"}}
    assert out.metadata["kernelspec"] == {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                          "language": "python"}
    assert out.cells[0].metadata == {"tags": ["injected-parameters"]}
    assert out.cells[0].id == "injected-parameters"   # papermill gives it a random id each run
    nbformat.validate(out)


def test_step_hash_ignores_outputs_and_injected_cells():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("a = 1")])
    args = ({"profile": "smoke"}, {"m.py": "h"}, "common: {}", {"01_x": "missing"})
    base = pipeline.step_hash(nb, *args)
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="1")]
    injected = nbformat.v4.new_code_cell("profile = 'x'")
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.append(injected)
    assert pipeline.step_hash(nb, *args) == base
    nb.cells[0].source = "a = 2"
    assert pipeline.step_hash(nb, *args) != base
    assert pipeline.step_hash(nb, {"profile": "paper"}, *args[1:]) != pipeline.step_hash(nb, *args)


def test_strip_timing_replaces_progress_widgets_by_their_final_text():
    """tqdm.auto bars saved by papermill: the widget state leaves the notebook, the output
    keeps a text/plain line with the bar's final state instead of its 0 % fallback."""
    def model(name, **state):
        return {"model_name": name, "model_module": "@jupyter-widgets/controls", "state": state}
    state = {"box": model("HBoxModel", children=["IPY_MODEL_pre", "IPY_MODEL_bar", "IPY_MODEL_post"]),
             "pre": model("HTMLModel", value="Loading\u2007weights:\u2007100%"),
             "bar": model("FloatProgressModel", value=136.0, max=136.0, bar_style="success"),
             "post": model("HTMLModel", value="\u2007136/136\u2007[00:00&lt;00:00]")}
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {pipeline.WIDGET_STATE: {"state": state, "version_major": 2, "version_minor": 0}}
    cell = nbformat.v4.new_code_cell("load()")
    cell.outputs = [nbformat.v4.new_output("display_data", data={
        pipeline.WIDGET_VIEW: {"model_id": "box", "version_major": 2, "version_minor": 0},
        "text/plain": "Loading weights:   0%|          | 0/136 [00:00<?, ?it/s]"}),
        nbformat.v4.new_output("display_data", data={   # a view whose state was not saved: fallback kept
        pipeline.WIDGET_VIEW: {"model_id": "gone"}, "text/plain": "fallback"})]
    nb.cells = [cell]
    out = pipeline.strip_timing(nb)
    assert "widgets" not in out.metadata
    assert out.cells[0].outputs[0].data == {"text/plain": "Loading weights: 100%|██████████| 136/136 [00:00<00:00]"}
    assert out.cells[0].outputs[1].data == {"text/plain": "fallback"}
    nbformat.validate(out)


def test_papermill_warns_only_about_parameters_the_pipeline_did_not_check(caplog):
    """Overrides are checked against the profile before papermill runs; its "unknown parameter" warning (the
    key is not in the parameters cell) is dropped for them only, and only while the notebook runs."""
    log = logging.getLogger("papermill")
    with caplog.at_level("WARNING", logger="papermill"):
        with pipeline.known_parameters({"profile": "smoke", "vlm_lr": 0.0002}):
            log.warning("Passed unknown parameter: vlm_lr")
            log.warning("Passed unknown parameter: not_a_key")
        log.warning("Passed unknown parameter: vlm_lr")
    assert [r.getMessage() for r in caplog.records] == ["Passed unknown parameter: not_a_key",
                                                        "Passed unknown parameter: vlm_lr"]


def test_slowest_cells_come_from_papermills_durations_before_they_are_stripped():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# a"),
                                         *(nbformat.v4.new_code_cell(f"x = {i}\ny = 2") for i in range(4))])
    for cell, seconds in zip(nb.cells[1:], (0.5, 12.0, None, 3.0)):
        cell.metadata["papermill"] = {"duration": seconds}
    cells = pipeline_steps.slowest_cells(nb, top=2)
    assert cells == [(2, 12.0, "x = 1"), (4, 3.0, "x = 3")]
    assert pipeline_steps.format_slowest(cells) == "cell 2 12.0 s (x = 1); cell 4 3.0 s (x = 3)"
    assert pipeline_steps.slowest_cells(pipeline_steps.strip_timing(nb)) == []
