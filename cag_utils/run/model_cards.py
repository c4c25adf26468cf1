"""Hugging Face model cards (``README.md`` with YAML metadata) for every saved model folder (issue 25).

    python -m cag_utils.run.model_cards --profile smoke     # refresh the cards from results/*.json (make reproduce)

  folder                                                   card written at save time by    refresh adds
  data/work/<profile>/cnn/<model>-<hash>/                  cnn.train.train_classifier      results/02_cnn.json, 01
  models/standins/<profile>/<part>/                        make_standins, embedder_standin (nothing: own records)
  data/work/<profile>/vlm/<arch>-<vision>-<hash>/          stage.assemble_families         (nothing: no metric)
  data/work/<profile>/vlm/adapters/<family>-<tag>-<hash>/  lora.save_adapter               results/05_finetune.json, 06

Every number is read from a record (the folder's own JSON, or a results file that names the folder:
02 ``training.checkpoint``, 05 ``adapters``); a metric not measured yet is listed as missing with the
command that measures it. No patient ID or date is written, only counts. A folder sealed with SHA256SUMS
gets a new card only when it passes its check first, and is sealed again after it (the card is part of
what a user would upload).
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CARD = "README.md"
log = logging.getLogger("cag_utils.run.model_cards")

TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ what }}

## Base model

{{ base }}

## Training data and split

{{ data }}

## Metrics

{{ metrics }}

## Intended use

Teaching and reproducing the CAG-VLM method (key frames and written summaries of coronary angiograms)
with the CAG-VLM compendium. **Not for clinical use**: it never saw a real patient's angiogram or report,
and nothing here was validated for diagnosis or treatment.

## Limitations

Trained and scored on synthetic angiograms and reports of the compendium's generator (`cag_utils.synth`),
whose anatomy, imaging and wording are simplified; a score on synthetic data says nothing about real
angiograms. {{ limits }}

## How to rebuild

```
{{ rebuild }}
```
"""


@dataclass
class Metric:
    key: str                 # where it comes from, e.g. "test.laterality_f1"
    label: str
    value: float
    source: str              # "<file>: <path in the file>"
    ci_low: float | None = None
    ci_high: float | None = None
    n_patients: int | None = None

    def row(self) -> str:
        ci = "" if self.ci_low is None else f"[{self.ci_low:.3f}, {self.ci_high:.3f}]"
        return f"| {self.label} | {self.value:.3f} | {ci} | {self.n_patients or ''} | `{self.source}` |"


@dataclass
class Spec:
    """Everything one card says; ``render`` turns it into a ``ModelCard``."""
    title: str
    what: str
    base: str
    data: str
    rebuild: str
    library: str
    task: str                # Hugging Face task type of the metrics (image-classification, ...)
    tags: list[str]
    limits: str = ""
    base_model: str | list[str] | None = None
    license: str = "mit"
    split: str = "test"      # the split the metrics are scored on
    metrics: list[Metric] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def interval_metrics(values: dict[str, Any], prefix: str, source: str, labels: dict[str, str] | None = None,
                     plain: bool = False) -> list[Metric]:
    """A Metric per entry of ``values`` whose key starts with ``prefix``: intervals (estimate, ci_low, ci_high)
    and, with ``plain``, numbers without one (e.g. a chance rate)."""
    out = []
    for key, v in values.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        label = (labels or {}).get(name, name.replace("_", " ").replace(".", ", "))
        if isinstance(v, dict) and "estimate" in v:
            out.append(Metric(key, label, v["estimate"], f"{source}.{key}", v.get("ci_low"), v.get("ci_high"),
                              v.get("n_patients")))
        elif plain and isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append(Metric(key, label, v, f"{source}.{key}"))
    return out


def render(spec: Spec) -> str:
    """The card's text (``ModelCard.from_template``): YAML metadata, then the sections."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    evals = [EvalResult(task_type=spec.task, dataset_type="synthetic", dataset_name="CAG-VLM synthetic cohort",
                        dataset_split=spec.split,
                        metric_type=m.key, metric_name=m.label, metric_value=m.value) for m in spec.metrics]
    data = ModelCardData(
        license=spec.license, library_name=spec.library, tags=spec.tags, datasets=["synthetic"],
        base_model=spec.base_model, model_name=spec.title, eval_results=evals or None,
        # the intervals, which model-index has no field for, and where each number comes from
        metric_records=[{k: v for k, v in vars(m).items() if v is not None} for m in spec.metrics] or None)
    rows = ["| metric | estimate | 95 % interval | patients | record |", "| --- | --- | --- | --- | --- |"]
    table = "\n".join(rows + [m.row() for m in spec.metrics]) if spec.metrics else ""
    if any(m.ci_low is None for m in spec.metrics):
        table += "\n\nNo interval: the record holds none for that number (one held-out measurement, or a fixed rate)."
    missing = "\n".join(f"- Not measured yet: {m}" for m in spec.missing)
    metrics = "\n\n".join(p for p in (table, missing) if p) or "None: this folder is not scored on its own."
    text = str(ModelCard.from_template(data, template_str=TEMPLATE, title=spec.title, what=spec.what,
                                       base=spec.base, data=spec.data, metrics=metrics, limits=spec.limits,
                                       rebuild=spec.rebuild))
    return text.rstrip() + "\n"


def write(folder: str | Path, spec: Spec, skip_dirs: tuple[str, ...] = ()) -> bool:
    """Write ``folder/README.md``; False when it already says the same. A sealed folder (SHA256SUMS) is checked
    first (a damaged one keeps its card, warned) and sealed again after the card."""
    from cag_utils.run.cachecheck import SUMS_NAME
    from cag_utils.vlm import sealed

    folder = Path(folder)
    text, path = render(spec), folder / CARD
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    is_sealed = (folder / SUMS_NAME).is_file()
    if is_sealed and (problem := sealed.folder_problem(folder)):
        log.warning("%s not given a card: %s", sealed.shown(folder), problem)
        return False
    path.write_text(text, encoding="utf-8")
    if is_sealed:
        sealed.seal_folder(folder, skip_dirs)
    return True


def load_record(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def shown(path: str | Path) -> str:
    """A path as a card names it: inside the repository relative to it, else from data/work on (no home folders)."""
    from cag_utils.vlm.sealed import shown as repo_relative

    text = repo_relative(path)
    parts = Path(text).parts
    for i in range(len(parts) - 1):
        if parts[i:i + 2] == ("data", "work"):
            return "/".join(parts[i:])
    return text


def profile_of(folder: Path) -> str | None:
    """The profile of a folder under data/work/<profile>/ or models/standins/<profile>/."""
    parts = Path(folder).resolve().parts
    for i in range(len(parts) - 2):
        if parts[i:i + 2] in (("data", "work"), ("models", "standins")):
            return parts[i + 2]
    return None


def refresh(profile: str, standins: Path | None = None) -> list[Path]:
    """Write the card of every model folder of ``profile`` from its records and results/*.json; the changed ones.
    ``standins``: the stand-ins' folder (default the profile's ``vlm_standins_dir``)."""
    from cag_utils.cnn.card import cnn_spec
    from cag_utils.run.config import REPO_ROOT, load_config, results_dir, work_dir
    from cag_utils.vlm import cards
    from cag_utils.vlm.standins import DONE

    results, work = results_dir(profile), work_dir(profile)
    standins = Path(standins or REPO_ROOT / load_config(profile, "finetune")["vlm_standins_dir"])
    provenance = load_record(standins / "provenance.json")
    todo: list[tuple[Path, Spec, tuple[str, ...]]] = []
    todo += [(f.parent, cnn_spec(f.parent, results), ()) for f in sorted((work / "cnn").glob("*/config.json"))]
    todo += [(f.parent, cards.standin_spec(f.parent, provenance, profile), ())
             for f in sorted(standins.glob(f"*/{DONE}"))]
    todo += [(f.parent, cards.vlm_spec(f.parent, standins, profile), ()) for f in sorted((work / "vlm").glob(f"*/{DONE}"))]
    todo += [(f.parent, cards.adapter_spec(f.parent, results, profile), ("trainer",))
             for f in sorted((work / "vlm" / "adapters").glob("*/training.json"))]
    return [folder for folder, spec, skip in todo if write(folder, spec, skip)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cag_utils.run.model_cards", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    changed = refresh(args.profile)
    print(f"model cards of profile {args.profile}: {len(changed)} written" +
          "".join(f"\n  {shown(p)}" for p in changed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
