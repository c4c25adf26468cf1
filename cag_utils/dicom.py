"""Read and write X-ray angiography cine runs as DICOM (PS3.3 A.14 X-Ray Angiographic Image IOD).

`write_xa` writes a real multi-frame (or single-frame) XA Image Storage file
(SOP Class 1.2.840.10008.5.1.4.1.1.12.1) with the Patient, General Study/Series/Equipment,
General/Multi-frame/Cine, XA Image, XA Positioner, X-Ray Acquisition, Contrast/Bolus and
SOP Common modules, uncompressed or compressed (RLE, JPEG 2000 lossless, JPEG baseline;
JPEG-LS only where pydicom has an encoder).

`read_xa` decodes any grayscale image storage file pydicom's handlers can decode
(uncompressed LE, RLE, JPEG baseline/extended/lossless, JPEG 2000, JPEG-LS via pylibjpeg)
and returns 8-bit frames by one fixed rule, so intensities are comparable across runs:
Modality LUT then VOI LUT (window or LUT sequence) where present, else the stored range
[0, 2**BitsStored - 1] mapped linearly onto 0-255; MONOCHROME1 is inverted so contrast is
always dark on bright. 8-bit MONOCHROME2 data without LUTs is passed through untouched.
Errors are typed (`DicomReadError` subclasses) and name the file, never header values.
"""
from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi, get_decoder, get_encoder
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

__all__ = [
    "ColourImageError", "DicomReadError", "MissingPixelDataError", "NoFramesError",
    "NotDicomError", "TRANSFER_SYNTAXES", "TruncatedFileError", "UnsupportedImageError",
    "XARun", "encoder_available", "read_xa", "write_xa",
]

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


# --------------------------------------------------------------------------- errors
class DicomReadError(ValueError):
    """A file could not be read as a grayscale DICOM image. The message names the path only."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class NotDicomError(DicomReadError):
    """Not a DICOM file (no DICM preamble/meta and not parseable), or not an image."""


class TruncatedFileError(DicomReadError):
    """The pixel data is shorter than Rows * Columns * Frames * bytes per sample."""


class MissingPixelDataError(DicomReadError):
    """The dataset has no Pixel Data (7FE0,0010) element."""


class ColourImageError(DicomReadError):
    """SamplesPerPixel != 1 or a colour photometric interpretation (RGB, YBR_*, PALETTE COLOR)."""


class NoFramesError(DicomReadError):
    """NumberOfFrames is 0 or the pixel data is empty."""


class UnsupportedImageError(DicomReadError):
    """A grayscale image this reader cannot decode (no decoder for the syntax, odd BitsAllocated)."""


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


def _read_dataset(path: Path) -> Dataset:
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


def _has_pixel_tag(path: Path) -> bool:
    """True if the raw bytes hold a Pixel Data header (tag 7FE0,0010 then OB/OW or undefined length)."""
    data = path.read_bytes()
    return any(b"\xe0\x7f\x10\x00" + v in data for v in (b"OB", b"OW", b"\xff\xff\xff\xff"))


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int | None:
    value = ds.get(keyword, None)
    if value is None or value == "":
        return default
    return int(value)


def _float(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword, None)
    if value is None or value == "":
        return None
    return float(value[0] if isinstance(value, pydicom.multival.MultiValue) else value)


def _frame_time(ds: Dataset) -> float | None:
    if (ft := _float(ds, "FrameTime")) is not None:
        return ft
    vector = ds.get("FrameTimeVector", None)
    if vector is not None and len(vector) > 1:
        return float(np.mean([float(v) for v in vector[1:]]))
    for kw in ("CineRate", "RecommendedDisplayFrameRate"):
        if (rate := _float(ds, kw)):
            return 1000.0 / rate
    return None


def _decode(ds: Dataset, path: Path, ts: UID, n: int, rows: int, cols: int) -> np.ndarray:
    bits_alloc, bits_stored = _int(ds, "BitsAllocated"), _int(ds, "BitsStored")
    signed = _int(ds, "PixelRepresentation", 0) == 1
    if bits_alloc not in (8, 16) or not bits_stored or bits_stored > bits_alloc:
        raise UnsupportedImageError(path, f"unsupported BitsAllocated/BitsStored {bits_alloc}/{bits_stored}")
    if not ts.is_compressed:
        nbytes = n * rows * cols * bits_alloc // 8
        if len(ds.PixelData) < nbytes:
            raise TruncatedFileError(
                path, f"pixel data holds {len(ds.PixelData)} bytes, {nbytes} expected for {n} frames of "
                f"{rows}x{cols} at {bits_alloc} bits (file truncated?)")
        dtype = np.dtype(("i" if signed else "u") + str(bits_alloc // 8))
        dtype = dtype.newbyteorder(">" if not ts.is_little_endian else "<")
        arr = np.frombuffer(ds.PixelData, dtype=dtype, count=n * rows * cols).reshape(n, rows, cols)
        if bits_alloc == 16 and bits_stored < 16:  # unused high bits may hold overlays / sign bits
            native, shift = arr.astype(np.int16 if signed else np.uint16), 16 - bits_stored
            arr = (native << shift) >> shift if signed else native & np.uint16(2**bits_stored - 1)
        return arr
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise UnsupportedImageError(path, f"pydicom has no decoder for {ts.name}") from None
    if not decoder.is_available:
        raise UnsupportedImageError(path, f"no decoder plugin for {ts.name} is installed")
    # Pillow decodes 8-bit baseline JPEG ~3x faster than libjpeg; keep the default otherwise.
    plugin = "pillow" if ts == JPEGBaseline8Bit and "pillow" in decoder.available_plugins else ""
    try:
        arr = pydicom.pixels.pixel_array(ds, decoding_plugin=plugin)
    except Exception as exc:
        raise DicomReadError(path, f"{ts.name} pixel data could not be decoded ({type(exc).__name__}); "
                                   "the file may be truncated or corrupt") from None
    return arr.reshape(n, rows, cols)


def _fixed_lut(bits_stored: int) -> np.ndarray:
    """uint8 table: stored value (offset by 2**(bits-1) when signed) -> round(v * 255 / (2**bits - 1))."""
    top = 2**bits_stored - 1
    return np.rint(np.arange(top + 1, dtype=np.float64) * 255.0 / top).astype(np.uint8)


def _window(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2 windowing onto [0, 255]."""
    if function == "SIGMOID":
        return 255.0 / (1.0 + np.exp(-4.0 * (x - center) / max(width, 1e-6)))
    if function == "LINEAR_EXACT":
        return ((x - center) / max(width, 1e-6) + 0.5) * 255.0
    return ((x - (center - 0.5)) / max(width - 1.0, 1e-6) + 0.5) * 255.0


def _to_uint8(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    bits = int(ds.BitsStored)
    signed = _int(ds, "PixelRepresentation", 0) == 1
    slope, intercept = _float(ds, "RescaleSlope"), _float(ds, "RescaleIntercept")
    has_modality = "ModalityLUTSequence" in ds or (slope not in (None, 1.0)) or (intercept not in (None, 0.0))
    center, width = _float(ds, "WindowCenter"), _float(ds, "WindowWidth")
    has_voi_seq = "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0
    if not has_modality and not has_voi_seq and (center is None or width is None):
        if bits == 8 and not signed and arr.dtype == np.uint8:
            out = arr  # fast path: no float math, no copy beyond decoding
        else:
            idx = arr.astype(np.int32) + 2 ** (bits - 1) if signed else arr
            out = np.take(_fixed_lut(bits), idx)
    else:
        x = apply_modality_lut(arr, ds) if has_modality else arr
        if has_voi_seq:  # the LUT is indexed by (rounded) modality values
            lut_bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
            xi = np.rint(x).astype(np.int64) if x.dtype.kind == "f" else x
            y = apply_voi(xi, ds, index=0).astype(np.float32) * (255.0 / (2**lut_bits - 1))
        elif center is not None and width is not None:
            y = _window(np.asarray(x, dtype=np.float32), center, width, str(ds.get("VOILUTFunction", "LINEAR")))
        else:  # rescaled stored range mapped linearly, still a fixed rule
            lo_hi = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if signed else [0, 2**bits - 1])
            lo, hi = np.sort(np.asarray(apply_modality_lut(lo_hi, ds), dtype=np.float64))
            y = (np.asarray(x, dtype=np.float32) - lo) * (255.0 / max(hi - lo, 1e-6))
        out = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1":
        out = 255 - out
    return np.ascontiguousarray(out) if out.flags.writeable else out.copy()


def read_xa(path: str | Path) -> XARun:
    """Read a grayscale DICOM cine run (or single image) into 8-bit frames; see the module docstring."""
    path = Path(path)
    ds = _read_dataset(path)
    if "PixelData" not in ds:
        if _has_pixel_tag(path):  # pydicom drops encapsulated pixel data cut short before its delimiter
            raise TruncatedFileError(path, "encapsulated pixel data ends before its sequence delimiter (file truncated)")
        raise MissingPixelDataError(path, "no Pixel Data (7FE0,0010) element (not an image, or pixels stripped)")
    if _int(ds, "SamplesPerPixel", 1) != 1:
        raise ColourImageError(path, f"colour image ({_int(ds, 'SamplesPerPixel')} samples per pixel)")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ColourImageError(path, f"colour photometric interpretation {photometric}")
    rows, cols = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    if not rows or not cols:
        raise NotDicomError(path, "not an image: Rows/Columns missing or zero")
    try:
        n = _int(ds, "NumberOfFrames", 1)
    except ValueError:
        raise DicomReadError(path, "NumberOfFrames is not an integer") from None
    if n is None or n <= 0 or ds.PixelData is None or len(ds.PixelData) == 0:
        raise NoFramesError(path, "no frames (NumberOfFrames is 0 or the pixel data is empty)")
    ts = UID(ds.file_meta.get("TransferSyntaxUID", ImplicitVRLittleEndian))
    stored = _decode(ds, path, ts, n, rows, cols)
    frames = _to_uint8(stored, ds)
    del ds.PixelData
    return XARun(
        frames=frames,
        frame_time_ms=_frame_time(ds),
        primary_angle=_float(ds, "PositionerPrimaryAngle"),
        secondary_angle=_float(ds, "PositionerSecondaryAngle"),
        transfer_syntax=ts.name,
        transfer_syntax_uid=str(ts),
        bits_stored=int(ds.BitsStored),
        photometric=photometric,
        n_frames=n,
        dataset=ds,
    )
