"""One place that writes results JSON (with provenance) and figures (PNG + PDF).

Every results file records the effective config, package versions, git SHA, device and
wall time. Timing fields live under `provenance.timing` so that reruns differ only there.
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from cag_utils.run.config import REPO_ROOT, figures_dir, output_root, results_dir

TRACKED_PACKAGES = (
    "torch", "torchvision", "timm", "transformers", "peft", "accelerate", "pydicom",
    "numpy", "scipy", "scikit-learn", "pandas", "sacrebleu", "matplotlib",
)
CODE_PATHS = ("cag_utils", "configs", "benchmarks", "pyproject.toml")
# Figures stay small: they are committed and shown on the repository page.
FIGURE_DPI = 110


def package_versions(packages: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    out = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_sha() -> str:
    """HEAD's SHA, with '-dirty' when tracked files differ; 'unknown' outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        # Only code counts: executed notebooks, results and figures change on every run.
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *CODE_PATHS],
                               cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def resolve_device(requested: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def describe_device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return (f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
            f"{torch.backends.cpu.get_cpu_capability()} kernels")


def to_jsonable(obj: Any) -> Any:
    """NumPy / pandas / Path values -> plain JSON types, recursively."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if hasattr(obj, "to_dict"):
        return to_jsonable(obj.to_dict())
    return obj


class Run:
    """The provenance of one notebook run: `run.figure(...)` and, last, `run.save(results)`."""

    def __init__(self, name: str, cfg: dict[str, Any]):
        self.name, self.cfg = name, dict(cfg)
        self.started = time.time()
        self.figures: list[str] = []
        self.tables: list[str] = []
        self.captions: dict[str, str] = {}   # figure stem or table name -> caption (the paper's floats)

    def figure(self, fig, stem: str, show: bool = True, caption: str | None = None) -> None:
        """Write `figures/<name>_<stem>.png|pdf` and show the figure inline.

        ``caption``: what the figure shows and what to see in it; the paper prints it. ``stem=""``: the run's
        one figure, `figures/<name>.png|pdf`, its caption under ``name`` (a benchmark's figure).
        """
        if caption:
            self.captions[stem or self.name] = caption
        import matplotlib.pyplot as plt

        out = figures_dir(self.cfg["profile"])
        out.mkdir(parents=True, exist_ok=True)
        png = out / (f"{self.name}_{stem}.png" if stem else f"{self.name}.png")
        fig.savefig(png, dpi=FIGURE_DPI, bbox_inches="tight", metadata={"Software": None})
        fig.savefig(png.with_suffix(".pdf"), bbox_inches="tight",
                    metadata={"CreationDate": None, "ModDate": None, "Producer": None})
        self.figures.append(png.relative_to(output_root()).as_posix())
        if show and "ipykernel" in sys.modules:
            plt.show()
        else:
            plt.close(fig)
        return None

    def caption(self, table: str, text: str) -> None:
        """Caption of the table ``results["tables"][table]`` in the paper."""
        self.captions[table] = text

    def table(self, df, stem: str) -> Path:
        """Write per-item rows (predictions, picks...) to `results/<name>_<stem>.csv`.

        Floats keep 6 significant digits so the file stays small and byte-stable; integer
        labels and IDs are exact, so every metric can be recomputed from the file.
        """
        out = results_dir(self.cfg["profile"])
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{self.name}_{stem}.csv"
        df.to_csv(path, index=False, float_format="%.6g", lineterminator="\n")
        self.tables.append(path.relative_to(output_root()).as_posix())
        return path

    def save(self, results: dict[str, Any]) -> Path:
        """Write `results/<name>.json` with results, effective config and provenance."""
        out = results_dir(self.cfg["profile"])
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{self.name}.json"
        record = {
            "notebook": self.name,
            "results": to_jsonable(results),
            "config": to_jsonable(self.cfg),
            "figures": sorted(set(self.figures)),
            "per_item_files": sorted(set(self.tables)),
            "captions": dict(sorted(self.captions.items())),
            "provenance": {
                "git_sha": git_sha(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "device": describe_device(),
                "versions": package_versions(),
                "timing": {"wall_time_s": round(time.time() - self.started, 2),
                           "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
            },
        }
        path.write_text(json.dumps(record, indent=2, ensure_ascii=False, sort_keys=False) + "\n",
                        encoding="utf-8")
        return path


def load_results(name: str, profile: str = "smoke") -> dict[str, Any]:
    return json.loads((results_dir(profile) / f"{name}.json").read_text(encoding="utf-8"))
