"""Stage 1 data: locate the exams (synthetic or real), ingest both cohorts, split, save.

`data_source: synthetic` generates the cohort into data/work/<profile>/raw (cached by its
settings); `data_source: dicom_dir` reads a real export (data card: docs/real-data.md). Both go
through the same loader (`cag_utils.data.ingest`).

The processed cohorts go to `data/work/<profile>/processed/<fingerprint>/<cohort>`, the
fingerprint being a hash of the data settings, and notebook 01 records it in its results
(`exact.dataset`). Later notebooks find their data through that record, so a run with other
data settings (an override run, `runs/<name>/`) never replaces the data that the committed
results were made from.

Real data: the secret salt is resolved first (`deid.resolve_salt`; the committed salt is
refused), then both cohorts are found and the labels and reports are checked against the
files found; their bad rows are printed by line and saved as `problems.csv` beside the
cohorts before any pixel is decoded.

Disk space: before the cohorts are converted, their size is estimated from the headers and
the run stops (`cag_utils.run.diskspace.DiskSpaceError`, with both numbers) when the disk cannot
hold it; the synthetic generator checks its own cohort the same way.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cag_utils.data import ingest
from cag_utils.data.deid import resolve_salt
from cag_utils.data.splits import patient_split
from cag_utils.run.config import REPO_ROOT, results_dir, work_dir
from cag_utils.run.diskspace import folder_bytes, processed_bytes, require_space
from cag_utils.synth.cohort import GENERATOR_KEYS, GENERATOR_VERSION, generate_cohort

COHORTS = ("annotation", "independent")
# Settings that change the processed cohorts (besides the generator's own keys).
DATA_KEYS = GENERATOR_KEYS + ("data_source", "dicom_dir", "labels_csv", "reports_jsonl", "deid_salt",
                              "sampling_min_gap", "sampling_smooth", "sampling_prominence", "split_fractions")


def source_paths(cfg: dict[str, Any], progress: bool = True) -> tuple[Path, Path | None, Path | None]:
    """(exam root, labels CSV, reports JSONL) for the profile's data source."""
    if cfg["data_source"] == "synthetic":
        raw = generate_cohort(work_dir(cfg["profile"]) / "raw", cfg, workers=cfg["num_workers"],
                              progress=progress)
        return raw, raw / "labels.csv", raw / "reports.jsonl"
    if cfg["data_source"] == "dicom_dir":
        if not cfg["dicom_dir"]:
            raise ValueError("data_source is 'dicom_dir' but parameter 'dicom_dir' is empty")
        root = (REPO_ROOT / cfg["dicom_dir"]).resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"parameter 'dicom_dir': folder {cfg['dicom_dir']!r} does not exist")
        opt = lambda key: (REPO_ROOT / cfg[key]).resolve() if cfg[key] else None  # noqa: E731
        for key in ("labels_csv", "reports_jsonl"):
            if opt(key) is not None and not opt(key).is_file():
                raise FileNotFoundError(f"parameter {key!r}: file {cfg[key]!r} does not exist")
        return root, opt("labels_csv"), opt("reports_jsonl")
    raise ValueError(f"parameter 'data_source' must be 'synthetic' or 'dicom_dir', got {cfg['data_source']!r}")


def sampling_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    return {"min_gap": cfg["sampling_min_gap"], "smooth": cfg["sampling_smooth"],
            "prominence": cfg["sampling_prominence"]}


def build_dataset(cfg: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """Ingest both cohorts, add patient splits (annotation cohort) and save under data/work."""
    salt = resolve_salt(cfg)  # real data without a secret salt stops here, before any file is read
    root, labels_csv, reports_jsonl = source_paths(cfg, progress)
    exams = {cohort: ingest.find_exams(root, cohort) for cohort in COHORTS}
    found = {f: e.n_frames[f] for found_exams in exams.values() for e in found_exams for f in e.files}
    labels, problems = ingest.check_labels(ingest.read_labels(labels_csv), found,
                                           labels_csv.name if labels_csv else "labels.csv")
    keys = {k for found_exams in exams.values() for e in found_exams for k in e.keys}
    problems += ingest.check_reports(reports_jsonl, keys)[1]
    processed = work_dir(cfg["profile"]) / "processed" / data_fingerprint(cfg)
    need, how = processed_bytes(((e.n_frames[f], e.pixels.get(f)) for found_exams in exams.values()
                                 for e in found_exams for f in e.files), cfg["sampling_min_gap"])
    require_space(processed, need, "the processed cohorts", how, reclaimable=folder_bytes(processed))
    if problems:
        print(f"{len(problems)} rows of labels/reports left out (also in processed/{processed.name}/problems.csv):")
        for p in problems:
            print(f"  {p['source']} line {p['line']}: {p['problem']}")
    processed.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(problems, columns=["source", "line", "problem"]).to_csv(processed / "problems.csv", index=False)
    out: dict[str, Any] = {}
    for cohort in COHORTS:
        res = ingest.ingest_cohort(root, cohort, labels, salt, sampling_kwargs(cfg),
                                   workers=cfg["num_workers"], progress=progress, exams=exams[cohort])
        table = res["table"]
        if len(table):
            table["split"] = (patient_split(table["patient_id"], tuple(cfg["split_fractions"]), cfg["seed"])
                              if cohort == "annotation" else cohort)
        res["reports"] = ingest.read_reports(reports_jsonl, res.pop("exam_ids"))
        ingest.save_dataset(processed / cohort, res["frames"],
                            {"frames": table, "runs": res["runs"], "reports": res["reports"], "rejects": res["rejects"]})
        out[cohort] = res
    return out


def data_fingerprint(cfg: dict[str, Any]) -> str:
    """12 hex digits naming the processed cohorts of these data settings (for real data the
    secret salt enters as a hash, so the pseudonyms it makes get their own folder)."""
    settings = {k: cfg[k] for k in DATA_KEYS}
    if cfg["data_source"] == "synthetic":  # a new image model names a new processed cohort
        settings["generator_version"] = GENERATOR_VERSION
    if cfg["data_source"] == "dicom_dir":
        settings["deid_salt"] = hashlib.sha256(resolve_salt(cfg).encode()).hexdigest()
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def dataset_dir(cfg: dict[str, Any], cohort: str) -> Path:
    """The processed cohort that notebook 01 of this run recorded (`results/01_data.json`)."""
    record = results_dir(cfg["profile"]) / "01_data.json"
    try:
        fingerprint = json.loads(record.read_text(encoding="utf-8"))["results"]["exact"]["dataset"]
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        raise FileNotFoundError(
            f"no results of notebook 01 for profile {cfg['profile']!r} name a processed cohort; "
            "run notebook 01 first (python -m cag_utils.run.pipeline --only 01_data)") from None
    return work_dir(cfg["profile"]) / "processed" / fingerprint / cohort


def cohort_table(data: dict[str, Any]) -> pd.DataFrame:
    """Patients, exams, runs, raw frames and sampled frames per cohort."""
    rows = []
    for cohort, res in data.items():
        t, r = res["table"], res["runs"]
        rows.append({"cohort": cohort, "patients": t["patient_id"].nunique() if len(t) else 0,
                     "exams": r["exam_id"].nunique() if len(r) else 0, "runs": len(r),
                     "frames": int(r["n_frames"].sum()) if len(r) else 0, "sampled_frames": len(t),
                     "sampled_per_exam": round(len(t) / max(r["exam_id"].nunique(), 1), 1) if len(r) else 0.0,
                     "rejected_files": len(res["rejects"])})
    return pd.DataFrame(rows).set_index("cohort")


def load_annotation(cfg: dict[str, Any]) -> tuple[np.ndarray, pd.DataFrame]:
    """Sampled frames (memory-mapped) and table of the annotation cohort, as notebook 01 saved them."""
    out_dir = dataset_dir(cfg, "annotation")
    if not (out_dir / "frames.npy").is_file() or not (out_dir / "frames.parquet").is_file():
        raise FileNotFoundError(
            f"no processed annotation cohort for profile {cfg['profile']!r} under data/work; "
            "run notebook 01 first (python -m cag_utils.run.pipeline --only 01_data)"
        )
    return ingest.load_dataset(out_dir)
