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
Errors are typed (`DicomReadError` subclasses, `cag_utils.dicom_errors`) and name the file,
never identifying header values.

Every header value the reader uses is checked by `cag_utils.dicom_header` (its docstring lists
each rule): an unusable required value raises a typed error naming the element
(`InvalidHeaderError.element`); a malformed optional one falls back as documented there
(a malformed Modality or VOI LUT Sequence is ignored and the rescale/window or raw values used,
an empty RescaleSlope counts as 1, a missing PhotometricInterpretation is MONOCHROME2, ...),
and each fallback is logged (logger `cag_utils.dicom`, "<label>: <what>") and listed in
`XARun.repairs`. A header whose frames would decode to more than `MAX_DECODED_BYTES` is
refused (ImageTooLargeError) before any pixel buffer is allocated, and encapsulated pixel data
with fewer fragments than NumberOfFrames is refused as truncated. `cag_utils.dicom_fuzz`
mutates headers to check all this (tests/test_dicom_fuzz.py, benchmarks/fuzz_dicom.py).
"""
from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
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
    JPEGExtended12Bit,
    JPEGLSLossless,
    MediaStorageDirectoryStorage,
    RLELossless,
    EnhancedXAImageStorage,
    XRayAngiographicImageStorage,
    generate_uid,
)

from cag_utils.dicom_errors import (
    ColourImageError, DicomReadError, ImageTooLargeError, InvalidHeaderError, MissingPixelDataError, NoFramesError,
    NotDicomError, NotXACineError, TruncatedFileError, UnsupportedImageError,
)
from cag_utils.dicom_header import (
    check_bits, check_fragments, check_size, drop_bad_luts, frame_time, geometry, header_int, optional_number,
    photometric, transfer_syntax, window,
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
# Largest channel difference still read as grey after lossy compression, as a share of the
# stored range (JPEG of a grey RGB image moves channels apart by a few levels); lossless: 0.
GREY_TOLERANCE_LOSSY = 0.02
_LOSSLESS_COMPRESSED = {"1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.80",
                        "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.201",
                        "1.2.840.10008.1.2.4.202"}  # RLE, J2K/JPEG-LS/JPEG/HTJ2K lossless (+RPCL)
_SOS_REPAIR = "JPEG scan header Se=0 read as 63 (sequential DCT), as IJG libjpeg does"


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


def _repair_scan_header(frame: bytes) -> bytes:
    """A sequential-DCT JPEG (SOF0/SOF1) frame with its first scan's Ss, Se set to 0, 63.

    Some 12-bit XA encoders wrote Se = 0; libjpeg refuses it, IJG libjpeg ignores Ss/Se in
    sequential mode. Other frames come back unchanged."""
    data, i, sequential = bytearray(frame), 2, False
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        sequential |= marker in (0xC0, 0xC1)
        if marker == 0xDA:
            spectral = i + 5 + 2 * data[i + 4]  # after Ns and the Ns component selectors
            if sequential and spectral + 1 < len(data) and (data[spectral], data[spectral + 1]) != (0, 63):
                data[spectral], data[spectral + 1] = 0, 63
            break
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return bytes(data)


def _decoder_plugin(ds: Dataset, path: Path, ts: UID) -> str:
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise UnsupportedImageError(path, f"pydicom has no decoder for {ts.name}") from None
    if not decoder.is_available:
        raise UnsupportedImageError(path, f"no decoder plugin for {ts.name} is installed")
    # Pillow decodes 8-bit baseline JPEG ~3x faster than libjpeg; keep the default otherwise.
    return "pillow" if ts == JPEGBaseline8Bit and "pillow" in decoder.available_plugins else ""


def _decode_compressed(ds: Dataset, path: Path, ts: UID, n: int, as_rgb: bool | None = None
                       ) -> tuple[np.ndarray, dict[str, Any], tuple[str, ...]]:
    """(array, decoder meta, repairs) through pydicom's decoder and the pylibjpeg plugins."""
    plugin = _decoder_plugin(ds, path, ts)
    options: dict[str, Any] = {} if as_rgb is None else {"as_rgb": as_rgb}
    repairs: tuple[str, ...] = ()
    try:
        if ts in (JPEGBaseline8Bit, JPEGExtended12Bit):  # mend a bad scan header before libjpeg sees it
            first = bytes(next(generate_frames(ds.PixelData, number_of_frames=n)))
            if _repair_scan_header(first) != first:
                frames = [_repair_scan_header(bytes(f)) for f in generate_frames(ds.PixelData, number_of_frames=n)]
                ds.PixelData = encapsulate(frames, has_bot=True)
                plugin, repairs = "pylibjpeg", (_SOS_REPAIR,)
        arr, meta = get_decoder(ts).as_array(ds, decoding_plugin=plugin, **options)
        return arr, meta, repairs
    except Exception as exc:
        raise DicomReadError(path, f"{ts.name} pixel data could not be decoded ({type(exc).__name__}); "
                                   "the file may be truncated or corrupt") from None


def _decode(ds: Dataset, path: Path, ts: UID, shape: tuple[int, int, int], bits_alloc: int, bits_stored: int,
            signed: bool) -> tuple[np.ndarray, tuple[str, ...]]:
    n, rows, cols = shape
    if not ts.is_compressed:
        nbytes = n * rows * cols * bits_alloc // 8
        if len(ds.PixelData) < nbytes:
            raise TruncatedFileError(
                path, f"pixel data holds {len(ds.PixelData)} bytes, {nbytes} expected for {n} frames of "
                f"{rows}x{cols} at {bits_alloc} bits (file truncated?)")
        dtype = np.dtype(("i" if signed else "u") + str(bits_alloc // 8))
        dtype = dtype.newbyteorder(">" if not ts.is_little_endian else "<")
        arr = np.frombuffer(ds.PixelData, dtype=dtype, count=n * rows * cols).reshape(n, rows, cols)
        if bits_stored < bits_alloc:  # unused high bits may hold overlays / sign bits
            native = arr.astype(np.dtype(("i" if signed else "u") + str(bits_alloc // 8)))
            shift = bits_alloc - bits_stored
            arr = (native << shift) >> shift if signed else native & native.dtype.type(2**bits_stored - 1)
        return arr, ()
    arr, _, repairs = _decode_compressed(ds, path, ts, n)
    if arr.size != n * rows * cols:
        raise DicomReadError(path, f"{ts.name} pixel data decoded to {arr.size} values, not {n} frames of {rows}x{cols}")
    return arr.reshape(n, rows, cols), repairs


def _grey_from_colour(ds: Dataset, path: Path, ts: UID, shape: tuple[int, int, int], bits_alloc: int, bits: int,
                      signed: bool, photometric: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """The grey image carried by an RGB/YBR image whose channels agree; ColourImageError otherwise."""
    n, rows, cols = shape
    if signed:
        raise ColourImageError(path, f"colour image ({photometric}, {bits_alloc}-bit signed samples)")
    per_pixel = 2 if photometric == "YBR_FULL_422" else 3  # uncompressed 4:2:2 stores two samples a pixel
    if not ts.is_compressed and len(ds.PixelData) < n * rows * cols * per_pixel * bits_alloc // 8:
        raise TruncatedFileError(path, f"pixel data holds {len(ds.PixelData)} bytes, fewer than {n} frames "
                                       f"of {rows}x{cols} {photometric} at {bits_alloc} bits (file truncated?)")
    if ts.is_compressed:
        arr, meta, repairs = _decode_compressed(ds, path, ts, n, as_rgb=False)
    else:
        try:
            arr, meta = get_decoder(ts).as_array(ds, as_rgb=False)
        except Exception as exc:
            raise DicomReadError(path, f"{ts.name} colour pixel data could not be decoded "
                                       f"({type(exc).__name__})") from None
        repairs = ()
    if arr.size != n * rows * cols * 3:
        raise DicomReadError(path, f"{ts.name} colour pixel data decoded to {arr.size} values, not {n} frames "
                                   f"of {rows}x{cols}x3")
    a = arr.reshape(n, rows, cols, 3).astype(np.int32)
    space = str(meta.get("photometric_interpretation", photometric))  # the decoder may convert YBR to RGB
    lossless = str(ts) in _LOSSLESS_COMPRESSED or not ts.is_compressed
    tol = 0 if lossless and ds.get("LossyImageCompression", "00") != "01" else round(GREY_TOLERANCE_LOSSY * (2**bits - 1))
    if space == "RGB":
        spread = max(int(np.abs(a[..., 0] - a[..., 1]).max()), int(np.abs(a[..., 1] - a[..., 2]).max()))
        grey = (a.sum(axis=-1) + 1) // 3
    else:  # YBR: grey when both chroma channels sit at neutral (0 for RCT, mid-range otherwise)
        neutral = 0 if space == "YBR_RCT" else 2 ** (bits - 1)
        spread, grey = int(np.abs(a[..., 1:] - neutral).max()), a[..., 0]
    if spread > tol:
        raise ColourImageError(path, f"colour image ({photometric}; channels differ by up to {spread}, "
                                     f"more than the {tol} a grey image allows)")
    return grey.astype(np.uint8 if bits_alloc == 8 else np.uint16), repairs


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


def _fixed_rule(arr: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    if bits == 8 and not signed and arr.dtype == np.uint8:
        return arr  # fast path: no float math, no copy beyond decoding
    idx = arr.astype(np.int32) + 2 ** (bits - 1) if signed else arr
    return np.take(_fixed_lut(bits), idx, mode="clip")  # a decoder's out-of-range value saturates


def _luts_to_uint8(arr: np.ndarray, ds: Dataset, bits: int, signed: bool, slope: float, intercept: float,
                   win: tuple[float, float] | None) -> np.ndarray:
    """Modality LUT (sequence or rescale) then VOI LUT (sequence or window), onto uint8."""
    def modality(values: np.ndarray) -> np.ndarray:
        if "ModalityLUTSequence" in ds:
            return apply_modality_lut(values, ds)
        if slope == 1.0 and intercept == 0.0:
            return values
        return values.astype(np.float64) * slope + intercept

    x = modality(arr)
    if "VOILUTSequence" in ds:  # the LUT is indexed by (rounded) modality values
        lut_bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        xi = np.rint(x).astype(np.int64) if x.dtype.kind == "f" else x
        y = apply_voi(xi, ds, index=0).astype(np.float32) * (255.0 / (2**lut_bits - 1))
    elif win is not None:
        y = _window(np.asarray(x, dtype=np.float32), win[0], win[1], str(ds.get("VOILUTFunction", "LINEAR")))
    else:  # rescaled stored range mapped linearly, still a fixed rule
        lo_hi = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if signed else [0, 2**bits - 1])
        lo, hi = np.sort(np.asarray(modality(lo_hi), dtype=np.float64))
        y = (np.asarray(x, dtype=np.float32) - lo) * (255.0 / max(hi - lo, 1e-6))
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def _to_uint8(arr: np.ndarray, ds: Dataset, bits: int, signed: bool, notes: list[str],
              monochrome1: bool = False, from_colour: bool = False) -> np.ndarray:
    """Stored values -> uint8 by the fixed rule; a grey image read from colour gets the stored
    range only (colour images carry no grey LUTs) and is never inverted. Malformed LUTs and
    windows fall back as `cag_utils.dicom_header` says (noted in `notes`)."""
    out = None
    if not from_colour:
        slope = optional_number(ds, "RescaleSlope", notes, 1.0, nonzero=True)
        intercept = optional_number(ds, "RescaleIntercept", notes, 0.0)
        drop_bad_luts(ds, notes)
        win = window(ds, notes)
        if "ModalityLUTSequence" in ds or "VOILUTSequence" in ds or win or (slope, intercept) != (1.0, 0.0):
            try:
                out = _luts_to_uint8(arr, ds, bits, signed, float(slope), float(intercept), win)
            except Exception as exc:  # a LUT that passed the checks and still fails: the fixed rule
                notes.append(f"Modality/VOI LUT or window could not be applied ({type(exc).__name__}): "
                             "the fixed stored-range rule is used")
    if out is None:
        out = _fixed_rule(arr, bits, signed)
    if monochrome1 and not from_colour:
        out = 255 - out
    return np.ascontiguousarray(out) if out.flags.writeable else out.copy()


def _check_xa_cine(ds: Dataset, path: Path) -> None:
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


def read_xa(path: str | Path, *, xa_cine_only: bool = False, label: str | None = None,
            max_decoded_bytes: int = MAX_DECODED_BYTES) -> XARun:
    """Read a grayscale DICOM cine run (or single image) into 8-bit frames; see the module docstring.

    xa_cine_only: refuse (NotXACineError, from the header alone) anything but a multi-frame XA image.
    label: names the file in the log of fallbacks (default: its file name; the ingest passes the
    exam pseudonym and file number). max_decoded_bytes: larger images are refused from the header.
    """
    path = Path(path)
    notes: list[str] = []
    ds = _read_dataset(path)
    if "PixelData" not in ds and _has_pixel_tag(path):  # pydicom drops encapsulated pixel data cut short
        raise TruncatedFileError(path, "encapsulated pixel data ends before its sequence delimiter (file truncated)")
    if xa_cine_only:
        _check_xa_cine(ds, path)
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
        stored, repairs = _grey_from_colour(ds, path, ts, (n, rows, cols), bits_alloc, bits_stored, signed, photo)
    else:
        stored, repairs = _decode(ds, path, ts, (n, rows, cols), bits_alloc, bits_stored, signed)
    frames = _to_uint8(stored, ds, bits_stored, signed, notes, photo == "MONOCHROME1", from_colour=samples == 3)
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
