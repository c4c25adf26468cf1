"""Pixel decoding for `cag_utils.data.dicom.read_xa`: stored values out of the Pixel Data, then 8 bits.

``decode`` reads uncompressed data itself and compressed data through pydicom's decoders and the
pylibjpeg plugins (``decode_compressed``), mending a JPEG scan header that says Se = 0 (IJG libjpeg
reads it as 63); ``grey_from_colour`` reads a grey image stored as RGB/YBR and refuses true colour;
``to_uint8`` maps stored values onto 0-255 by the fixed rule (Modality LUT then VOI LUT or window
where present, else the stored range), with the fallbacks of `cag_utils.data.dicom_header`.
Every header value has been checked (`cag_utils.data.dicom_header`) before these run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import apply_modality_lut, apply_voi, get_decoder
from pydicom.uid import UID, JPEGBaseline8Bit, JPEGExtended12Bit

from cag_utils.data.dicom_errors import ColourImageError, DicomReadError, TruncatedFileError, UnsupportedImageError
from cag_utils.data.dicom_header import drop_bad_luts, optional_number, window

# Largest channel difference still read as grey after lossy compression, as a share of the
# stored range (JPEG of a grey RGB image moves channels apart by a few levels); lossless: 0.
GREY_TOLERANCE_LOSSY = 0.02
_LOSSLESS_COMPRESSED = {"1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.80",
                        "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.201",
                        "1.2.840.10008.1.2.4.202"}  # RLE, J2K/JPEG-LS/JPEG/HTJ2K lossless (+RPCL)
_SOS_REPAIR = "JPEG scan header Se=0 read as 63 (sequential DCT), as IJG libjpeg does"


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


def decode_compressed(ds: Dataset, path: Path, ts: UID, n: int, as_rgb: bool | None = None
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


def decode(ds: Dataset, path: Path, ts: UID, shape: tuple[int, int, int], bits_alloc: int, bits_stored: int,
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
    arr, _, repairs = decode_compressed(ds, path, ts, n)
    if arr.size != n * rows * cols:
        raise DicomReadError(path, f"{ts.name} pixel data decoded to {arr.size} values, not {n} frames of {rows}x{cols}")
    return arr.reshape(n, rows, cols), repairs


def grey_from_colour(ds: Dataset, path: Path, ts: UID, shape: tuple[int, int, int], bits_alloc: int, bits: int,
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
        arr, meta, repairs = decode_compressed(ds, path, ts, n, as_rgb=False)
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


def to_uint8(arr: np.ndarray, ds: Dataset, bits: int, signed: bool, notes: list[str],
              monochrome1: bool = False, from_colour: bool = False) -> np.ndarray:
    """Stored values -> uint8 by the fixed rule; a grey image read from colour gets the stored
    range only (colour images carry no grey LUTs) and is never inverted. Malformed LUTs and
    windows fall back as `cag_utils.data.dicom_header` says (noted in `notes`)."""
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
