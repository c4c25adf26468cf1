"""Disk space: estimate what a cohort needs before writing it, and refuse early with the numbers.

* Generating a synthetic cohort (`cohort_bytes`, checked in `cag_utils.synth.cohort.generate_cohort`):
  exams x 7.5 runs (4-6 LCA + 2-3 RCA views) x frame_rate x the mean of run_seconds frames,
  times the bytes per frame measured by benchmarks/bench_data.py (results/bench_data.json)
  for the profile's image size, bits and transfer syntax: the measured value where the
  generation benchmark used those settings, else the measured compression ratio of that
  transfer syntax times the raw size (uncompressed size where none was measured).
* Converting (ingesting) a cohort (`processed_bytes`, checked in `cag_utils.data.dataset.build_dataset`):
  the sampled frames as uint8, at most one frame in `sampling_min_gap` per run (the sampling
  rule keeps frames that far apart), from the frame counts and sizes in the headers.
Both are multiplied by `MARGIN`. `require_space` compares the estimate with
`shutil.disk_usage` of the target (plus what a rebuild deletes first) and raises
`DiskSpaceError` naming both numbers and the folder, before anything is written.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cag_utils.run.config import REPO_ROOT

__all__ = ["BENCH_FILE", "DiskSpaceError", "MARGIN", "RUNS_PER_EXAM", "bytes_per_frame", "cohort_bytes",
           "folder_bytes", "processed_bytes", "require_space"]

BENCH_FILE = REPO_ROOT / "results" / "bench_data.json"
MARGIN = 1.10  # headers, labels, reports and the spread of run lengths
RUNS_PER_EXAM = 7.5  # expected views per exam of the generator (cag_utils.synth.cohort.exam_views)
_UNCOMPRESSED = ("explicit", "implicit")


class DiskSpaceError(OSError):
    """The disk cannot hold what is about to be written; the message gives both numbers."""


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def _raw_frame(image_size: int, bits_stored: int) -> int:
    return int(image_size) ** 2 * (1 if int(bits_stored) <= 8 else 2)


def bytes_per_frame(image_size: int, bits_stored: int, transfer_syntax: str,
                    bench_file: Path = BENCH_FILE) -> tuple[float, str]:
    """(bytes per written frame, where the number comes from) for the generator's settings."""
    raw = _raw_frame(image_size, bits_stored)
    if transfer_syntax in _UNCOMPRESSED:
        return float(raw), "uncompressed size"
    try:
        bench = json.loads(Path(bench_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        bench = {}
    ratios = []
    for name, g in (bench.get("generation") or {}).items():
        if not isinstance(g, dict) or g.get("transfer_syntax") != transfer_syntax:
            continue
        if (g.get("image_size"), g.get("bits_stored")) == (image_size, bits_stored):
            return float(g["bytes_per_frame"]), f"measured ({name} generation benchmark)"
        ratios.append((g["bytes_per_frame"] / _raw_frame(g["image_size"], g["bits_stored"]), f"{name} generation"))
    ingest = (bench.get("ingest_512_8bit") or {}).get(transfer_syntax)
    if isinstance(ingest, dict) and "bytes_per_frame" in ingest:
        ratios.append((ingest["bytes_per_frame"] / _raw_frame(512, 8), "512x512 8-bit ingest"))
    if ratios:
        ratio, source = max(ratios)  # the less favourable compression of the measured ones
        return ratio * raw, f"{transfer_syntax} ratio {ratio:.2f} measured in the {source} benchmark"
    return float(raw), "uncompressed size (no measurement for this transfer syntax)"


def cohort_bytes(cfg: dict[str, Any], bench_file: Path = BENCH_FILE) -> tuple[int, str]:
    """(bytes, how it was estimated) of the synthetic cohort `cfg` (a data-stage config) describes."""
    exams = int(cfg["n_annotation_exams"]) + int(cfg["n_independent_exams"])
    frames_per_run = float(cfg["frame_rate"]) * sum(map(float, cfg["run_seconds"])) / 2
    frames = exams * RUNS_PER_EXAM * frames_per_run
    per_frame, source = bytes_per_frame(int(cfg["image_size"]), int(cfg["bits_stored"]), str(cfg["transfer_syntax"]),
                                        bench_file)
    need = int(frames * per_frame * MARGIN)
    return need, (f"{exams} exams x {RUNS_PER_EXAM} runs x {frames_per_run:.1f} frames x {per_frame / 1e3:.1f} kB "
                  f"per frame ({source}) x {MARGIN}")


def processed_bytes(runs: Iterable[tuple[int | None, int | None]], min_gap: int) -> tuple[int, str]:
    """(bytes, how) of the sampled uint8 frames of runs given as (frames, rows x columns) from their
    headers; a run whose header lacks either counts as nothing (it will be rejected or is tiny)."""
    gap, frames, total = max(int(min_gap), 1), 0, 0
    for n, pixels in runs:
        if n and pixels:
            kept = (int(n) - 1) // gap + 1  # frames kept at least `gap` apart
            frames, total = frames + kept, total + kept * int(pixels)
    return int(total * MARGIN), f"at most {frames} sampled frames (one in {gap} per run) as uint8 x {MARGIN}"


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (0 when it does not exist)."""
    folder = Path(folder)
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def require_space(folder: str | Path, need: int, what: str, how: str = "", reclaimable: int = 0) -> None:
    """DiskSpaceError unless the disk holding `folder` has `need` bytes free (after `reclaimable`
    bytes that the caller deletes first)."""
    target = Path(folder).resolve()
    probe = next((p for p in (target, *target.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free + int(reclaimable)
    if need > free:
        raise DiskSpaceError(
            f"not enough disk space for {what} in {folder}: about {_gb(need)} needed"
            + (f" ({how})" if how else "") + f", {_gb(free)} free"
            + (f" (counting {_gb(reclaimable)} of the old copy that would be replaced)" if reclaimable else "")
            + "; free some space, or set $CAG_OUTPUT_ROOT to a larger disk")
    if need > 0.8 * free:
        print(f"note: {what} needs about {_gb(need)} of the {_gb(free)} free in {folder}")
