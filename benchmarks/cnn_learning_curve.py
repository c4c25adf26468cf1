"""Test F1 of the stage-1 CNN against the number of training patients (learning curve).

Trains the profile's CNN (``cnn`` section) on growing, nested random subsets of the training
patients of an annotation cohort written by notebook 01, always selecting on the same
validation split and scoring on the same test split (all frames and the low-contrast
quartile). Answers "is the smoke cohort too small?" with a measured curve.

    CAG_OUTPUT_ROOT=/tmp/lc python -m cag_utils.run.pipeline --only 01 -p n_annotation_exams=144
    python benchmarks/cnn_learning_curve.py --annotation-dir /tmp/lc/data/work/smoke/processed/annotation \\
        --fractions 0.25 0.5 1 --out results/cnn_learning_curve.json --figure figures/cnn_learning_curve
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from cag_utils.cnn import load_trained, train_classifier  # noqa: E402
from cag_utils.cnn.contrast import low_contrast_mask, vessel_contrast_batch  # noqa: E402
from cag_utils.cnn.pretrain import pretrained_weights  # noqa: E402
from cag_utils.cnn.stage import evaluate_split, train_config  # noqa: E402
from cag_utils.data.ingest import load_dataset  # noqa: E402
from cag_utils.run.config import load_config, parse_override  # noqa: E402
from cag_utils.run.results import describe_device, git_sha, package_versions  # noqa: E402


def nested_patient_subsets(patients: np.ndarray, fractions: list[float], seed: int) -> list[np.ndarray]:
    """Nested subsets: one seeded permutation, the first ceil(f x n) patients for each fraction."""
    order = np.random.default_rng(seed).permutation(np.sort(np.unique(patients)))
    return [order[: max(1, int(np.ceil(f * len(order))))] for f in sorted(fractions)]


CURVE_SERIES = (("laterality_f1", "laterality F1 (test)", "o-"),
                 ("laterality_f1_low_contrast", "laterality F1 (low-contrast test)", "s--"),
                 ("key_frame_f1", "key-frame F1 (test)", "^-"), ("macro_f1", "6-class macro-F1", "d:"))


def plot_curve(points: pd.DataFrame, series=CURVE_SERIES, xlabel: str = "training frames (log scale; patients subsampled)",
               ylabel: str = "F1", ylim: tuple[float, float] = (0, 1.02)):
    """F1 against training frames (log x), one line per (column, label, style) of ``series``; the paper's 0.96 dashed.

    Points with an ``intervals`` column (``headline_intervals`` output) get their 95 % intervals as bars.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, (col, label, style) in enumerate(series):
        x = points["n_train_frames"] * 1.02 ** (i - (len(series) - 1) / 2)  # dodged, so bars do not hide each other
        ax.plot(x, points[col], style, label=label)
        if "intervals" in points:  # 95 % patient-bootstrap intervals where the points carry them
            lo = [iv[col]["ci_low"] for iv in points["intervals"]]
            hi = [iv[col]["ci_high"] for iv in points["intervals"]]
            ax.vlines(x, lo, hi, color=ax.get_lines()[-1].get_color(), lw=1.2)
    ax.axhline(0.96, color="grey", lw=0.8, ls="--")
    ax.annotate("paper: laterality F1 0.96", (points["n_train_frames"].min(), 0.96), xytext=(0, -10),
                textcoords="offset points", fontsize=8, color="grey")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(*ylim)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotation-dir", required=True, help="processed/annotation folder written by notebook 01")
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("-p", dest="overrides", action="append", default=[], help="cnn key=value override")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    ap.add_argument("--val-fraction", type=float, default=1.0,
                    help="share of the validation patients used for checkpoint selection (it runs every epoch)")
    ap.add_argument("--work-dir", default="/tmp/cnn_learning_curve")
    ap.add_argument("--out", default="results/cnn_learning_curve.json")
    ap.add_argument("--figure", default="figures/cnn_learning_curve", help="stem; .png and .pdf are written")
    ap.add_argument("--plot-only", action="store_true", help="redraw the figure from an existing --out file")
    args = ap.parse_args(argv)
    if args.plot_only:
        write_figure(pd.DataFrame(json.loads(Path(args.out).read_text())["points"]), args.figure)
        return

    cfg = load_config(args.profile, "cnn", dict(parse_override(o) for o in args.overrides))
    frames, table = load_dataset(args.annotation_dir)
    pre = pretrained_weights(cfg, train_config(cfg, progress=False), frames.shape[1],  # the profile's pretraining (cached)
                             main_patients={"annotation": table["patient_id"].to_numpy()}, progress=False)
    tc = train_config(cfg, progress=False, pretrained_file=pre.path)
    split = table["split"].to_numpy()
    test_idx = np.flatnonzero(split == "test")
    low = low_contrast_mask(vessel_contrast_batch(frames[test_idx]), cfg["cnn_low_contrast_quantile"])
    if args.val_fraction < 1:  # a smaller validation set: same patients for every point
        val_keep = nested_patient_subsets(table.loc[split == "val", "patient_id"].to_numpy(), [args.val_fraction],
                                          cfg["seed"] + 1)[0]
        split = np.where((split == "val") & ~table["patient_id"].isin(val_keep).to_numpy(), "unused", split)
    train_patients = table.loc[split == "train", "patient_id"].to_numpy()
    points = []
    for subset in nested_patient_subsets(train_patients, args.fractions, cfg["seed"]):
        keep = (split != "train") | table["patient_id"].isin(subset).to_numpy()
        sub = table.assign(split=np.where(keep, split, "unused"))  # rows stay aligned with frames
        out_dir = Path(args.work_dir) / f"patients_{len(subset):04d}"
        t0 = time.perf_counter()
        res = train_classifier(frames, sub, tc, out_dir, resume=False)
        model, info = load_trained(out_dir)
        _, metrics = evaluate_split(model, info, frames, sub, "test", {"low_contrast": low})
        point = {
            "n_train_patients": int(len(subset)), "n_train_frames": int(res.n_train), "n_val_frames": int(res.n_val),
            "epochs": res.epochs_completed, "best_epoch": res.best_epoch, "status": res.status,
            "train_seconds": round(time.perf_counter() - t0, 1),
            **{k: metrics["all"][k] for k in ("accuracy", "macro_f1", "laterality_f1", "key_frame_f1")},
            "laterality_f1_low_contrast": metrics["low_contrast"]["laterality_f1"],
            "key_frame_f1_low_contrast": metrics["low_contrast"]["key_frame_f1"],
        }
        print(json.dumps(point), flush=True)
        points.append(point)
        record = {  # rewritten after every point: an interrupted run keeps what it measured
            "annotation_patients": int(table["patient_id"].nunique()), "n_test_frames": int(len(test_idx)),
            "n_low_contrast_test_frames": int(low.sum()), "val_fraction": args.val_fraction,
            "train_config": {**tc, "pretrained_file": pre.name or None}, "points": points,
            "provenance": {"git_sha": git_sha(), "versions": package_versions(), "device": describe_device()},
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2, default=str) + "\n")
    write_figure(pd.DataFrame(points), args.figure)
    print(f"wrote {args.out} and {args.figure}.png")


def write_figure(points: pd.DataFrame, stem: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    save_figure(plot_curve(points), stem)


def save_figure(fig, stem: str) -> None:
    """PNG and PDF beside each other; the PDF without a creation date, so reruns are identical."""
    Path(stem).parent.mkdir(parents=True, exist_ok=True)
    for ext in ("png", "pdf"):
        fig.savefig(f"{stem}.{ext}", dpi=150, metadata={"CreationDate": None} if ext == "pdf" else None)


if __name__ == "__main__":
    main()
