"""A small, messy "hospital export" built from synthetic exams: the test bed of `data_source: dicom_dir`.

    python -m cag_utils.synth.export_tree OUT      # writes OUT/export (about 10 s, 2 MB)

What it holds (everything a real export throws at the loader, nothing committed as binaries):
  export/annotation/DICOMDIR, PT000000/ST000000/SE000000/IM000000, ...
        a media export written by pydicom's FileSet: nested patient/study/series folders,
        files without extensions; mixed in: a radiation dose SR, a secondary capture, a
        single-frame XA and an RF cine (another modality) in the first study, and one XA
        cine cut short (truncated);
  export/independent/<PATIENT^NAME>/<study date>_<accession>/S<series>/I<instance>
        named folders (patient names in folder names, which must never reach the outputs),
        one XA cine stored as RGB with three equal channels (read as grey, flagged), and a
        stray notes.txt;
  export/labels.csv      frame labels of the annotation exams, plus four bad rows (EXPECTED_LABEL_PROBLEMS);
  export/reports.jsonl   reports of every exam, keyed by StudyInstanceUID (annotation) or by
                         study folder (independent), plus one line for an exam that is not there.
`EXPECTED_REJECTS` lists, per cohort, the files the ingest must refuse and why.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import (ExplicitVRLittleEndian, SecondaryCaptureImageStorage, XRayRadiationDoseSRStorage,
                         XRayRadiofluoroscopicImageStorage, generate_uid)

from cag_utils.data.dicom import write_xa
from cag_utils.run.config import load_config
from cag_utils.synth.cohort import generate_cohort

# The synthetic exams underneath (smoke settings, fewer and smaller).
SETTINGS = {"n_annotation_exams": 6, "n_independent_exams": 3, "image_size": 64, "run_seconds": [2.5, 3.0]}
# (error type, words of the reason) of every file the ingest must refuse, per cohort.
EXPECTED_REJECTS = {
    "annotation": [("NotXACineError", "DICOMDIR"), ("NotXACineError", "X-Ray Radiation Dose SR Storage"),
                   ("NotXACineError", "Secondary Capture Image Storage"), ("NotXACineError", "single-frame XA"),
                   ("NotXACineError", "Radiofluoroscopic Image Storage, modality RF"),
                   ("TruncatedFileError", "truncated")],
    "independent": [("NotDicomError", "not a DICOM file")],
}
EXPECTED_LABEL_PROBLEMS = ["out of range", "file not found", "unknown laterality", "duplicates line"]
EXPECTED_REPORT_PROBLEMS = ["exam not found"]
_STUDY_KEYS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
               "StudyInstanceUID", "AccessionNumber", "StudyID", "ReferringPhysicianName")


def _study_header(path: Path) -> dict[str, Any]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return {k: ds.get(k, "") for k in _STUDY_KEYS}


def _dose_report(path: Path, study: dict[str, Any]) -> Path:
    """A minimal X-Ray Radiation Dose SR of the study (no pixels)."""
    ds = Dataset()
    for k, v in study.items():
        setattr(ds, k, v)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = XRayRadiationDoseSRStorage, generate_uid(), "SR"
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = generate_uid(), 900, 1
    ds.ContentDate, ds.ContentTime, ds.Manufacturer = study["StudyDate"], study["StudyTime"], "cag_utils"
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "113701", "DCM", "X-Ray Radiation Dose Report"
    ds.ConceptNameCodeSequence = [code]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def _retyped(path: Path, sop_class: str, modality: str) -> Path:
    ds = pydicom.dcmread(path)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.Modality = modality
    ds.save_as(path)
    return path


def _as_grey_rgb(src: Path, dst: Path) -> Path:
    """The same cine run stored as uncompressed RGB with three equal channels (a viewer's export)."""
    ds = pydicom.dcmread(src)
    grey = ds.pixel_array
    if int(ds.BitsStored) != 8:  # colour exports are 8-bit: the fixed rule the reader applies
        grey = np.rint(grey.astype(np.float64) * 255 / (2 ** int(ds.BitsStored) - 1)).astype(np.uint8)
    ds.PixelData = np.repeat(grey[..., None], 3, axis=-1).astype(np.uint8).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds["PixelData"].VR = "OB"
    ds.save_as(dst, enforce_file_format=True)
    return dst


def _extras(tmp: Path, first_exam: Path) -> list[Path]:
    """The non-XA objects (and a single frame) of the first annotation study."""
    study = _study_header(next(iter(sorted(first_exam.glob("*.dcm")))))
    frames = pydicom.dcmread(next(iter(sorted(first_exam.glob("*.dcm"))))).pixel_array
    frames = (frames >> 2).astype(np.uint8)  # 10-bit -> 8-bit for the extra images
    sc = write_xa(tmp / "sc.dcm", frames[0], header={**study, "SeriesNumber": 901})
    return [_dose_report(tmp / "sr.dcm", study),
            _retyped(sc, SecondaryCaptureImageStorage, "OT"),
            write_xa(tmp / "single.dcm", frames[len(frames) // 2], header={**study, "SeriesNumber": 902}),
            _retyped(write_xa(tmp / "rf.dcm", frames[:8], header={**study, "SeriesNumber": 903}),
                     XRayRadiofluoroscopicImageStorage, "RF")]


def build_export(out: str | Path, seed: int | None = None) -> Path:
    """Write the export tree under `out/export` (replacing it) and return that folder."""
    out = Path(out)
    cfg = {**load_config("smoke", "data"), **SETTINGS}
    if seed is not None:
        cfg["seed"] = seed
    source = generate_cohort(out / "source", cfg, workers=1, force=True, progress=False)
    export = out / "export"
    if export.exists():
        shutil.rmtree(export)
    new_path: dict[str, str] = {}  # generator's relative file -> relative file in the export
    exam_key: dict[str, str] = {}  # generator's exam folder -> the key reports use in the export

    # annotation: a FileSet (DICOMDIR) export, the extras in the first study, one run truncated
    fs, by_uid = FileSet(), {}
    exams = sorted((source / "annotation").iterdir())
    for exam in exams:
        for f in sorted(exam.glob("*.dcm")):
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            by_uid[str(ds.SOPInstanceUID)] = f.relative_to(source).as_posix()
            exam_key[exam.relative_to(source).as_posix()] = str(ds.StudyInstanceUID)
            fs.add(f)
    (out / "extras").mkdir(exist_ok=True)
    for f in _extras(out / "extras", exams[0]):
        fs.add(f)
    fs.write(export / "annotation")
    truncated = None
    for instance in fs:
        rel = Path(instance.path).relative_to(export).as_posix()
        if instance.SOPInstanceUID in by_uid:
            new_path[by_uid[instance.SOPInstanceUID]] = rel
            if truncated is None and by_uid[instance.SOPInstanceUID].startswith(exams[-1].relative_to(source).as_posix()):
                truncated = Path(instance.path)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) * 3 // 5])  # a transfer that broke off

    # independent: folders named after the patient and study, no extensions, one grey-as-RGB run
    for k, exam in enumerate(sorted((source / "independent").iterdir())):
        files = sorted(exam.glob("*.dcm"))
        h = _study_header(files[0])
        folder = export / "independent" / str(h["PatientName"]) / f"{h['StudyDate']}_{h['AccessionNumber']}"
        exam_key[exam.relative_to(source).as_posix()] = folder.relative_to(export).as_posix()
        for f in files:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            dst = folder / f"S{int(ds.SeriesNumber):03d}" / f"I{int(ds.InstanceNumber):04d}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            if k == 0 and f == files[-1]:
                _as_grey_rgb(f, dst)
            else:
                shutil.copyfile(f, dst)
            new_path[f.relative_to(source).as_posix()] = dst.relative_to(export).as_posix()
        if k == 0:
            (folder / "notes.txt").write_text("Exported with the cine viewer; see the DICOM files.\n")

    # labels of the annotation exams, and four bad rows at the end
    with open(source / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["file"].startswith("annotation/")]
    cols = ["file", "frame", "laterality", "key_frame_category"]
    good = [{c: (new_path[r["file"]] if c == "file" else r[c]) for c in cols} for r in rows]
    n_frames = int(pydicom.dcmread(export / good[0]["file"], stop_before_pixels=True).NumberOfFrames)
    bad = [{**good[0], "frame": str(n_frames + 3)},                       # a frame the run does not have
           {**good[0], "file": "annotation/PT000099/ST000000/SE000000/IM000000"},  # no such file
           {**good[1], "laterality": "LAD"},                                # not a laterality
           dict(good[2])]                                                  # the same row twice
    with open(export / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        writer.writerows(good + bad)

    # reports keyed the two ways an export allows, and one for an exam that is not there
    lines = []
    for line in (source / "reports.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        record["exam"] = exam_key[record["exam"]]
        lines.append(json.dumps(record, ensure_ascii=False))
    lines.append(json.dumps({**json.loads(lines[0]), "exam": "annotation/PT000099"}, ensure_ascii=False))
    (export / "reports.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    shutil.rmtree(source)
    shutil.rmtree(out / "extras")
    return export


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build the messy export tree (a test bed of data_source: dicom_dir).")
    ap.add_argument("out", help="folder to write; the tree goes to OUT/export")
    args = ap.parse_args(argv)
    export = build_export(args.out)
    print(f"wrote {export}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
