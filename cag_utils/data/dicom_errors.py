"""Typed errors of the DICOM reader (`cag_utils.data.dicom` re-exports them).

Every error names the file (`path`) and says why (`reason`); a header problem also names the
element (`InvalidHeaderError.element`). Reasons never quote identifying header values
(names, IDs, dates): the ingest keeps the reason and drops the path.
"""
from __future__ import annotations

from pathlib import Path

__all__ = [
    "ColourImageError", "DicomReadError", "ImageTooLargeError", "InvalidHeaderError", "MissingPixelDataError",
    "NoFramesError", "NotDicomError", "NotXACineError", "TruncatedFileError", "UnsupportedImageError",
]


class DicomReadError(ValueError):
    """A file could not be read as a grayscale DICOM image. The message names the path only."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class NotDicomError(DicomReadError):
    """Not a DICOM file (no DICM preamble/meta and not parseable), or not an image."""


class TruncatedFileError(DicomReadError):
    """The pixel data is shorter than Rows * Columns * Frames * bytes per sample (or, encapsulated,
    holds fewer fragments than frames)."""


class MissingPixelDataError(DicomReadError):
    """The dataset has no Pixel Data (7FE0,0010) element."""


class ColourImageError(DicomReadError):
    """True colour: channels that differ, PALETTE COLOR, or SamplesPerPixel not 1 or 3."""


class NoFramesError(DicomReadError):
    """NumberOfFrames is 0 or the pixel data is empty."""


class UnsupportedImageError(DicomReadError):
    """A grayscale image this reader cannot decode (no decoder for the syntax, odd BitsAllocated)."""


class NotXACineError(DicomReadError):
    """Readable DICOM, but not a multi-frame XA image (a DICOMDIR, a report, another modality,
    a single frame); raised only with `read_xa(..., xa_cine_only=True)`, before decoding."""


class InvalidHeaderError(DicomReadError):
    """A required element holds something unusable: not a single integer, a value out of range,
    the wrong type. `element` is its keyword."""

    def __init__(self, path: str | Path, element: str, problem: str) -> None:
        self.element = element
        super().__init__(path, f"{element} {problem}")


class ImageTooLargeError(DicomReadError):
    """Rows x Columns x NumberOfFrames x bytes per sample exceeds the reader's memory limit;
    raised from the header, before any pixel buffer is allocated."""
