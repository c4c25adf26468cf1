"""Seeded mutation fuzzer of the DICOM reader (`cag_utils.data.dicom.read_xa`) and of the ingest.

Seeds are small synthetic XA runs (`synthetic_seeds`: 8/10/12-bit, uncompressed, implicit VR,
RLE, with window, rescale, Modality and VOI LUT Sequences, MONOCHROME1) written with fake
identifiers (`PHI`), and the grey files of pydicom's bundled test corpus that `read_xa`
reads unmutated (`bundled_seeds`; never downloaded). Each case (`make_case`) copies one seed
and applies one mutation, drawn from a `numpy` generator seeded by (seed, case number), so a
case is reproducible from its number alone:

  delete, empty          an element of the pixel, LUT, timing or identity modules removed / emptied
  wrong_type             the element written with another VR (text in a US element, a number
                         in a CS or UI element, text where a sequence belongs)
  wrong_value            out-of-range or nonsensical values (0, -1, 65535, nan, MONOCHROME3, ...)
  multi_value            two values where one is expected
  bad_sequence_item      Modality/VOI LUT Sequence items without LUTDescriptor or LUTData, with a
                         short descriptor or data, empty, or nested garbage
  truncate               the file cut at a random byte offset
  absurd_size            Rows x Columns x NumberOfFrames far past memory (must be refused from the
                         header, before any pixel buffer is allocated)

`run_case` reads one case at the `reader` level (`read_xa`) or the `ingest` level (one exam
through `cag_utils.data.ingest._ingest_exam`) under a time limit (SIGALRM in the main thread, a
watched worker thread elsewhere: `_with_deadline`), and classifies it: `read`,
`refused` (a typed `DicomReadError`, or a reject row at ingest), `crash` (any other
exception) or `timeout`; `leaks` counts cases whose error text or log named a fake identifier.
`fuzz` runs many cases and returns the counts; benchmarks/fuzz_dicom.py writes them to
results/fuzz_dicom.json and tests/test_dicom_fuzz.py runs a few hundred.
"""
from __future__ import annotations

import ctypes
import logging
import signal
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword

from cag_utils.data.dicom import DicomReadError, encoder_available, read_xa, write_xa

__all__ = ["ELEMENTS", "MUTATIONS", "PHI", "Case", "Outcome", "bundled_seeds", "fuzz", "make_case", "run_case",
           "synthetic_seeds"]

MUTATIONS = ("delete", "empty", "wrong_type", "wrong_value", "multi_value", "bad_sequence_item", "truncate",
             "absurd_size")
# Elements the header mutations pick from (pixel, LUT, timing/geometry, identity modules).
ELEMENTS = (
    "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
    "BitsStored", "HighBit", "PixelRepresentation", "PlanarConfiguration", "PixelData",
    "RescaleSlope", "RescaleIntercept", "ModalityLUTSequence", "VOILUTSequence", "WindowCenter", "WindowWidth",
    "VOILUTFunction", "FrameTime", "FrameTimeVector", "CineRate", "FrameIncrementPointer",
    "PositionerPrimaryAngle", "PositionerSecondaryAngle", "SOPClassUID", "Modality", "StudyInstanceUID",
    "SOPInstanceUID", "PatientID", "PatientName", "PatientBirthDate", "PatientAge", "PatientSex", "StudyDate",
    "SpecificCharacterSet", "LossyImageCompression",
)
# Fake identifiers of the synthetic seeds; a refusal or log naming one of them is a leak.
PHI = {"PatientName": "ZZFUZZ^HANAKO", "PatientID": "PID-FZ-5531", "PatientBirthDate": "19470211",
       "StudyDate": "20180923", "AccessionNumber": "ACC-FZ-7788"}
_ODD_VALUES: dict[str, list[Any]] = {  # VR -> wrong values of the right type
    "US": [0, 1, 3, 7, 17, 33, 65535], "SS": [-32768, 0], "IS": ["0", "-1", "2147483647", "-2147483648"],
    "DS": ["0", "-1", "nan", "inf", "-inf", "1e308", "-0"], "CS": ["MONOCHROME3", "PALETTE COLOR", "YBR_FULL", "??"],
    "UI": ["1.2.3", "0", "1.2.840.10008.1.2.4.50", "1.2.840.10008.5.1.4.1.1.7"], "AT": [0x00000000, 0x7FE00010],
    "PN": [PHI["PatientName"] + "^EXTRA"], "LO": [PHI["PatientID"] + "-X"], "DA": ["2018", "99999999", "abcdefgh"],
    "AS": ["XYZ", "999Y"], "FL": [float("nan"), -1e30], "OB": [b"\x00"], "OW": [b"\x00\x00"],
}


@dataclass(frozen=True)
class Case:
    number: int
    seed: str          # seed file name
    mutation: str
    element: str       # keyword mutated ("" for truncation)
    detail: str        # what was done (no header values of the seed)


@dataclass
class Outcome:
    case: Case
    kind: str          # read | refused | crash | timeout | skipped (the mutated file could not be written)
    error: str = ""    # exception class name
    reason: str = ""   # refusal reason or crash message (crash messages are for debugging only)
    seconds: float = 0.0
    leak: bool = False


class CaseTimeout(BaseException):
    """Raised by the alarm: a BaseException, so `except Exception` in the reader cannot swallow it."""


# --------------------------------------------------------------------------- seeds
def synthetic_seeds(folder: Path) -> list[Path]:
    """Small XA runs covering the reader's branches (written once into `folder`)."""
    folder = Path(folder)
    rng = np.random.default_rng(20240)
    f8 = rng.integers(0, 256, (3, 24, 20)).astype(np.uint8)
    f12 = rng.integers(0, 4096, (3, 24, 20)).astype(np.uint16)
    specs: list[tuple[str, np.ndarray, dict[str, Any]]] = [
        ("xa8_explicit", f8, {}),
        ("xa12_window_rescale", f12, {"bits_stored": 12, "header": {"WindowCenter": 2048, "WindowWidth": 1024,
                                                                     "RescaleSlope": 2, "RescaleIntercept": -10}}),
        ("xa10_rle", (f12 >> 2).astype(np.uint16), {"bits_stored": 10, "transfer_syntax": "rle"}),
        ("xa8_implicit", f8, {"transfer_syntax": "implicit"}),
        ("xa8_modality_lut", f8, {}),
        ("xa8_voi_lut", f8, {}),
        ("xa8_monochrome1", f8, {}),
    ]
    if encoder_available("jpeg_baseline"):
        specs.append(("xa8_jpeg", f8, {"transfer_syntax": "jpeg_baseline"}))
    out = []
    for name, frames, kw in specs:
        path = folder / f"{name}.dcm"
        if not path.is_file():
            header = {**PHI, "PatientAge": "063Y", "PatientSex": "F", **kw.pop("header", {})}
            write_xa(path, frames, header=header, **kw)
            if name.endswith("_lut") or name.endswith("monochrome1"):
                ds = pydicom.dcmread(path)
                item = Dataset()
                item.add_new(0x00283002, "US", [256, 0, 8])  # LUTDescriptor
                item.add_new(0x00283006, "US", list(range(255, -1, -1)))  # LUTData: an inverting table
                if name == "xa8_modality_lut":
                    item.ModalityLUTType = "US"
                    ds.ModalityLUTSequence = [item]
                elif name == "xa8_voi_lut":
                    ds.VOILUTSequence = [item]
                else:
                    ds.PhotometricInterpretation = "MONOCHROME1"
                ds.save_as(path)
        out.append(path)
    return out


def bundled_seeds() -> list[Path]:
    """pydicom's bundled test files that `read_xa` reads unmutated as grey (no download)."""
    from pydicom.data import get_testdata_files

    keep = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(get_testdata_files()):
            path = Path(name)
            if not path.is_file() or path.stat().st_size > 400_000:
                continue
            try:
                run = read_xa(path)
            except DicomReadError:
                continue
            if run.converted_from is None:
                keep.append(path)
    return keep


# --------------------------------------------------------------------------- mutations
def _element(ds: Dataset, keyword: str) -> Dataset:
    """The dataset holding `keyword` (the file meta for TransferSyntaxUID)."""
    return ds.file_meta if keyword == "TransferSyntaxUID" else ds


def _bad_lut_item(rng: np.random.Generator) -> tuple[Dataset, str]:
    """One malformed LUT item (and, as a control, "ow_data": a valid one with LUTData as OW bytes)."""
    kinds = ["no_descriptor", "no_data", "empty_descriptor", "empty_data", "short_descriptor", "short_data",
             "empty_item", "zero_bits", "huge_bits", "entries_65536", "data_as_text", "nested", "ow_data"]
    item, kind = Dataset(), str(rng.choice(kinds))
    descriptor = {"short_descriptor": [256, 0], "zero_bits": [256, 0, 0], "huge_bits": [256, 0, 40],
                  "entries_65536": [0, 0, 8], "empty_descriptor": None}.get(kind, [256, 0, 8])
    if kind not in ("no_descriptor", "empty_item", "nested"):
        item.add_new(0x00283002, "US", descriptor)  # LUTDescriptor
    data: Any = {"short_data": list(range(8)), "empty_data": None, "data_as_text": "not a table",
                 "ow_data": np.arange(256, dtype="<u2").tobytes()}.get(kind, list(range(256)))
    if kind not in ("no_data", "empty_item", "nested"):
        item.add_new(0x00283006, "LO" if kind == "data_as_text" else "OW" if kind == "ow_data" else "US", data)
    if kind == "nested":
        item.ModalityLUTSequence = [Dataset()]
    return item, kind


def _mutate_header(ds: Dataset, mutation: str, keyword: str, rng: np.random.Generator) -> str:
    holder = _element(ds, keyword)
    tag = tag_for_keyword(keyword)
    vr = dictionary_VR(tag)
    if mutation == "delete":
        if keyword in holder:
            del holder[keyword]
        return "deleted"
    if mutation == "empty":
        holder[tag] = DataElement(tag, vr, [] if vr == "SQ" else None)
        return "emptied"
    if mutation == "wrong_type":
        other = {"US": ("LO", "abc"), "SS": ("LO", "abc"), "IS": ("LO", "x12"), "DS": ("LO", "1,5"),
                 "SQ": ("LO", "not a sequence"), "UI": ("US", 3), "AT": ("LO", "7FE0")}.get(vr, ("US", 7))
        holder[tag] = DataElement(tag, *other)
        return f"written as {other[0]}"
    if mutation == "wrong_value":
        if vr == "SQ":
            holder[tag] = DataElement(tag, "SQ", [Dataset()])
            return "one empty item"
        values = _ODD_VALUES.get(vr, ["?"])
        value = values[int(rng.integers(len(values)))]
        holder[tag] = DataElement(tag, vr, value)
        return f"odd {vr} value #{values.index(value)}"
    if mutation == "multi_value":
        current = holder[keyword].value if keyword in holder else _ODD_VALUES.get(vr, ["1"])[0]
        if vr == "SQ" or isinstance(current, (bytes, list, pydicom.multival.MultiValue, pydicom.sequence.Sequence)):
            current = _ODD_VALUES.get(vr if vr != "SQ" else "LO", ["1"])[0]
        holder[tag] = DataElement(tag, vr if vr != "SQ" else "LO", [current, current])
        return "two values"
    if mutation == "bad_sequence_item":
        item, kind = _bad_lut_item(rng)
        ds[tag] = DataElement(tag, "SQ", [item])
        return kind
    raise ValueError(f"unknown header mutation {mutation!r}")


def _absurd(ds: Dataset, rng: np.random.Generator) -> str:
    choice = int(rng.integers(4))
    if choice == 0:
        ds.Rows, ds.Columns = 65535, 65535
        return "Rows=Columns=65535"
    if choice == 1:
        ds.NumberOfFrames = 2**31 - 1
        return "NumberOfFrames=2**31-1"
    if choice == 2:
        ds.Rows, ds.Columns, ds.NumberOfFrames = 65535, 65535, 100000
        return "65535 x 65535 x 100000 frames"
    ds.NumberOfFrames = 50000
    return "NumberOfFrames=50000"


def make_case(seed_path: Path, out: Path, number: int, base_seed: int = 0,
              mutation: str | None = None) -> Case | None:
    """Write case `number` (one mutation of `seed_path`) to `out`; None when pydicom cannot write it."""
    rng = np.random.default_rng([base_seed, number])
    mutation = mutation or str(rng.choice(MUTATIONS))
    data = Path(seed_path).read_bytes()
    if mutation == "truncate":
        cut = int(rng.integers(1, len(data)))
        out.write_bytes(data[:cut])
        return Case(number, seed_path.name, mutation, "", f"cut at byte {cut} of {len(data)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(seed_path)
        if mutation == "absurd_size":
            keyword, detail = "Rows", _absurd(ds, rng)
        else:
            pool = ("ModalityLUTSequence", "VOILUTSequence") if mutation == "bad_sequence_item" else \
                ELEMENTS + ("TransferSyntaxUID",)
            keyword = str(pool[int(rng.integers(len(pool)))])
            detail = _mutate_header(ds, mutation, keyword, rng)
        try:
            ds.save_as(out)
        except Exception:  # pydicom refuses to write some mutations (e.g. a big-endian seed)
            return None
    return Case(number, seed_path.name, mutation, keyword, detail)


# --------------------------------------------------------------------------- running
def _with_deadline(attempt: Callable[[], tuple[str, str, str]], seconds: float) -> tuple[str, str, str]:
    """`attempt()` under a limit of `seconds`; ("timeout", "CaseTimeout", ...) when it runs past it.

    Main thread of a POSIX process: SIGALRM raises CaseTimeout inside the reader. Any other thread (or no
    `setitimer`): the attempt runs in a daemon thread that is waited for `seconds`; past them the case is a
    timeout at once, and CaseTimeout is raised in that thread (`PyThreadState_SetAsyncExc`), which ends it
    at its next Python instruction (code stuck in C ends when it returns to Python)."""
    if hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread():
        def alarm(signum: int, frame: Any) -> None:
            raise CaseTimeout()

        previous = signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return attempt()
        except CaseTimeout:   # raised by the alarm inside the reader (a BaseException: not caught there)
            return "timeout", "CaseTimeout", ""
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    result: list[tuple[str, str, str]] = []

    def run() -> None:
        try:
            result.append(attempt())
        except CaseTimeout:
            result.append(("timeout", "CaseTimeout", ""))

    worker = threading.Thread(target=run, name="fuzz-case", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(worker.ident), ctypes.py_object(CaseTimeout))
        worker.join(min(1.0, seconds))   # a short grace to end it; the outcome is a timeout either way
        return "timeout", "CaseTimeout", ("" if not worker.is_alive() else "still running past the limit")
    return result[0]


def _attempt(path: Path, case: Case, level: str) -> tuple[str, str, str]:
    """(kind, error, reason) of one read of the case, without a time limit."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if level == "ingest":
                return _ingest_one(path)
            read_xa(path, xa_cine_only=False, label=f"case {case.number}")
            return "read", "", ""
    except DicomReadError as err:
        return "refused", type(err).__name__, err.reason
    except Exception as exc:  # what the fuzzer is looking for
        return "crash", type(exc).__name__, str(exc)[:200]


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.text: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.text.append(record.getMessage())


def _ingest_one(path: Path) -> tuple[str, str, str]:
    """(kind, error, reason) of one file read through the ingest as an exam of its own."""
    from cag_utils.data.ingest import UNEXPECTED, ExamInput, _ingest_exam

    job = ExamInput(str(path.parent), path.parent.name, "fuzz", "fuzz-salt", {},
                    {"min_gap": 1, "smooth": 1, "prominence": 0.0}, [path.name], None)
    out = _ingest_exam(job)
    if out.rejects:
        error, reason = str(out.rejects[0]["error"]), str(out.rejects[0]["reason"])
        return ("crash" if reason == UNEXPECTED else "refused"), error, reason
    return ("read", "", "") if out.runs else ("crash", "NoOutcome", "neither a run nor a reject")


def run_case(path: Path, case: Case, level: str = "reader", time_limit_s: float = 10.0) -> Outcome:
    """Read one mutated file and classify what happened (see the module docstring)."""
    capture = _Capture()
    logger = logging.getLogger("cag_utils")
    logger.addHandler(capture)
    t0 = time.perf_counter()
    try:
        kind, error, reason = _with_deadline(lambda: _attempt(path, case, level), time_limit_s)
    finally:
        logger.removeHandler(capture)
    seconds = time.perf_counter() - t0
    if kind != "timeout" and seconds > time_limit_s:
        kind, error = "timeout", "TooSlow"
    said = " ".join([reason, *capture.text])
    leak = kind != "crash" and any(v in said for v in PHI.values())
    return Outcome(case, kind, error, reason, round(seconds, 4), leak)


def fuzz(n_cases: int, seed: int = 0, level: str = "reader", time_limit_s: float = 10.0,
         workdir: Path | None = None, seeds: list[Path] | None = None) -> dict[str, Any]:
    """Run `n_cases` cases over the seeds (round robin) and count the outcomes.

    Seeds: the synthetic XA runs, plus pydicom's bundled grey files at the reader level.

    Returns {"cases", "by_kind", "by_mutation", "crashes" (a list: case and error), "leaks",
    "max_seconds", "seeds"}; a clean run has no crash, timeout or leak."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp_path = Path(tmp)
        if seeds is not None:
            seed_files = list(seeds)
        else:  # the ingest reads XA cines only: pydicom's bundled files would all stop at that check
            seed_files = synthetic_seeds(tmp_path / "seeds") + (bundled_seeds() if level == "reader" else [])
        by_kind: Counter[str] = Counter()
        by_mutation: dict[str, Counter[str]] = {m: Counter() for m in MUTATIONS}
        crashes, leaks, slowest = [], [], 0.0
        case_dir = tmp_path / "case"
        case_dir.mkdir()
        for number in range(n_cases):
            src = seed_files[number % len(seed_files)]
            target = case_dir / "IM0001"
            case = make_case(src, target, number, seed)
            if case is None:
                by_kind["skipped"] += 1
                continue
            outcome = run_case(target, case, level, time_limit_s)
            by_kind[outcome.kind] += 1
            by_mutation[case.mutation][outcome.kind] += 1
            slowest = max(slowest, outcome.seconds)
            if outcome.kind in ("crash", "timeout"):
                crashes.append({**vars(case), "error": outcome.error, "message": outcome.reason})
            if outcome.leak:
                leaks.append(vars(case))
            target.unlink(missing_ok=True)
    return {"cases": n_cases, "seed": seed, "level": level, "by_kind": dict(by_kind),
            "by_mutation": {m: dict(c) for m, c in by_mutation.items()}, "crashes": crashes, "leaks": leaks,
            "max_seconds": round(slowest, 3), "seeds": len(seed_files)}
