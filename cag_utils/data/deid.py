"""De-identification of DICOM headers after DICOM PS3.15 Annex E (Basic Application Level
Confidentiality Profile), simplified but explicit.

Profile and options applied (codes from CID 7050, written to DeidentificationMethodCodeSequence):
  113100 Basic Application Confidentiality Profile,
  113107 Retain Longitudinal Temporal Information with Modified Dates Option
         (every DA/DT value is shifted by a per-patient offset; TM values are kept),
  113108 Retain Patient Characteristics Option (PatientSex, PatientAge, PatientSize, PatientWeight kept).

Actions, in the order applied (Table E.1-1 action codes; `ACTIONS` lists the keyword -> code table
this module follows, a subset of Table E.1-1 covering what an XA header carries):
  * all private elements are removed (the profile's default for private data);
  * overlay (60xx) and curve (50xx) groups are removed (Overlay Data/Comments, Curve Data: X);
  * PatientID and PatientName -> the salted pseudonym "PT-<12 hex>" (Z allows a dummy, D);
  * X: removed; Z: emptied (type 2 attributes stay present with a zero-length value);
    PatientBirthDate is Z (emptied, not shifted), per Table E.1-1;
  * U: every UI value that is not a UID registered in PS3.6 (SOP classes, transfer syntaxes,
    coding schemes, ...) and not a *ClassUID/TransferSyntaxUID is replaced by a salted 2.25 UID,
    the same input UID giving the same output everywhere (references stay consistent);
  * every other DA/DT value is shifted by `Pseudonymizer.date_shift_days(patient key)`;
    malformed or partial dates are emptied rather than kept;
  * safety net for person names: any other element that is a PN in the PS3.6 dictionary is removed
    whatever VR it was written with (a bad exporter's PerformingPhysicianName as LO, a PN as UN), as
    is every PN-valued element; an element of an unknown (unregistered, non-private) tag written as UN
    is removed; and every text element (LO, SH, ST, LT, UT, UC, UN), in sequences too, that contains a
    part of a person name found anywhere in the header (`_name_pattern`: ASCII parts of 3 or more
    letters as whole words, case-insensitive; other scripts, e.g. kanji, of 2 or more characters) is
    removed, so a name copied into a free-text or private-turned-standard element does not survive;
  * PatientIdentityRemoved = YES, LongitudinalTemporalInformationModified = MODIFIED,
    DeidentificationMethod and DeidentificationMethodCodeSequence are set.
The patient key is the original PatientID, else PatientName, else StudyInstanceUID.

The salt (`resolve_salt`): the profile's committed `deid_salt` serves synthetic data only.
For real exams (`data_source: dicom_dir`) it comes from the environment variable
CAG_DEID_SALT or from the file `deid_salt_file` outside the repository, and a run that
would use a committed salt stops before reading any file (anyone holding the repository
could otherwise recompute a pseudonym from a patient ID).
Not handled (the caller's job): text burned into pixels (BurnedInAnnotation), free text in
attributes outside the table (Annex E's "C" clean actions are treated as X here).
"""
from __future__ import annotations

import copy
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

__all__ = ["ACTIONS", "Pseudonymizer", "deidentify", "DATE_SHIFT_RANGE", "SALT_ENV", "SaltError", "resolve_salt"]

DATE_SHIFT_RANGE: tuple[int, int] = (-365, -1)  # inclusive, days

# keyword -> Annex E action: X remove, Z empty, K keep (option), P pseudonym (a "D" dummy value).
ACTIONS: dict[str, str] = {
    "PatientName": "P", "PatientID": "P", "PatientBirthDate": "Z",
    "PatientSex": "K", "PatientAge": "K", "PatientSize": "K", "PatientWeight": "K",
    "AccessionNumber": "Z", "StudyID": "Z", "ReferringPhysicianName": "Z", "ContentCreatorName": "Z",
    **dict.fromkeys([
        "AcquisitionComments", "AcquisitionContextSequence", "ActualHumanPerformersSequence",
        "AdditionalPatientHistory", "AdmissionID", "AdmittingDiagnosesDescription", "Allergies",
        "AuthorObserverSequence", "BranchOfService", "CassetteID", "ConsultingPhysicianName",
        "ContributionDescription", "CountryOfResidence", "CurrentPatientLocation",
        "CustodialOrganizationSequence", "DerivationDescription", "DetectorID", "DeviceSerialNumber",
        "DigitalSignaturesSequence", "EthnicGroup", "FrameComments", "GantryID", "IconImageSequence",
        "ImageComments", "ImagePresentationComments", "InstitutionAddress", "InstitutionalDepartmentName",
        "InstitutionName", "InsurancePlanIdentification", "IssuerOfPatientID", "MedicalAlerts",
        "MedicalRecordLocator", "MilitaryRank", "NameOfPhysiciansReadingStudy",
        "NamesOfIntendedRecipientsOfResults", "Occupation", "OperatorIdentificationSequence",
        "OperatorsName", "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames",
        "PatientAddress", "PatientBirthName", "PatientBirthTime", "PatientComments",
        "PatientInsurancePlanCodeSequence", "PatientMotherBirthName", "PatientReligiousPreference",
        "PatientTelephoneNumbers", "PatientTransportArrangements", "PerformedProcedureStepDescription",
        "PerformedProcedureStepID", "PerformingPhysicianIdentificationSequence", "PerformingPhysicianName",
        "PersonAddress", "PhysiciansOfRecord", "PhysiciansReadingStudyIdentificationSequence", "PlateID",
        "PregnancyStatus", "ProtocolName", "ReasonForStudy", "ReasonForTheRequestedProcedure",
        "ReferencedPatientSequence", "ReferencedStudySequence", "ReferringPhysicianAddress",
        "ReferringPhysicianIdentificationSequence", "ReferringPhysicianTelephoneNumbers",
        "RequestAttributesSequence", "RequestedContrastAgent", "RequestedProcedureDescription",
        "RequestedProcedureID", "RequestingPhysician", "RequestingService", "ResponsibleOrganization",
        "ResponsiblePerson", "ScheduledPerformingPhysicianName", "SeriesDescription", "ServiceEpisodeID",
        "SmokingStatus", "SpecialNeeds", "StationName", "StudyComments", "StudyDescription", "TopicAuthor",
    ], "X"),
}
_REMOVE_META = ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                "ReceivingApplicationEntityTitle", "PrivateInformationCreatorUID", "PrivateInformation")


@dataclass(frozen=True)
class Pseudonymizer:
    """Salted, deterministic replacements: same salt + same input -> same output."""

    salt: str

    def __post_init__(self) -> None:
        if not self.salt:
            raise ValueError("a non-empty secret salt is required (unsalted hashes of IDs can be brute-forced)")

    def _hex(self, prefix: str, value: str) -> str:
        return hashlib.sha256(f"{self.salt}|{prefix}|{value}".encode()).hexdigest()

    def pseudonym(self, value: str, prefix: str = "PT-") -> str:
        """prefix + first 12 hex digits of sha256(salt|prefix|value)."""
        return prefix + self._hex(prefix, value)[:12]

    def uid(self, value: str) -> str:
        """A valid DICOM UID (2.25.<128-bit integer>, <= 44 characters) derived from the salted hash."""
        return "2.25." + str(int(self._hex("UID", value)[:32], 16))

    def date_shift_days(self, patient_key: str) -> int:
        """Per-patient offset in DATE_SHIFT_RANGE (-365..-1 days), deterministic in salt and key."""
        lo, hi = DATE_SHIFT_RANGE
        return lo + int(self._hex("DATE", patient_key)[:12], 16) % (hi - lo + 1)

    def shift_date(self, yyyymmdd: str, patient_key: str) -> str:
        """Shift a DA value (YYYYMMDD); ValueError if it is not a full calendar date."""
        s = yyyymmdd.strip()
        if len(s) != 8 or not s.isdigit():
            raise ValueError("not a YYYYMMDD date")
        d = date(int(s[:4]), int(s[4:6]), int(s[6:]))
        return (d + timedelta(days=self.date_shift_days(patient_key))).strftime("%Y%m%d")


def _shift(value: str, vr: str, key: str, p: Pseudonymizer) -> str:
    """Shift one DA or DT value; '' if malformed or only a year/month (never keep a raw date)."""
    v = value.strip()
    try:
        return p.shift_date(v, key) if vr == "DA" else p.shift_date(v[:8], key) + v[8:]
    except ValueError:
        return ""


def _is_registered(uid: str) -> bool:
    return UID(uid).name != uid  # pydicom's table of PS3.6 Annex A registered UIDs


_TEXT_VRS = ("LO", "SH", "ST", "LT", "UT", "UC", "UN")


def _dictionary_vr(tag: int) -> str:
    """The tag's VR in PS3.6 ('' for private or unregistered tags)."""
    try:
        return dictionary_VR(tag)
    except KeyError:
        return ""


def _texts(elem: DataElement) -> list[str]:
    values = elem.value if elem.VM > 1 else [elem.value]
    return [v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in values if v is not None]


def _name_pattern(ds: Dataset) -> re.Pattern[str] | None:
    """A regex of the parts of every person name in `ds` (PN values, and elements PS3.6 defines as PN,
    private ones included), or None when there is none."""
    parts: set[str] = set()

    def collect(_: Dataset, elem: DataElement) -> None:
        if elem.VR == "PN" or _dictionary_vr(elem.tag) == "PN":
            for text in _texts(elem):
                parts.update(t for t in re.split(r"[\^=\s,.]+", text)
                             if (len(t) >= 3 and t.isalpha()) or (len(t) >= 2 and not t.isascii()))

    ds.walk(collect)
    if not parts:
        return None
    words = [rf"(?<![A-Za-z0-9]){re.escape(t)}(?![A-Za-z0-9])" if t.isascii() else re.escape(t)
             for t in sorted(parts, key=len, reverse=True)]
    return re.compile("|".join(words), re.IGNORECASE)


def deidentify(ds: Dataset, p: Pseudonymizer) -> Dataset:
    """A de-identified deep copy of `ds` (file meta included); `ds` itself is not changed."""
    out = copy.deepcopy(ds)
    key = str(ds.get("PatientID", "") or ds.get("PatientName", "") or ds.get("StudyInstanceUID", ""))
    pseudonym = p.pseudonym(key)
    names = _name_pattern(out)   # before anything is removed: private and nested names count too
    out.remove_private_tags()

    def visit(dataset: Dataset, elem: DataElement) -> None:
        kw, vr, tag = elem.keyword, elem.VR, elem.tag
        action = ACTIONS.get(kw)
        if tag.group & 0xFF00 in (0x5000, 0x6000):
            del dataset[tag]
        elif action == "X":
            del dataset[tag]
        elif action == "Z":
            elem.value = "" if vr != "SQ" else Sequence()
        elif action == "P":
            elem.value = pseudonym
        elif action == "K":
            pass
        elif vr == "UI" and elem.value and not (kw.endswith("ClassUID") or kw == "TransferSyntaxUID"):
            values = elem.value if elem.VM > 1 else [elem.value]
            new = [v if _is_registered(str(v)) else p.uid(str(v)) for v in values]
            elem.value = new if elem.VM > 1 else new[0]
        elif vr in ("DA", "DT") and elem.value:
            values = elem.value if elem.VM > 1 else [elem.value]
            new = [_shift(str(v), vr, key, p) for v in values]
            elem.value = new if elem.VM > 1 else new[0]
        elif vr == "PN" or _dictionary_vr(tag) == "PN" or (vr == "UN" and not _dictionary_vr(tag)):
            del dataset[tag]
        elif vr in _TEXT_VRS and names is not None and any(names.search(t) for t in _texts(elem)):
            del dataset[tag]

    out.walk(visit)
    out.PatientName = out.PatientID = pseudonym
    meta = getattr(out, "file_meta", None)
    if meta is not None:
        for kw in _REMOVE_META:
            if kw in meta:
                delattr(meta, kw)
        if "MediaStorageSOPInstanceUID" in meta:  # the instance UID, or its own pseudonym when that is unusable
            sop = out.get("SOPInstanceUID", None)
            meta.MediaStorageSOPInstanceUID = sop if isinstance(sop, str) and sop else \
                p.uid(str(meta.MediaStorageSOPInstanceUID))
    out.PatientIdentityRemoved = "YES"
    out.LongitudinalTemporalInformationModified = "MODIFIED"
    # The last value names this method as de-identified files have recorded it since the first release (after the
    # module's name then, before the package had stage folders): a recorded name, kept as it is.
    out.DeidentificationMethod = ["PS3.15 E.1 Basic Profile", "Retain Longit. Modified Dates",
                                  "Retain Patient Characteristics", "cag_utils.deid"]   # recorded name
    codes = []
    for value, meaning in (("113100", "Basic Application Confidentiality Profile"),
                           ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
                           ("113108", "Retain Patient Characteristics Option")):
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        codes.append(item)
    out.DeidentificationMethodCodeSequence = codes
    return out


# --------------------------------------------------------------------------- the salt of real data
SALT_ENV = "CAG_DEID_SALT"
MIN_SALT_LENGTH = 16
_REPO_ROOT = Path(__file__).resolve().parents[2]


class SaltError(ValueError):
    """No usable secret salt for real data; the message says what to set."""


def _committed_salts() -> set[str]:
    salts = set()
    for profile in (_REPO_ROOT / "configs" / "profiles").glob("*.yaml"):
        common = (yaml.safe_load(profile.read_text(encoding="utf-8")) or {}).get("common") or {}
        salts.add(str(common.get("deid_salt", "")))
    return salts - {""}


def resolve_salt(cfg: Mapping[str, Any]) -> str:
    """The salt of this run's pseudonyms: the profile's `deid_salt` for synthetic data; for
    `data_source: dicom_dir`, $CAG_DEID_SALT or else the file `deid_salt_file` (outside the
    repository; a relative path is taken from the repository root). SaltError otherwise."""
    if cfg["data_source"] != "dicom_dir":
        return str(cfg["deid_salt"])
    how = (f"Set the environment variable {SALT_ENV} (e.g. export {SALT_ENV}=$(python -c "
           f"'import secrets; print(secrets.token_hex(16))')), or point the parameter deid_salt_file at a "
           "file outside the repository that holds it. Keep it: the same salt gives the same pseudonyms.")
    env, file = os.environ.get(SALT_ENV, "").strip(), str(cfg.get("deid_salt_file", "") or "")
    if env:
        salt, origin = env, f"${SALT_ENV}"
    elif file:
        path = (_REPO_ROOT / Path(file).expanduser()).resolve()
        if path.is_relative_to(_REPO_ROOT):
            raise SaltError(f"deid_salt_file {file!r} lies inside the repository, where it can end up in git; "
                            "move it outside the repository")
        if not path.is_file():
            raise SaltError(f"deid_salt_file {file!r} does not exist")
        salt, origin = path.read_text(encoding="utf-8").strip(), f"deid_salt_file {file!r}"
    else:
        raise SaltError("data_source is 'dicom_dir' (real exams) but no secret salt is set. The profile's "
                        "deid_salt is committed to git and serves synthetic data only: with it anyone could "
                        "recompute a patient's pseudonym from the patient ID. " + how)
    if salt == str(cfg.get("deid_salt", "")) or salt in _committed_salts():
        raise SaltError(f"the salt from {origin} is a deid_salt committed in configs/profiles; real data "
                        "needs a secret one. " + how)
    if len(salt) < MIN_SALT_LENGTH:
        raise SaltError(f"the salt from {origin} has {len(salt)} characters; use at least {MIN_SALT_LENGTH}. " + how)
    return salt
