"""De-identification (cag_utils.data.deid, PS3.15 Annex E basic profile): no PHI survives a save."""
from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import UID, XRayAngiographicImageStorage

from cag_utils.data.deid import ACTIONS, DATE_SHIFT_RANGE, Pseudonymizer, deidentify
from cag_utils.data.dicom import read_xa, write_xa

PHI = {
    "PatientName": "QXFAKENAME^HANAKO", "PatientID": "QX-PID-314159", "PatientBirthDate": "19580704",
    "PatientSex": "F", "PatientAge": "066Y", "StudyDate": "20190315", "StudyTime": "093000",
    "AccessionNumber": "QXACC271828", "InstitutionName": "QX Fake Heart Institute",
    "InstitutionAddress": "1-2-3 QX Street", "ReferringPhysicianName": "QXREFDOC^ICHIRO",
    "PerformingPhysicianName": "QXPERFDOC^JIRO", "OperatorsName": "QXOPERATOR^SABURO",
    "StationName": "QXSTATION01", "DeviceSerialNumber": "QXSERIAL999", "OtherPatientIDs": "QX-OTHER-4242",
    "PatientAddress": "QX Home Address 9", "StudyDescription": "QX study of HANAKO",
    "StudyInstanceUID": "1.2.826.0.1.3680043.10.999.1", "SeriesInstanceUID": "1.2.826.0.1.3680043.10.999.2",
    "SOPInstanceUID": "1.2.826.0.1.3680043.10.999.3", "FrameOfReferenceUID": "1.2.826.0.1.3680043.10.999.4",
    "AcquisitionDateTime": "20190315093512.250000", "SeriesNumber": 3,
}
RAW_STRINGS = [v for k, v in PHI.items() if k not in ("PatientSex", "PatientAge", "StudyTime", "SeriesNumber")]


def phi_file(tmp_path: Path, name: str = "phi.dcm", **overrides: object) -> Path:
    frames = np.zeros((2, 16, 16), np.uint8)  # constant pixels: no chance of spelling a PHI string
    path = write_xa(tmp_path / name, frames, header={**PHI, **overrides})
    ds = pydicom.dcmread(path)
    block = ds.private_block(0x0009, "QXVENDOR", create=True)
    block.add_new(0x01, "LO", PHI["PatientID"])  # a private tag holding the patient ID
    ref = Dataset()
    ref.ReferencedSOPClassUID = XRayAngiographicImageStorage
    ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.999.5"
    ref.add_new(0x0040A123, "PN", "QXNESTED^PERSON")  # a PN nested in a sequence (Person Name)
    ds.ReferencedImageSequence = [ref]
    ds.save_as(path)
    return path


def test_no_phi_survives_save(tmp_path: Path) -> None:
    src = phi_file(tmp_path)
    assert all(s.encode() in src.read_bytes() for s in RAW_STRINGS)  # the probe strings were written
    p = Pseudonymizer("test-salt")
    out = deidentify(pydicom.dcmread(src), p)
    dst = tmp_path / "deid.dcm"
    out.save_as(dst, enforce_file_format=True)
    data = dst.read_bytes()
    for s in RAW_STRINGS + ["QXNESTED", "HANAKO", "QXVENDOR", "1.2.826.0.1.3680043.10.999"]:
        assert s.encode() not in data, s
    ds = pydicom.dcmread(dst)
    assert ds.PatientName == ds.PatientID == p.pseudonym(PHI["PatientID"])
    assert ds.PatientBirthDate == "" and ds.AccessionNumber == "" and ds.ReferringPhysicianName == ""
    assert (ds.PatientSex, ds.PatientAge, ds.StudyTime) == ("F", "066Y", "093000")
    for kw in ("InstitutionName", "InstitutionAddress", "PerformingPhysicianName", "OperatorsName",
               "StationName", "DeviceSerialNumber", "OtherPatientIDs", "PatientAddress", "StudyDescription"):
        assert kw not in ds, kw
    assert not any(elem.tag.is_private for elem in ds.iterall())
    assert ds.PatientIdentityRemoved == "YES" and ds.DeidentificationMethod
    assert {item.CodeValue for item in ds.DeidentificationMethodCodeSequence} >= {"113100", "113107"}
    assert ds.SOPClassUID == XRayAngiographicImageStorage and ds.Modality == "XA"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.ReferencedImageSequence[0].ReferencedSOPClassUID == XRayAngiographicImageStorage
    # the de-identified file is still a readable cine run with the same pixels
    run = read_xa(dst)
    assert run.frames.shape == (2, 16, 16) and run.dataset.PatientID == p.pseudonym(PHI["PatientID"])


def test_header_from_reader_and_input_untouched(tmp_path: Path) -> None:
    header = read_xa(phi_file(tmp_path)).dataset  # what an ingest pipeline de-identifies
    out = deidentify(header, Pseudonymizer("s"))
    assert header.PatientID == PHI["PatientID"] and header.StudyDate == PHI["StudyDate"]
    assert out.PatientID != PHI["PatientID"] and "PixelData" not in out


def test_uids_replaced_consistently(tmp_path: Path) -> None:
    p = Pseudonymizer("uid-salt")
    out = deidentify(pydicom.dcmread(phi_file(tmp_path)), p)
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        assert getattr(out, kw) == p.uid(PHI[kw]) and UID(getattr(out, kw)).is_valid
    assert out.ReferencedImageSequence[0].ReferencedSOPInstanceUID == p.uid("1.2.826.0.1.3680043.10.999.5")
    other = deidentify(pydicom.dcmread(phi_file(tmp_path, "b.dcm", SOPInstanceUID="1.2.3.4")), p)
    assert other.StudyInstanceUID == out.StudyInstanceUID  # same study stays one study


def test_pseudonyms_stable_and_salted() -> None:
    a, a2, b = Pseudonymizer("alpha"), Pseudonymizer("alpha"), Pseudonymizer("beta")
    assert a.pseudonym("12345") == a2.pseudonym("12345") == a.pseudonym("12345", "PT-")
    assert re.fullmatch(r"PT-[0-9a-f]{12}", a.pseudonym("12345"))
    assert a.pseudonym("12345") != b.pseudonym("12345") and a.pseudonym("12345") != a.pseudonym("12346")
    assert a.pseudonym("12345", "ST-").startswith("ST-")
    uid = a.uid("1.2.3")
    assert uid == a2.uid("1.2.3") != b.uid("1.2.3") and len(uid) <= 64 and UID(uid).is_valid
    with pytest.raises(ValueError):
        Pseudonymizer("")


def test_date_shift_range_and_consistency() -> None:
    p = Pseudonymizer("dates")
    offsets = {p.date_shift_days(f"patient-{i}") for i in range(200)}
    assert all(DATE_SHIFT_RANGE[0] <= o <= DATE_SHIFT_RANGE[1] for o in offsets) and len(offsets) > 50
    assert p.date_shift_days("patient-1") == Pseudonymizer("dates").date_shift_days("patient-1")
    shifted = p.shift_date("20190315", "patient-1")
    assert (date(2019, 3, 15) - date(int(shifted[:4]), int(shifted[4:6]), int(shifted[6:]))).days == -p.date_shift_days("patient-1")
    with pytest.raises(ValueError):
        p.shift_date("2019", "patient-1")


def test_two_studies_of_one_patient_keep_their_interval(tmp_path: Path) -> None:
    p = Pseudonymizer("interval")
    first = deidentify(pydicom.dcmread(phi_file(tmp_path, "a.dcm", StudyDate="20190315")), p)
    second = deidentify(pydicom.dcmread(phi_file(tmp_path, "b.dcm", StudyDate="20200101",
                                                 StudyInstanceUID="1.2.826.0.1.3680043.10.999.9")), p)

    def as_date(s: str) -> date:
        return date(int(s[:4]), int(s[4:6]), int(s[6:8]))

    assert first.StudyDate != "20190315" and first.PatientID == second.PatientID
    assert (as_date(second.StudyDate) - as_date(first.StudyDate)).days == (date(2020, 1, 1) - date(2019, 3, 15)).days
    assert first.ContentDate == first.StudyDate  # every DA of the patient moves by the same offset
    assert first.AcquisitionDateTime[:8] == first.StudyDate and first.AcquisitionDateTime[8:] == "093512.250000"


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom flags the malformed DA on assignment
def test_malformed_dates_are_emptied_not_kept() -> None:
    ds = Dataset()
    ds.PatientID, ds.StudyDate, ds.ContentDate = "X1", "2019", "20190230"
    out = deidentify(ds, Pseudonymizer("s"))
    assert out.StudyDate == "" and out.ContentDate == ""


def test_action_table_uses_real_keywords() -> None:
    assert all(tag_for_keyword(kw) is not None for kw in ACTIONS)
    assert set(ACTIONS.values()) <= {"X", "Z", "K", "P"}


# --------------------------------------------------------------------------- the salt of real data
from cag_utils.data.deid import SALT_ENV, SaltError, resolve_salt  # noqa: E402
from cag_utils.run.config import REPO_ROOT, load_config  # noqa: E402


@pytest.fixture
def real_cfg(monkeypatch):
    monkeypatch.delenv(SALT_ENV, raising=False)
    return {**load_config("smoke", "data"), "data_source": "dicom_dir"}


def test_committed_salt_serves_synthetic_data_only(real_cfg, monkeypatch):
    assert resolve_salt({**real_cfg, "data_source": "synthetic"}) == "compendium-smoke-salt"
    with pytest.raises(SaltError, match="committed to git.*CAG_DEID_SALT.*deid_salt_file"):
        resolve_salt(real_cfg)
    for committed in ("compendium-smoke-salt", "compendium-paper-salt"):
        monkeypatch.setenv(SALT_ENV, committed)
        with pytest.raises(SaltError, match="committed in configs/profiles"):
            resolve_salt(real_cfg)
    monkeypatch.setenv(SALT_ENV, "short")
    with pytest.raises(SaltError, match="at least 16"):
        resolve_salt(real_cfg)


def test_secret_salt_from_env_or_a_file_outside_the_repository(real_cfg, monkeypatch, tmp_path):
    secret = tmp_path / "salt.txt"
    secret.write_text("from-a-file-0123456789\n")
    assert resolve_salt({**real_cfg, "deid_salt_file": str(secret)}) == "from-a-file-0123456789"
    monkeypatch.setenv(SALT_ENV, "from-the-environment-42")
    assert resolve_salt({**real_cfg, "deid_salt_file": str(secret)}) == "from-the-environment-42"  # env wins
    monkeypatch.delenv(SALT_ENV)
    with pytest.raises(SaltError, match="inside the repository"):
        resolve_salt({**real_cfg, "deid_salt_file": "configs/profiles/smoke.yaml"})
    with pytest.raises(SaltError, match="does not exist"):
        resolve_salt({**real_cfg, "deid_salt_file": str(tmp_path / "missing")})
    assert not str(secret).startswith(str(REPO_ROOT))


def test_real_data_fingerprint_follows_the_secret_salt_without_storing_it(real_cfg, monkeypatch):
    from cag_utils.data.dataset import data_fingerprint

    monkeypatch.setenv(SALT_ENV, "first-secret-salt-000")
    first = data_fingerprint(real_cfg)
    monkeypatch.setenv(SALT_ENV, "second-secret-salt-000")
    assert data_fingerprint(real_cfg) != first and re.fullmatch(r"[0-9a-f]{12}", first)


# --------------------------------------------------------------------------- names outside PN elements
def _all_text(ds: Dataset) -> str:
    texts: list[str] = []
    ds.walk(lambda _, e: texts.append(e.value.decode("latin-1") if isinstance(e.value, bytes) else str(e.value)))
    return " ".join(texts)


def test_person_names_in_elements_of_other_vrs_do_not_leak(tmp_path: Path) -> None:
    """A bad exporter writes PN elements as LO/SH/UN, or copies a name into a text element, a sequence item or
    an unregistered tag: none of it survives (PS3.15 E.1: names are removed or replaced wherever they are)."""
    ds = pydicom.dcmread(phi_file(tmp_path))
    del ds.PerformingPhysicianName
    ds.add_new(tag_for_keyword("PerformingPhysicianName"), "LO", "QXBADEXPORT^DOCTOR")   # PN written as LO
    ds.add_new(tag_for_keyword("VerifyingObserverName"), "SH", "QXVERIFIER^KEN")          # PN not in ACTIONS, as SH
    ds.add_new(tag_for_keyword("PatientState"), "LO", "seen by qxrefdoc, stable")         # a known name in free text
    ds.add_new(0x0CAF0010, "UN", b"QXUNKNOWN^TAG ")                                       # unregistered tag as UN
    item = Dataset()
    item.add_new(tag_for_keyword("OtherPatientNames"), "LO", "QXOTHER^NAME")
    item.add_new(tag_for_keyword("PersonName"), "UN", b"QXUNPERSON^AKI")                 # PN as UN in a sequence
    item.add_new(tag_for_keyword("TextValue"), "UT", "Operator QXOPERATOR signed")
    item.add_new(tag_for_keyword("ConceptNameCodeSequence"), "SQ", [])
    ds.ContentSequence = [item]
    ds.Manufacturer = "QX Angio Systems"   # no name in it: kept
    ds.save_as(tmp_path / "bad.dcm", enforce_file_format=True)
    src = pydicom.dcmread(tmp_path / "bad.dcm")
    out = deidentify(src, Pseudonymizer("test-salt"))
    out.save_as(tmp_path / "deid.dcm", enforce_file_format=True)
    data = (tmp_path / "deid.dcm").read_bytes().upper()
    text = _all_text(pydicom.dcmread(tmp_path / "deid.dcm")).upper()
    for s in ("QXBADEXPORT", "QXVERIFIER", "QXREFDOC", "QXUNKNOWN", "QXOTHER", "QXUNPERSON", "QXOPERATOR"):
        assert s.encode() not in data and s not in text, s
    assert out.Manufacturer == "QX Angio Systems" and len(out.ContentSequence) == 1
    assert read_xa(tmp_path / "deid.dcm").frames.shape == (2, 16, 16)   # still a readable run


def test_names_in_other_scripts_and_private_names_count_too() -> None:
    ds = Dataset()
    ds.PatientName, ds.PatientID = "YAMADA^TARO=山田^太郎", "QX-1"
    block = ds.private_block(0x0009, "QXVENDOR", create=True)
    block.add_new(0x02, "PN", "QXPRIVATE^NURSE")
    ds.PatientState = "山田様 (kanji only)"
    ds.AdmittingDiagnosesCodeSequence = [Dataset()]
    ds.AdmittingDiagnosesCodeSequence[0].CodeMeaning = "note by qxprivate"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesNumber = 1
    ds.BodyPartExamined = "HEART"
    out = deidentify(ds, Pseudonymizer("test-salt"))
    text = _all_text(out)
    assert "山田" not in text and "太郎" not in text and "QXPRIVATE" not in text.upper()
    assert "PatientState" not in out and out.BodyPartExamined == "HEART"
