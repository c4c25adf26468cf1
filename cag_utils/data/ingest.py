"""Cohort ingest: find the exams, check labels and reports, read, de-identify, sample frames.

The same code reads the synthetic cohort and a real export (see the data card, docs/real-data.md).
Every file under `<root>/<cohort>/`, at any depth and with any name (hospital exports
nest patient/study/series folders and drop extensions), is one candidate:
  * an exam is a study: files are grouped by their header's StudyInstanceUID;
  * its name is the deepest folder holding all its files (for PATIENT/STUDY/SERIES exports
    the study folder, for the synthetic cohort the exam folder); reports may name an exam
    by that folder, by any folder above it up to the cohort that holds no other exam, or by
    its StudyInstanceUID;
  * a file without a readable header joins the exam whose folder holds it, or a group of
    its own folder, and is listed as a reject.
Only multi-frame XA images are read (`read_xa(..., xa_cine_only=True)`); every other file
(DICOMDIR, dose reports, secondary captures, single frames, other modalities, truncated or
foreign files, headers `read_xa` refuses) is listed as a reject with its reason, and no file
stops the run: even an unexpected exception while reading or de-identifying one file becomes
a reject (error = the exception's class, reason `UNEXPECTED`, never its message) and a
warning. The reader's fallbacks (`cag_utils.data.dicom_header`) are logged as
"<exam pseudonym> file <n>: ..." (logger `cag_utils.data.dicom`).
Frame labels come in a CSV (`file` relative to the root, `frame`, `laterality`,
`key_frame_category`), reports in JSONL (`exam`); `check_labels` and `check_reports`
report bad rows by line before any pixel is decoded. Only pseudonymous IDs leave this
module: folder names, file names and header identifiers stay behind, and a reject is
named by exam pseudonym and file number.

Output (`save_dataset`): frames.npy (N, H, W) uint8 of the sampled frames, frames.parquet
(one row per frame), runs.parquet (per run: curves, sampled indices), reports.parquet,
rejects.csv, and SHA256SUMS, their content hashes: `load_dataset` checks them and stops with
`cag_utils.run.cachecheck.CacheError` (folder and rebuilding command) when a file was damaged.
"""
from __future__ import annotations

import json
import logging
import posixpath
import warnings
from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
from tqdm.auto import tqdm

from cag_utils.data.deid import Pseudonymizer, deidentify
from cag_utils.data.dicom import DicomReadError, read_xa
from cag_utils.data.labels import LATERALITIES, KEY_FRAME_CATEGORIES, class_index
from cag_utils.data.sampling import intensity_curves, sample_frames
from cag_utils.run.cachecheck import SUMS_NAME, CacheError, check_folder, fix_command, write_sums

LABEL_COLUMNS = ("laterality", "key_frame_category")
log = logging.getLogger(__name__)
# The reason of a reject whose error is not a typed DicomReadError (a bug in the reader, reported by type only).
UNEXPECTED = "unexpected error while reading or de-identifying (not a typed DicomReadError; please report it)"


@dataclass
class ExamInput:
    root: str
    exam: str                          # folder relative to root (never leaves the worker)
    cohort: str
    salt: str
    labels: dict[str, pd.DataFrame]    # file (relative) -> its label rows, indexed by frame
    sampling: dict[str, Any]
    files: list[str] = field(default_factory=list)  # relative to root, in run order
    study: str | None = None           # StudyInstanceUID (never leaves the worker)


@dataclass
class ExamOutput:
    exam_id: str
    frames: np.ndarray
    rows: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Exam:
    """One study found under a cohort folder (names stay inside the ingest)."""

    name: str                  # deepest folder (relative to root) holding all its files
    files: list[str]           # relative to root, sorted; the run/file number is the position + 1
    study: str | None = None   # None: a group of files without a readable header
    keys: tuple[str, ...] = () # names a report may use for it
    n_frames: dict[str, int | None] = field(default_factory=dict)  # file -> NumberOfFrames in its header
    pixels: dict[str, int | None] = field(default_factory=dict)    # file -> Rows x Columns in its header


def _header(path: Path) -> tuple[str | None, int | None, int | None]:
    """(StudyInstanceUID, NumberOfFrames, Rows x Columns) from a file's header; Nones if unreadable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for force in (False, True):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=force,
                                     specific_tags=["StudyInstanceUID", "NumberOfFrames", "SOPClassUID",
                                                    "Rows", "Columns"])
                study = str(ds.get("StudyInstanceUID", "") or "") or None
                try:
                    n = int(ds.get("NumberOfFrames", 1) or 1)
                except (TypeError, ValueError):
                    n = None
                try:
                    pixels = int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0) or None
                except (TypeError, ValueError):
                    pixels = None
                return (study, n, pixels) if study else (None, None, None)
            except Exception:
                continue
    return None, None, None


def find_exams(root: Path, cohort: str) -> list[Exam]:
    """The exams of one cohort: every file under `<root>/<cohort>`, grouped by study (module doc)."""
    root = Path(root)
    base = root / cohort
    if not base.is_dir():
        raise FileNotFoundError(f"cohort folder {base} does not exist")
    files = sorted(p.relative_to(root).as_posix() for p in base.rglob("*") if p.is_file())
    studies: dict[str, list[str]] = defaultdict(list)
    frames: dict[str, int | None] = {}
    pixels: dict[str, int | None] = {}
    orphans: list[str] = []
    for rel in files:
        study, frames[rel], pixels[rel] = _header(root / rel)
        (studies[study] if study else orphans).append(rel)
    exams = [Exam(posixpath.commonpath([posixpath.dirname(f) for f in fs]), fs, study)
             for study, fs in studies.items()]
    for rel in orphans:  # unreadable files join the exam whose folder holds them (deepest), else their folder
        owners = [e for e in exams if e.study and (rel.startswith(e.name + "/"))]
        owner = max(owners, key=lambda e: len(e.name), default=None)
        if owner is None:
            owner = next((e for e in exams if e.study is None and e.name == posixpath.dirname(rel)), None)
            if owner is None:
                owner = Exam(posixpath.dirname(rel), [])
                exams.append(owner)
        owner.files.append(rel)
    for exam in exams:
        exam.files.sort()
        exam.n_frames = {f: frames[f] for f in exam.files}
        exam.pixels = {f: pixels[f] for f in exam.files}
        if exam.study is None:
            continue
        keys, folder = [exam.study], exam.name
        while folder.count("/") >= 1:  # folders up to the cohort folder that hold no other exam
            if any(o is not exam and (o.name + "/").startswith(folder + "/") for o in exams if o.files):
                break
            keys.append(folder)
            folder = posixpath.dirname(folder)
        exam.keys = tuple(keys)
    return sorted(exams, key=lambda e: (e.name, e.study or ""))


def _ingest_exam(job: ExamInput) -> ExamOutput:
    p = Pseudonymizer(job.salt)
    files = [Path(job.root) / f for f in job.files]
    exam_id, patient_id = p.pseudonym(job.study or job.exam, "EX-"), None
    out = ExamOutput(exam_id=exam_id, frames=np.zeros((0, 0, 0), np.uint8))
    kept: list[np.ndarray] = []
    for k, path in enumerate(files):
        try:
            run = read_xa(path, xa_cine_only=True, label=f"{exam_id} file {k + 1}")
            clean = deidentify(run.dataset, p)
        except DicomReadError as err:
            out.rejects.append({"exam_id": exam_id, "file_number": k + 1, "error": type(err).__name__,
                                "reason": err.reason})
            continue
        except Exception as exc:  # a bug, not a bad file: still a reject, so the run goes on (no header values)
            log.warning("%s file %d: unexpected %s while reading or de-identifying", exam_id, k + 1, type(exc).__name__)
            out.rejects.append({"exam_id": exam_id, "file_number": k + 1, "error": type(exc).__name__,
                                "reason": UNEXPECTED})
            continue
        if patient_id is None:  # first readable file names the exam and patient
            exam_id = p.pseudonym(str(run.dataset.get("StudyInstanceUID", job.exam)), "EX-")
            patient_id = str(clean.PatientID)
        mean, var = intensity_curves(run.frames)
        sampled = sample_frames(mean, var, **job.sampling)
        labels = job.labels.get(job.files[k])
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
                         "converted_from": run.converted_from or "",  # grey stored as RGB/YBR, read as grey
                         "patient_sex": str(clean.get("PatientSex", "") or ""),
                         "patient_age": int(age[:3]) if age[:3].isdigit() else None})
    out.exam_id = exam_id
    for reject in out.rejects:  # rejects met before the first readable file carry the final exam ID
        reject["exam_id"] = exam_id
    for row in out.rows + out.runs:
        row.update(run_id=f"{exam_id}-R{row.pop('run_number'):02d}", exam_id=exam_id,
                   patient_id=patient_id or p.pseudonym(job.exam, "PT-"), cohort=job.cohort)
    out.frames = np.stack(kept) if kept else np.zeros((0, 0, 0), np.uint8)
    return out


def read_labels(path: Path | None) -> pd.DataFrame:
    """Frame labels CSV (columns checked; values by `check_labels`); empty frame when no file is given."""
    if path is None or not Path(path).is_file():
        return pd.DataFrame(columns=["file", "frame", *LABEL_COLUMNS])
    df = pd.read_csv(path)
    missing = {"file", "frame", *LABEL_COLUMNS} - set(df.columns)
    if missing:
        raise ValueError(f"labels file {Path(path).name} lacks columns {sorted(missing)}")
    return df


def _problem(source: str, line: int, problem: str) -> dict[str, Any]:
    return {"source": source, "line": line, "problem": problem}


def _fail_if_nothing_left(source: str, n_rows: int, n_usable: int, problems: list[dict[str, Any]]) -> None:
    if n_usable == 0:
        listed = "; ".join(f"line {p['line']}: {p['problem']}" for p in problems[:8])
        more = f"; and {len(problems) - 8} more" if len(problems) > 8 else ""
        raise ValueError(f"{source}: no usable row left of {n_rows} ({listed or 'the file is empty'}{more})")


def check_labels(labels: pd.DataFrame, found: Mapping[str, int | None], source: str = "labels.csv"
                 ) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Label rows that fit the files found, and the rest as problems by CSV line (header = line 1).

    found: every file under the cohort folders (relative to the root) -> its frame count
    (None when its header is unreadable). A row is left out for an unknown file, a frame
    outside the run, an unknown laterality or key-frame category, or a (file, frame) pair
    already labelled by an earlier row. ValueError naming the file and rows when rows were
    given and none is usable. Messages carry line numbers, never paths."""
    problems: list[dict[str, Any]] = []
    keep = np.ones(len(labels), dtype=bool)
    first_line: dict[tuple[str, int], int] = {}
    for i, row in enumerate(labels.itertuples(index=False)):
        line, why = i + 2, None
        frame = pd.to_numeric(pd.Series([row.frame]), errors="coerce").iloc[0]
        n = found.get(str(row.file), -1)
        if n == -1:
            why = "file not found under the cohort folders of dicom_dir"
        elif pd.isna(frame) or frame != int(frame) or frame < 0:
            why = f"frame {str(row.frame)[:12]!r} is not a 0-based frame index"
        elif n is not None and int(frame) >= n:
            why = f"frame {int(frame)} is out of range (the run has {n} frames, 0-{n - 1})"
        elif row.laterality not in LATERALITIES:
            why = f"unknown laterality {str(row.laterality)[:12]!r} (expected one of {', '.join(LATERALITIES)})"
        elif row.key_frame_category not in KEY_FRAME_CATEGORIES:
            why = (f"unknown key_frame_category {str(row.key_frame_category)[:12]!r} "
                   f"(expected one of {', '.join(KEY_FRAME_CATEGORIES)})")
        elif (str(row.file), int(frame)) in first_line:
            why = f"duplicates line {first_line[(str(row.file), int(frame))]} (same file and frame)"
        else:
            first_line[(str(row.file), int(frame))] = line
        if why:
            keep[i] = False
            problems.append(_problem(source, line, why))
    usable = labels[keep]
    if not keep.all() and len(usable):  # frames were read as text because of a bad row
        usable = usable.astype({"frame": "int64"})
    if len(labels):
        _fail_if_nothing_left(source, len(labels), len(usable), problems)
    return usable, problems


def _report_lines(path: Path | None) -> list[tuple[int, Any]]:
    """(line number, parsed JSON or None when the line is not JSON) of a reports JSONL file."""
    if path is None or not Path(path).is_file():
        return []
    out = []
    for i, text in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if text.strip():
            try:
                out.append((i, json.loads(text)))
            except json.JSONDecodeError:
                out.append((i, None))
    return out


def check_reports(path: Path | None, exam_keys: set[str]) -> tuple[int, list[dict[str, Any]]]:
    """(usable reports, problems by line): a line must be a JSON object whose `exam` names one
    exam found (its folder relative to the root, or its StudyInstanceUID), once. ValueError
    naming the file and lines when reports were given and none is usable."""
    source = Path(path).name if path else "reports"
    problems, seen, usable = [], {}, 0
    lines = _report_lines(path)
    for line, record in lines:
        exam = record.get("exam") if isinstance(record, dict) else None
        if not isinstance(record, dict):
            problems.append(_problem(source, line, "not a JSON object"))
        elif not isinstance(exam, str) or not exam:
            problems.append(_problem(source, line, "no 'exam' field"))
        elif exam not in exam_keys:
            problems.append(_problem(source, line, "exam not found (give its folder relative to dicom_dir, "
                                                   "or its StudyInstanceUID)"))
        elif exam in seen:
            problems.append(_problem(source, line, f"duplicates line {seen[exam]} (same exam)"))
        else:
            seen[exam], usable = line, usable + 1
    if lines:
        _fail_if_nothing_left(source, len(lines), usable, problems)
    return usable, problems


def ingest_cohort(root: str | Path, cohort: str, labels: pd.DataFrame, salt: str,
                  sampling: dict[str, Any], workers: int = 1, progress: bool = True,
                  exams: list[Exam] | None = None) -> dict[str, Any]:
    """Read, de-identify and sample every exam of a cohort; returns frames and tables.

    exams: as found by `find_exams` (found here when None). `exam_ids` maps every name a
    report may use for an exam (folder or StudyInstanceUID, see the module doc) to its pseudonym."""
    root = Path(root)
    by_file = {f: g.drop(columns=["file"]).set_index("frame") for f, g in labels.groupby("file")}
    exams = find_exams(root, cohort) if exams is None else exams
    jobs = [ExamInput(str(root), e.name, cohort, salt, {f: by_file[f] for f in e.files if f in by_file},
                      sampling, e.files, e.study) for e in exams]
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
    exam_ids = {key: o.exam_id for e, o in zip(exams, outputs) for key in e.keys}
    return {"frames": frames, "table": table, "runs": runs, "rejects": rejects, "exam_ids": exam_ids}


def read_reports(path: Path | None, exam_ids: dict[str, str]) -> pd.DataFrame:
    """Reports JSONL keyed by exam folder (or StudyInstanceUID) -> table keyed by exam pseudonym
    (the key dropped); lines that are not JSON objects of a known exam, and repeats, are skipped."""
    rows, seen = [], set()
    for _, r in _report_lines(path):
        if isinstance(r, dict) and r.get("exam") in exam_ids and r["exam"] not in seen:
            seen.add(r["exam"])
            rows.append({"exam_id": exam_ids[r["exam"]], **{k: v for k, v in r.items() if k != "exam"}})
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["exam_id"])


def save_dataset(out_dir: str | Path, frames: np.ndarray, tables: dict[str, pd.DataFrame]) -> Path:
    """Write frames.npy, the tables and their sha256 (SHA256SUMS, checked by `load_dataset`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SUMS_NAME).unlink(missing_ok=True)  # a cohort half rewritten never passes for whole
    np.save(out_dir / "frames.npy", frames)
    names = ["frames.npy"]
    for name, df in tables.items():
        if name == "rejects":
            df.to_csv(out_dir / "rejects.csv", index=False)
            names.append("rejects.csv")
        else:
            df.to_parquet(out_dir / f"{name}.parquet", index=False)
            names.append(f"{name}.parquet")
    write_sums(out_dir, names)
    return out_dir


def load_dataset(out_dir: str | Path, mmap: bool = True, fix: str | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """Sampled frames (memory-mapped) and their table, as written by save_dataset.

    The files are checked against their SHA256SUMS first; a damaged or unreadable cohort raises
    `cag_utils.run.cachecheck.CacheError` naming the folder and `fix` (default: rerun notebook 01)."""
    out_dir = Path(out_dir)
    fix = fix or fix_command(out_dir, "01")
    problems = check_folder(out_dir)
    if problems:
        raise CacheError(out_dir, "; ".join(problems), fix)
    try:
        frames = np.load(out_dir / "frames.npy", mmap_mode="r" if mmap else None)
        return frames, pd.read_parquet(out_dir / "frames.parquet")
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated or altered before hashes were recorded
        raise CacheError(out_dir, f"unreadable ({type(exc).__name__})", fix) from None
