"""Cohort ingest: read every exam, de-identify, sample frames, join labels and reports.

The same code reads the synthetic cohort and a real export laid out the same way
(see the data card in README.md): `<root>/<cohort>/<exam folder>/*.dcm`, frame labels in a
CSV (`file` relative to the root, `frame`, `laterality`, `key_frame_category`) and
reports in JSONL (`exam` = the exam folder relative to the root). Only pseudonymous IDs
leave this module: folder names, file names and header identifiers stay behind, and a
file that cannot be read is listed as a reject (exam pseudonym, file number, reason).

Output (`save_dataset`): frames.npy (N, H, W) uint8 of the sampled frames, frames.parquet
(one row per frame), runs.parquet (per run: curves, sampled indices), reports.parquet,
rejects.csv.
"""
from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cag_utils.deid import Pseudonymizer, deidentify
from cag_utils.dicom import DicomReadError, read_xa
from cag_utils.labels import LATERALITIES, KEY_FRAME_CATEGORIES, class_index
from cag_utils.sampling import intensity_curves, sample_frames

LABEL_COLUMNS = ("laterality", "key_frame_category")


@dataclass
class ExamInput:
    root: str
    exam: str                          # folder relative to root (never leaves the worker)
    cohort: str
    salt: str
    labels: dict[str, pd.DataFrame]    # file (relative) -> its label rows, indexed by frame
    sampling: dict[str, Any]


@dataclass
class ExamOutput:
    exam_id: str
    frames: np.ndarray
    rows: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)


def find_exams(root: Path, cohort: str) -> list[str]:
    """Exam folders (relative to root) of one cohort: every folder holding .dcm files."""
    base = root / cohort
    if not base.is_dir():
        raise FileNotFoundError(f"cohort folder {base} does not exist")
    return sorted({p.parent.relative_to(root).as_posix() for p in base.rglob("*.dcm")})


def _ingest_exam(job: ExamInput) -> ExamOutput:
    p = Pseudonymizer(job.salt)
    files = sorted((Path(job.root) / job.exam).glob("*.dcm"))
    exam_id, patient_id = p.pseudonym(job.exam, "EX-"), None
    out = ExamOutput(exam_id=exam_id, frames=np.zeros((0, 0, 0), np.uint8))
    kept: list[np.ndarray] = []
    for k, path in enumerate(files):
        try:
            run = read_xa(path)
        except DicomReadError as err:
            out.rejects.append({"exam_id": exam_id, "file_number": k + 1, "error": type(err).__name__,
                                "reason": err.reason})
            continue
        clean = deidentify(run.dataset, p)
        if patient_id is None:  # first readable file names the exam and patient
            exam_id = p.pseudonym(str(run.dataset.get("StudyInstanceUID", job.exam)), "EX-")
            patient_id = str(clean.PatientID)
        mean, var = intensity_curves(run.frames)
        sampled = sample_frames(mean, var, **job.sampling)
        rel = (Path(job.exam) / path.name).as_posix()
        labels = job.labels.get(rel)
        age = str(clean.get("PatientAge", "") or "")
        laterality = None
        for i in sampled:
            row: dict[str, Any] = {"run_number": k + 1, "frame_index": int(i), "n_frames": run.n_frames}
            if labels is not None and int(i) in labels.index:
                row.update({c: labels.at[int(i), c] for c in labels.columns})
                laterality = row.get("laterality", laterality)
            out.rows.append(row)
            kept.append(run.frames[i])
        out.runs.append({"run_number": k + 1, "laterality": laterality, "n_frames": run.n_frames,
                         "frame_time_ms": run.frame_time_ms, "primary_angle": run.primary_angle,
                         "secondary_angle": run.secondary_angle, "transfer_syntax": run.transfer_syntax,
                         "mean_curve": np.round(mean, 3).tolist(), "var_curve": np.round(var, 2).tolist(),
                         "sampled": sampled.tolist(),
                         "patient_sex": str(clean.get("PatientSex", "") or ""),
                         "patient_age": int(age[:3]) if age[:3].isdigit() else None})
    out.exam_id = exam_id
    for row in out.rows + out.runs:
        row.update(run_id=f"{exam_id}-R{row.pop('run_number'):02d}", exam_id=exam_id,
                   patient_id=patient_id or p.pseudonym(job.exam, "PT-"), cohort=job.cohort)
    out.frames = np.stack(kept) if kept else np.zeros((0, 0, 0), np.uint8)
    return out


def read_labels(path: Path | None) -> pd.DataFrame:
    """Frame labels CSV; validated values; empty frame when no file is given."""
    if path is None or not Path(path).is_file():
        return pd.DataFrame(columns=["file", "frame", *LABEL_COLUMNS])
    df = pd.read_csv(path)
    missing = {"file", "frame", *LABEL_COLUMNS} - set(df.columns)
    if missing:
        raise ValueError(f"labels file {Path(path).name} lacks columns {sorted(missing)}")
    bad = ~df["laterality"].isin(LATERALITIES) | ~df["key_frame_category"].isin(KEY_FRAME_CATEGORIES)
    if bad.any():
        raise ValueError(f"labels file {Path(path).name}: {int(bad.sum())} rows with unknown labels, "
                         f"first at line {int(np.flatnonzero(bad)[0]) + 2}")
    return df


def ingest_cohort(root: str | Path, cohort: str, labels: pd.DataFrame, salt: str,
                  sampling: dict[str, Any], workers: int = 1, progress: bool = True) -> dict[str, Any]:
    """Read, de-identify and sample every exam of a cohort; returns frames and tables."""
    root = Path(root)
    by_file = {f: g.drop(columns=["file"]).set_index("frame") for f, g in labels.groupby("file")}
    exams = find_exams(root, cohort)
    jobs = [ExamInput(str(root), e, cohort, salt,
                      {f: g for f, g in by_file.items() if f.startswith(e + "/")}, sampling) for e in exams]
    outputs: list[ExamOutput] = []
    with ProcessPoolExecutor(max_workers=max(workers, 1)) as pool:
        for out in tqdm(pool.map(_ingest_exam, jobs, chunksize=1), total=len(jobs),
                        desc=f"reading {cohort} exams", disable=not progress):
            outputs.append(out)
    frames_list = [o.frames for o in outputs if len(o.frames)]
    frames = np.concatenate(frames_list) if frames_list else np.zeros((0, 0, 0), np.uint8)
    table = pd.DataFrame([r for o in outputs for r in o.rows])
    if len(table):
        for col in LABEL_COLUMNS:  # unlabelled exams (e.g. real independent exams) keep empty labels
            if col not in table:
                table[col] = None
        table["label"] = [class_index(l, k) if isinstance(l, str) and isinstance(k, str) else -1
                          for l, k in zip(table["laterality"], table["key_frame_category"])]
        table.insert(0, "frame_uid", [f"{r}-F{i:03d}" for r, i in zip(table["run_id"], table["frame_index"])])
    rejects = pd.DataFrame([r for o in outputs for r in o.rejects],
                           columns=["exam_id", "file_number", "error", "reason"])
    runs = pd.DataFrame([r for o in outputs for r in o.runs])
    return {"frames": frames, "table": table, "runs": runs, "rejects": rejects,
            "exam_ids": {e: o.exam_id for e, o in zip(exams, outputs)}}


def read_reports(path: Path | None, exam_ids: dict[str, str]) -> pd.DataFrame:
    """Reports JSONL keyed by exam folder -> table keyed by exam pseudonym (folder dropped)."""
    if path is None or not Path(path).is_file():
        return pd.DataFrame(columns=["exam_id"])
    records = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [{"exam_id": exam_ids[r["exam"]], **{k: v for k, v in r.items() if k != "exam"}}
            for r in records if r.get("exam") in exam_ids]
    return pd.DataFrame(rows)


def save_dataset(out_dir: str | Path, frames: np.ndarray, tables: dict[str, pd.DataFrame]) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "frames.npy", frames)
    for name, df in tables.items():
        if name == "rejects":
            df.to_csv(out_dir / "rejects.csv", index=False)
        else:
            df.to_parquet(out_dir / f"{name}.parquet", index=False)
    return out_dir


def load_dataset(out_dir: str | Path, mmap: bool = True) -> tuple[np.ndarray, pd.DataFrame]:
    """Sampled frames (memory-mapped) and their table, as written by save_dataset."""
    out_dir = Path(out_dir)
    frames = np.load(out_dir / "frames.npy", mmap_mode="r" if mmap else None)
    return frames, pd.read_parquet(out_dir / "frames.parquet")
