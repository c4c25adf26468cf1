"""Are the generator's lesions visible at 128 px? The cohort's frames at 512 and 128 px, with and without each lesion.

Issue 22 asks whether 128 px hides most lesions or whether 2,500 training frames are too few. For every
exam of the annotation cohort, one frame with contrast per artery with a lesion (the cohort's own frames,
replayed: `cag_utils.synth.visibility`) is rendered at 512 px, natively at 128 px, and at 512 px resized
to 128 px by stage 3's resize, each with and without each lesion. Per lesion it records the matched-filter
d' of the lesion in the frame's noise (32 noise draws) and the share of the vessel's contrast the lesion
removes; a 100 % occlusion of the proximal LAD or RCA in the same frame is the positive control, the same
statistic on two noise draws of one frame the negative control. Shares of visible lesions (d' >= 5) get
95 % patient-bootstrap intervals. Deterministic (seeded); not part of CI. About 7 minutes on one core (2.2 GB):

    OMP_NUM_THREADS=1 python benchmarks/lesion_resolution.py    # results/lesion_resolution.json,
                                                                # results/lesion_resolution_lesions.csv,
                                                                # figures/lesion_resolution.png|pdf
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from cag_utils.run.config import load_config  # noqa: E402
from cag_utils.intervals import INTERVAL_METHOD, format_interval, patient_bootstrap, ratio_by_patient, ratio_of_sums  # noqa: E402
from cag_utils.run.results import Run  # noqa: E402
from cag_utils.synth import visibility as vis  # noqa: E402
from cag_utils.synth.cohort import ExamTask, _tasks, generator_settings  # noqa: E402

STREAM = 0x4C4553   # "LES": the study's own draws (which run and frame, noise)
GRADE_ROWS = [("25 %", "percent == 25"), ("50 %", "percent == 50"), ("75 %", "percent == 75"),
              ("90 %", "percent == 90"), ("99 %", "percent == 99"), ("100 %", "percent == 100"),
              (">= 90 %", "percent >= 90"), ('>= 90 %, "better" frames', "percent >= 90 and category == 'better'")]
FIGURE_GRADES = (75, 90, 99, 100)
FLOOR = 0.1   # d' below this (0: the lesion is not in the frame) is drawn at it
CROP = 48   # half-width of the figure's crops at 512 px (pixels)


def share(df: pd.DataFrame, column: str, threshold: float, seed: int) -> dict:
    """Share of rows with column >= threshold, 95 % bootstrap interval over patients."""
    return patient_bootstrap(ratio_by_patient(df[column] >= threshold, np.ones(len(df)), df["patient"]),
                             ratio_of_sums, seed=seed)


def kept(df: pd.DataFrame, small: str, big: str, seed: int) -> dict:
    """sum d'(small) / sum d'(big): how much of its detectability a lesion keeps at the small size."""
    return patient_bootstrap(ratio_by_patient(df[f"dprime_{small}"], df[f"dprime_{big}"], df["patient"]),
                             ratio_of_sums, seed=seed)


def summarise(rows: pd.DataFrame, modes: dict[str, str], seed: int) -> tuple[dict, dict]:
    """Per grade (and the controls): counts, medians, shares visible with intervals; and the tables."""
    lesions, control = rows[rows["kind"] == "lesion"], rows[rows["kind"] == "control"]
    groups = [(label, lesions.query(q)) for label, q in GRADE_ROWS]
    groups.append(("Positive control: 100 % proximal occlusion", control))
    by_group, visible, signal = {}, [], []
    big, small, down = modes
    for label, df in groups:
        entry = {"n_lesions": len(df), "n_patients": int(df["patient"].nunique()),
                 "not_in_frame": share(df.assign(zero=df[f"dprime_{big}"] == 0), "zero", 1, seed)}
        for mode in modes:
            entry[f"visible_{mode}"] = share(df, f"dprime_{mode}", vis.DPRIME_SEEN, seed)
            entry[f"median_dprime_{mode}"] = float(df[f"dprime_{mode}"].median())
            entry[f"median_deficit_{mode}"] = float(df[f"deficit_{mode}"].median())
        entry[f"dprime_kept_{small}"] = kept(df, small, big, seed)
        entry[f"dprime_kept_{down}"] = kept(df, down, big, seed)
        by_group[label] = entry
        visible.append({"Lesion": label, "Lesions (patients)": f"{len(df)} ({entry['n_patients']})",
                        f"Not in the frame (d' = 0 at {modes[big]})": format_interval(entry["not_in_frame"]),
                        **{f"d' >= {vis.DPRIME_SEEN:g} at {name}": format_interval(entry[f"visible_{m}"])
                           for m, name in modes.items()}})
        signal.append({"Lesion": label, **{f"median d' at {name}": f"{entry[f'median_dprime_{m}']:.1f}"
                                           for m, name in modes.items()},
                       f"d' kept at {modes[small]}": format_interval(entry[f"dprime_kept_{small}"]),
                       f"d' kept at {modes[down]}": format_interval(entry[f"dprime_kept_{down}"]),
                       **{f"median contrast deficit at {name}": f"{entry[f'median_deficit_{m}']:.2f}"
                          for m, name in modes.items()}})
    null = {}
    for mode, name in modes.items():    # the same statistic without a lesion (two noise draws of one frame)
        null[f"visible_{mode}"] = share(lesions, f"null_dprime_{mode}", vis.DPRIME_SEEN, seed)
        null[f"median_dprime_{mode}"] = float(lesions[f"null_dprime_{mode}"].median())
    by_group["Negative control: noise only"] = {"n_lesions": len(lesions), **null}
    visible.append({"Lesion": "Negative control: noise only (each lesion's filter)",
                    "Lesions (patients)": f"{len(lesions)} ({lesions['patient'].nunique()})",
                    f"Not in the frame (d' = 0 at {modes[big]})": "",
                    **{f"d' >= {vis.DPRIME_SEEN:g} at {name}": format_interval(null[f"visible_{m}"])
                       for m, name in modes.items()}})
    return by_group, {"visible": visible, "signal": signal}


def crops(row: dict, big: int, small: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Noisy frame with the lesion and the same noise draw without it (minus the noise-free signal), around
    the lesion's peak at 512 px, at each size."""
    out = {}
    factor = big // small
    for mode, (noisy, delta) in row["images"].items():
        scale = 1 if mode == str(big) else factor
        half = CROP // scale
        r, c = (np.asarray(row[f"peak_{big}"]) // scale).clip(half, noisy.shape[0] - half)
        sl = (slice(r - half, r + half), slice(c - half, c + half))
        out[mode] = (noisy[sl], noisy[sl] - delta[sl])
    return out


def plot(rows: pd.DataFrame, picks: list[dict], modes: dict[str, str]):
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(9.5, 1.6 * len(picks) + 4.2))
    grid = fig.add_gridspec(len(picks) + 1, 6, height_ratios=[1] * len(picks) + [2.4], hspace=0.3, wspace=0.05)
    for i, row in enumerate(picks):
        lo, hi = np.percentile(row["crops"][next(iter(modes))][0], [1, 99.5])
        for j, (mode, name) in enumerate(modes.items()):
            for w, title in enumerate(("with lesion", "without")):
                ax = fig.add_subplot(grid[i, 2 * j + w])
                ax.imshow(row["crops"][mode][w], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
                ax.set_xticks([]), ax.set_yticks([])
                if i == 0:
                    ax.set_title(f"{name}\n{title}", fontsize=8)
                if j == 0 and w == 0:
                    ax.set_ylabel(f"#{row['segment']} {row['percent']} %\nd' {row['dprime_' + next(iter(modes))]:.0f}"
                                  f" / {row['dprime_' + list(modes)[1]]:.0f}", fontsize=8)
    ax = fig.add_subplot(grid[-1, :])
    labels = [f"{g} %" for g in (25, 50, 75, 90, 99, 100)] + ["control\n(100 % prox.)"]
    subsets = [rows[(rows["kind"] == "lesion") & (rows["percent"] == g)] for g in (25, 50, 75, 90, 99, 100)]
    subsets.append(rows[rows["kind"] == "control"])
    width, colours = 0.26, ("tab:blue", "tab:orange", "tab:green")
    for j, (mode, name) in enumerate(modes.items()):
        pos = np.arange(len(labels)) + (j - 1) * width
        data = [np.maximum(s[f"dprime_{mode}"].to_numpy(), FLOOR) for s in subsets]
        parts = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True, showfliers=False)
        for box in parts["boxes"]:
            box.set_facecolor(colours[j]), box.set_alpha(0.55)
        jitter = np.random.default_rng(j).uniform(-width * 0.3, width * 0.3, sum(len(d) for d in data))
        ax.scatter(np.repeat(pos, [len(d) for d in data]) + jitter, np.concatenate(data), s=4, color=colours[j],
                   alpha=0.6, label=name)
    ax.axhline(vis.DPRIME_SEEN, color="k", ls="--", lw=1)
    ax.text(-0.45, vis.DPRIME_SEEN * 1.1, f"d' = {vis.DPRIME_SEEN:g}", ha="left", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(FLOOR * 0.8, None)
    ax.set_xticks(np.arange(len(labels)), labels, fontsize=8)
    ax.set_ylabel(f"matched-filter d' of the lesion (log; below {FLOOR:g} drawn at {FLOOR:g})")
    ax.set_xlabel("lesion grade (one frame with contrast per artery and exam)")
    ax.legend(fontsize=8, loc="upper left", markerscale=3)
    return fig


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--exams", type=int, default=None, help="first N exams of the annotation cohort (default: all)")
    ap.add_argument("--sizes", type=int, nargs=2, default=(512, 128), metavar=("BIG", "SMALL"))
    ap.add_argument("--noise-draws", type=int, default=32)
    args = ap.parse_args(argv)

    data_cfg = load_config(args.profile, "data")
    big, small = args.sizes
    modes = {str(big): f"{big} px", str(small): f"{small} px", f"{big}to{small}": f"{big} -> {small} px"}
    settings = {**generator_settings(data_cfg), "raw_dir": "."}
    tasks = [ExamTask(t.cohort, t.index, t.patient, t.seed, settings) for t in _tasks(data_cfg, Path("."))
             if t.cohort == "annotation"][:args.exams]
    cfg = {"profile": args.profile, "seed": data_cfg["seed"], "stream": STREAM, "cohort": "annotation",
           "n_exams": len(tasks), "sizes": [big, small], "cohort_image_size": data_cfg["image_size"],
           "bits_stored": data_cfg["bits_stored"], "noise_draws": args.noise_draws, "dprime_seen": vis.DPRIME_SEEN,
           "control_segments": vis.CONTROL_SEGMENT, "resize": "vlm.standins.pixel_tensor"}
    run = Run("lesion_resolution", cfg)
    rng = np.random.default_rng([data_cfg["seed"], STREAM])
    rows, t0 = [], time.perf_counter()
    for n, task in enumerate(tasks):
        exam = vis.replay_exam(task)
        for case in vis.lesion_cases(exam, rng):
            for row in vis.measure_case(case, (big, small), data_cfg["bits_stored"], args.noise_draws, rng,
                                        keep_images=True):
                row["crops"] = crops(row, big, small)
                del row["images"]
                rows.append(row)
        if (n + 1) % 20 == 0:
            print(f"{n + 1}/{len(tasks)} exams, {len(rows)} rows, {time.perf_counter() - t0:.0f} s", flush=True)
    table = pd.DataFrame([{k: v for k, v in r.items() if k != "crops" and not k.startswith("peak_")
                           or k.startswith("peak_cnr")} for r in rows])
    by_group, tables = summarise(table, modes, data_cfg["seed"])
    lesions = table[table["kind"] == "lesion"]
    severe = by_group[">= 90 %"]
    results = {
        "exact": {"n_exams": len(tasks), "n_exams_with_lesion_frames": int(table["exam_index"].nunique()),
                  "n_patients": int(table["patient"].nunique()), "n_frames": int((table["kind"] == "control").sum()),
                  "n_lesions": len(lesions), "n_lesions_severe": severe["n_lesions"],
                  "n_lesions_severe_better": by_group['>= 90 %, "better" frames']["n_lesions"]},
        "headline": {"severe": {k: severe[k] for k in severe if k.startswith(("visible_", "dprime_kept_", "not_in"))},
                     "control": {k: v for k, v in by_group["Positive control: 100 % proximal occlusion"].items()
                                 if k.startswith("visible_")},
                     "noise_only": {k: v for k, v in by_group["Negative control: noise only"].items()
                                    if k.startswith("visible_")}},
        "definitions": {**vis.DEFINITIONS, "visible": f"d' >= {vis.DPRIME_SEEN:g}", "interval_method": INTERVAL_METHOD},
        "series": {"by_group": by_group},
        "tables": tables,
    }
    run.table(table, "lesions")
    picks = []
    for grade in FIGURE_GRADES:    # the median lesion of each grade among those visible at the large size
        cand = [r for r in rows if r["kind"] == "lesion" and r["percent"] == grade and r[f"dprime_{big}"] >= vis.DPRIME_SEEN]
        if cand:
            picks.append(sorted(cand, key=lambda r: r[f"dprime_{big}"])[len(cand) // 2])
    fig = plot(table, picks, modes)
    caption = (f"Top: crops ({2 * CROP} px at {big} px) around the median visible lesion of each grade, as a model "
               f"sees them, with the lesion and with the same noise draw without it, at {big} px, natively at {small} "
               f"px and at {big} px resized to {small} px; the row label gives d' at {big} and {small} px. Bottom: d' "
               f"of every lesion per grade and resolution, and of the positive control; above the dashed line "
               f"(d' = {vis.DPRIME_SEEN:g}) a lesion stands out of the frame's noise; at the bottom edge are lesions the "
               f"frame does not show at all (d' = 0). Where the {small}-px boxes sit level with the {big}-px ones, "
               f"the smaller frame keeps what the larger one shows.")
    run.figure(fig, "", caption=caption)   # figures/lesion_resolution.png|pdf
    run.caption("visible", f"Share of lesions that stand out of their frame's noise (matched-filter d' >= "
                           f"{vis.DPRIME_SEEN:g}) at {big} px, natively at {small} px and at {big} px resized to {small} "
                           f"px, per grade, with the share the frame does not show at all (d' = 0), the positive "
                           f"control and noise alone; one frame with contrast per artery and exam, 95 % patient intervals.")
    run.caption("signal", f"Median d' and contrast deficit per grade and size, and how much of its {big}-px d' a "
                          f"lesion keeps at {small} px (sum of d' at {small} px over the sum at {big} px).")
    path = run.save(results)
    print(pd.DataFrame(tables["visible"]).to_string(index=False))
    print(pd.DataFrame(tables["signal"]).to_string(index=False))
    print(f"wrote {path} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
