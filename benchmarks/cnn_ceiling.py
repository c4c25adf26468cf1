"""Ceiling study of the stage-1 CNN: the same recipe with k times the training patients (not CI).

Answers "do the generator's labels permit laterality F1 >= 0.96 at all?". Extra training
patients come from auxiliary cohorts generated with the profile's generator and their own seed
stream (patients checked disjoint from every split), and are added to the train split of the
annotation cohort of notebook 01; validation and test splits stay those of notebook 02, so every
point is scored on the same test frames. The recipe is notebook 02's (profile ``cnn`` section,
including its starting weights). Besides the F1 values, the laterality accuracy of the test
frames is broken down by their true contrast state (the generator's ``fill``), which shows whether
the errors that remain sit on frames whose laterality the image cannot show.

    CAG_OUTPUT_ROOT=/tmp/ceil python -m cag_utils.run.pipeline --only 01
    CAG_OUTPUT_ROOT=/tmp/ceil python benchmarks/cnn_ceiling.py --factors 1 5 --out results/cnn_ceiling.json \\
        --figure figures/cnn_ceiling
    # a further point, keeping the committed ones (the recipe must match; a long run needs the guard off);
    # --append without --factors rewrites the record and the figure from the points on file:
    CAG_OUTPUT_ROOT=/tmp/ceil python benchmarks/cnn_ceiling.py --factors 10 --append -p cnn_max_minutes=0
    # the same recipe from the synthetic pretraining instead of random weights:
    CAG_OUTPUT_ROOT=/tmp/ceil python benchmarks/cnn_ceiling.py --factors 1 -p cnn_pretrain=synthetic_angles \\
        --out results/cnn_pretrain_effect.json --figure ''
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cnn_learning_curve import plot_curve, save_figure  # noqa: E402  (same folder)

from cag_utils.cnn import load_trained, train_classifier  # noqa: E402
from cag_utils.cnn.contrast import low_contrast_mask, vessel_contrast_batch  # noqa: E402
from cag_utils.cnn.pretrain import _main_patients, aux_cohort_settings, build_aux_cohort, check_disjoint, pretrained_weights  # noqa: E402
from cag_utils.cnn.stage import (checkpoint_dir, evaluate_split, headline_intervals, prediction_rows,  # noqa: E402
                                  train_config)
from cag_utils.cnn.train import NOT_RECIPE_KEYS  # noqa: E402
from cag_utils.data.dataset import load_annotation  # noqa: E402
from cag_utils.data.labels import LATERALITIES  # noqa: E402
from cag_utils.run.config import load_config, parse_override, work_dir  # noqa: E402
from cag_utils.run.results import describe_device, git_sha, package_versions  # noqa: E402

CEILING_STREAM = 0x43454C  # "CEL": seed stream of the extra training patients
FILL_BINS = {"no contrast (fill < 0.01)": (-1.0, 0.01), "faint (0.01-0.15)": (0.01, 0.15), "filled (>= 0.15)": (0.15, 2.0)}


def laterality_by_fill(rows: pd.DataFrame, fill: np.ndarray) -> list[dict]:
    """Laterality accuracy of test frames by true opacification (``fill``, the generator's state)."""
    lat_true, lat_pred = rows["label"].to_numpy() // 3, rows["pred"].to_numpy() // 3
    out = []
    for name, (lo, hi) in FILL_BINS.items():
        m = (fill >= lo) & (fill < hi)
        out.append({"contrast": name, "frames": int(m.sum()), "share": float(m.mean()),
                    "laterality_accuracy": float((lat_true[m] == lat_pred[m]).mean()) if m.any() else None})
    return out


def plot_ceiling(points: pd.DataFrame):
    return plot_curve(points, series=(("test.laterality_f1", "laterality F1 (test)", "o-"),
                                      ("low_contrast.laterality_f1", "laterality F1 (low-contrast test)", "s--"),
                                      ("test.key_frame_f1", "key-frame F1 (test)", "^-")),
                      xlabel="training frames (log scale)", ylabel="F1 on the notebook-02 test split (95 % CI)",
                      ylim=(0.4, 1.02))


def merge_points(old: dict | None, train_cfg: dict, new_factors) -> list[dict]:
    """Points of an earlier record of the same recipe, less those about to be rerun (``--append``).

    The recipe must match (``progress`` and the wall-clock guard ``max_minutes`` aside, which do not
    change a finished run); otherwise the old points answer another question and the call stops.
    """
    if old is None:
        return []
    same = {k: v for k, v in old["train_config"].items() if k not in NOT_RECIPE_KEYS}
    if same != {k: v for k, v in train_cfg.items() if k not in NOT_RECIPE_KEYS}:
        raise SystemExit("--append: the recipe differs from the one in the existing --out file; write another file")
    return [pt for pt in old["points"] if pt["factor"] not in set(map(float, new_factors))]


def paper_results(points: list[dict], n_test: int, n_low: int, pretraining: dict) -> dict:
    """The record's ``results`` object (``cag_utils.run.report`` makes the paper's macros from it).

    One entry per factor, ``x<factor>`` (``x10`` -> ``\\CnnCeilingXOneZero...``), with the training size and
    the interval of each headline metric by subset (``test``, ``low_contrast``); the starting weights'
    ``pretraining`` summary (source ``none``: random initialisation).
    """
    out: dict = {"n_test_frames": n_test, "n_low_contrast_test_frames": n_low, "pretraining": pretraining}
    for pt in points:
        entry: dict = {"n_train_frames": pt["n_train_frames"], "n_extra_exams": pt["n_extra_exams"],
                       "best_epoch": pt["best_epoch"], "best_val_macro_f1": pt.get("best_val_macro_f1")}
        for key, interval in pt["intervals"].items():
            subset, metric = key.split(".", 1)
            entry.setdefault(subset, {})[metric] = interval
        out[f"x{pt['factor']:g}"] = entry
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("-p", dest="overrides", action="append", default=[], help="cnn key=value override")
    ap.add_argument("--factors", type=float, nargs="*", default=[1, 10],
                    help="training patients x the smoke train split (none, with --append: rewrite record and figure)")
    ap.add_argument("--out", default="results/cnn_ceiling.json")
    ap.add_argument("--figure", default="figures/cnn_ceiling", help="stem; .png and .pdf are written ('' for none)")
    ap.add_argument("--append", action="store_true",
                    help="keep the points of an existing --out file (same recipe) and add or replace --factors")
    args = ap.parse_args(argv)

    cfg = load_config(args.profile, "cnn", dict(parse_override(o) for o in args.overrides))
    frames, table = load_annotation(cfg)
    pre = pretrained_weights(cfg, train_config(cfg, progress=False), frames.shape[1], progress=True)
    tc = train_config(cfg, progress="epochs", pretrained_file=pre.path)
    test = table["split"].to_numpy() == "test"
    low = low_contrast_mask(vessel_contrast_batch(frames[np.flatnonzero(test)]), cfg["cnn_low_contrast_quantile"])
    n_train_exams = int(table.loc[table["split"] == "train", "exam_id"].nunique())
    data_cfg = {**load_config(cfg["profile"], "data"), "num_workers": cfg["num_workers"]}
    record_cfg = {**tc, "pretrained_file": pre.name or None}
    earlier = json.loads(Path(args.out).read_text()) if args.append and Path(args.out).exists() else None
    points, root = merge_points(earlier, record_cfg, args.factors), work_dir(cfg["profile"]) / "ceiling"
    for factor in sorted(args.factors):
        n_extra = int(round((factor - 1) * n_train_exams))
        all_frames, all_table = np.asarray(frames), table
        if n_extra > 0:
            aux_cfg = aux_cohort_settings(data_cfg, n_extra, frames.shape[1], stream=CEILING_STREAM)
            extra_frames, extra = build_aux_cohort(aux_cfg, root / f"extra-{n_extra}-{aux_cfg['seed']}" / "cohort")
            check_disjoint(extra["patient_id"], **_main_patients(cfg))
            all_frames = np.concatenate([all_frames, np.asarray(extra_frames)])
            all_table = pd.concat([table, extra.assign(split="train")[table.columns]], ignore_index=True)
        # named by the hash of recipe and frames (as notebook 02's): another recipe never resumes this one's run
        out_dir = checkpoint_dir(root / f"x{factor:g}", tc, all_frames, all_table)
        t0 = time.perf_counter()
        res = train_classifier(all_frames, all_table, tc, out_dir, resume=True)
        model, info = load_trained(out_dir)
        pred, _ = evaluate_split(model, info, all_frames, all_table, "test", {"low_contrast": low})
        rows = prediction_rows(pred, {"low_contrast": low})
        headline = headline_intervals(rows, ("low_contrast",), seed=cfg["seed"])
        point = {"factor": factor, "n_train_frames": res.n_train, "n_extra_exams": n_extra, "status": res.status,
                 "best_epoch": res.best_epoch, "best_val_macro_f1": res.best_val_macro_f1,
                 "train_seconds": round(time.perf_counter() - t0, 1),
                 **{k: v["estimate"] for k, v in headline.items()},
                 "intervals": headline, "laterality_by_fill": laterality_by_fill(rows, pred["fill"].to_numpy()),
                 "git_sha": git_sha()}
        print(json.dumps({k: v for k, v in point.items() if k != "intervals"}, default=str), flush=True)
        points = sorted([*points, point], key=lambda pt: pt["factor"])
        write_record(args, points, int(test.sum()), int(low.sum()), record_cfg, pre.summary())  # keep what it has
    write_record(args, points, int(test.sum()), int(low.sum()), record_cfg, pre.summary())
    if args.figure:
        write_figure(pd.DataFrame(points), args.figure)
    print(f"wrote {args.out}" + (f" and {args.figure}.png" if args.figure else ""))


def write_record(args, points: list[dict], n_test: int, n_low: int, train_cfg: dict, pretraining: dict) -> None:
    """Rewrite ``--out`` (after every point, so a long study keeps what it has)."""
    record = {"notebook": Path(args.out).stem, "results": paper_results(points, n_test, n_low, pretraining),
              "config": {"profile": args.profile, "overrides": args.overrides},
              "n_test_frames": n_test, "n_low_contrast_test_frames": n_low,
              "train_config": train_cfg, "pretraining": pretraining,
              "laterality_classes": list(LATERALITIES), "points": points,
              "provenance": {"git_sha": git_sha(), "versions": package_versions(), "device": describe_device()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2, default=str) + "\n")


def write_figure(points: pd.DataFrame, stem: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    save_figure(plot_ceiling(points), stem)


if __name__ == "__main__":
    main()
