"""Header fuzzing of the DICOM reader and the ingest -> results/fuzz_dicom.json.

    python benchmarks/fuzz_dicom.py --cases 5000 --ingest-cases 1000 --seed 0

Runs `cag_utils.data.dicom_fuzz.fuzz` at the reader level (read_xa on mutated synthetic XA runs
and pydicom's bundled grey files) and at the ingest level (one exam through the ingest), and
writes the counts: read, refused (a typed DicomReadError / a reject), crash (any other
exception), timeout, skipped (a mutation pydicom could not write), per mutation, with every
crash listed. Exit status 1 when any crash, timeout or identifier leak was found.
tests/test_dicom_fuzz.py runs a few hundred cases of the same fuzzer.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pydicom

from cag_utils.data.dicom_fuzz import MUTATIONS, fuzz

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=5000, help="reader-level cases")
    ap.add_argument("--ingest-cases", type=int, default=1000, help="ingest-level cases")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=10.0, help="seconds per case")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "fuzz_dicom.json", help="'' writes nothing")
    args = ap.parse_args(argv)
    record: dict = {"command": " ".join(["python benchmarks/fuzz_dicom.py", *(argv if argv is not None else sys.argv[1:])]),
                    "mutations": list(MUTATIONS), "time_limit_s": args.time_limit, "pydicom": pydicom.__version__}
    bad = 0
    for level, n in (("reader", args.cases), ("ingest", args.ingest_cases)):
        t0 = time.perf_counter()
        counts = fuzz(n, seed=args.seed, level=level, time_limit_s=args.time_limit)
        counts["seconds"] = round(time.perf_counter() - t0, 1)
        record[level] = counts
        bad += len(counts["crashes"]) + len(counts["leaks"])
        print(f"{level}: {n} cases in {counts['seconds']} s: {counts['by_kind']}; "
              f"{len(counts['crashes'])} crash/timeout, {len(counts['leaks'])} leak(s)")
    if str(args.out):
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
