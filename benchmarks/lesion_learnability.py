"""Can a small CNN learn the generator's lesions, and is it the frame count or the 128 px that limits it?

Issue 22: a ResNet-18 from scratch on 2,536 contrast frames scored AUROC 0.51 for a lesion >= 90 % in the
shown artery. A small supervised CNN (four conv blocks, BatchNorm, ReLU, max-pool, global pool, two logits:
severe lesion in the shown artery, and laterality as the positive control) is trained from scratch with
one recipe on the contrast frames of the auxiliary stand-in cohort (`vlm.make_standins.aux_frames`) and
scored on the contrast frames of its held-out patients. Two arms, side by side:

- frames: nested subsets (25, 50, 100 %) of the training patients at 128 px, the same held-out frames;
- resolution: the 50 % subset and the held-out frames re-rendered at 256 px (the same exam, run, frame,
  view, heart phase and bolus: `synth.visibility.replay_exam` gives each run's random state; the window is
  set by the same rule, the quantum noise is a new draw), through the same network behind one extra
  stride-2 stem, against the 128 px model of the same frames.

Held-out AUROC and laterality accuracy carry 95 % patient-bootstrap intervals; the gains (100 % vs 25 %
frames, 256 vs 128 px) are paired over the same held-out patients. Deterministic (seeded, deterministic
torch kernels, one thread). The 256 px frames are cached in data/work/<profile>/. Measured: 13.3 CPU
minutes for the training and scoring (4 epochs) plus about 5 for rendering the 256 px frames once (232 exams);
5 GB peak memory:

    OMP_NUM_THREADS=1 python benchmarks/lesion_learnability.py    # results/lesion_learnability.json,
                                                                  # results/lesion_learnability_predictions.csv,
                                                                  # figures/lesion_learnability.png|pdf
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cnn_learning_curve import nested_patient_subsets  # noqa: E402  (same folder)

from cag_utils.cnn.pretrain import aux_cohort_settings  # noqa: E402
from cag_utils.data.deid import Pseudonymizer, resolve_salt  # noqa: E402
from cag_utils.intervals import INTERVAL_METHOD, N_RESAMPLES, format_interval, patient_bootstrap  # noqa: E402
from cag_utils.run.config import load_config, work_dir  # noqa: E402
from cag_utils.run.results import Run  # noqa: E402
from cag_utils.synth import imaging, visibility as vis  # noqa: E402
from cag_utils.synth.cohort import ExamTask, _draw_exam, _tasks  # noqa: E402
from cag_utils.vlm import make_standins, probe, standins  # noqa: E402

STREAM = 0x4C524E   # "LRN": the study's own draws (subsets, initial weights, batch order, the 256 px noise)
BASE = 128          # the network's body runs at this size; each doubling of the input adds one stride-2 stem


def severe_target(lesions: pd.Series, laterality: pd.Series) -> np.ndarray:
    """A lesion of >= 90 % in the artery the frame shows (the VLM probe's target)."""
    return np.array([probe.severe_in_view(standins.lesions_in_view(les, lat)) for les, lat in zip(lesions, laterality)])


class SmallCNN(nn.Sequential):
    """Four 3x3 conv blocks (BatchNorm, ReLU, 2x max-pool between) at BASE px, global average pool, linear.
    A larger input first passes stride-2 5x5 stems down to BASE px, so every size runs the same body."""

    def __init__(self, size: int, widths: tuple[int, ...] = (16, 32, 64, 96), stem: int = 8, outputs: int = 2):
        layers: list[nn.Module] = []
        c = 1
        while size > BASE:
            layers += [nn.Conv2d(c, stem, 5, stride=2, padding=2, bias=False), nn.BatchNorm2d(stem), nn.ReLU()]
            c, size = stem, size // 2
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            layers += [nn.MaxPool2d(2)] if i < len(widths) - 1 else []
            c = w
        super().__init__(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, outputs))


def to_input(frames: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, 1, H, W) in [-1, 1]."""
    return torch.from_numpy(np.asarray(frames)).float().unsqueeze(1).div_(127.5).sub_(1.0)


@torch.no_grad()
def predict(model: nn.Module, frames: np.ndarray, batch: int = 128) -> np.ndarray:
    model.eval()
    return np.concatenate([model(to_input(frames[i:i + batch])).numpy() for i in range(0, len(frames), batch)])


def fit(frames: np.ndarray, targets: np.ndarray, held_out: np.ndarray, epochs: int, seed: int,
        batch: int = 32, lr: float = 1e-3) -> list[np.ndarray]:
    """Adam on the summed binary cross-entropies of both targets; the held-out logits after every epoch."""
    torch.manual_seed(seed)
    model = SmallCNN(frames.shape[-1])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    y = torch.from_numpy(targets.astype(np.float32))
    curve = []
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(frames), generator=order).split(batch):
            idx = idx.sort().values.numpy()
            loss = nn.functional.binary_cross_entropy_with_logits(model(to_input(frames[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        curve.append(predict(model, held_out))
    return curve


def exam_tasks(cfg: dict, p: dict) -> tuple[dict[str, ExamTask], int]:
    """The auxiliary cohort's exams by pseudonymous exam_id (as ingest names them), and its bits stored."""
    data_cfg = {**load_config(cfg["profile"], "data"), **{k: cfg[k] for k in ("seed", "num_workers")}}
    aux = aux_cohort_settings(data_cfg, p["aux"]["n_exams"], p["vision"]["image_size"], p["aux"]["stream"])
    pseudo = Pseudonymizer(resolve_salt(aux))
    return {pseudo.pseudonym(_draw_exam(t)[0].study_uid, "EX-"): t for t in _tasks(aux, Path("."))}, aux["bits_stored"]


def render_exam(task: ExamTask, rows: pd.DataFrame, size: int, bits: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """The exam's frames `rows` (run_id '...-Rnn', frame_index) as the cohort stored them (replayed at its size)
    and rendered at `size` px from each run's random state, as `visibility.render_frame` does (same swing,
    motion and window; a new noise draw from `rng`) but with one geometry per run; both uint8 (reader's rule)."""
    exam = vis.replay_exam(task)
    lut = np.rint(np.arange(2**bits) * 255.0 / (2**bits - 1)).astype(np.uint8)
    stored, big = np.zeros((len(rows), *exam.runs[0]["frames"].shape[1:]), np.uint8), np.zeros((len(rows), size, size), np.uint8)
    run_no = rows["run_id"].str.rsplit("-R", n=1).str[1].astype(int).to_numpy()
    for r in np.unique(run_no):
        run = exam.runs[r - 1]
        tree, spec = exam.trees[run["laterality"]], run["spec"]
        run_rng = np.random.default_rng()
        run_rng.bit_generator.state = run["state"]
        geo = imaging.run_geometry(tree, spec, size)
        swing = run_rng.normal(0, 2.5, 3)
        t, contraction, blur = imaging.run_motion(tree, spec, swing)
        first, _, _ = imaging.frame_exposure(tree, spec, geo, swing, t[0], contraction[0], blur[0])
        window = imaging.run_window(imaging.detect(first, geo.px_mm, geo.photons_px, run_rng), geo.shutter, spec)
        for i in np.flatnonzero(run_no == r):
            k = int(rows["frame_index"].iloc[i])
            expected, _, _ = imaging.frame_exposure(tree, spec, geo, swing, t[k], contraction[k], blur[k])
            big[i] = vis._grey(imaging.display(imaging.detect(expected, geo.px_mm, geo.photons_px, rng), window,
                                               geo.shutter), bits)
            stored[i] = lut[run["frames"][k]]
    return stored, big


def frames_at(size: int, cfg: dict, p: dict, rows: pd.DataFrame, frames: np.ndarray, seed: int) -> tuple[np.ndarray, dict]:
    """`rows` of the auxiliary table rendered at `size` px, cached in data/work; and the check that the replay
    reproduces the cohort (stored frames identical, the big frame's 2x2 mean correlates with the cohort's)."""
    uids = rows["frame_uid"].tolist()
    key = hashlib.sha256(json.dumps([size, seed, STREAM, uids]).encode()).hexdigest()[:12]
    folder = work_dir(cfg["profile"]) / f"lesion-learnability-{size}px-{key}"
    if (folder / "frames.npy").is_file() and (folder / "check.json").is_file():
        return np.load(folder / "frames.npy"), json.loads((folder / "check.json").read_text())
    tasks, bits = exam_tasks(cfg, p)
    out = np.zeros((len(rows), size, size), np.uint8)
    same, corr, t0 = 0, [], time.perf_counter()
    pos = pd.Series(np.arange(len(rows)), index=rows.index)
    for n, (exam, part) in enumerate(rows.groupby("exam_id", sort=False)):
        rng = np.random.default_rng([seed, STREAM, tasks[exam].index])   # per exam: independent of the subset
        stored, big = render_exam(tasks[exam], part, size, bits, rng)
        same += int(np.array_equal(stored, frames[part.index.to_numpy()]))
        f = size // stored.shape[-1]
        small = big.reshape(len(big), stored.shape[-1], f, stored.shape[-1], f).mean((2, 4))
        corr += [float(np.corrcoef(a.ravel(), b.ravel().astype(float))[0, 1]) for a, b in zip(small, stored)]
        out[pos[part.index].to_numpy()] = big
        if (n + 1) % 25 == 0:
            print(f"rendered {n + 1}/{rows['exam_id'].nunique()} exams at {size} px, {time.perf_counter() - t0:.0f} s",
                  flush=True)
    check = {"n_exams": int(rows["exam_id"].nunique()), "n_exams_replay_identical": same, "n_frames": len(rows),
             "median_r_pooled_vs_cohort": float(np.median(corr)), "min_r_pooled_vs_cohort": float(np.min(corr)),
             "render_seconds": round(time.perf_counter() - t0, 1)}
    if same != check["n_exams"]:
        raise RuntimeError(f"the replay does not reproduce the cohort's frames: {check}")
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "frames.npy", out)
    (folder / "check.json").write_text(json.dumps(check, indent=1))
    return out, check


def paired_gain(y: np.ndarray, base: np.ndarray, other: np.ndarray, patients: np.ndarray, seed: int) -> dict:
    """AUROC(other) - AUROC(base) on the same frames, 95 % interval resampling patients jointly for both
    (where BCa is undefined, as in `probe.auroc`: the percentile interval of the resamples with both classes)."""
    a, b = probe.auroc_by_patient(y, base, patients), probe.auroc_by_patient(y, other, patients)
    k = max(a.shape[-1], b.shape[-1])   # pad with empty top ranks: no pair changes
    per = np.stack([np.pad(s, ((0, 0), (0, 0), (0, k - s.shape[-1]))) for s in (a, b)], axis=1)
    gain = lambda s: probe.auroc_from_counts(s[..., 1, :, :]) - probe.auroc_from_counts(s[..., 0, :, :])  # noqa: E731
    out = {**patient_bootstrap(per, gain, seed=seed), "interval": "bca"}
    if not (np.isfinite(out["ci_low"]) and np.isfinite(out["ci_high"])):
        idx = np.random.default_rng(seed).integers(0, len(per), (N_RESAMPLES, len(per)))
        values = gain(per[idx].sum(1))
        values = values[np.isfinite(values)]
        out.update(ci_low=float(np.percentile(values, 2.5)), ci_high=float(np.percentile(values, 97.5)),
                   interval="percentile, resamples with both classes")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0], help="of the training patients")
    ap.add_argument("--resolution-fraction", type=float, default=0.5, help="training patients of the resolution arm")
    ap.add_argument("--size", type=int, default=256, help="the resolution arm's frame size (px)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--held-out-fraction", type=float, default=1.0, help="< 1: a quick check on fewer patients")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    cfg = load_config(args.profile)
    p = make_standins.params(cfg)
    seed = int(np.random.SeedSequence([int(cfg["seed"]), STREAM]).generate_state(1)[0])
    frames, table = make_standins.aux_frames(cfg, p, progress=False)
    table = table.assign(severe=severe_target(table["lesions"], table["laterality"]))
    contrast = (table["key_frame_category"] != "others").to_numpy()   # a lesion can only show with contrast
    test = table[contrast & (table["split"] == "val").to_numpy()]
    if args.held_out_fraction < 1:
        keep = nested_patient_subsets(test["patient_id"].to_numpy(), [args.held_out_fraction], seed + 1)[0]
        test = test[test["patient_id"].isin(keep)]
    train = table[contrast & (table["split"] == "train").to_numpy()]
    fractions = sorted(set(args.fractions) | {args.resolution_fraction})
    subsets = dict(zip(fractions, nested_patient_subsets(train["patient_id"].to_numpy(), fractions, seed)))
    targets = lambda df: np.c_[df["severe"], df["laterality"] == "RCA"]   # noqa: E731

    arms = [{"arm": f"{BASE} px, {f:.0%} of training patients", "size": BASE, "fraction": f} for f in fractions]
    arms.append({"arm": f"{args.size} px, {args.resolution_fraction:.0%} of training patients", "size": args.size,
                 "fraction": args.resolution_fraction})
    big_rows = pd.concat([train[train["patient_id"].isin(subsets[args.resolution_fraction])], test])
    cfg_out = {"profile": args.profile, "seed": seed, "stream": STREAM, "fractions": fractions, "epochs": args.epochs,
               "resolution_fraction": args.resolution_fraction, "sizes": [BASE, args.size], "threads": args.threads,
               "held_out_fraction": args.held_out_fraction, "batch_size": 32, "lr": 1e-3, "optimizer": "Adam",
               "network": "SmallCNN(widths=(16, 32, 64, 96), stem=8): 4 conv blocks at 128 px, + one 5x5 stride-2 "
                          "stem per doubling of the input", "augmentation": "none",
               "cohort": "vlm.make_standins.aux_frames (contrast frames), split train/val by patient",
               "aux_exams": p["aux"]["n_exams"], "aux_stream": p["aux"]["stream"]}
    run = Run("lesion_learnability", cfg_out)
    t0 = time.perf_counter()
    big, check = frames_at(args.size, cfg, p, big_rows, frames, seed)
    big_index = pd.Series(np.arange(len(big_rows)), index=big_rows.index)
    print(f"{args.size} px frames: {check} ({time.perf_counter() - t0:.0f} s)", flush=True)

    y, pat = test["severe"].to_numpy(bool), test["patient_id"].to_numpy()
    lat = (test["laterality"] == "RCA").to_numpy()
    scores, preds = {}, []
    for arm in arms:
        rows = train[train["patient_id"].isin(subsets[arm["fraction"]])]
        if arm["size"] == BASE:
            x, x_test = frames[rows.index.to_numpy()], frames[test.index.to_numpy()]
        else:
            x, x_test = big[big_index[rows.index].to_numpy()], big[big_index[test.index].to_numpy()]
        t1 = time.perf_counter()
        curve = fit(x, targets(rows), x_test, args.epochs, seed)
        final = curve[-1]   # the last epoch: no choice made on the held-out patients
        scores[arm["arm"]] = final[:, 0]
        arm.update(n_train_frames=len(rows), n_train_patients=int(rows["patient_id"].nunique()),
                   n_train_positive=int(rows["severe"].sum()), train_seconds=round(time.perf_counter() - t1, 1),
                   severe_auroc=probe.auroc(y, final[:, 0], pat, seed=seed),
                   laterality_accuracy=probe.accuracy(lat, final[:, 1] > 0, pat, seed=seed),
                   curve=[{"epoch": e + 1, "severe_auroc": probe.auroc_from_counts(probe.auroc_by_patient(y, c[:, 0], pat).sum(0)),
                           "laterality_accuracy": float(np.mean(lat == (c[:, 1] > 0)))} for e, c in enumerate(curve)])
        preds.append(pd.DataFrame({"arm": arm["arm"], "frame_uid": test["frame_uid"], "patient_id": pat,
                                   "severe": y.astype(int), "severe_score": 1 / (1 + np.exp(-final[:, 0])),
                                   "rca": lat.astype(int), "rca_score": 1 / (1 + np.exp(-final[:, 1]))}))
        print(f"{arm['arm']}: {len(rows)} frames, AUROC {format_interval(arm['severe_auroc'])}, laterality "
              f"{format_interval(arm['laterality_accuracy'])}, {arm['train_seconds']:.0f} s", flush=True)

    lo, hi = arms[0], arms[len(fractions) - 1]
    base_res = next(a for a in arms if a["size"] == BASE and a["fraction"] == args.resolution_fraction)
    gains = {"frames": {"from": lo["arm"], "to": hi["arm"],
                        **paired_gain(y, scores[lo["arm"]], scores[hi["arm"]], pat, seed)},
             "resolution": {"from": base_res["arm"], "to": arms[-1]["arm"],
                            **paired_gain(y, scores[base_res["arm"]], scores[arms[-1]["arm"]], pat, seed)}}
    verdict = {k: {**g, "interval_excludes_0": bool(g["ci_low"] > 0 or g["ci_high"] < 0)} for k, g in gains.items()}
    table_rows = [{"Arm": a["arm"], "Training frames (patients)": f"{a['n_train_frames']} ({a['n_train_patients']})",
                   "Severe-lesion AUROC": format_interval(a["severe_auroc"]),
                   "Laterality accuracy": format_interval(a["laterality_accuracy"])} for a in arms]
    results = {"exact": {"n_held_out_frames": len(test), "n_held_out_patients": int(test["patient_id"].nunique()),
                         "n_held_out_positive": int(y.sum()), "n_train_frames_all": len(train),
                         "n_train_patients_all": int(train["patient_id"].nunique())},
               "arms": arms, "verdict": verdict, "resolution_check": check,
               "definitions": {"target": "severe: a lesion >= 90 % in the artery the frame shows "
                                         "(vlm.probe.severe_in_view of vlm.standins.lesions_in_view)",
                               "score": "the last epoch's held-out logits (no epoch chosen on the held-out patients)",
                               "interval_method": INTERVAL_METHOD + "; one training seed: the intervals cover the "
                               "held-out patients, not the training randomness",
                               "gain": "paired: AUROC(to) - AUROC(from) on the same held-out frames, patients "
                                       "resampled jointly"},
               "tables": {"arms": table_rows}}
    run.table(pd.concat(preds, ignore_index=True), "predictions")
    fig = plot(arms, args.epochs)
    run.figure(fig, "", caption=(   # figures/lesion_learnability.png|pdf
        f"Left: held-out AUROC for a lesion >= 90 % in the shown artery of a small CNN trained from scratch on "
        f"nested subsets of the auxiliary cohort's training patients at {BASE} px (circles), and on the "
        f"{args.resolution_fraction:.0%} subset re-rendered at {args.size} px (square); bars are 95 % patient-bootstrap "
        f"intervals over the {results['exact']['n_held_out_patients']} held-out patients, the dashed line is chance "
        f"(issue 22's ResNet-18 from scratch on 2,536 frames: 0.51). Right: the same AUROC after each epoch."))
    run.caption("arms", "Per arm: training frames (patients), held-out severe-lesion AUROC and laterality accuracy "
                        "(last epoch, 95 % patient-bootstrap intervals).")
    path = run.save(results)
    print(pd.DataFrame(table_rows).to_string(index=False))
    print(json.dumps(verdict, indent=1))
    print(f"wrote {path} ({time.perf_counter() - t0:.0f} s)")


def plot(arms: list[dict], epochs: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    shades = iter(plt.cm.Blues(np.linspace(0.45, 0.95, sum(a["size"] == BASE for a in arms))))
    for size, marker, colour in ((BASE, "o-", "tab:blue"), (max(a["size"] for a in arms), "s", "tab:orange")):
        sel = [a for a in arms if a["size"] == size]
        x = np.array([a["n_train_frames"] for a in sel]) * (1.04 if size != BASE else 1.0)   # dodged
        est = np.array([a["severe_auroc"]["estimate"] for a in sel])
        err = np.abs(np.array([[a["severe_auroc"]["ci_low"], a["severe_auroc"]["ci_high"]] for a in sel]).T - est)
        ax.errorbar(x, est, yerr=err, fmt=marker, color=colour, capsize=3, label=f"{size} px")
        for a in sel:
            bx.plot([c["epoch"] for c in a["curve"]], [c["severe_auroc"] for c in a["curve"]], marker[0] + "-",
                    color=next(shades) if size == BASE else colour, ms=3,
                    label=f"{a['arm']} ({a['n_train_frames']} frames)")
    for axis in (ax, bx):
        axis.axhline(0.5, color="grey", ls="--", lw=1)
        axis.set_ylabel("held-out AUROC, lesion >= 90 % in view")
    ax.set_xscale("log")
    ticks = sorted({a["n_train_frames"] for a in arms})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("training frames with contrast (log; patients subsampled)")
    ax.legend(fontsize=8, loc="upper left")
    bx.set_xlabel("epoch")
    bx.set_xticks(range(1, epochs + 1))
    bx.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
