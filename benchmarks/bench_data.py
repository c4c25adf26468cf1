"""Data benchmarks -> results/bench_data.json (run: `make bench` or this file with --out).

1. Ingest speed (read + normalise to uint8 + intensity curves + frame sampling) of 512x512
   8-bit XA runs, per transfer syntax our pins can write, in one process (target: >= 1,000
   frames/s uncompressed on 2 cores), beside a plain loop (pydicom.dcmread -> pixel_array ->
   per-frame min-max normalisation), with bytes per frame and the paper-scale footprint.
   Syntaxes the pins decode but cannot write (HTJ2K, JPEG-LS, JPEG lossless) are listed as
   not measured, with the reason. `--skip-generation` keeps part 2 from the previous file.
2. Cohort generation: time and disk footprint at the smoke scale (measured on the whole
   cohort) and at the paper scale (measured on a few exams, extrapolated to 539 + 243).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom

from cag_utils.data.dicom import read_xa, write_xa
from cag_utils.data.sampling import intensity_curves, sample_frames
from cag_utils.run.config import load_config
from cag_utils.run.results import package_versions
from cag_utils.synth import anatomy, imaging
from cag_utils.synth.cohort import generate_cohort


def _realistic_run(size: int = 512, n_frames: int = 30, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tree = anatomy.build_tree("LCA", "right", (), rng, geometry=anatomy.sample_geometry(rng))
    spec = imaging.sample_run_spec(rng, "LCA", imaging.LCA_VIEWS[2], 15.0, (2.0, 2.0), 0.0, 1.1)
    frames, _ = imaging.render_run(tree, spec, size, 8, rng)
    return frames[:n_frames].astype(np.uint8)


PAPER_FRAMES = 143_000  # paper-scale cohort (docs/gpu-and-paper-profile.md: 539 + 243 exams at 7.5 frames/s)
NOT_WRITABLE = {
    "htj2k_lossless": "pylibjpeg-openjpeg 2.6 decodes HTJ2K but has no HTJ2K encoder; pydicom 3.0.2 neither",
    "jpegls_lossless": "decoded by pylibjpeg-libjpeg; the only pydicom encoder (pyjpegls) is not pinned",
    "jpeg_lossless_14": "decoded by pylibjpeg-libjpeg; no encoder in pydicom 3.0.2 or the pinned plugins",
}


def _plain_loop(files: list[Path]) -> int:
    """What a user would write: dcmread, pixel_array, per-frame min-max to uint8."""
    n = 0
    for f in files:
        arr = pydicom.dcmread(f).pixel_array.astype(np.float32)
        lo = arr.min(axis=(1, 2), keepdims=True)
        hi = arr.max(axis=(1, 2), keepdims=True)
        _ = ((arr - lo) * (255.0 / np.maximum(hi - lo, 1))).astype(np.uint8)
        n += len(arr)
    return n


def bench_ingest(tmp: Path, copies: int = 12) -> dict:
    frames = _realistic_run()
    out: dict = {}
    for syntax in ("explicit", "rle", "jpeg2000", "jpeg_baseline"):
        src = write_xa(tmp / f"{syntax}.dcm", frames, bits_stored=8, transfer_syntax=syntax)
        files = [src] + [shutil.copy(src, tmp / f"{syntax}_{i}.dcm") for i in range(copies - 1)]
        files = files[: copies if syntax in ("explicit", "rle") else 3]
        n = 0
        start = time.perf_counter()
        for f in files:
            run = read_xa(f, xa_cine_only=True)
            mean, var = intensity_curves(run.frames)
            sample_frames(mean, var)
            n += run.n_frames
        rate = n / (time.perf_counter() - start)
        start = time.perf_counter()
        plain = _plain_loop(files) / (time.perf_counter() - start)
        per_frame = os.path.getsize(src) / len(frames)
        out[syntax] = {"frames_per_s": round(rate, 1), "plain_loop_frames_per_s": round(plain, 1),
                       "vs_plain_loop": round(rate / plain, 2), "frames": n, "bytes_per_frame": round(per_frame),
                       "lossless": syntax != "jpeg_baseline",
                       "paper_scale_gb": round(per_frame * PAPER_FRAMES / 1e9, 1)}
        print(f"ingest {syntax:14s} {rate:8.1f} frames/s (plain loop {plain:7.1f}), {per_frame:8.0f} B/frame")
    lossless = {k: v for k, v in out.items() if v["lossless"] and v["paper_scale_gb"] < 20}
    out["fastest_lossless_under_20_gb"] = max(lossless, key=lambda k: lossless[k]["frames_per_s"], default=None)
    out["not_measured"] = NOT_WRITABLE
    return out


def _footprint(raw: Path) -> tuple[int, int]:
    files = list(raw.rglob("*.dcm"))
    with open(raw / "labels.csv") as fh:
        n_frames = sum(1 for _ in fh) - 1
    return sum(f.stat().st_size for f in files), n_frames


def bench_generation(tmp: Path, profile: str, n_exams: int | None, workers: int) -> dict:
    cfg = load_config(profile, "data")
    full = cfg["n_annotation_exams"] + cfg["n_independent_exams"]
    if n_exams is not None:
        cfg = {**cfg, "n_annotation_exams": n_exams, "n_independent_exams": 0}
    start = time.perf_counter()
    raw = generate_cohort(tmp / f"gen_{profile}", cfg, workers=workers, force=True, progress=False)
    seconds = time.perf_counter() - start
    size, n_frames = _footprint(raw)
    done = cfg["n_annotation_exams"] + cfg["n_independent_exams"]
    scale = full / done
    res = {"exams_generated": done, "exams_at_scale": full, "frames_generated": n_frames,
           "seconds": round(seconds, 1), "bytes": size, "bytes_per_frame": round(size / n_frames),
           "image_size": cfg["image_size"], "bits_stored": cfg["bits_stored"],
           "transfer_syntax": cfg["transfer_syntax"], "workers": workers,
           "extrapolated": scale != 1, "total_gb": round(size * scale / 1e9, 2),
           "total_frames": round(n_frames * scale), "total_hours_per_worker": round(seconds * workers * scale / 3600, 2)}
    print(f"generate {profile}: {res}")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="results/bench_data.json")
    ap.add_argument("--paper-exams", type=int, default=2, help="paper-scale exams to time (then extrapolated)")
    ap.add_argument("--skip-generation", action="store_true", help="keep the generation numbers of --out")
    args = ap.parse_args(argv)
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        previous = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
        result = {
            "ingest_512_8bit": bench_ingest(Path(tmp)),
            "generation": previous.get("generation") if args.skip_generation else
                          {"smoke": bench_generation(Path(tmp), "smoke", None, workers),
                           "paper": bench_generation(Path(tmp), "paper", args.paper_exams, workers)},
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "processor": platform.processor() or platform.machine()},
            "versions": package_versions(),
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
