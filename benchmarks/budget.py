"""The two time budgets as a new user meets them: `make reproduce` and `make test`, each in a fresh clone, install
included (the README's promise: at most 20 and 30 minutes on 2 cores).

Each command runs in its own `git clone` of HEAD (committed files only: a dirty tree is refused), one after the
other, nothing else started by this script beside them. Recorded per command: the install, every notebook (the
pipeline's "[NN_name] ok in X s" lines for `make reproduce`; nbval's cells summed per notebook from pytest's JUnit
report for `make test`), the rest, the exit status and the test counts.

The host's speed is measured beside them, since on a shared machine the same work has taken 1.4 times longer a few
hours apart (docs/testing.md): before and after each command, the training step of notebook 02's ConvNeXt (the
smoke model, batch 32 at 64 px: `bench_cnn.bench_training`, 20 steps), in seconds per step. A budget missed at a
slow step time and met at a fast one is the machine, not the change.

Writes results/budget.json (the bench_*.json kind: no paper macros) and figures/budget.png|pdf.

    python benchmarks/budget.py                      # both commands: about 35-85 min on 2 cores
    python benchmarks/budget.py --only reproduce     # one of them
    python benchmarks/budget.py --probe              # only the step time, printed
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGETS_S = {"reproduce": 20 * 60, "test": 30 * 60}
NOTEBOOK_LINE = re.compile(r"^\[(\d\d_\w+)\] ok in ([0-9.]+) s", re.M)


# ------------------------------------------------------------------ parsing what the commands leave
def pipeline_notebook_seconds(log: str) -> dict[str, float]:
    """Notebook name -> seconds, from the pipeline's "[01_data] ok in 346.5 s" lines (last one wins)."""
    return {name: float(s) for name, s in NOTEBOOK_LINE.findall(log)}


def pytest_workers(log: str) -> int:
    """How many pytest-xdist workers ran the suite ("created: 2/2 workers" or "2 workers [N items]"; 1 without
    xdist). With two, the notebooks run on one worker while the other takes the rest of the tests."""
    m = re.search(r"(?:created: \d+/)?(\d+) workers\b", log)
    return int(m.group(1)) if m else 1


def junit_summary(path: Path, slowest: int = 8) -> dict:
    """Counts, the failed tests by name (a failed budget run must say what failed), the skipped ones with their
    reasons (a missing system tool skips the paper or browser checks, and their time), seconds per notebook
    (nbval items are `notebooks.<name>.ipynb::Cell N`), the other tests' sum and the slowest other tests, from a
    pytest JUnit XML report."""
    cases = list(ET.parse(path).getroot().iter("testcase"))
    notebooks: dict[str, float] = {}
    others: list[tuple[float, str]] = []
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    failed: list[str] = []
    skipped: dict[str, str] = {}   # test -> reason: a skipped test is a check the budget run did not pay for
    for c in cases:
        seconds, cls = float(c.get("time") or 0.0), c.get("classname") or ""
        if c.find("failure") is not None or c.find("error") is not None:
            counts["failed"] += 1
            failed.append(f"{cls}::{c.get('name')}")
        elif c.find("skipped") is not None:
            counts["skipped"] += 1
            skipped[f"{cls}::{c.get('name')}"] = c.find("skipped").get("message", "")
        else:
            counts["passed"] += 1
        if cls.startswith("notebooks.") and cls.endswith(".ipynb"):
            name = cls[len("notebooks."):-len(".ipynb")]
            notebooks[name] = notebooks.get(name, 0.0) + seconds
        else:
            others.append((seconds, f"{cls}::{c.get('name')}"))
    others.sort(reverse=True)
    return {"counts": counts, "failed_tests": failed, "skipped_tests": skipped, "notebooks_s": {k: round(v, 1) for k, v in sorted(notebooks.items())},
            "other_tests_s": round(sum(s for s, _ in others), 1),
            "slowest_other_tests": [{"test": name, "seconds": round(s, 1)} for s, name in others[:slowest]]}


def parts(record: dict) -> list[tuple[str, float]]:
    """The stacked parts of one command's wall time: install, each notebook, the rest."""
    notebooks = record.get("notebooks_s", {})
    rest = record["total_s"] - record["install_s"] - sum(notebooks.values())
    if record["command"] != "test":
        label = "preflight, report, model cards"
    elif record.get("pytest_workers", 1) > 1:
        label = "collection and the tests left after the notebooks (the others ran beside them)"
    else:
        label = "other tests, collection, paper build"
    return [("install", record["install_s"]), *sorted(notebooks.items()), (label, max(rest, 0.0))]


# ------------------------------------------------------------------ measuring
def probe_step_seconds() -> float:
    """Seconds per training step of the smoke CNN (notebook 02's model, batch 32, 64 px, the profile's threads)."""
    import torch

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_cnn import bench_training
    from cag_utils.cnn.model import build_model
    from cag_utils.run.config import load_config

    cfg = load_config("smoke", "cnn")
    if cfg["torch_threads"]:
        torch.set_num_threads(int(cfg["torch_threads"]))
    torch.manual_seed(0)
    model = build_model(cfg["cnn_model"], in_chans=cfg["cnn_in_chans"], **cfg["cnn_model_kwargs"])
    out = bench_training(model, cfg["cnn_input_size"], cfg["cnn_batch_size"], 20, torch.device("cpu"), None, 1, 1)
    return round(out["seconds_per_step"], 4)


def probe(python: str) -> float:
    """The step time in a fresh process of `python` (the venv's: same torch and kernels as the notebooks)."""
    out = subprocess.run([python, str(Path(__file__).resolve()), "--probe"], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def timed(cmd: list[str], cwd: Path, log: Path, env: dict[str, str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    with log.open("a", encoding="utf-8") as fh:
        rc = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    return round(time.perf_counter() - t0, 1), rc


def measure(command: str, workdir: Path, python: str) -> dict:
    """One budget command in a fresh clone: `make install`, then `make <command>`, each timed."""
    clone = workdir / command
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    log = workdir / f"{command}.log"
    env = {k: v for k, v in os.environ.items() if k not in ("CAG_OUTPUT_ROOT", "VIRTUAL_ENV")}
    junit = workdir / "junit.xml"
    if command == "test":
        env["PYTEST_ADDOPTS"] = f"{env.get('PYTEST_ADDOPTS', '')} --junitxml={junit}".strip()
    before = probe(python)
    print(f"{command}: step time before {before:.3f} s; running in {clone}", flush=True)
    install_s, rc_install = timed(["make", "install"], clone, log, env)
    run_s, rc = timed(["make", command], clone, log, env) if rc_install == 0 else (0.0, rc_install)
    after = probe(python)
    record = {"command": command, "install_s": install_s, "total_s": round(install_s + run_s, 1), "rc": rc,
              "budget_s": BUDGETS_S[command], "step_s_before": before, "step_s_after": after}
    text = log.read_text(encoding="utf-8", errors="replace")
    if command == "reproduce":
        record["notebooks_s"] = pipeline_notebook_seconds(text)
    elif junit.is_file():
        record.update(junit_summary(junit))
        record["pytest_workers"] = pytest_workers(text)
    record["met"] = rc == 0 and record["total_s"] <= BUDGETS_S[command]
    print(f"{command}: {record['total_s'] / 60:.1f} min (budget {BUDGETS_S[command] // 60}), rc {rc}, "
          f"step time after {after:.3f} s", flush=True)
    if rc != 0:
        print(text[-3000:])
    return record


# ------------------------------------------------------------------ figure
def plot(commands: dict[str, dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.9 * len(commands)))
    colors = plt.get_cmap("tab20").colors
    names = sorted({name for r in commands.values() for name, _ in parts(r)})
    labelled: set[str] = set()
    for i, (command, record) in enumerate(commands.items()):
        left = 0.0
        for name, seconds in parts(record):
            ax.barh(-i, seconds / 60, left=left, color=colors[names.index(name) % len(colors)],
                    label=None if name in labelled else name)
            labelled.add(name)
            left += seconds / 60
        ax.plot([record["budget_s"] / 60] * 2, [-i - 0.45, -i + 0.45], color="k", lw=2)
        ax.text(left + 0.3, -i, f"{left:.1f} min; CNN step {record['step_s_before']:.2f} s before, {record['step_s_after']:.2f} s after",
                va="center", fontsize=8)
    ax.set_yticks([-i for i in range(len(commands))], [f"make {c}" for c in commands])
    ax.set_xlabel("minutes from a fresh clone, install included (black: the budget)")
    ax.set_xlim(0, max(max(r["total_s"] for r in commands.values()), max(BUDGETS_S.values())) / 60 * 1.45)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.35 - 0.1 * len(commands)), frameon=False)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=list(BUDGETS_S), action="append", help="measure only this command (repeatable)")
    ap.add_argument("--probe", action="store_true", help="print the CNN step time of this machine and exit")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "budget.json")
    ap.add_argument("--keep", action="store_true", help="keep the clones (several GB each) for a look")
    args = ap.parse_args(argv)
    if args.probe:
        print(probe_step_seconds())
        return
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.strip()
    if dirty:
        sys.exit(f"uncommitted changes: the clones would not have them; commit first\n{dirty}")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    python = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
    workdir = Path(tempfile.mkdtemp(prefix="cag-budget-"))
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    try:
        commands = {c: measure(c, workdir, python) for c in (args.only or list(BUDGETS_S))}
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    record = {"git_sha": sha, "started_at": started, "machine": {"processor": _cpu_name(), "cpu_count": os.cpu_count(),
              "platform": platform.platform()}, "budgets_s": BUDGETS_S, "commands": commands}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    fig = plot(commands)
    figure = ROOT / "figures" / "budget.png"
    fig.savefig(figure, dpi=150, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(figure.with_suffix(".pdf"), bbox_inches="tight", metadata={"CreationDate": None, "ModDate": None,
                                                                           "Producer": None})
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out} and figures/budget.png")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
