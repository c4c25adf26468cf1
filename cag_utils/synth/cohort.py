"""Generate a synthetic angiography cohort on disk, laid out like a real data export.

    raw/annotation/<exam folder>/run_NN.dcm   exams whose frames are labelled (paper: 539)
    raw/independent/<exam folder>/run_NN.dcm  exams for key-frame extraction (paper: 243)
    raw/labels.csv      file, frame, laterality, key_frame_category (+ simulated state)
    raw/reports.jsonl   one object per exam: exam folder, reports (ja/en), plan, lesions
    raw/cohort.json     generator settings; a cohort with the same settings is reused
    raw/SHA256SUMS      sha256 of every file above, written last (`cag_utils.run.cachecheck`)

Headers carry PHI-like values (fake names, IDs, birth and study dates; folder names are
built from them) that the loader must remove. Exams are generated in parallel processes,
one SeedSequence child per exam, so the cohort does not depend on the number of workers;
each worker writes its exam and returns only labels and reports (memory stays flat).
Before anything is written, the cohort's size is estimated (`cag_utils.run.diskspace.cohort_bytes`)
and generation stops with DiskSpaceError when the disk cannot hold it.
A cohort is reused only when its files match SHA256SUMS; a damaged one is generated again (logged on
`cag_utils.cache`). One written before the sums existed is checked for what is cheap: labels.csv matches
the fingerprint in cohort.json and every labelled file is there (the reader refuses unreadable files).
"""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.uid import generate_uid
from tqdm.auto import tqdm

from cag_utils.data.dicom import write_xa
from cag_utils.run.cachecheck import SUMS_NAME, _short, check_folder, log, write_sums
from cag_utils.run.diskspace import cohort_bytes, folder_bytes, require_space
from cag_utils.synth import anatomy, imaging
from cag_utils.synth.reports import ClinicalFacts, make_reports, sample_clinical_facts

GENERATOR_VERSION = 8  # bump when the image model changes, so cached cohorts are rebuilt
GENERATOR_KEYS = ("seed", "n_annotation_exams", "n_independent_exams", "image_size", "frame_rate",
                  "run_seconds", "bits_stored", "transfer_syntax", "low_dose_fraction",
                  "annotator_noise")
_SURNAMES = ["SATO", "SUZUKI", "TAKAHASHI", "TANAKA", "WATANABE", "ITO", "YAMAMOTO", "NAKAMURA",
             "KOBAYASHI", "KATO", "YOSHIDA", "YAMADA", "SASAKI", "YAMAGUCHI", "MATSUMOTO"]
_GIVEN = {"M": ["TARO", "HIROSHI", "KENJI", "MAKOTO", "TAKESHI", "OSAMU", "YUTAKA", "SHIGERU"],
          "F": ["HANAKO", "YOKO", "KEIKO", "MICHIKO", "SACHIKO", "NAOMI", "AKEMI", "KAZUKO"]}


@dataclass(frozen=True)
class ExamTask:
    cohort: str
    index: int
    patient: dict[str, Any]
    seed: tuple[int, ...]           # SeedSequence entropy + spawn key of this exam
    settings: dict[str, Any]


def generator_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    return {"generator_version": GENERATOR_VERSION, **{k: cfg[k] for k in GENERATOR_KEYS}}


def cohort_is_current(raw_dir: Path, cfg: dict[str, Any]) -> bool:
    meta = raw_dir / "cohort.json"
    return meta.is_file() and json.loads(meta.read_text())["settings"] == json.loads(
        json.dumps(generator_settings(cfg)))


def _patients(rng: np.random.Generator, n_exams: int, prefix: int) -> list[dict[str, Any]]:
    """One patient record per exam; about 15 % of patients come back for a second exam."""
    out: list[dict[str, Any]] = []
    while len(out) < n_exams:
        sex = "M" if rng.random() < 0.7 else "F"
        birth = date(1935, 1, 1) + timedelta(days=int(rng.integers(0, 365 * 45)))
        patient = {
            "PatientName": f"{rng.choice(_SURNAMES)}^{rng.choice(_GIVEN[sex])}",
            "PatientID": f"{prefix}{int(rng.integers(10**6, 10**7))}",
            "PatientBirthDate": birth.strftime("%Y%m%d"), "PatientSex": sex,
            "anatomy_seed": int(rng.integers(2**31)),
        }
        visits = 2 if rng.random() < 0.15 else 1
        first = date(2015, 1, 1) + timedelta(days=int(rng.integers(0, 365 * 8)))
        for v in range(min(visits, n_exams - len(out))):
            study = first + timedelta(days=v * int(rng.integers(180, 900)))
            age = (study - birth).days // 365
            out.append({**patient, "StudyDate": study.strftime("%Y%m%d"), "PatientAge": f"{age:03d}Y",
                        "AccessionNumber": f"A{int(rng.integers(10**8, 10**9))}", "visit": v})
    return out


def _exam_folder(p: dict[str, Any]) -> str:
    # Real exports often name folders after the patient ID and date: PHI the loader must drop.
    return f"{p['PatientID']}_{p['StudyDate']}"


def exam_views(rng: np.random.Generator) -> list[tuple[str, tuple[float, float]]]:
    """4-6 LCA and 2-3 RCA views (weighted, no repeats); the left coronary first in about 70 % of exams."""
    n_lca, n_rca = int(rng.integers(4, 7)), int(rng.integers(2, 4))
    out = {}
    for lat, views, weights, n in (("LCA", imaging.LCA_VIEWS, imaging.LCA_VIEW_WEIGHTS, n_lca),
                                   ("RCA", imaging.RCA_VIEWS, imaging.RCA_VIEW_WEIGHTS, n_rca)):
        idx = rng.choice(len(views), size=n, replace=False, p=np.asarray(weights) / np.sum(weights))
        out[lat] = [(lat, tuple(views[i])) for i in idx]
    return out["LCA"] + out["RCA"] if rng.random() < 0.7 else out["RCA"] + out["LCA"]


def exam_catheters(rng: np.random.Generator) -> tuple[dict[str, str], str]:
    """Catheter per laterality and the access route: radial (70 %) with one universal catheter
    (Tiger/Ikari, "TIG") in half of those exams, otherwise Judkins/Amplatz shapes."""
    access = "radial" if rng.random() < imaging.RADIAL_SHARE else "femoral"
    if access == "radial" and rng.random() < imaging.UNIVERSAL_SHARE:
        return {"LCA": "TIG", "RCA": "TIG"}, access
    pick = {lat: str(rng.choice(list(c), p=list(c.values()))) for lat, c in imaging.CATHETERS_FEMORAL.items()}
    return pick, access


@dataclass(frozen=True)
class ExamDraw:
    """What an exam is before any frame is rendered: the patient's clinical facts, their reports and the
    study's UID (the loader's exam pseudonym is derived from it)."""

    facts: ClinicalFacts
    reports: dict[str, str]
    study_uid: str
    geometry: dict[str, Any]


def _draw_exam(task: ExamTask) -> tuple[ExamDraw, np.random.Generator]:
    """The exam's facts and reports, and its random stream positioned where the rendering starts."""
    s, p = task.settings, task.patient
    rng = np.random.default_rng(np.random.SeedSequence(task.seed[0], spawn_key=task.seed[1:]))
    anat_rng = np.random.default_rng(p["anatomy_seed"])  # same heart for both visits
    dominance = anatomy.sample_dominance(anat_rng)
    geometry = anatomy.sample_geometry(anat_rng, p["PatientSex"] == "F")
    lesions = anatomy.sample_lesions(rng, dominance)
    facts = sample_clinical_facts(rng, lesions, dominance)
    facts = type(facts)(**{**facts.__dict__, "age": int(p["PatientAge"][:3]), "sex": p["PatientSex"]})
    reports = make_reports(facts, rng)
    study_uid = generate_uid(entropy_srcs=[f"{s['seed']}-{task.cohort}-{task.index}", "study"])
    return ExamDraw(facts, reports, study_uid, geometry), rng


def _tasks(cfg: dict[str, Any], raw_dir: Path) -> list[ExamTask]:
    """One task per exam (annotation cohort first), each with its own SeedSequence child."""
    settings = {**generator_settings(cfg), "raw_dir": str(raw_dir)}
    root = np.random.SeedSequence(cfg["seed"])
    tasks: list[ExamTask] = []
    for c, (cohort, n) in enumerate((("annotation", cfg["n_annotation_exams"]),
                                     ("independent", cfg["n_independent_exams"]))):
        patients = _patients(np.random.default_rng([cfg["seed"], c]), n, prefix=c + 1)
        tasks += [ExamTask(cohort, i, p, (root.entropy, c, i), settings) for i, p in enumerate(patients)]
    return tasks


def draw_exams(cfg: dict[str, Any]) -> list[ExamDraw]:
    """The facts and reports of every exam ``generate_cohort(raw_dir, cfg)`` writes, in its order, without
    rendering a frame (seconds, not minutes): e.g. to write more summaries of a cohort whose raw files are
    gone. The same code draws them for ``_generate_exam``, so they are the exams' own."""
    return [_draw_exam(t)[0] for t in _tasks(cfg, Path("."))]


def _generate_exam(task: ExamTask) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Render and write all runs of one exam; return its label rows and report record."""
    s, p = task.settings, task.patient
    draw, rng = _draw_exam(task)
    facts, reports, study_uid, geometry = draw.facts, draw.reports, draw.study_uid, draw.geometry
    dominance, lesions, female = facts.dominance, facts.lesions, p["PatientSex"] == "F"
    folder = Path(task.cohort) / _exam_folder(p)
    out_dir = Path(s["raw_dir"]) / folder
    out_dir.mkdir(parents=True, exist_ok=True)
    uid_root = f"{s['seed']}-{task.cohort}-{task.index}"
    header = {k: p[k] for k in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
                                "StudyDate", "AccessionNumber")}
    header.update(StudyTime="093000", StudyInstanceUID=study_uid, InstitutionName="SYNTHETIC HEART CENTER",
                  ReferringPhysicianName="DOCTOR^REFERRING", OperatorsName="TECH^OPERATOR",
                  StudyDescription="CORONARY ANGIOGRAPHY", StudyID="1")
    heart_rate = float(rng.uniform(0.95, 1.45))
    trees = {lat: anatomy.build_tree(lat, dominance, lesions, rng, spacing=0.25, female=female,
                                     geometry=geometry) for lat in ("LCA", "RCA")}
    views = exam_views(rng)
    catheters, access = exam_catheters(rng)
    artefacts = {"ecg": bool(rng.random() < 0.3), "pacing_lead": bool(rng.random() < 0.03),
                 "sternal_wires": "prior_cabg" in facts.history}
    rows: list[dict[str, Any]] = []
    for r, (lat, view) in enumerate(views):
        spec = imaging.sample_run_spec(rng, lat, tuple(view), s["frame_rate"], tuple(s["run_seconds"]),
                                       s["low_dose_fraction"], heart_rate, catheter=catheters[lat], access=access,
                                       artefacts=artefacts)
        frames, truth = imaging.render_run(trees[lat], spec, s["image_size"], s["bits_stored"], rng)
        name = f"run_{r + 1:02d}.dcm"
        write_xa(out_dir / name, frames, bits_stored=s["bits_stored"], frame_time_ms=1000 / spec.frame_rate,
                 primary_angle=round(spec.primary_angle, 1), secondary_angle=round(spec.secondary_angle, 1),
                 transfer_syntax=s["transfer_syntax"],
                 header={**header, "SeriesNumber": r + 1, "InstanceNumber": 1,
                         "SeriesInstanceUID": generate_uid(entropy_srcs=[uid_root, str(r), "series"]),
                         "SOPInstanceUID": generate_uid(entropy_srcs=[uid_root, str(r), "sop"])})
        noisy = rng.random(spec.n_frames) < s["annotator_noise"]
        for k in range(spec.n_frames):
            category = str(truth["key_frame_category"][k])
            label = str(rng.choice(["better", "bad", "others"])) if noisy[k] else category
            rows.append({"file": f"{folder.as_posix()}/{name}", "frame": k, "laterality": lat,
                         "key_frame_category": label, "true_key_frame_category": category,
                         "fill": round(float(truth["fill"][k]), 4), "cover": round(float(truth["cover"][k]), 4), "blur_mm": round(float(truth["blur_mm"][k]), 4),
                         "cnr": round(float(truth["cnr"][k]), 3), "low_dose": int(spec.low_dose),
                         "catheter": spec.catheter, "access": spec.access})
    record = {"exam": folder.as_posix(), "cohort": task.cohort, "dominance": dominance,
              "lesions": "; ".join(f"#{l.segment} {l.percent}%" for l in lesions), **reports}
    return rows, record


def generate_cohort(raw_dir: str | Path, cfg: dict[str, Any], workers: int = 1, force: bool = False,
                    progress: bool = True) -> Path:
    """Write the cohort described by `cfg` (a data-stage config) under raw_dir; reuse a current one."""
    raw_dir = Path(raw_dir)
    if not force and cohort_is_current(raw_dir, cfg):
        if (problem := cohort_problem(raw_dir)) is None:
            return raw_dir
        log.warning("raw cohort %s is damaged (%s): generating it again", _short(raw_dir), problem)
    need, how = cohort_bytes(cfg)  # refuse before deleting or writing anything
    require_space(raw_dir, need, "the synthetic cohort", how, reclaimable=folder_bytes(raw_dir))
    if raw_dir.exists():
        shutil.rmtree(raw_dir)
    raw_dir.mkdir(parents=True)
    tasks = _tasks(cfg, raw_dir)
    labels_path, reports_path = raw_dir / "labels.csv", raw_dir / "reports.jsonl"
    with labels_path.open("w", newline="") as lf, reports_path.open("w", encoding="utf-8") as rf, \
            ProcessPoolExecutor(max_workers=max(workers, 1)) as pool:
        writer = None
        for rows, record in tqdm(pool.map(_generate_exam, tasks, chunksize=1), total=len(tasks),
                                 desc="generating exams", disable=not progress):
            if writer is None:
                writer = csv.DictWriter(lf, fieldnames=list(rows[0]))
                writer.writeheader()
            writer.writerows(rows)
            rf.write(json.dumps(record, ensure_ascii=False) + "\n")
    meta = {"settings": generator_settings(cfg), "n_exams": len(tasks),
            "fingerprint": hashlib.sha256(labels_path.read_bytes()).hexdigest()[:16]}
    (raw_dir / "cohort.json").write_text(json.dumps(meta, indent=2))
    write_sums(raw_dir, [p.relative_to(raw_dir).as_posix() for p in sorted(raw_dir.rglob("*")) if p.is_file()])
    return raw_dir


def cohort_problem(raw_dir: Path) -> str | None:
    """Why a generated cohort cannot be reused (a file fails SHA256SUMS; without sums: labels.csv differs from
    its fingerprint or a labelled file is missing), or None."""
    if (raw_dir / SUMS_NAME).is_file():
        problems = check_folder(raw_dir)
        return "; ".join(problems[:3]) + (f" and {len(problems) - 3} more" if len(problems) > 3 else "") or None
    labels = raw_dir / "labels.csv"
    if not labels.is_file():
        return "labels.csv is missing"
    if hashlib.sha256(labels.read_bytes()).hexdigest()[:16] != json.loads((raw_dir / "cohort.json").read_text()).get(
            "fingerprint"):
        return "labels.csv does not match its fingerprint in cohort.json"
    with labels.open(newline="") as fh:
        missing = sorted({r["file"] for r in csv.DictReader(fh) if not (raw_dir / r["file"]).is_file()})
    return f"{len(missing)} labelled file(s) missing, e.g. {missing[0]}" if missing else None
