"""Stage 2a: key frames of the independent exams, picked by the notebook-02 CNN (notebook 03).

The CNN never saw these exams (their patients are disjoint from every notebook-02 split;
``patient_overlap`` checks it). Candidates are the frames that the paper's sampling rule
(``cag_utils.data.sampling``) kept in notebook 01. The key-frame rule is a pure function of a
probability table (``pick_key_frames``), so it runs unchanged on the CNN's probabilities and
on the ground truth written as one-hot probabilities (the *oracle*):

1. per run, each candidate's laterality is the larger of P(LCA) and P(RCA) (sums over the
   three key-frame categories); the run's laterality is the majority of its candidates
   (ties: the larger summed probability, then LCA);
2. each candidate's score is P(<run laterality>_better);
3. candidates with score >= ``threshold`` are ranked by score (ties: earlier frame) and kept
   greedily, at most ``max_per_run`` per run and at least ``min_gap`` frames apart.

Probabilities are rounded to ``PROB_DECIMALS`` before the rule, so that the per-candidate
file in ``results/`` reproduces every pick and every headline number exactly.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cag_utils.data.dataset import dataset_dir
from cag_utils.data.ingest import load_dataset
from cag_utils.data.labels import CLASSES, LATERALITIES
from cag_utils.intervals import patient_bootstrap, ratio_by_patient, ratio_of_sums
from cag_utils.run.config import results_dir, work_dir

PROB_DECIMALS = 4
PROB_COLUMNS = [f"prob_{c}" for c in CLASSES]
RULES = ("cnn_rule", "oracle_rule")
PAPER_KEY_FRAMES_PER_EXAM = 4.6  # 1,114 key frames from 243 exams


# ---------------------------------------------------------------- inputs
def checkpoint_folder(cfg: dict[str, Any]) -> Path:
    """The checkpoint that notebook 02 of this run trained: `training.checkpoint` of `results/02_cnn.json`.

    Read from the results rather than recomputed from the profile, so that a run with other
    CNN settings (an override run) finds its own checkpoint.
    """
    record = results_dir(cfg["profile"]) / "02_cnn.json"
    try:
        name = json.loads(record.read_text(encoding="utf-8"))["results"]["training"]["checkpoint"]
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        name = None
    out = work_dir(cfg["profile"]) / "cnn" / str(name)
    if name is None or not (out / "best.safetensors").is_file():
        raise FileNotFoundError(f"no trained checkpoint of notebook 02 for profile {cfg['profile']!r} under "
                                f"data/work/{cfg['profile']}/cnn; run notebook 02 first (python -m cag_utils.run.pipeline --only 02)")
    return out


def load_independent(cfg: dict[str, Any]) -> dict[str, Any]:
    """Frames (memory-mapped), candidate table, runs, reports and rejected files of the independent cohort."""
    folder = dataset_dir(cfg, "independent")
    if not (folder / "frames.parquet").is_file():
        raise FileNotFoundError(f"no processed independent cohort for profile {cfg['profile']!r}; run notebook 01 first")
    frames, table = load_dataset(folder)
    return {"frames": frames, "table": table, "runs": pd.read_parquet(folder / "runs.parquet"),
            "reports": pd.read_parquet(folder / "reports.parquet"),
            "rejects": pd.read_csv(folder / "rejects.csv", dtype={"exam_id": str})}


def patient_overlap(annotation: pd.DataFrame, independent: pd.DataFrame) -> pd.DataFrame:
    """Patients of the independent cohort found in any notebook-02 split (should be empty)."""
    both = sorted(set(annotation["patient_id"]) & set(independent["patient_id"]))
    split_of = annotation.drop_duplicates("patient_id").set_index("patient_id")["split"]
    return pd.DataFrame({"patient_id": both, "split": [split_of[p] for p in both]})


# ---------------------------------------------------------------- probabilities
def candidate_probabilities(model, info: dict[str, Any], frames: Any, table: pd.DataFrame,
                            batch_size: int = 128, device: str | None = None, progress: bool = True) -> pd.DataFrame:
    """``table`` with the CNN's six class probabilities (``prob_<class>``, rounded), batched with a progress bar."""
    from cag_utils.cnn.evaluate import predict

    if device is not None:
        model = model.to(device)
    positions = np.arange(len(table))
    chunk = batch_size * 8  # one progress step per 8 batches
    parts = [predict(model, frames, positions[s:s + chunk], info["config"]["input_size"], batch_size,
                     info["mean"], info["std"])
             for s in tqdm(range(0, len(positions), chunk), desc="CNN on candidates", disable=not progress)]
    probs = np.concatenate(parts) if parts else np.zeros((0, len(CLASSES)), np.float32)
    out = table.copy()
    for j, col in enumerate(PROB_COLUMNS):
        out[col] = np.round(probs[:, j].astype(np.float64), PROB_DECIMALS)
    return out


def oracle_probabilities(table: pd.DataFrame) -> pd.DataFrame:
    """The ground-truth labels as one-hot probabilities (the oracle's input to the same rule)."""
    if (table["label"] < 0).any():
        raise ValueError("the oracle needs a true label for every candidate (unlabelled frames found)")
    onehot = np.eye(len(CLASSES))[table["label"].to_numpy()]
    return pd.DataFrame(onehot, columns=PROB_COLUMNS, index=table.index)


# ---------------------------------------------------------------- the rule
def run_laterality(probs: pd.DataFrame, run_ids: pd.Series) -> pd.Series:
    """Per candidate: its run's majority laterality (ties: larger summed probability, then LCA)."""
    p_lat = np.stack([probs[[f"prob_{l}_{k}" for k in ("better", "bad", "others")]].sum(axis=1).to_numpy()
                      for l in LATERALITIES], axis=1)  # (N, 2)
    df = pd.DataFrame({"run": run_ids.to_numpy(), "vote_rca": (p_lat[:, 1] > p_lat[:, 0]).astype(int),
                       "p_lca": p_lat[:, 0], "p_rca": p_lat[:, 1]})
    g = df.groupby("run", sort=False).agg(n=("vote_rca", "size"), rca=("vote_rca", "sum"),
                                          p_lca=("p_lca", "sum"), p_rca=("p_rca", "sum"))
    rca = (2 * g["rca"] > g["n"]) | ((2 * g["rca"] == g["n"]) & (g["p_rca"] > g["p_lca"]))
    lat = pd.Series(np.where(rca, "RCA", "LCA"), index=g.index)
    return pd.Series(lat.loc[df["run"]].to_numpy(), index=probs.index, name="run_laterality")


def pick_key_frames(table: pd.DataFrame, probs: pd.DataFrame, threshold: float, max_per_run: int,
                    min_gap: int) -> pd.DataFrame:
    """The rule of the module docstring. Returns, per candidate: run_laterality, score, picked."""
    lat = run_laterality(probs, table["run_id"])
    score = np.array([probs.at[i, f"prob_{l}_better"] for i, l in zip(probs.index, lat)], dtype=float)
    out = pd.DataFrame({"run_laterality": lat.to_numpy(), "score": score, "picked": False}, index=table.index)
    eligible = pd.DataFrame({"run": table["run_id"], "frame": table["frame_index"], "score": score})
    eligible = eligible[eligible["score"] >= threshold].sort_values(["run", "score", "frame"],
                                                                    ascending=[True, False, True], kind="stable")
    for _, rows in eligible.groupby("run", sort=True):
        kept: list[int] = []
        for idx, frame in zip(rows.index, rows["frame"]):
            if len(kept) >= max_per_run:
                break
            if all(abs(int(frame) - k) >= min_gap for k in kept):
                kept.append(int(frame))
                out.at[idx, "picked"] = True
    return out


def rule_params(cfg: dict[str, Any]) -> dict[str, Any]:
    return {"threshold": cfg["extract_threshold"], "max_per_run": cfg["extract_max_per_run"],
            "min_gap": cfg["extract_min_gap"]}


def apply_rules(cands: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """One row per candidate: IDs, truth, CNN probabilities and the picks of both rules (the results/ file)."""
    cnn = pick_key_frames(cands, cands[PROB_COLUMNS], **params)
    oracle = pick_key_frames(cands, oracle_probabilities(cands), **params)
    out = cands[["frame_uid", "patient_id", "exam_id", "run_id", "frame_index", "laterality",
                 "key_frame_category", "label", *PROB_COLUMNS]].rename(
        columns={"laterality": "true_laterality", "key_frame_category": "true_category", "label": "true_class"})
    out["cnn_laterality"] = cnn["run_laterality"]
    out["cnn_score"] = cnn["score"].round(PROB_DECIMALS)
    out["cnn_picked"] = cnn["picked"]
    out["oracle_laterality"] = oracle["run_laterality"]
    out["oracle_picked"] = oracle["picked"]
    return out.reset_index(drop=True)


# ---------------------------------------------------------------- exams and quality
def exam_table(picks: pd.DataFrame, runs: pd.DataFrame, rejects: pd.DataFrame) -> pd.DataFrame:
    """One row per exam (readable or not): patient, runs, candidates, key frames per rule, status and reason."""
    ids = sorted(set(runs["exam_id"]) | set(rejects["exam_id"]))
    patient = runs.drop_duplicates("exam_id").set_index("exam_id")["patient_id"]
    out = pd.DataFrame({"exam_id": ids})
    out["patient_id"] = out["exam_id"].map(patient)
    out["runs"] = out["exam_id"].map(runs.groupby("exam_id").size()).fillna(0).astype(int)
    out["rejected_files"] = out["exam_id"].map(rejects.groupby("exam_id").size()).fillna(0).astype(int)
    g = picks.groupby("exam_id")
    out["candidates"] = out["exam_id"].map(g.size()).fillna(0).astype(int)
    for rule in RULES:
        col = f"{rule.split('_')[0]}_picked"
        out[f"{rule}_key_frames"] = out["exam_id"].map(g[col].sum()).fillna(0).astype(int)
    status, reason = [], []
    for _, r in out.iterrows():
        if r["runs"] == 0:
            why = rejects.loc[rejects["exam_id"] == r["exam_id"], "reason"].astype(str)
            status.append("no_readable_run")
            reason.append(f"all {r['rejected_files']} files rejected: " + "; ".join(sorted(set(why))))
        elif r["cnn_rule_key_frames"] == 0:
            status.append("no_key_frame")
            reason.append("no candidate passed the CNN rule" + (" (the oracle rule found none either)"
                                                                 if r["oracle_rule_key_frames"] == 0 else ""))
        else:
            status.append("ok"), reason.append("")
    out["status"], out["reason"] = status, reason
    return out


def headline_intervals(picks: pd.DataFrame, exams: pd.DataFrame, seed: int) -> dict[str, dict[str, Any]]:
    """'<rule>.<metric>' -> patient-bootstrap interval. Metrics (exams with a readable run):
    key_frames_per_exam, precision_better (picked frames truly 'better'), laterality_accuracy
    (run laterality of picked frames = true laterality), exams_without_key_frame (fraction)."""
    readable = exams[exams["runs"] > 0]
    out: dict[str, dict[str, Any]] = {}
    for rule in RULES:
        col = f"{rule.split('_')[0]}_picked"
        picked = picks[picks[col]]
        lat = picked[f"{rule.split('_')[0]}_laterality"]
        n_kf = readable[f"{rule}_key_frames"]
        stats = {
            "key_frames_per_exam": ratio_by_patient(n_kf, np.ones(len(readable)), readable["patient_id"]),
            "precision_better": ratio_by_patient(picked["true_category"] == "better", np.ones(len(picked)),
                                                 picked["patient_id"]),
            "laterality_accuracy": ratio_by_patient(lat == picked["true_laterality"], np.ones(len(picked)),
                                                    picked["patient_id"]),
            "exams_without_key_frame": ratio_by_patient(n_kf == 0, np.ones(len(readable)), readable["patient_id"]),
        }
        for name, s in stats.items():
            out[f"{rule}.{name}"] = patient_bootstrap(s, ratio_of_sums, seed=seed)
    return out


def quality_table(headline: dict[str, dict[str, Any]], exams: pd.DataFrame) -> pd.DataFrame:
    """Human table: one row per rule, each metric as 'estimate (95 % CI)'."""
    names = {"key_frames_per_exam": "Key frames / exam", "precision_better": "Precision (truly better)",
             "laterality_accuracy": "Laterality accuracy", "exams_without_key_frame": "Exams without key frame"}
    rows = []
    for rule in RULES:
        row = {"Rule": {"cnn_rule": "CNN", "oracle_rule": "Oracle (true labels)"}[rule],
               "Key frames": int(exams[f"{rule}_key_frames"].sum())}
        for m, label in names.items():
            iv = headline[f"{rule}.{m}"]
            row[label] = (f"{iv['estimate']:.3f}" if not np.isfinite(iv["ci_low"])
                          else f"{iv['estimate']:.3f} ({iv['ci_low']:.3f}-{iv['ci_high']:.3f})")
        rows.append(row)
    return pd.DataFrame(rows)


def save_key_frames(cfg: dict[str, Any], picks: pd.DataFrame, exams: pd.DataFrame) -> Path:
    """Candidates with picks and the exam table under data/work/<profile>/extraction (notebook 04 reads them)."""
    out = work_dir(cfg["profile"]) / "extraction"
    out.mkdir(parents=True, exist_ok=True)
    picks.to_parquet(out / "candidates.parquet", index=False)
    exams.to_parquet(out / "exams.parquet", index=False)
    return out


def load_key_frames(cfg: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(candidates with picks, exam table) as notebook 03 saved them."""
    folder = work_dir(cfg["profile"]) / "extraction"
    if not (folder / "candidates.parquet").is_file():
        raise FileNotFoundError(f"no key frames for profile {cfg['profile']!r}; run notebook 03 first")
    return pd.read_parquet(folder / "candidates.parquet"), pd.read_parquet(folder / "exams.parquet")


# ---------------------------------------------------------------- figures
def plot_score_distribution(picks: pd.DataFrame, threshold: float):
    """Histogram of the rule's score (P(run laterality, better)) for truly better and other candidates."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    bins = np.linspace(0, 1, 26)
    better = picks["true_category"] == "better"
    ax.hist(picks.loc[better, "cnn_score"], bins=bins, alpha=0.6, label="truly better")
    ax.hist(picks.loc[~better, "cnn_score"], bins=bins, alpha=0.6, label="bad or others")
    ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xlabel("score: P(run laterality, better)")
    ax.set_ylabel("candidates")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_picked_frames(frames: Any, picks: pd.DataFrame, runs: pd.DataFrame, exam_ids: list[str],
                       per_exam: int = 5):
    """Per exam: up to ``per_exam`` CNN key frames (top), each over its run's mean-intensity curve
    (bottom: candidates grey, the CNN pick red, oracle picks green rings). Rows of ``picks`` are in
    the order of ``frames`` (as ``apply_rules`` returns them)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2 * len(exam_ids), per_exam, figsize=(1.9 * per_exam, 3.0 * len(exam_ids)),
                             squeeze=False, gridspec_kw={"height_ratios": [1.5, 0.6] * len(exam_ids)})
    curve_of = runs.set_index("run_id")["mean_curve"]
    for e, exam in enumerate(exam_ids):
        rows = picks[(picks["exam_id"] == exam) & picks["cnn_picked"]].sort_values("run_id").head(per_exam)
        for c in range(per_exam):
            top, bottom = axes[2 * e, c], axes[2 * e + 1, c]
            top.axis("off")
            if c >= len(rows):
                bottom.axis("off")
                continue
            r = rows.iloc[c]
            top.imshow(frames[int(r.name)], cmap="gray", vmin=0, vmax=255)
            ok = "✓" if r["true_category"] == "better" else "✗"
            top.set_title(f"{r['run_id'][-3:]} f{r['frame_index']} {r['cnn_laterality']}\n"
                          f"p={r['cnn_score']:.2f} true {r['true_category']} {ok}", fontsize=7)
            y = np.asarray(curve_of[r["run_id"]])
            run = picks[picks["run_id"] == r["run_id"]]
            bottom.plot(y, lw=1, color="C0")
            bottom.plot(run["frame_index"], y[run["frame_index"]], "o", ms=3, color="0.6")
            orc = run[run["oracle_picked"]]
            bottom.plot(orc["frame_index"], y[orc["frame_index"]], "o", ms=8, mfc="none", mec="C2", mew=1.5)
            bottom.plot([r["frame_index"]], [y[r["frame_index"]]], "o", ms=5, color="C3")
            bottom.tick_params(labelsize=6)
            bottom.set_yticks([])
        axes[2 * e, 0].text(-0.1, 0.5, exam, transform=axes[2 * e, 0].transAxes, rotation=90, ha="right",
                            va="center", fontsize=7)
    fig.tight_layout(h_pad=0.3, w_pad=0.3)
    return fig
