"""Disk space (cag_utils.run.diskspace): estimates against the measured cohorts, and an early refusal
with the numbers when shutil.disk_usage says the disk is too small (monkeypatched)."""
from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from cag_utils.data.dataset import build_dataset
from cag_utils.data.dicom import write_xa
from cag_utils.run import diskspace
from cag_utils.run.config import load_config
from cag_utils.run.diskspace import DiskSpaceError, cohort_bytes, processed_bytes, require_space
from cag_utils.synth.cohort import generate_cohort

Usage = namedtuple("Usage", "total used free")


def _free(monkeypatch, free: int) -> None:
    monkeypatch.setattr(diskspace.shutil, "disk_usage", lambda path: Usage(10**15, 10**15 - free, free))


@pytest.mark.parametrize("profile", ["smoke", "paper"])
def test_cohort_estimate_is_close_above_the_measured_size(profile):
    measured = json.loads(diskspace.BENCH_FILE.read_text())["generation"][profile]
    need, how = cohort_bytes(load_config(profile, "data"))
    assert 1.0 <= need / measured["bytes"] * (measured["exams_generated"] / measured["exams_at_scale"]) <= 1.25, how
    assert f"{measured['exams_at_scale']} exams" in how


def test_estimate_without_a_measurement_uses_the_raw_size(tmp_path):
    cfg = {**load_config("smoke", "data"), "transfer_syntax": "jpeg2000", "image_size": 64, "bits_stored": 12}
    per_frame, source = diskspace.bytes_per_frame(64, 12, "jpeg2000", bench_file=tmp_path / "none.json")
    assert per_frame == 64 * 64 * 2 and "uncompressed" in source
    ratio_frame, source = diskspace.bytes_per_frame(64, 12, "jpeg2000")
    assert 0 < ratio_frame < per_frame and "ratio" in source
    assert cohort_bytes(cfg)[0] > 0


def test_generation_refused_before_anything_is_written_or_deleted(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "old.bin").write_bytes(b"x" * 1000)  # an old cohort with other settings
    _free(monkeypatch, 50 * 10**6)
    with pytest.raises(DiskSpaceError) as info:
        generate_cohort(raw, load_config("smoke", "data"), workers=1, progress=False)
    message = str(info.value)
    assert "the synthetic cohort" in message and "1.12 GB needed" in message and "0.05 GB free" in message
    assert "292 exams" in message and str(raw) in message
    assert sorted(p.name for p in raw.iterdir()) == ["old.bin"]


def test_space_of_the_copy_being_replaced_counts(tmp_path, monkeypatch):
    _free(monkeypatch, 100)
    require_space(tmp_path / "not" / "yet", 150, "x", reclaimable=60)  # 100 free + 60 freed first
    with pytest.raises(DiskSpaceError, match="counting 0.00 GB of the old copy"):
        require_space(tmp_path, 170, "x", reclaimable=60)


def _tiny_export(root: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (12, 16, 12)).astype(np.uint8)
    for cohort, exam in (("annotation", "P1"), ("independent", "P2")):
        write_xa(root / cohort / exam / "run.dcm", frames, header={"PatientID": exam, "PatientName": "ZZ^" + exam})


def test_conversion_refused_from_the_headers_before_writing(tmp_path, monkeypatch):
    _tiny_export(tmp_path / "export")
    monkeypatch.setenv("CAG_OUTPUT_ROOT", str(tmp_path / "out"))
    monkeypatch.setenv("CAG_DEID_SALT", "a-secret-salt-for-this-test-only")
    cfg = {**load_config("smoke", "data"), "data_source": "dicom_dir", "dicom_dir": str(tmp_path / "export"),
           "num_workers": 1}
    need, how = processed_bytes([(12, 16 * 12)] * 2, cfg["sampling_min_gap"])
    assert need == int(2 * 3 * 16 * 12 * diskspace.MARGIN) and "at most 6 sampled frames" in how
    _free(monkeypatch, need - 1)
    with pytest.raises(DiskSpaceError, match="processed cohorts") as info:
        build_dataset(cfg, progress=False)
    assert "at most 6 sampled frames" in str(info.value)
    assert not (tmp_path / "out" / "data" / "work" / "smoke" / "processed").exists()
    _free(monkeypatch, need)  # just enough: the cohorts are converted
    data = build_dataset(cfg, progress=False)
    assert len(data["annotation"]["runs"]) == 1 and len(data["independent"]["runs"]) == 1
