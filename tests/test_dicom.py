"""Reader/writer of X-ray angiography DICOM (cag_utils.data.dicom): round trips, normalisation, errors."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGExtended12Bit, JPEGLosslessSV1, XRayAngiographicImageStorage

from cag_utils.data.dicom import (
    ColourImageError,
    DicomReadError,
    MissingPixelDataError,
    NoFramesError,
    NotDicomError,
    NotXACineError,
    TruncatedFileError,
    encoder_available,
    read_xa,
    write_xa,
)

PHI = {
    "PatientName": "ZZFAKE^TARO", "PatientID": "PID-778899", "PatientBirthDate": "19580704",
    "StudyDate": "20190315", "AccessionNumber": "ACC-424242",
}
BUNDLED = Path(pydicom.__file__).parent / "data" / "test_files"  # shipped in the wheel; never downloaded
# Encoders the pinned dependencies do not provide (pydicom writes JPEG-LS with pyjpegls, not pinned here): the only
# round trips that may skip; the others' encoders come with pylibjpeg-openjpeg, pylibjpeg-rle and pillow.
OPTIONAL_ENCODERS = {"jpegls": "pyjpegls"}


def bundled(name: str) -> Path:
    path = BUNDLED / name
    assert path.is_file(), f"{name} is not bundled with this pydicom wheel: install the pinned pydicom (make install)"
    return path


def frames_for(bits: int, n: int = 3, h: int = 32, w: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 2**bits, size=(n, h, w))
    arr[0, 0, :4] = [0, 1, 2**bits // 2, 2**bits - 1]  # the range ends are always present
    return arr.astype(np.uint8 if bits == 8 else np.uint16)


def fixed_rule(arr: np.ndarray, bits: int) -> np.ndarray:
    return np.rint(arr.astype(np.float64) * 255.0 / (2**bits - 1)).astype(np.uint8)


def smooth_frames(n: int = 4, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return np.stack([100 + 80 * np.sin((xx + 3 * i) / 9.0) * np.cos(yy / 11.0) for i in range(n)]).astype(np.uint8)


def edit(path: Path, **changes: object) -> Path:
    """Rewrite an existing file with some attributes changed (None deletes)."""
    ds = pydicom.dcmread(path)
    for kw, value in changes.items():
        if value is None:
            delattr(ds, kw)
        else:
            setattr(ds, kw, value)
    ds.save_as(path)
    return path


LOSSLESS = ["explicit", "implicit", "rle", "jpeg2000", "jpegls"]


@pytest.mark.parametrize("bits", [8, 10, 12])
@pytest.mark.parametrize("syntax", LOSSLESS)
def test_lossless_round_trip(tmp_path: Path, syntax: str, bits: int) -> None:
    if not encoder_available(syntax):
        assert syntax in OPTIONAL_ENCODERS, f"no {syntax} encoder, although the pinned dependencies provide one"
        pytest.skip(f"missing system tool: a {syntax} encoder ({OPTIONAL_ENCODERS[syntax]}); decoding is still tested "
                    "on bundled files")
    frames = frames_for(bits)
    path = write_xa(tmp_path / "run.dcm", frames, bits_stored=bits, frame_time_ms=66.7,
                    primary_angle=-30.0, secondary_angle=25.0, header=PHI, transfer_syntax=syntax)
    run = read_xa(path)
    assert run.frames.dtype == np.uint8 and run.frames.shape == frames.shape
    np.testing.assert_array_equal(run.frames, fixed_rule(frames, bits))
    if bits == 8:
        np.testing.assert_array_equal(run.frames, frames)
    assert run.n_frames == 3 and run.bits_stored == bits and run.photometric == "MONOCHROME2"
    assert run.frame_time_ms == pytest.approx(66.7)
    assert (run.primary_angle, run.secondary_angle) == (-30.0, 25.0)
    assert run.transfer_syntax == pydicom.dcmread(path).file_meta.TransferSyntaxUID.name


def test_written_file_is_an_xa_multiframe(tmp_path: Path) -> None:
    path = write_xa(tmp_path / "run.dcm", frames_for(12), bits_stored=12, frame_time_ms=33.3,
                    primary_angle=45.0, secondary_angle=-20.0, header={**PHI, "SeriesNumber": 7})
    ds = pydicom.dcmread(path)
    assert ds.preamble is not None and ds.file_meta.MediaStorageSOPClassUID == XRayAngiographicImageStorage
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.SOPClassUID == XRayAngiographicImageStorage and ds.Modality == "XA"
    assert ds.NumberOfFrames == 3 and float(ds.FrameTime) == pytest.approx(33.3)
    assert ds.FrameIncrementPointer == 0x00181063
    assert (ds.PositionerPrimaryAngle, ds.PositionerSecondaryAngle) == (45.0, -20.0)
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 12, 11, 0)
    assert ds.SamplesPerPixel == 1 and ds.PhotometricInterpretation == "MONOCHROME2"
    assert ds.PatientName == PHI["PatientName"] and ds.PatientID == PHI["PatientID"] and ds.SeriesNumber == 7
    assert pydicom.uid.UID(ds.StudyInstanceUID).is_valid


def test_read_returns_header_without_pixels_and_writable_frames(tmp_path: Path) -> None:
    run = read_xa(write_xa(tmp_path / "run.dcm", frames_for(8), header=PHI))
    assert "PixelData" not in run.dataset and run.dataset.PatientID == PHI["PatientID"]
    run.frames[0, 0, 0] = 7  # callers may edit in place


def test_jpeg_baseline_close(tmp_path: Path) -> None:
    frames = smooth_frames()
    path = write_xa(tmp_path / "run.dcm", frames, transfer_syntax="jpeg_baseline")
    run = read_xa(path)
    assert run.transfer_syntax_uid == "1.2.840.10008.1.2.4.50"
    diff = np.abs(run.frames.astype(int) - frames)
    assert diff.mean() < 1.5 and diff.max() <= 12
    assert pydicom.dcmread(path, stop_before_pixels=True).LossyImageCompression == "01"
    with pytest.raises(ValueError):
        write_xa(tmp_path / "x.dcm", frames_for(12), bits_stored=12, transfer_syntax="jpeg_baseline")


def test_jpegls_write_needs_an_encoder(tmp_path: Path) -> None:
    if encoder_available("jpegls"):  # the round trip checks the pixels
        assert read_xa(write_xa(tmp_path / "x.dcm", frames_for(8), transfer_syntax="jpegls")).n_frames == 3
    else:
        with pytest.raises(RuntimeError, match="no encoder"):
            write_xa(tmp_path / "x.dcm", frames_for(8), transfer_syntax="jpegls")


# --- a minimal JPEG lossless (process 14, selection value 1) encoder, so the .70 decoder is tested
def _jpeg_lossless(img: np.ndarray, precision: int) -> bytes:
    lengths = {0: 2, **dict.fromkeys(range(1, 6), 3), **{c: c - 2 for c in range(6, 17)}}
    symbols = sorted(lengths, key=lambda s: (lengths[s], s))
    codes, code = {}, 0
    for length in range(1, 17):
        for s in (s for s in symbols if lengths[s] == length):
            codes[s], code = (code, length), code + 1
        code <<= 1
    x = img.astype(np.int64)
    pred = np.empty_like(x)
    pred[0, 0], pred[0, 1:], pred[1:, 0], pred[1:, 1:] = 1 << (precision - 1), x[0, :-1], x[:-1, 0], x[1:, :-1]
    bits = []
    for d in (x - pred).ravel().tolist():
        ssss = abs(d).bit_length()
        c, n = codes[ssss]
        bits.append(format(c, f"0{n}b"))
        if ssss:
            bits.append(format(d if d > 0 else d + (1 << ssss) - 1, f"0{ssss}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    data = int(stream, 2).to_bytes(len(stream) // 8, "big").replace(b"\xff", b"\xff\x00")
    h, w = img.shape
    counts = bytes(sum(1 for s in symbols if lengths[s] == n) for n in range(1, 17))
    sof = b"\xff\xc3" + (11).to_bytes(2, "big") + bytes([precision]) + h.to_bytes(2, "big") + w.to_bytes(2, "big") + b"\x01\x01\x11\x00"
    dht = b"\xff\xc4" + (3 + 16 + len(symbols)).to_bytes(2, "big") + b"\x00" + counts + bytes(symbols)
    sos = b"\xff\xda" + (8).to_bytes(2, "big") + b"\x01\x01\x00\x01\x00\x00"
    return b"\xff\xd8" + sof + dht + sos + data + b"\xff\xd9"


@pytest.mark.parametrize("bits", [8, 12])
def test_jpeg_lossless_decoded_exactly(tmp_path: Path, bits: int) -> None:
    frames = frames_for(bits, n=2, h=16, w=24)
    path = write_xa(tmp_path / "run.dcm", frames, bits_stored=bits)
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([_jpeg_lossless(f, bits) for f in frames])
    ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.save_as(path)
    run = read_xa(path)
    assert run.transfer_syntax_uid == JPEGLosslessSV1
    np.testing.assert_array_equal(run.frames, fixed_rule(frames, bits))


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm", "MR_small_implicit.dcm"])
def test_bundled_compressed_match_uncompressed(name: str) -> None:
    reference = read_xa(bundled("MR_small.dcm"))  # 16-bit signed, with a window
    run = read_xa(bundled(name))
    np.testing.assert_array_equal(run.frames, reference.frames)


def test_bundled_jpeg_lossless_rgb_is_refused() -> None:  # true colour: channels differ
    path = bundled("SC_rgb_jpeg_gdcm.dcm")  # the wheel's only JPEG lossless (.70) file is RGB
    with pytest.raises(ColourImageError, match=str(path).replace("+", r"\+")):
        read_xa(path)


def test_bundled_jpeg2000_lossy_and_extended() -> None:
    for name in ("JPEG2000.dcm", "JPGExtended.dcm"):
        run = read_xa(bundled(name))
        assert run.frames.dtype == np.uint8 and run.frames.shape == (1, 1024, 256)


def test_twelve_bit_fixed_scaling(tmp_path: Path) -> None:
    frames = np.array([[[0, 1, 2048, 4095]], [[4094, 2047, 100, 3000]]], dtype=np.uint16)
    run = read_xa(write_xa(tmp_path / "r.dcm", frames, bits_stored=12))
    np.testing.assert_array_equal(run.frames[0, 0], [0, 0, 128, 255])
    # fixed, not per-image min-max: a dim run stays dim
    dim = read_xa(write_xa(tmp_path / "d.dcm", np.full((2, 4, 4), 1000, np.uint16), bits_stored=12))
    assert int(dim.frames.max()) == round(1000 * 255 / 4095)


def test_window_centre_width_applied(tmp_path: Path) -> None:
    frames = np.array([[[1000, 1536, 2048, 2560, 4000]]], dtype=np.uint16)
    path = write_xa(tmp_path / "w.dcm", frames, bits_stored=12, header={"WindowCenter": 2048, "WindowWidth": 1024})
    got = read_xa(path).frames[0, 0]
    expected = np.clip(np.rint(((frames[0, 0] - 2047.5) / 1023 + 0.5) * 255), 0, 255)
    np.testing.assert_array_equal(got, expected)
    assert got[0] == 0 and got[-1] == 255


def test_voi_lut_sequence_applied(tmp_path: Path) -> None:
    frames = np.array([[[0, 100, 255]]], dtype=np.uint8)
    path = write_xa(tmp_path / "l.dcm", frames)
    ds = pydicom.dcmread(path)
    item = pydicom.Dataset()
    item.add_new(0x00283002, "US", [256, 0, 8])  # LUTDescriptor: 256 entries from 0, 8 bits
    item.add_new(0x00283006, "US", list(range(255, -1, -1)))  # LUTData: an inverting LUT
    ds.VOILUTSequence = [item]
    ds.save_as(path)
    np.testing.assert_array_equal(read_xa(path).frames[0, 0], [255, 155, 0])


def test_rescale_without_window_keeps_fixed_range(tmp_path: Path) -> None:
    frames = frames_for(12)
    path = write_xa(tmp_path / "r.dcm", frames, bits_stored=12, header={"RescaleSlope": 2, "RescaleIntercept": -100})
    np.testing.assert_array_equal(read_xa(path).frames, fixed_rule(frames, 12))


def test_monochrome1_inverted(tmp_path: Path) -> None:
    frames = frames_for(8)
    path = edit(write_xa(tmp_path / "m1.dcm", frames), PhotometricInterpretation="MONOCHROME1")
    run = read_xa(path)
    assert run.photometric == "MONOCHROME1"
    np.testing.assert_array_equal(run.frames, 255 - frames)


def test_single_frame(tmp_path: Path) -> None:
    image = frames_for(10)[0]
    path = write_xa(tmp_path / "one.dcm", image, bits_stored=10, transfer_syntax="rle")
    assert "NumberOfFrames" not in pydicom.dcmread(path)
    run = read_xa(path)
    assert run.frames.shape == (1, *image.shape) and run.n_frames == 1 and run.frame_time_ms is None
    np.testing.assert_array_equal(run.frames[0], fixed_rule(image, 10))


def test_writer_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exceed"):
        write_xa(tmp_path / "a.dcm", np.full((1, 4, 4), 1024, np.uint16), bits_stored=10)
    with pytest.raises(ValueError, match="unknown DICOM keyword"):
        write_xa(tmp_path / "a.dcm", frames_for(8), header={"PatientNmae": "x"})
    with pytest.raises(ValueError, match="set by write_xa"):
        write_xa(tmp_path / "a.dcm", frames_for(8), header={"Rows": 3})
    with pytest.raises(ValueError):
        write_xa(tmp_path / "a.dcm", frames_for(8).astype(np.float32))


# --------------------------------------------------------------------------- errors
def _assert_clean_message(err: DicomReadError, path: Path) -> None:
    message = str(err)
    assert str(path) in message and err.path == str(path)
    for value in PHI.values():
        assert value not in message
    assert "TARO" not in message and "ZZFAKE" not in message


def _xa(tmp_path: Path, **kw: object) -> Path:
    return write_xa(tmp_path / "e.dcm", frames_for(8), header=PHI, **kw)  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's forced-read fallback complains
def test_error_not_dicom(tmp_path: Path) -> None:
    text = tmp_path / "notes.dcm"
    text.write_text("ZZFAKE^TARO PID-778899 is not a DICOM file\n" * 20)
    with pytest.raises(NotDicomError) as info:
        read_xa(text)
    _assert_clean_message(info.value, text)
    with pytest.raises(NotDicomError):
        read_xa(tmp_path / "missing.dcm")


@pytest.mark.parametrize("syntax", ["explicit", "rle"])
def test_error_truncated(tmp_path: Path, syntax: str) -> None:
    path = _xa(tmp_path, transfer_syntax=syntax)
    path.write_bytes(path.read_bytes()[:-300])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the missing delimiter
        with pytest.raises(TruncatedFileError) as info:
            read_xa(path)
    _assert_clean_message(info.value, path)


def test_error_missing_pixel_data(tmp_path: Path) -> None:
    path = edit(_xa(tmp_path), PixelData=None)
    with pytest.raises(MissingPixelDataError) as info:
        read_xa(path)
    _assert_clean_message(info.value, path)


def test_error_colour(tmp_path: Path) -> None:
    path = _xa(tmp_path)
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.PixelData = np.random.default_rng(1).integers(0, 256, len(ds.PixelData) * 3, dtype=np.uint8).tobytes()
    ds.save_as(path)  # true colour: the channels differ
    with pytest.raises(ColourImageError) as info:
        read_xa(path)
    _assert_clean_message(info.value, path)


def test_error_no_frames(tmp_path: Path) -> None:
    path = edit(_xa(tmp_path), NumberOfFrames=0)
    with pytest.raises(NoFramesError) as info:
        read_xa(path)
    _assert_clean_message(info.value, path)
    path = edit(_xa(tmp_path), NumberOfFrames=1, PixelData=b"")
    with pytest.raises(NoFramesError):
        read_xa(path)


def test_errors_are_value_errors() -> None:
    for cls in (NotDicomError, TruncatedFileError, MissingPixelDataError, ColourImageError, NoFramesError):
        assert issubclass(cls, DicomReadError) and issubclass(cls, ValueError)


# --------------------------------------------------------------------------- JPEG Extended, grey stored as colour
def test_bundled_jpeg_extended_with_bad_scan_header_is_read() -> None:
    """JPEG-lossy.dcm: 12-bit JPEG Extended whose scan header says Se=0 (libjpeg refuses it).
    JPGExtended.dcm is the same stream with Se=63, so both must give the same frames."""
    run = read_xa(bundled("JPEG-lossy.dcm"))
    fixed = read_xa(bundled("JPGExtended.dcm"))
    assert run.transfer_syntax_uid == JPEGExtended12Bit and run.bits_stored == 12
    assert run.repairs and "Se=0" in run.repairs[0] and fixed.repairs == ()
    np.testing.assert_array_equal(run.frames, fixed.frames)
    assert len(np.unique(run.frames)) > 10  # an image (a dim whole-body scan), not a flat decode


def _as_colour(path: Path, photometric: str, channels: np.ndarray) -> Path:
    """Rewrite an uncompressed XA file to hold `channels` (F,H,W,3) as `photometric`."""
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, photometric, 0
    ds.PixelData = np.ascontiguousarray(channels, dtype=np.uint8).tobytes()
    ds["PixelData"].VR = "OB"
    ds.save_as(path)
    return path


def test_grey_stored_as_rgb_is_read_and_flagged(tmp_path: Path) -> None:
    frames = frames_for(8)
    path = _as_colour(write_xa(tmp_path / "rgb.dcm", frames), "RGB", np.repeat(frames[..., None], 3, -1))
    run = read_xa(path)
    assert run.converted_from == "RGB" and run.photometric == "RGB"
    np.testing.assert_array_equal(run.frames, frames)


def test_grey_stored_as_ybr_full_is_read_and_flagged(tmp_path: Path) -> None:
    frames = frames_for(8)
    ybr = np.stack([frames, np.full_like(frames, 128), np.full_like(frames, 128)], axis=-1)
    run = read_xa(_as_colour(write_xa(tmp_path / "ybr.dcm", frames), "YBR_FULL", ybr))
    assert run.converted_from == "YBR_FULL"
    np.testing.assert_array_equal(run.frames, frames)


def test_grey_rgb_through_lossy_jpeg_is_read(tmp_path: Path) -> None:
    """A viewer export: grey frames saved as colour JPEG (YCbCr 4:2:0 inside)."""
    from PIL import Image

    frames = smooth_frames()
    path = write_xa(tmp_path / "j.dcm", frames)
    ds = pydicom.dcmread(path)
    encoded = []
    for frame in frames:
        buf = __import__("io").BytesIO()
        Image.fromarray(np.repeat(frame[..., None], 3, -1)).save(buf, format="JPEG", quality=90)
        encoded.append(buf.getvalue())
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.PixelData = encapsulate(encoded, has_bot=True)
    ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
    ds.save_as(path)
    run = read_xa(path)
    assert run.converted_from == "YBR_FULL_422"
    assert np.abs(run.frames.astype(int) - frames).mean() < 1.5


def test_grey_rgb_in_jpeg2000_lossless_is_read_exactly(tmp_path: Path) -> None:
    frames = frames_for(8, n=2)
    path = _as_colour(write_xa(tmp_path / "k.dcm", frames), "RGB", np.repeat(frames[..., None], 3, -1))
    ds = pydicom.dcmread(path)
    ds.compress(pydicom.uid.JPEG2000Lossless, encoding_plugin="pylibjpeg")  # RGB -> YBR_RCT (MCT)
    ds.save_as(path)
    run = read_xa(path)
    assert run.converted_from in ("YBR_RCT", "RGB")
    np.testing.assert_array_equal(run.frames, frames)


@pytest.mark.parametrize("name", ["SC_rgb_small_odd.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_ybr_full_422_uncompressed.dcm",
                                  "SC_rgb_rle_16bit.dcm", "examples_jpeg2k.dcm", "SC_rgb_jpeg_gdcm.dcm"])
def test_bundled_true_colour_is_refused(name: str) -> None:
    with pytest.raises(ColourImageError, match="channels differ"):
        read_xa(bundled(name))


def test_true_colour_refused_even_when_nearly_grey(tmp_path: Path) -> None:
    frames = frames_for(8)
    rgb = np.repeat(frames[..., None], 3, -1)
    rgb[0, 5, 5] = [255, 0, 0]  # one red pixel (burned-in colour annotation): not a grey image
    with pytest.raises(ColourImageError, match="channels differ"):
        read_xa(_as_colour(write_xa(tmp_path / "c.dcm", frames), "RGB", rgb))


# --------------------------------------------------------------------------- the ingest's XA-cine filter
def test_xa_cine_only_refuses_by_header(tmp_path: Path) -> None:
    cine = write_xa(tmp_path / "cine.dcm", frames_for(8))
    assert read_xa(cine, xa_cine_only=True).n_frames == 3
    single = write_xa(tmp_path / "one.dcm", frames_for(8)[0])
    with pytest.raises(NotXACineError, match="single-frame"):
        read_xa(single, xa_cine_only=True)
    assert read_xa(single).n_frames == 1  # still readable as an image
    rf = edit(write_xa(tmp_path / "rf.dcm", frames_for(8)), Modality="RF",
              SOPClassUID=pydicom.uid.XRayRadiofluoroscopicImageStorage)
    with pytest.raises(NotXACineError, match="Radiofluoroscopic.*modality RF"):
        read_xa(rf, xa_cine_only=True)
    with pytest.raises(NotXACineError, match="not an XA cine run"):
        read_xa(bundled("CT_small.dcm"), xa_cine_only=True)
