"""Header values the DICOM reader needs, checked: a typed error or a documented fallback.

`cag_utils.data.dicom.read_xa` takes every header value it uses from here. A value it cannot do
without that is unusable raises one of the typed errors of `cag_utils.data.dicom_errors`, naming
the element; an optional value that is malformed is replaced by its fallback and a note is
added (`notes`: the reader logs each note and keeps them in `XARun.repairs`). Notes and
errors name elements, never their values when these could identify anyone.

Required, typed error when present but unusable (InvalidHeaderError unless said otherwise):
  Rows, Columns          a single integer 1-65535; missing or 0: NotDicomError (not an image)
  NumberOfFrames         a single integer; missing: 1 (a single-frame image); 0 or less: NoFramesError
  BitsAllocated/Stored   8 or 16 / 1..BitsAllocated, else UnsupportedImageError; several values: InvalidHeaderError
  SamplesPerPixel        a single integer (1 or 3, else ColourImageError)
  PixelRepresentation    0 or 1
  PixelData              a byte string; encapsulated: at least one fragment per frame (TruncatedFileError)
  TransferSyntaxUID      a known transfer syntax (UnsupportedImageError)
  size                   NumberOfFrames x Rows x Columns x samples x bytes above the reader's limit
                         (`cag_utils.data.dicom.MAX_DECODED_BYTES`, 4 GiB): ImageTooLargeError, before decoding
Fallbacks (a note each):
  NumberOfFrames empty                       1
  SamplesPerPixel missing or empty           1
  PixelRepresentation missing or empty       0 (unsigned)
  PhotometricInterpretation missing/empty    MONOCHROME2 (with 1 sample; with 3: ColourImageError)
  TransferSyntaxUID missing or empty         Implicit VR Little Endian
  RescaleSlope / RescaleIntercept            not one finite number (empty, text, nan, several values),
                                             or a slope of 0: counts as 1 / 0
  Modality LUT Sequence                      malformed (not a sequence, empty, an item without a
                                             3-value LUTDescriptor of 8-16 bits or without LUTData
                                             holding every entry): ignored, the rescale (or the raw
                                             stored values) used instead
  VOI LUT Sequence                           malformed as above: ignored, the window (or the fixed
                                             stored-range rule) used instead
  WindowCenter / WindowWidth                 not numbers, one without the other, or a width <= 0:
                                             the window is ignored
                                             (several values: the first window, as the standard says)
  a LUT or window that fails when applied    the fixed stored-range rule
  FrameTime, FrameTimeVector, CineRate,
  RecommendedDisplayFrameRate, angles        malformed (or a time/rate <= 0): not used (None)
HighBit is not used (pixel values are masked to BitsStored).
"""
from __future__ import annotations

import math
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import parse_basic_offsets, parse_fragments
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    UID, EnhancedXAImageStorage, ImplicitVRLittleEndian, MediaStorageDirectoryStorage, XRayAngiographicImageStorage,
)

from cag_utils.data.dicom_errors import (
    ImageTooLargeError, InvalidHeaderError, NoFramesError, NotDicomError, NotXACineError, TruncatedFileError,
    UnsupportedImageError,
)

__all__ = ["LUT_SEQUENCES", "check_bits", "check_fragments", "check_size", "check_xa_cine", "drop_bad_luts",
           "encapsulated_fragments", "frame_time", "geometry", "has_pixel_tag", "header_int", "optional_number",
           "photometric", "read_dataset", "transfer_syntax", "window"]

_MISSING = object()
LUT_SEQUENCES = {"ModalityLUTSequence": "the rescale (or the raw stored values) is used",
                 "VOILUTSequence": "the window (or the fixed stored-range rule) is used"}


def _value(ds: Dataset, keyword: str) -> Any:
    """The element's value; _MISSING when absent; None when empty or undecodable."""
    if keyword not in ds:
        return _MISSING
    try:
        value = ds[keyword].value
    except Exception:  # a raw element pydicom cannot convert
        return None
    return None if value is None or (isinstance(value, (str, bytes, list, MultiValue)) and len(value) == 0) else value


def header_int(ds: Dataset, path: Path, keyword: str, default: int | None, notes: list[str],
               note_missing: bool = False) -> int | None:
    """A required single integer (see the module docstring); `default` when missing (noted if
    `note_missing`) or empty (noted; InvalidHeaderError when there is no default)."""
    value = _value(ds, keyword)
    if value is _MISSING or value is None:
        if value is None and default is None:
            raise InvalidHeaderError(path, keyword, "is empty")
        if value is None or note_missing:
            notes.append(f"{keyword} {'empty' if value is None else 'missing'}: read as {default}")
        return default
    if isinstance(value, (list, tuple, MultiValue)):
        raise InvalidHeaderError(path, keyword, f"has {len(value)} values, one expected")
    if isinstance(value, (bytes, bytearray, Dataset, Sequence)):
        raise InvalidHeaderError(path, keyword, "is not an integer")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidHeaderError(path, keyword, "is not an integer") from None
    if not math.isfinite(number) or number != int(number) or abs(number) >= 2**31:
        raise InvalidHeaderError(path, keyword, "is not an integer")
    return int(number)


def geometry(ds: Dataset, path: Path, notes: list[str]) -> tuple[int, int, int, int, int | None, int | None, bool]:
    """(frames, rows, columns, samples, BitsAllocated, BitsStored, signed) with the checks of the module docstring."""
    rows, cols = header_int(ds, path, "Rows", 0, notes), header_int(ds, path, "Columns", 0, notes)
    if not rows or not cols:
        raise NotDicomError(path, "not an image: Rows/Columns missing or zero")
    for keyword, value in (("Rows", rows), ("Columns", cols)):
        if not 0 < value <= 65535:
            raise InvalidHeaderError(path, keyword, f"is {value}, outside 1-65535")
    n = header_int(ds, path, "NumberOfFrames", 1, notes)
    if n is None or n <= 0:
        raise NoFramesError(path, "no frames (NumberOfFrames is 0 or the pixel data is empty)")
    samples = header_int(ds, path, "SamplesPerPixel", 1, notes, note_missing=True)
    signed = header_int(ds, path, "PixelRepresentation", 0, notes, note_missing=True)
    if signed not in (0, 1):
        raise InvalidHeaderError(path, "PixelRepresentation", f"is {signed}, 0 or 1 expected")
    bits_alloc, bits_stored = (header_int(ds, path, kw, 0, []) for kw in ("BitsAllocated", "BitsStored"))
    return n, rows, cols, int(samples or 1), bits_alloc, bits_stored, bool(signed)


def check_bits(path: Path, bits_alloc: int | None, bits_stored: int | None, error: type = UnsupportedImageError) -> None:
    """`error` (UnsupportedImageError, ColourImageError for colour) unless 8/16 bits hold 1..BitsAllocated."""
    if bits_alloc not in (8, 16) or not bits_stored or not 1 <= bits_stored <= bits_alloc:
        raise error(path, f"unsupported BitsAllocated/BitsStored {bits_alloc}/{bits_stored}")


def photometric(ds: Dataset, path: Path, samples: int, notes: list[str]) -> str:
    """PhotometricInterpretation as text; MONOCHROME2 (noted) when missing or empty with one sample."""
    value = _value(ds, "PhotometricInterpretation")
    if value is _MISSING or value is None:
        if samples != 1:
            return ""  # the caller refuses a colour image without a photometric interpretation
        notes.append(f"PhotometricInterpretation {'missing' if value is _MISSING else 'empty'}: read as MONOCHROME2")
        ds.PhotometricInterpretation = "MONOCHROME2"  # pydicom's decoders need it too
        return "MONOCHROME2"
    if isinstance(value, (list, MultiValue)):
        raise InvalidHeaderError(path, "PhotometricInterpretation", f"has {len(value)} values, one expected")
    return str(value).strip()


def transfer_syntax(ds: Dataset, path: Path, notes: list[str]) -> UID:
    meta = ds.get("file_meta", None) or Dataset()
    value = _value(meta, "TransferSyntaxUID")
    if value is _MISSING or value is None:
        if value is None:
            notes.append("TransferSyntaxUID empty: read as Implicit VR Little Endian")
        return ImplicitVRLittleEndian
    if not isinstance(value, str):
        raise InvalidHeaderError(path, "TransferSyntaxUID", "is not a single UID")
    uid = UID(value.strip())
    if not uid.is_transfer_syntax:
        raise UnsupportedImageError(path, "TransferSyntaxUID is not a known transfer syntax")
    return uid


def check_size(path: Path, n: int, rows: int, cols: int, samples: int, bits_alloc: int, limit: int) -> None:
    """ImageTooLargeError when the decoded pixels would exceed `limit` bytes (from the header alone)."""
    need = n * rows * cols * samples * max(1, bits_alloc // 8)
    if need > limit:
        raise ImageTooLargeError(path, f"{n} frames of {rows}x{cols} x {samples} sample(s) at {bits_alloc} bits "
                                       f"need {need / 2**30:.1f} GiB decoded, more than the reader's "
                                       f"{limit / 2**30:.1f} GiB limit")


def encapsulated_fragments(data: bytes) -> int | None:
    """Fragments of encapsulated pixel data (after the basic offset table); None when unparseable."""
    try:
        buffer = BytesIO(data)
        parse_basic_offsets(buffer)
        return parse_fragments(buffer)[0]
    except Exception:
        return None


def check_fragments(path: Path, data: bytes, n: int) -> None:
    """TruncatedFileError when encapsulated pixel data cannot hold `n` frames (one fragment at least each)."""
    fragments = encapsulated_fragments(data)
    if fragments is None:
        raise TruncatedFileError(path, "encapsulated pixel data could not be parsed (file truncated or corrupt?)")
    if fragments < n:
        raise TruncatedFileError(path, f"NumberOfFrames is {n} but the encapsulated pixel data holds only "
                                       f"{fragments} fragment(s), fewer than one per frame")


def optional_number(ds: Dataset, keyword: str, notes: list[str], default: float | None = None,
                    several: str = "note", nonzero: bool = False) -> float | None:
    """One finite number, else `default` (noted when the element is present but malformed).

    several: "first" takes the first of several values silently (WindowCenter/Width), "note" takes
    none of them and notes it."""
    value = _value(ds, keyword)
    if value is _MISSING:
        return default
    fallback = "not used" if default is None else f"counts as {default:g}"
    if value is None:
        notes.append(f"{keyword} empty: {fallback}")
        return default
    if isinstance(value, (list, MultiValue)):
        if several != "first":
            notes.append(f"{keyword} has {len(value)} values, one expected: {fallback}")
            return default
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        notes.append(f"{keyword} is not a number: {fallback}")
        return default
    if not math.isfinite(number) or (nonzero and number == 0):
        notes.append(f"{keyword} is {'zero' if number == 0 else 'not finite'}: {fallback}")
        return default
    return number


def window(ds: Dataset, notes: list[str]) -> tuple[float, float] | None:
    """(centre, width) of the first window; None when absent or malformed (noted)."""
    present = [kw for kw in ("WindowCenter", "WindowWidth") if kw in ds]
    if not present:
        return None
    if len(present) == 1:
        notes.append(f"{present[0]} without its partner: the window is ignored")
        return None
    center = optional_number(ds, "WindowCenter", notes, several="first")
    width = optional_number(ds, "WindowWidth", notes, several="first")
    if center is None or width is None:  # noted by optional_number
        return None
    if width <= 0:
        notes.append("WindowWidth is not positive: the window is ignored")
        return None
    return center, width


def _lut_problem(ds: Dataset, keyword: str) -> str | None:
    seq = _value(ds, keyword)
    if seq is None:
        return "is empty"
    if not isinstance(seq, Sequence):
        return "is not a sequence"
    if len(seq) == 0:
        return "is empty"
    item = seq[0]
    descriptor = _value(item, "LUTDescriptor")
    if descriptor is _MISSING or descriptor is None:
        return "item has no LUTDescriptor"
    if not isinstance(descriptor, (list, MultiValue)) or len(descriptor) != 3 \
            or not all(isinstance(v, int) for v in descriptor):
        return "LUTDescriptor does not hold 3 integers"
    entries, bits = descriptor[0] or 65536, descriptor[2]
    if not 8 <= bits <= 16:
        return f"LUTDescriptor gives {bits} bits per entry (8-16 allowed)"
    data = _value(item, "LUTData")
    if data is _MISSING or data is None:
        return "item has no LUTData"
    if isinstance(data, (bytes, bytearray)):
        count = len(data) // 2
    elif isinstance(data, (list, MultiValue)) and all(isinstance(v, int) for v in data):
        count = len(data)
    elif isinstance(data, int):
        count = 1
    else:
        return "LUTData is not a table of integers"
    return f"LUTData holds {count} of {entries} entries" if count < entries else None


def drop_bad_luts(ds: Dataset, notes: list[str]) -> None:
    """Remove a malformed Modality or VOI LUT Sequence from `ds` (noted) so the fallback applies."""
    for keyword, instead in LUT_SEQUENCES.items():
        if keyword in ds and (problem := _lut_problem(ds, keyword)):
            del ds[keyword]
            notes.append(f"{keyword} {problem}: ignored, {instead}")


def frame_time(ds: Dataset, notes: list[str]) -> float | None:
    """Milliseconds per frame: FrameTime, else the mean of FrameTimeVector, else 1000 / a frame rate."""
    if (ft := optional_number(ds, "FrameTime", notes)) is not None:
        if ft > 0:
            return ft
        notes.append("FrameTime is not positive: not used")
    vector = _value(ds, "FrameTimeVector")
    if isinstance(vector, (list, MultiValue)) and len(vector) > 1:
        try:
            steps = [float(v) for v in vector[1:]]
            if all(math.isfinite(s) for s in steps):
                return sum(steps) / len(steps)
        except (TypeError, ValueError):
            pass
        notes.append("FrameTimeVector is not a list of numbers: not used")
    for kw in ("CineRate", "RecommendedDisplayFrameRate"):
        if (rate := optional_number(ds, kw, notes)) is not None and rate > 0:
            return 1000.0 / rate
    return None


# --------------------------------------------------------------------------- the file and its kind
def read_dataset(path: Path) -> Dataset:
    """The dataset of `path`; NotDicomError unless it is DICOM (a file without preamble only when it holds an image)."""
    if not path.is_file():
        raise NotDicomError(path, "no such file")
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        pass  # no preamble/meta: accept only if a forced read looks like an image dataset
    except Exception as exc:  # parse failure deep in the file
        raise NotDicomError(path, f"could not be parsed as DICOM ({type(exc).__name__})") from None
    try:
        ds = pydicom.dcmread(path, force=True)
        if "PixelData" in ds and "Rows" in ds and "Columns" in ds:
            ds.file_meta = getattr(ds, "file_meta", FileMetaDataset())
            if "TransferSyntaxUID" not in ds.file_meta:
                ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            return ds
    except Exception:
        pass
    raise NotDicomError(path, "not a DICOM file (no DICM preamble and no readable image dataset)")


def has_pixel_tag(path: Path) -> bool:
    """True if the raw bytes hold a Pixel Data header (tag 7FE0,0010 then OB/OW or undefined length)."""
    data = path.read_bytes()
    return any(b"\xe0\x7f\x10\x00" + v in data for v in (b"OB", b"OW", b"\xff\xff\xff\xff"))


def check_xa_cine(ds: Dataset, path: Path) -> None:
    """NotXACineError unless the header is that of a multi-frame XA image (the ingest's inputs)."""
    try:
        sop = UID(str(ds.get("SOPClassUID", "") or ds.get("file_meta", Dataset()).get("MediaStorageSOPClassUID", "")))
        modality = str(ds.get("Modality", "") or "").strip()
    except Exception:  # an element pydicom cannot decode
        raise InvalidHeaderError(path, "SOPClassUID/Modality", "could not be decoded") from None
    if sop == MediaStorageDirectoryStorage:
        raise NotXACineError(path, "a DICOMDIR (the index of the export), not an image")
    if sop not in (XRayAngiographicImageStorage, EnhancedXAImageStorage) and not (not sop and modality == "XA"):
        kind = sop.name if sop and sop.name != str(sop) else "an unregistered SOP class" if sop else "no SOP class"
        raise NotXACineError(path, f"not an XA cine run: {kind}, modality {modality[:16] or 'missing'}")
    if header_int(ds, path, "NumberOfFrames", 1, []) == 1:
        raise NotXACineError(path, "a single-frame XA image, not a cine run")
