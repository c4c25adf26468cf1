"""Header fuzzing of the DICOM reader and the ingest (cag_utils.data.dicom_fuzz), and the fallbacks
of cag_utils.data.dicom_header on the crashes issue 24 names. A few seconds in all."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.dataset import Dataset

from cag_utils.data import dicom_decode, ingest
from cag_utils.data.dicom import ImageTooLargeError, InvalidHeaderError, TruncatedFileError, read_xa, write_xa
from cag_utils.data.dicom_fuzz import MUTATIONS, PHI, fuzz

FRAMES = np.random.default_rng(3).integers(0, 256, (3, 16, 12)).astype(np.uint8)


def _xa(path: Path, **kw) -> Path:
    return write_xa(path, FRAMES, header={**PHI, **kw.pop("header", {})}, **kw)


def _edit(path: Path, **changes) -> Path:
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        if value is None:
            del ds[keyword]
        else:
            setattr(ds, keyword, value)
    ds.save_as(path)
    return path


def _lut_item(descriptor=(256, 0, 8), data=True) -> Dataset:
    item = Dataset()
    if descriptor is not None:
        item.add_new(0x00283002, "US", list(descriptor) if descriptor else None)  # LUTDescriptor
    if data:
        item.add_new(0x00283006, "US", list(range(255, -1, -1)))  # LUTData
    return item


def _no_phi(texts) -> None:
    joined = " ".join(texts)
    for value in PHI.values():
        assert value not in joined


# --------------------------------------------------------------------------- the fuzzer
def test_reader_fuzz_gives_only_typed_refusals_or_reads():
    counts = fuzz(360, seed=24, level="reader", time_limit_s=10.0)
    assert counts["crashes"] == [], counts["crashes"][:5]   # no untyped exception, no timeout
    assert counts["leaks"] == []
    assert counts["by_kind"].get("read", 0) > 50 and counts["by_kind"].get("refused", 0) > 50
    exercised = {m for m, c in counts["by_mutation"].items() if sum(c.values())}
    assert exercised == set(MUTATIONS)
    assert counts["by_mutation"]["absurd_size"] == {"refused": counts["by_mutation"]["absurd_size"]["refused"]}


def test_ingest_fuzz_turns_every_bad_file_into_a_reject_or_a_run():
    counts = fuzz(160, seed=25, level="ingest", time_limit_s=10.0)
    assert counts["crashes"] == [] and counts["leaks"] == []
    assert counts["by_kind"].get("read", 0) > 10 and counts["by_kind"].get("refused", 0) > 10


def test_fuzzer_finds_the_old_crashes(monkeypatch, tmp_path):
    """The fuzzer is not blind: a reader that lets a header value through raw is caught."""
    from cag_utils.data import dicom_fuzz

    def naive(path, xa_cine_only=False, label=None):  # the header handling of the reader before issue 24
        ds = pydicom.dcmread(path)
        int(ds.get("NumberOfFrames", 1)), str(ds.PhotometricInterpretation), float(ds.get("RescaleSlope", 1))
        for keyword in ("ModalityLUTSequence", "VOILUTSequence"):
            if keyword in ds:
                int(ds[keyword][0].LUTDescriptor[2])
        return ds.pixel_array

    monkeypatch.setattr(dicom_fuzz, "read_xa", naive)
    counts = fuzz(120, seed=24, level="reader", seeds=dicom_fuzz.synthetic_seeds(tmp_path))
    assert counts["by_kind"].get("crash", 0) > 10
    assert {"bad_sequence_item", "multi_value", "delete"} <= {c["mutation"] for c in counts["crashes"]}


# --------------------------------------------------------------------------- the named crashes, now fallbacks
def test_missing_photometric_reads_as_monochrome2_and_logs(tmp_path, caplog):
    path = _edit(_xa(tmp_path / "a.dcm"), PhotometricInterpretation=None)
    with caplog.at_level(logging.WARNING, logger="cag_utils.data.dicom"):
        run = read_xa(path, label="EX-1 file 1")
    np.testing.assert_array_equal(run.frames, FRAMES)
    assert run.photometric == "MONOCHROME2" and any("PhotometricInterpretation missing" in r for r in run.repairs)
    assert any(m.startswith("EX-1 file 1: PhotometricInterpretation missing") for m in caplog.messages)
    _no_phi(caplog.messages)


@pytest.mark.parametrize("keyword", ["ModalityLUTSequence", "VOILUTSequence"])
@pytest.mark.parametrize("item", [_lut_item(descriptor=None), _lut_item(descriptor=()), _lut_item(data=False),
                                  _lut_item(descriptor=(256, 0, 40))], ids=["no_descriptor", "empty_descriptor",
                                                                           "no_data", "40_bits"])
def test_malformed_lut_is_ignored_and_raw_values_used(tmp_path, caplog, keyword, item):
    path = _xa(tmp_path / "l.dcm")
    ds = pydicom.dcmread(path)
    setattr(ds, keyword, [item])
    ds.save_as(path)
    with caplog.at_level(logging.WARNING, logger="cag_utils.data.dicom"):
        run = read_xa(path)
    np.testing.assert_array_equal(run.frames, FRAMES)  # the raw 8-bit values, not the inverting table
    assert any(r.startswith(f"{keyword} ") and "ignored" in r for r in run.repairs), run.repairs
    assert caplog.messages and keyword not in run.dataset


def test_valid_lut_still_applied(tmp_path):
    path = _xa(tmp_path / "l.dcm")
    ds = pydicom.dcmread(path)
    ds.VOILUTSequence = [_lut_item()]
    ds.save_as(path)
    run = read_xa(path)
    np.testing.assert_array_equal(run.frames, 255 - FRAMES)
    assert run.repairs == ()


def test_empty_rescale_slope_counts_as_one(tmp_path):
    frames = np.array([[[0, 1000, 2048, 3000, 4095]]], dtype=np.uint16)
    header = {"WindowCenter": 2048, "WindowWidth": 1024, "RescaleIntercept": 0}
    good = read_xa(write_xa(tmp_path / "g.dcm", frames, bits_stored=12, header=header))
    path = write_xa(tmp_path / "e.dcm", frames, bits_stored=12, header={**header, "RescaleSlope": 1})
    ds = pydicom.dcmread(path)
    ds["RescaleSlope"].value = None
    ds.save_as(path)
    run = read_xa(path)
    np.testing.assert_array_equal(run.frames, good.frames)
    assert "RescaleSlope empty: counts as 1" in run.repairs


def test_multi_valued_number_of_frames_is_a_typed_error_naming_it(tmp_path):
    path = _edit(_xa(tmp_path / "m.dcm"), NumberOfFrames=[3, 3])
    for cine_only in (False, True):
        with pytest.raises(InvalidHeaderError) as info:
            read_xa(path, xa_cine_only=cine_only)
        assert info.value.element == "NumberOfFrames" and "NumberOfFrames" in str(info.value)
        _no_phi([str(info.value)])


def test_absurd_size_refused_from_the_header_before_decoding(tmp_path, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("pixels decoded despite an absurd header")

    monkeypatch.setattr(dicom_decode, "decode", no_decoding)
    monkeypatch.setattr(dicom_decode, "decode_compressed", no_decoding)
    for syntax in ("explicit", "rle"):
        path = _edit(_xa(tmp_path / f"{syntax}.dcm", transfer_syntax=syntax), Rows=65535, Columns=65535,
                     NumberOfFrames=100000)
        with pytest.raises(ImageTooLargeError, match="GiB"):
            read_xa(path)
    # under the limit but more frames than the encapsulated data holds: refused before decoding too
    path = _edit(_xa(tmp_path / "many.dcm", transfer_syntax="rle"), NumberOfFrames=50000)
    with pytest.raises(TruncatedFileError, match="fragment"):
        read_xa(path)


# --------------------------------------------------------------------------- the ingest level
def test_bad_files_land_in_rejects_csv_and_the_run_goes_on(tmp_path):
    exam = tmp_path / "annotation" / "exam1"
    for k in range(3):
        _xa(exam / f"run{k}.dcm", header={"StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1"})
    _edit(exam / "run1.dcm", NumberOfFrames=[3, 3])  # a typed refusal
    (exam / "run2.dcm").write_bytes((exam / "run2.dcm").read_bytes()[:-100])  # truncated in the pixels
    res = ingest.ingest_cohort(tmp_path, "annotation", ingest.read_labels(None), "salt-for-a-test",
                               {"min_gap": 1, "smooth": 1, "prominence": 0.0}, workers=1, progress=False)
    assert len(res["runs"]) == 1 and res["runs"]["run_id"].str.endswith("-R01").all()
    ingest.save_dataset(tmp_path / "out", res["frames"], {"rejects": res["rejects"]})
    rejects = pd.read_csv(tmp_path / "out" / "rejects.csv")
    assert rejects["file_number"].tolist() == [2, 3]
    assert rejects.loc[0, "error"] == "InvalidHeaderError" and "NumberOfFrames" in rejects.loc[0, "reason"]
    assert rejects.loc[1, "error"] == "TruncatedFileError"
    _no_phi(rejects.astype(str).to_numpy().ravel())


def test_unexpected_exception_is_a_reject_by_type_only(tmp_path, monkeypatch, caplog):
    exam = tmp_path / "c" / "e"
    for k in range(2):
        _xa(exam / f"run{k}.dcm")

    def broken(ds, p):
        raise RuntimeError(f"boom {ds.PatientName}")  # a message that would leak

    monkeypatch.setattr(ingest, "deidentify", broken)
    job = ingest.ExamInput(str(tmp_path), "c/e", "c", "salt-for-a-test", {}, {"min_gap": 1, "smooth": 1,
                           "prominence": 0.0}, ["c/e/run0.dcm", "c/e/run1.dcm"])
    with caplog.at_level(logging.WARNING, logger="cag_utils.data.ingest"):
        out = ingest._ingest_exam(job)
    assert [r["error"] for r in out.rejects] == ["RuntimeError", "RuntimeError"]
    assert all(r["reason"] == ingest.UNEXPECTED for r in out.rejects)
    _no_phi([str(r) for r in out.rejects] + caplog.messages)


# --------------------------------------------------------------------------- the time limit off the main thread
def _in_thread(fn):
    import threading

    out = []
    worker = threading.Thread(target=lambda: out.append(fn()))
    worker.start()
    worker.join(30)
    assert not worker.is_alive() and out
    return out[0]


def test_time_limit_is_enforced_off_the_main_thread(tmp_path, monkeypatch):
    """SIGALRM only works in the main thread: elsewhere a watched worker thread keeps the limit."""
    import time

    from cag_utils.data import dicom_fuzz

    path = _xa(tmp_path / "IM0001")
    case = dicom_fuzz.Case(0, path.name, "delete", "Rows", "")
    assert _in_thread(lambda: dicom_fuzz.run_case(path, case)).kind == "read"   # an intact file reads

    def hangs(*args, **kwargs):
        while True:
            time.sleep(0.01)

    monkeypatch.setattr(dicom_fuzz, "read_xa", hangs)
    t0 = time.perf_counter()
    outcome = _in_thread(lambda: dicom_fuzz.run_case(path, case, time_limit_s=0.5))
    assert outcome.kind == "timeout" and outcome.error == "CaseTimeout" and outcome.reason == ""   # and ended
    assert time.perf_counter() - t0 < 3
    assert dicom_fuzz.run_case(path, case, time_limit_s=0.5).kind == "timeout"   # main thread: the alarm
