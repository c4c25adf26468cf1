"""Read and write X-ray angiography cine runs as DICOM (PS3.3 A.14 X-Ray Angiographic Image IOD).

`write_xa` writes a real multi-frame (or single-frame) XA Image Storage file
(SOP Class 1.2.840.10008.5.1.4.1.1.12.1) with the Patient, General Study/Series/Equipment,
General/Multi-frame/Cine, XA Image, XA Positioner, X-Ray Acquisition, Contrast/Bolus and
SOP Common modules, uncompressed or compressed (RLE, JPEG 2000 lossless, JPEG baseline;
JPEG-LS only where pydicom has an encoder).

`read_xa` decodes any grayscale image storage file pydicom's handlers can decode
(uncompressed LE, RLE, JPEG baseline/extended/lossless, JPEG 2000, HTJ2K, JPEG-LS via pylibjpeg)
and returns 8-bit frames by one fixed rule, so intensities are comparable across runs:
Modality LUT then VOI LUT (window or LUT sequence) where present, else the stored range
[0, 2**BitsStored - 1] mapped linearly onto 0-255; MONOCHROME1 is inverted so contrast is
always dark on bright. 8-bit MONOCHROME2 data without LUTs is passed through untouched.
A grey image stored as colour (RGB or YBR whose channels carry one grey image, as viewers and
secondary-capture exports write) is read as grey and flagged (`XARun.converted_from`); true
colour is refused. A JPEG baseline/extended frame whose scan header says Se = 0 (a known
encoder bug of older 12-bit XA archives, e.g. pydicom's JPEG-lossy.dcm) is decoded as
Se = 63, as IJG libjpeg does, and noted in `XARun.repairs`. With `xa_cine_only=True` (the
ingest) anything but a multi-frame XA image is refused from its header, before decoding.
Errors are typed (`DicomReadError` subclasses, `cag_utils.data.dicom_errors`) and name the file,
never identifying header values.

Every header value the reader uses is checked by `cag_utils.data.dicom_header` (its docstring lists
each rule): an unusable required value raises a typed error naming the element
(`InvalidHeaderError.element`); a malformed optional one falls back as documented there
(a malformed Modality or VOI LUT Sequence is ignored and the rescale/window or raw values used,
an empty RescaleSlope counts as 1, a missing PhotometricInterpretation is MONOCHROME2, ...),
and each fallback is logged (logger `cag_utils.data.dicom`, "<label>: <what>") and listed in
`XARun.repairs`. A header whose frames would decode to more than `MAX_DECODED_BYTES` is
refused (ImageTooLargeError) before any pixel buffer is allocated, and encapsulated pixel data
with fewer fragments than NumberOfFrames is refused as truncated. `cag_utils.data.dicom_fuzz`
mutates headers to check all this (tests/test_dicom_fuzz.py, benchmarks/fuzz_dicom.py).

`read_xa` is the reader's sequence; its two halves live beside it: the header checks (and the
file's kind) in `cag_utils.data.dicom_header`, the pixel decoding and the 8-bit rule in
`cag_utils.data.dicom_decode`.
"""
from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_encoder
from pydicom.tag import Tag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    XRayAngiographicImageStorage,
    generate_uid,
)

from cag_utils.data import dicom_decode
from cag_utils.data.dicom_errors import (
    ColourImageError, DicomReadError, ImageTooLargeError, InvalidHeaderError, MissingPixelDataError, NoFramesError,
    NotDicomError, NotXACineError, TruncatedFileError, UnsupportedImageError,
)
from cag_utils.data.dicom_header import (
    check_bits, check_fragments, check_size, check_xa_cine, frame_time, geometry, has_pixel_tag, optional_number,
    photometric, read_dataset, transfer_syntax,
)

__all__ = [
    "ColourImageError", "DicomReadError", "ImageTooLargeError", "InvalidHeaderError", "MAX_DECODED_BYTES",
    "MissingPixelDataError", "NoFramesError", "NotDicomError", "NotXACineError", "TRANSFER_SYNTAXES",
    "TruncatedFileError", "UnsupportedImageError", "XARun", "encoder_available", "read_xa", "write_xa",
]
log = logging.getLogger(__name__)
# Largest decoded pixel buffer (frames x rows x columns x samples x bytes) read_xa accepts; a
# header asking for more is refused before any allocation (a real XA run: 1024^2 x 2 B x 300 = 0.6 GiB).
MAX_DECODED_BYTES = 4 * 2**30

TransferSyntaxName = Literal["explicit", "implicit", "rle", "jpeg2000", "jpegls", "jpeg_baseline"]
TRANSFER_SYNTAXES: dict[str, UID] = {
    "explicit": ExplicitVRLittleEndian,
    "implicit": ImplicitVRLittleEndian,
    "rle": RLELossless,
    "jpeg2000": JPEG2000Lossless,
    "jpegls": JPEGLSLossless,
    "jpeg_baseline": JPEGBaseline8Bit,
}
FRAME_TIME_TAG = Tag(0x0018, 0x1063)
# Attributes the writer derives from its arguments; setting them through `header` is an error.
_RESERVED = frozenset({
    "SOPClassUID", "Modality", "Rows", "Columns", "NumberOfFrames", "FrameTime", "FrameIncrementPointer",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
    "PhotometricInterpretation", "PixelData", "PositionerPrimaryAngle", "PositionerSecondaryAngle",
    "LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod",
})


# --------------------------------------------------------------------------- writer
def encoder_available(transfer_syntax: str) -> bool:
    """True if `write_xa` can write `transfer_syntax` (one of TRANSFER_SYNTAXES) here."""
    uid = TRANSFER_SYNTAXES[transfer_syntax]
    if transfer_syntax in ("explicit", "implicit"):
        return True
    if transfer_syntax == "jpeg_baseline":
        try:
            from PIL import Image  # noqa: F401
        except ImportError:
            return False
        return True
    return bool(get_encoder(uid).is_available)


def _check_frames(frames: np.ndarray, bits_stored: int) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim not in (2, 3) or 0 in arr.shape:
        raise ValueError(f"frames must be (F,H,W) or (H,W) and non-empty, got shape {arr.shape}")
    if arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"frames must be uint8 or uint16, got {arr.dtype}")
    if bits_stored not in (8, 10, 12):
        raise ValueError(f"bits_stored must be 8, 10 or 12, got {bits_stored}")
    if int(arr.max()) > 2**bits_stored - 1:
        raise ValueError(f"pixel values exceed the {bits_stored}-bit stored range (max {int(arr.max())})")
    return arr.astype(np.uint8 if bits_stored == 8 else np.dtype("<u2"), copy=False)


def write_xa(
    path: str | Path,
    frames: np.ndarray,
    *,
    bits_stored: int = 8,
    frame_time_ms: float = 1000.0 / 15.0,
    primary_angle: float = 0.0,
    secondary_angle: float = 0.0,
    header: Mapping[str, Any] | None = None,
    transfer_syntax: TransferSyntaxName = "explicit",
    jpeg_quality: int = 95,
) -> Path:
    """Write `frames` as one X-Ray Angiographic Image Storage file and return its path.

    frames: (F,H,W) uint8/uint16 -> multi-frame (NumberOfFrames, Cine FrameTime);
    (H,W) -> single-frame (no multi-frame/cine attributes). Values must fit `bits_stored`.
    header: DICOM keyword -> value, set as given (patient/study/series identifiers etc.);
    UIDs not given are generated. Attributes derived from the arguments are reserved.
    transfer_syntax: explicit | implicit (LE, uncompressed), rle, jpeg2000 (lossless),
    jpegls (lossless; needs an encoder plugin), jpeg_baseline (8-bit only, lossy, Pillow).
    """
    path = Path(path)
    if transfer_syntax not in TRANSFER_SYNTAXES:
        raise ValueError(f"unknown transfer_syntax {transfer_syntax!r}; expected one of {list(TRANSFER_SYNTAXES)}")
    if not encoder_available(transfer_syntax):
        raise RuntimeError(f"no encoder for {TRANSFER_SYNTAXES[transfer_syntax].name} is installed")
    if transfer_syntax == "jpeg_baseline" and bits_stored != 8:
        raise ValueError("jpeg_baseline holds 8-bit data only; use bits_stored=8")
    arr = _check_frames(frames, bits_stored)
    multi = arr.ndim == 3
    stack = arr if multi else arr[None]
    n, rows, cols = stack.shape

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8, so non-ASCII names can be written
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
               "ReferringPhysicianName", "StudyID", "AccessionNumber", "SeriesNumber", "PatientOrientation",
               "ContrastBolusAgent", "KVP"):
        setattr(ds, kw, "")  # type 2: present, possibly empty
    ds.Manufacturer = "cag_utils"
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "SINGLE A"]
    ds.PixelIntensityRelationship = "LIN"
    ds.RadiationSetting = "GR"
    for kw, value in (header or {}).items():
        tag = tag_for_keyword(kw)
        if tag is None:
            raise ValueError(f"unknown DICOM keyword {kw!r} in header")
        if kw in _RESERVED or Tag(tag).group == 0x0002:
            raise ValueError(f"{kw!r} is set by write_xa from its arguments, not through header")
        setattr(ds, kw, value)
    ds.ContentDate = ds.get("ContentDate", ds.StudyDate)
    ds.ContentTime = ds.get("ContentTime", ds.StudyTime)

    ds.SOPClassUID = XRayAngiographicImageStorage
    ds.Modality = "XA"
    ds.PositionerPrimaryAngle = float(primary_angle)
    ds.PositionerSecondaryAngle = float(secondary_angle)
    if multi:
        ds.NumberOfFrames = n
        ds.FrameIncrementPointer = FRAME_TIME_TAG
        ds.FrameTime = round(float(frame_time_ms), 4)
        ds.CineRate = max(1, round(1000.0 / float(frame_time_ms)))
        ds.PositionerMotion = "STATIC"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8 if bits_stored == 8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"

    uid = TRANSFER_SYNTAXES[transfer_syntax]
    if transfer_syntax == "jpeg_baseline":
        from PIL import Image

        encoded = []
        for frame in stack:
            buf = io.BytesIO()
            Image.fromarray(frame).save(buf, format="JPEG", quality=int(jpeg_quality))
            encoded.append(buf.getvalue())
        ds.PixelData = encapsulate(encoded, has_bot=True)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = round(stack.nbytes / max(1, sum(map(len, encoded))), 2)
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    else:
        raw = stack.tobytes()
        ds.PixelData = raw + b"\x00" if len(raw) % 2 else raw
        ds["PixelData"].VR = "OB" if bits_stored == 8 else "OW"

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = "CAG_UTILS_1"
    if transfer_syntax in ("rle", "jpeg2000", "jpegls"):
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        plugin = "pylibjpeg" if "pylibjpeg" in get_encoder(uid).available_plugins else ""
        ds.compress(uid, stack if multi else stack[0], encoding_plugin=plugin, generate_instance_uid=False)
    else:
        ds.file_meta.TransferSyntaxUID = uid
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


# --------------------------------------------------------------------------- reader
@dataclass
class XARun:
    """One decoded cine run; `dataset` is the header without Pixel Data (for de-identification)."""

    frames: np.ndarray  # (F,H,W) uint8, contrast dark on bright
    frame_time_ms: float | None
    primary_angle: float | None
    secondary_angle: float | None
    transfer_syntax: str  # UID name, e.g. "Explicit VR Little Endian"
    transfer_syntax_uid: str
    bits_stored: int
    photometric: str  # as stored in the file (MONOCHROME1 frames are already inverted)
    n_frames: int
    dataset: Dataset
    converted_from: str | None = None  # "RGB", "YBR_FULL", ...: a grey image stored as colour, read as grey
    repairs: tuple[str, ...] = ()  # what was mended to decode it (e.g. a JPEG scan header), then header fallbacks


# Photometric interpretations a grey image can hide in (3 samples per pixel).
GREY_CAPABLE_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")


def read_xa(path: str | Path, *, xa_cine_only: bool = False, label: str | None = None,
            max_decoded_bytes: int = MAX_DECODED_BYTES) -> XARun:
    """Read a grayscale DICOM cine run (or single image) into 8-bit frames; see the module docstring.

    xa_cine_only: refuse (NotXACineError, from the header alone) anything but a multi-frame XA image.
    label: names the file in the log of fallbacks (default: its file name; the ingest passes the
    exam pseudonym and file number). max_decoded_bytes: larger images are refused from the header.
    """
    path = Path(path)
    notes: list[str] = []
    ds = read_dataset(path)
    if "PixelData" not in ds and has_pixel_tag(path):  # pydicom drops encapsulated pixel data cut short
        raise TruncatedFileError(path, "encapsulated pixel data ends before its sequence delimiter (file truncated)")
    if xa_cine_only:
        check_xa_cine(ds, path)
    if "PixelData" not in ds:
        raise MissingPixelDataError(path, "no Pixel Data (7FE0,0010) element (not an image, or pixels stripped)")
    n, rows, cols, samples, bits_alloc, bits_stored, signed = geometry(ds, path, notes)
    photo = photometric(ds, path, samples, notes)
    if samples not in (1, 3):
        raise ColourImageError(path, f"colour image ({samples} samples per pixel)")
    if samples == 1 and photo not in ("MONOCHROME1", "MONOCHROME2"):
        raise ColourImageError(path, f"colour photometric interpretation {photo[:16]}")
    if samples == 3 and photo not in GREY_CAPABLE_COLOUR:
        raise ColourImageError(path, f"colour photometric interpretation {photo[:16] or 'missing'}")
    try:
        pixels = ds.PixelData
    except Exception:
        raise InvalidHeaderError(path, "PixelData", "could not be decoded") from None
    if pixels is None or (isinstance(pixels, (bytes, bytearray)) and len(pixels) == 0):
        raise NoFramesError(path, "no frames (NumberOfFrames is 0 or the pixel data is empty)")
    if not isinstance(pixels, (bytes, bytearray)):
        raise InvalidHeaderError(path, "PixelData", "is not a byte string")
    ts = transfer_syntax(ds, path, notes)
    check_bits(path, bits_alloc, bits_stored, ColourImageError if samples == 3 else UnsupportedImageError)
    assert bits_alloc is not None and bits_stored is not None
    check_size(path, n, rows, cols, samples, bits_alloc, max_decoded_bytes)
    if ts.is_encapsulated:
        check_fragments(path, pixels, n)
    if samples == 3:
        stored, repairs = dicom_decode.grey_from_colour(ds, path, ts, (n, rows, cols), bits_alloc, bits_stored,
                                                        signed, photo)
    else:
        stored, repairs = dicom_decode.decode(ds, path, ts, (n, rows, cols), bits_alloc, bits_stored, signed)
    frames = dicom_decode.to_uint8(stored, ds, bits_stored, signed, notes, photo == "MONOCHROME1",
                                   from_colour=samples == 3)
    del ds.PixelData
    run = XARun(
        frames=frames,
        frame_time_ms=frame_time(ds, notes),
        primary_angle=optional_number(ds, "PositionerPrimaryAngle", notes, several="first"),
        secondary_angle=optional_number(ds, "PositionerSecondaryAngle", notes, several="first"),
        transfer_syntax=ts.name,
        transfer_syntax_uid=str(ts),
        bits_stored=bits_stored,
        photometric=photo,
        n_frames=n,
        dataset=ds,
        converted_from=photo if samples == 3 else None,
        repairs=tuple(repairs) + tuple(notes),
    )
    for note in notes:
        log.warning("%s: %s", label or path.name, note)
    return run

