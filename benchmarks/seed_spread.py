"""Seed spread of the stage-1 CNN: the same data and split, k training seeds.

Trains the profile's CNN (notebook 02's recipe) with k seeds on the annotation cohort that
notebook 01 wrote, scores each on the test split (all frames and the low-contrast
quartile) and writes mean, sd, min and max of every headline metric of notebook 02
(`results/variance_02_cnn.json`) and a strip plot (`figures/variance_02_cnn.png`). The
profile's own seed is one of the k, and its checkpoint is the one notebook 02 trained (found
by the same content hash), so the committed run is marked on the plot. The sd is what
`cag_utils.run.tolerance` allows a re-execution to move (3 sd). Not part of CI (k trainings).

    python benchmarks/seed_spread.py --seeds 5          # after notebooks 01 and 02 (make reproduce)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from cag_utils.cnn import load_trained, train_classifier  # noqa: E402
from cag_utils.cnn.contrast import low_contrast_mask, vessel_contrast_batch  # noqa: E402
from cag_utils.cnn.pretrain import pretrained_weights  # noqa: E402
from cag_utils.cnn.stage import (  # noqa: E402
    HEADLINE_METRICS, checkpoint_dir, evaluate_split, prediction_rows, train_config,
)
from cag_utils.data.dataset import load_annotation  # noqa: E402
from cag_utils.data.labels import CLASSES  # noqa: E402
from cag_utils.intervals import confusion_by_patient  # noqa: E402
from cag_utils.run.config import load_config, work_dir  # noqa: E402
from cag_utils.run.results import Run, load_results  # noqa: E402
from cag_utils.run.seed import seed_everything  # noqa: E402

SUBSETS = ("test", "low_contrast")


def training_seeds(base: int, k: int) -> list[int]:
    """The profile's seed first, then k - 1 seeds derived from it."""
    return [base] + [int(s) for s in np.random.SeedSequence(base).generate_state(k - 1)]


def headline_estimates(rows: pd.DataFrame) -> dict[str, float]:
    """'<subset>.<metric>' point estimates, the names notebook 02's headline uses."""
    out = {}
    for subset in SUBSETS:
        part = rows if subset == "test" else rows[rows[subset]]
        cm = confusion_by_patient(part["label"], part["pred"], part["patient_id"], len(CLASSES)).sum(0)
        out.update({f"{subset}.{name}": float(metric(cm)) for name, metric in HEADLINE_METRICS.items()})
    return out


def plot_spread(per_seed: pd.DataFrame, committed: dict[str, float] | None):
    """Strip plot: one dot per seed and metric; the committed value as a red bar."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    long = per_seed.melt(id_vars="seed", var_name="metric", value_name="value")
    fig, ax = plt.subplots(figsize=(7, 3.6))
    sns.stripplot(data=long, x="value", y="metric", ax=ax, size=6, color="tab:blue", jitter=0.15)
    if committed:
        for i, name in enumerate(per_seed.columns.drop("seed")):
            if name in committed:
                ax.plot([committed[name]] * 2, [i - 0.35, i + 0.35], color="tab:red", lw=2,
                        label="committed run" if i == 0 else None)
        ax.legend(fontsize=8, loc="lower left")
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"test metric ({len(per_seed)} training seeds, same data and split)")
    ax.set_ylabel("")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--seeds", type=int, default=5, help="number of training seeds (k)")
    args = ap.parse_args(argv)

    cfg = load_config(args.profile, "cnn")
    seed_everything(cfg["seed"], threads=cfg["torch_threads"])
    frames, table = load_annotation(cfg)
    test = table["split"].to_numpy() == "test"
    low = low_contrast_mask(vessel_contrast_batch(frames[np.flatnonzero(test)]), cfg["cnn_low_contrast_quantile"])
    run = Run("variance_02_cnn", {**cfg, "n_seeds": args.seeds})
    # the pretraining (cached, made once) is shared by every seed: the spread is that of the fine-tuning
    pre = pretrained_weights(cfg, train_config(cfg), frames.shape[1])
    rows = []
    for seed in training_seeds(cfg["seed"], args.seeds):
        tc = {**train_config(cfg, pretrained_file=pre.path), "seed": seed}
        out_dir = checkpoint_dir(work_dir(cfg["profile"]) / "cnn", tc, frames, table)
        print(f"seed {seed}: {out_dir.name}", flush=True)
        result = train_classifier(frames, table, tc, out_dir, resume=True)
        if result.status != "completed":
            raise SystemExit(f"seed {seed}: training {result.status}; the spread needs complete runs")
        model, info = load_trained(out_dir)
        predictions, _ = evaluate_split(model, info, frames, table, "test", {"low_contrast": low})
        rows.append({"seed": seed, **headline_estimates(prediction_rows(predictions, {"low_contrast": low}))})
    per_seed = pd.DataFrame(rows)
    metrics = {name: {"mean": float(v.mean()), "sd": float(v.std(ddof=1)), "min": float(v.min()),
                      "max": float(v.max()), "values": [float(x) for x in v]}
               for name, v in per_seed.drop(columns="seed").items()}
    try:
        committed = {k: v["estimate"] for k, v in load_results("02_cnn", args.profile)["results"]["headline"].items()}
    except (FileNotFoundError, KeyError):
        committed = None
    run.figure(plot_spread(per_seed, committed), "strip", show=False)
    path = run.save({"n_seeds": args.seeds, "seeds": per_seed["seed"].tolist(), "metrics": metrics,
                     "tables": {"spread": [{"metric": k, **{s: v[s] for s in ("mean", "sd", "min", "max")}}
                                           for k, v in metrics.items()]}})
    print(per_seed.round(3).to_string(index=False))
    print(f"wrote {path.name}")


if __name__ == "__main__":
    main()
