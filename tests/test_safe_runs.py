"""Safe experimentation (issue 15): a failed, interrupted or overridden run never leaves the
committed outputs half-written, the manifest checks outputs, and no machine path is committed.

Tiny notebooks and profiles in tmp_path, real papermill runs. `01_count` is a resumable step:
it counts to `n`, one `delay` per count, keeping its progress under data/work like a
checkpoint; `02_read` reads 01's results JSON through `results_dir`, like a later stage would.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from cag_utils.run import pipeline
from cag_utils.run.config import REPO_ROOT, ConfigError

PROFILE = """\
common:
  seed: 1
a:
  n: 2
  delay: 0.05
b:
  label: "x"
"""

COUNT = [
    # setup: progress lives under data/work, named by the setting (like a content-hashed checkpoint)
    "import json, os, time\n"
    "from cag_utils.run.config import figures_dir, results_dir, work_dir\n"
    "n = 2 if n is None else n\n"
    "delay = 0.05 if delay is None else delay\n"
    "state_file = work_dir(profile) / f'count-{n}.json'\n"
    "state_file.parent.mkdir(parents=True, exist_ok=True)\n"
    "state = json.loads(state_file.read_text()) if state_file.is_file() else {'i': 0, 'acc': 0}\n"
    "(work_dir(profile) / 'kernel.pid').write_text(str(os.getpid()))\n"
    "print('resumed from', state['i'])",
    # a figure first, as a notebook would draw one before a long cell
    "figures_dir(profile).mkdir(parents=True, exist_ok=True)\n"
    "(figures_dir(profile) / '01_count_plot.svg').write_text(f'<svg>{n}</svg>')",
    # the long, resumable cell
    "while state['i'] < n:\n"
    "    time.sleep(delay)\n"
    "    state = {'i': state['i'] + 1, 'acc': state['acc'] + state['i'] ** 2}\n"
    "    state_file.with_suffix('.tmp').write_text(json.dumps(state))\n"
    "    state_file.with_suffix('.tmp').replace(state_file)",
    # results last: the JSON and a per-item table (left out for n == 5, to test stale outputs)
    "out = results_dir(profile)\n"
    "out.mkdir(parents=True, exist_ok=True)\n"
    "if n != 5:\n"
    "    (out / '01_count_table.csv').write_text(f'n,acc\\n{n},{state[\"acc\"]}\\n')\n"
    "(out / '01_count.json').write_text(json.dumps({'notebook': '01_count', 'results': {'n': n, 'acc': state['acc']}}))",
]

READ = [
    "import json\n"
    "from cag_utils.run.config import results_dir\n"
    "label = 'x' if label is None else label\n"
    "upstream = json.loads((results_dir(profile) / '01_count.json').read_text())['results']\n"
    "(results_dir(profile) / '02_read.json').write_text(json.dumps(\n"
    "    {'notebook': '02_read', 'results': {'label': label, 'upstream_n': upstream['n']}}))",
    "if label == 'boom':\n"
    "    raise ValueError('label boom')",
]


def write_notebook(path: Path, section: str, params: list[str], body: list[str]) -> None:
    head = nbformat.v4.new_code_cell("\n".join(['profile = "smoke"', f'section = "{section}"',
                                                *(f"{k} = None" for k in params)]))
    head.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[head, *(nbformat.v4.new_code_cell(src) for src in body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def make_repo(root: Path) -> dict:
    """Profiles, notebooks and output folders of a throwaway compendium under `root`."""
    (root / "profiles").mkdir(parents=True)
    (root / "profiles" / "smoke.yaml").write_text(PROFILE)
    (root / "pkg").mkdir()
    (root / "pkg" / "mod.py").write_text("X = 1\n")
    (root / "notebooks").mkdir()
    write_notebook(root / "notebooks" / "01_count.ipynb", "a", ["n", "delay"], COUNT)
    write_notebook(root / "notebooks" / "02_read.ipynb", "b", ["label"], READ)
    log: list[str] = []
    kwargs = dict(notebooks_dir=root / "notebooks", profiles_dir=root / "profiles", results_root=root / "results",
                  figures_root=root / "figures", work_root=root / "work", runs_root=root / "runs",
                  package_dir=root / "pkg", executed_root=None, log=log.append)
    return {"root": root, "kwargs": kwargs, "log": log}


@pytest.fixture
def repo(tmp_path: Path) -> dict:
    return make_repo(tmp_path / "repo")


def committed(repo: dict, folders: tuple[str, ...] = ("results", "figures", "notebooks")) -> dict[str, bytes]:
    """Every file of the committed folders and (by default) the manifest, by path."""
    root = repo["root"]
    files = [p for d in folders for p in sorted((root / d).rglob("*")) if p.is_file()]
    if "notebooks" in folders:
        files.append(root / "work" / "smoke" / "pipeline_manifest.json")
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files if p.is_file()}


def statuses(outcomes) -> list[str]:
    return [o.status for o in outcomes]


def staging_is_empty(repo: dict) -> bool:
    staging = repo["root"] / "work" / "smoke" / "staging"
    return not staging.exists() or not any(staging.iterdir())


def error_names(nb_path: Path) -> list[str]:
    nb = nbformat.read(nb_path, as_version=4)
    return [o["ename"] for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]


def cli(repo: dict, *args: str) -> list[str]:
    kw = repo["kwargs"]
    return ["--notebooks-dir", str(kw["notebooks_dir"]), "--profiles-dir", str(kw["profiles_dir"]),
            "--results-root", str(kw["results_root"]), "--figures-root", str(kw["figures_root"]),
            "--work-root", str(kw["work_root"]), "--runs-root", str(kw["runs_root"]),
            "--executed-root", str(kw["notebooks_dir"]), "--package-dir", str(kw["package_dir"]), *args]


# ---------------------------------------------------------------- failures

def test_failing_step_leaves_committed_outputs_byte_identical(repo):
    kw, root = repo["kwargs"], repo["root"]
    assert statuses(pipeline.run_pipeline("smoke", **kw)) == ["ok", "ok"]
    before = committed(repo)
    assert "figures/01_count_plot.svg" in before and "results/01_count_table.csv" in before

    # A failing override on the committed outputs: 02 wrote its results JSON before it failed.
    outcomes = pipeline.run_pipeline("smoke", overrides={"label": "boom"}, update_committed=True, **kw)
    assert statuses(outcomes) == ["skipped", "failed"]
    assert committed(repo) == before
    kept = root / "work" / "smoke" / "failed" / "02_read.ipynb"
    assert error_names(kept) == ["ValueError"]
    failed = next(line for line in repo["log"] if "FAILED" in line)
    assert "if label == 'boom':" in failed and "ValueError: label boom" in failed
    assert "partial notebook:" in repo["log"][-1] and "02_read.ipynb" in repo["log"][-1]
    assert staging_is_empty(repo)

    # The same override in a run of its own (01 is the committed one): nothing of 02 lands there.
    outcomes = pipeline.run_pipeline("smoke", overrides={"label": "boom"}, **kw)
    assert statuses(outcomes) == ["skipped", "failed"]
    assert not (root / "runs" / "label-boom").exists()
    assert error_names(root / "work" / "smoke" / "failed" / "label-boom" / "02_read.ipynb") == ["ValueError"]
    assert committed(repo) == before and staging_is_empty(repo)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_a_step_keeps_outputs_and_the_rerun_resumes(repo, tmp_path, sig):
    kw, root = repo["kwargs"], repo["root"]
    assert statuses(pipeline.run_pipeline("smoke", only=["01"], **kw)) == ["ok"]
    before = committed(repo)

    # The CLI in its own process group, as from a terminal; SIGINT reset in case pytest runs with it ignored.
    command = [sys.executable, "-m", "cag_utils.run.pipeline", *cli(repo, "--only", "01", "--update-committed",
                                                                    "-p", "n=8", "-p", "delay=0.4")]
    proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    state = root / "work" / "smoke" / "count-8.json"
    try:
        wait_for(lambda: state.is_file() and json.loads(state.read_text())["i"] >= 2, 90, "two counts")
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)   # Ctrl-C: the whole foreground group
        else:
            proc.send_signal(sig)      # kill, or a scheduler's time limit
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), err
    assert "INTERRUPTED" in out and "while state['i'] < n:" in out and "interrupted" in err
    assert committed(repo) == before
    assert staging_is_empty(repo)
    kernel = int((root / "work" / "smoke" / "kernel.pid").read_text())
    wait_for(lambda: not pid_alive(kernel), 20, "the kernel to exit")
    kept = root / "work" / "smoke" / "failed" / "01_count.ipynb"
    assert "partial notebook: " in out and kept.is_file()
    done = json.loads(state.read_text())["i"]
    assert 2 <= done < 8

    # The same command again runs the step (it is not up to date) and resumes where it stopped.
    outcomes = pipeline.run_pipeline("smoke", only=["01"], overrides={"n": 8, "delay": 0.01},
                                     update_committed=True, **kw)
    assert statuses(outcomes) == ["ok"]
    nb = nbformat.read(root / "notebooks" / "01_count.ipynb", as_version=4)
    resumed = int(re.search(r"resumed from (\d+)", json.dumps(nb.cells[2].outputs)).group(1))
    assert resumed >= done

    # ... and gives what an uninterrupted run gives.
    ref = make_repo(tmp_path / "reference")
    assert statuses(pipeline.run_pipeline("smoke", only=["01"], overrides={"n": 8, "delay": 0.0},
                                          update_committed=True, **ref["kwargs"])) == ["ok"]
    for name in ("results/01_count.json", "results/01_count_table.csv", "figures/01_count_plot.svg"):
        assert (root / name).read_bytes() == (ref["root"] / name).read_bytes(), name


# ---------------------------------------------------------------- overrides

def test_override_run_lands_in_its_own_folder(repo, capsys):
    kw, root = repo["kwargs"], repo["root"]
    assert statuses(pipeline.run_pipeline("smoke", **kw)) == ["ok", "ok"]
    before = committed(repo)

    assert statuses(pipeline.run_pipeline("smoke", overrides={"n": 3}, **kw)) == ["ok", "ok"]
    run = root / "runs" / "n-3"
    assert json.loads((run / "results" / "01_count.json").read_text())["results"]["n"] == 3
    # 02 of the run read 01's results of the same run.
    assert json.loads((run / "results" / "02_read.json").read_text())["results"]["upstream_n"] == 3
    assert (run / "figures" / "01_count_plot.svg").read_text() == "<svg>3</svg>"
    assert nbformat.read(run / "notebooks" / "01_count.ipynb", as_version=4).metadata["papermill"] == {
        "parameters": {"profile": "smoke", "n": 3}}
    assert sorted(json.loads((run / "pipeline_manifest.json").read_text())["steps"]) == ["01_count", "02_read"]
    assert committed(repo) == before
    assert statuses(pipeline.run_pipeline("smoke", overrides={"n": 3}, **kw)) == ["skipped", "skipped"]

    # A later step alone, named: it reads the committed results of the steps it does not run.
    assert pipeline.main(cli(repo, "--only", "02", "-p", "label=y", "--run-name", "only2")) == 0
    only2 = root / "runs" / "only2" / "results"
    assert sorted(p.name for p in only2.iterdir()) == ["02_read.json"]
    assert json.loads((only2 / "02_read.json").read_text())["results"] == {"label": "y", "upstream_n": 2}
    assert committed(repo) == before

    capsys.readouterr()
    assert pipeline.main(cli(repo, "--list", "-p", "n=3")) == 0
    listed = capsys.readouterr().out
    assert "run n-3 (runs/n-3/)" in listed and listed.count("up to date") == 2


def test_run_names():
    assert pipeline.override_run_name({"cnn_epochs": 3}) == "cnn_epochs-3"
    assert pipeline.override_run_name({"b": [0.7, 0.3], "a": "x/y z"}) == "a-x-y-z+b-0.7-0.3"
    assert len(pipeline.override_run_name({"k": "v" * 200})) == 80
    assert pipeline.run_folder_name("smoke", {}) is None
    assert pipeline.run_folder_name("smoke", {"n": 1}, update_committed=True) is None
    assert pipeline.run_folder_name("other", {"n": 1}) is None       # only the default profile is committed
    assert pipeline.run_folder_name("smoke", {}, run_name="trial") == "trial"
    with pytest.raises(ConfigError, match="run name"):
        pipeline.run_folder_name("smoke", {}, run_name="../up")
    with pytest.raises(ConfigError, match="exclude"):
        pipeline.run_folder_name("smoke", {"n": 1}, run_name="t", update_committed=True)


# ---------------------------------------------------------------- the manifest

def test_manifest_reruns_a_step_whose_outputs_were_deleted_or_altered(repo):
    kw, root = repo["kwargs"], repo["root"]
    assert statuses(pipeline.run_pipeline("smoke", **kw)) == ["ok", "ok"]
    outputs = json.loads((root / "work" / "smoke" / "pipeline_manifest.json").read_text())["steps"]["01_count"]["outputs"]
    assert sorted(outputs) == ["figures/01_count_plot.svg", "notebooks/01_count.ipynb",
                               "results/01_count.json", "results/01_count_table.csv"]
    before = committed(repo, ("results", "figures"))   # a rerun's notebook says where it resumed

    def listed() -> list[str]:
        return statuses(pipeline.run_pipeline("smoke", dry_run=True, **kw))

    (root / "figures" / "01_count_plot.svg").unlink()
    assert listed() == ["out of date (figures/01_count_plot.svg missing)", "out of date (an earlier step reruns)"]
    # 01 rewrites the same results, so 02's inputs are unchanged and it stays up to date.
    assert statuses(pipeline.run_pipeline("smoke", **kw)) == ["ok", "skipped"]
    assert committed(repo, ("results", "figures")) == before

    (root / "results" / "01_count_table.csv").write_text("n,acc\n2,999\n")
    assert listed()[0] == "out of date (results/01_count_table.csv changed)"
    assert statuses(pipeline.run_pipeline("smoke", **kw)) == ["ok", "skipped"]
    assert committed(repo, ("results", "figures")) == before

    # A notebook cut short (same source, outputs lost), as a killed run used to leave it.
    nb_path = root / "notebooks" / "02_read.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, nb_path)
    assert listed() == ["up to date", "out of date (notebooks/02_read.ipynb changed)"]
    assert statuses(pipeline.run_pipeline("smoke", **kw)) == ["skipped", "ok"]
    assert committed(repo, ("results", "figures")) == before

    # Outputs a step no longer writes do not linger beside the new ones.
    assert statuses(pipeline.run_pipeline("smoke", only=["01"], overrides={"n": 5}, update_committed=True,
                                          **kw)) == ["ok"]
    assert not (root / "results" / "01_count_table.csv").exists()


def test_an_old_manifest_without_outputs_reruns(repo):
    kw, root = repo["kwargs"], repo["root"]
    assert statuses(pipeline.run_pipeline("smoke", only=["01"], **kw)) == ["ok"]
    path = root / "work" / "smoke" / "pipeline_manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["steps"]["01_count"]["outputs"]
    path.write_text(json.dumps(manifest))
    assert statuses(pipeline.run_pipeline("smoke", only=["01"], dry_run=True, **kw)) == [
        "out of date (outputs not recorded)"]


# ---------------------------------------------------------------- machine paths

ABSOLUTE_PATH = re.compile(
    r"(?<![\w.~-])/(?:root|home|tmp|work|Users|mnt|media|data|var|srv|opt|scratch|private)/"
    r"|(?<![A-Za-z])[A-Za-z]:[\\/]|file://")
BINARY_OUTPUTS = ("image/png", "image/jpeg", "image/gif", "application/pdf")   # base64, not text


def absolute_paths(value, where: str = "") -> list[str]:
    """'where: match' for every string in a JSON value that holds an absolute machine path."""
    if isinstance(value, dict):
        return [hit for k, v in value.items() if k not in BINARY_OUTPUTS
                for hit in absolute_paths(v, f"{where}/{k}")]
    if isinstance(value, list):
        return [hit for i, v in enumerate(value) for hit in absolute_paths(v, f"{where}/{i}")]
    if isinstance(value, str) and (m := ABSOLUTE_PATH.search(value)):
        return [f"{where}: ...{value[max(m.start() - 20, 0):m.end() + 40]}..."]
    return []


def test_the_path_scan_finds_machine_paths_only():
    resumed = "resuming /work/main/data/work/smoke/cnn/x after epoch 3"  # out-of-repo path on purpose
    machine = ["see /home/ana/cag", "C:\\Users\\ana", "'/tmp/x'", "file:///srv/x"]  # out-of-repo path on purpose
    assert absolute_paths({"a": [resumed]})
    assert len(absolute_paths(machine)) == 4
    assert not absolute_paths({"p": "data/work/smoke/cnn/x", "f": "figures/01_data_montage.png",
                               "u": "https://arxiv.org/abs/2505.04964", "t": "12:30", "r": "results/tmp/x"})
    assert not absolute_paths({"image/png": "iVBOR/tmp/xx"})


COMMITTED = sorted(p for p in [*(REPO_ROOT / "notebooks").rglob("*.ipynb"), *(REPO_ROOT / "results").rglob("*.json")]
                   if ".ipynb_checkpoints" not in p.parts)  # editor checkpoints are not committed


@pytest.mark.parametrize("path", COMMITTED, ids=[p.relative_to(REPO_ROOT).as_posix() for p in COMMITTED])
def test_committed_outputs_hold_no_machine_paths(path: Path):
    """Printed paths can name a person or a hospital share: outputs show paths relative to the
    repository or the output root (cells, outputs, metadata; images are skipped)."""
    hits = absolute_paths(json.loads(path.read_text(encoding="utf-8")))
    assert not hits, f"{path.relative_to(REPO_ROOT)} holds absolute paths:\n" + "\n".join(hits[:5])
