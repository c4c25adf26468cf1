"""Does the frame add findings over the text-only control, beyond one LoRA draw? A test fixed before it was run.

Stage 3's goal (issue 22) is ConceptCLIP-Gemma3's shown-artery lesion F1 minus the text-only control's, with a
95 % patient interval whose lower end is above 0. One run cannot settle it: the same recipe met it on one draw of
the corpus and missed it on the next two (docs/stage3.md). This benchmark holds the corpus fixed and redraws
LoRA instead, with the protocol below written down, committed and only then run.

Protocol (fixed in the commit that added this file, before any of its runs):

- Draws: ``vlm_lora_seed_offset`` 0, 1, 2, 3 and 4 (``SEEDS``); LoRA's initialisation and batch order change,
  for every adapter, the controls' included. Offset 0 is the committed run (``results/``); the others run
  notebooks 05 and 06 again under ``runs/lora-seed-<k>/`` on the committed corpus and stand-ins
  (``python -m cag_utils.run.pipeline --only 05 --only 06 -p vlm_lora_seed_offset=<k> --run-name ...``).
- Primary estimate: the goal's difference **pooled over the five draws** (``evaluation.pool_draws``): per
  patient, the TP/FP/FN of all five draws' w/ LoRA outputs summed, for the model and for the text-only control;
  the F1 difference of the sums, with notebook 06's 95 % bootstrap over patients (seed: the profile's).
  **The goal holds for the recipe when the pooled lower end is above 0**; the same rule for real minus blanked
  frame, per image model.
- Reported beside it, not used for the verdict: each draw's own interval (notebook 06's), how many draws have a
  lower end above 0, the spread (smallest and largest estimate), and the loop share of every model per draw.
- Secondary arm, the same five draws decoded with 2 beams (``vlm_num_beams: 2``; the adapters are the greedy
  arm's, found again in the adapter cache) under ``runs/lora-seed-<k>-2-beams/``, reported with the same rule.
  Validation (``benchmarks/decoding.py``) showed beams listing more lesions for every model; this arm asks
  whether they change the frame's contribution.

Writes ``results/lora_seeds.json`` (with ``tables.draws`` and ``tables.pooled``), the per-item lesion rows of every
draw it pooled (``results/lora_seeds_items.csv``) and ``figures/lora_seeds.png|pdf``.
Not part of CI or ``make reproduce``: about 9 minutes per greedy draw and 3 per beam draw on 2 cores.

    python benchmarks/lora_seeds.py                 # both arms, every draw (skips runs that are up to date)
    python benchmarks/lora_seeds.py --arms greedy   # the primary arm only
    python benchmarks/lora_seeds.py --no-run        # only summarise the runs that exist
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without install

from cag_utils.evaluation import evaluation  # noqa: E402
from cag_utils.intervals import format_interval  # noqa: E402
from cag_utils.run.config import load_config  # noqa: E402
from cag_utils.run.results import Run  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from lora_recipes import _interval, run_stage3  # noqa: E402  (the same notebook 05-06 run and interval cells)

SEEDS = (0, 1, 2, 3, 4)
ARMS = {"greedy": {}, "2 beams": {"vlm_num_beams": 2}}
GOAL_MODEL, CONTROL = "conceptclip_gemma3", "gemma3_text"
NAMES = {"paligemma": "PaliGemma2", "gemma3": "Gemma3", "conceptclip_gemma3": "ConceptCLIP-Gemma3",
         "gemma3_text": "Gemma3 text-only"}


def run_name(seed: int, arm: str) -> str | None:
    """runs/<name>/ of one draw, None for the committed run."""
    if seed == 0 and not ARMS[arm]:
        return None
    return f"lora-seed-{seed}" + ("" if not ARMS[arm] else "-" + arm.replace(" ", "-"))


def results_dir(seed: int, arm: str) -> Path:
    name = run_name(seed, arm)
    return ROOT / "results" if name is None else ROOT / "runs" / name / "results"


def run_draw(profile: str, seed: int, arm: str) -> None:
    run_stage3(profile, run_name(seed, arm), {"vlm_lora_seed_offset": seed, **ARMS[arm]})


def draw_summary(folder: Path) -> dict:
    """One draw as notebook 06 reported it: the paired image effects and the loop share per model."""
    r6 = json.loads((folder / "06_evaluation.json").read_text())["results"]
    return {"effects": {k: _interval(v) for k, v in r6["image_effects"].items()},
            "loops": {k.split(".")[0]: _interval(v["repeated_any"]) for k, v in r6["quality_summary"].items()
                      if k.endswith(".with_lora")}}


ITEM_COLUMNS = ["record_id", "patient_id", "family", "variant", "language", "lesions_shown_true", "lesions_shown_pred"]


def draw_items(folders: dict[str, Path]) -> dict[str, pd.DataFrame]:
    """Each draw's per-item lesion rows with LoRA (real and blanked frame), from its notebook-06 scores."""
    items = {name: pd.read_csv(f / "06_evaluation_scores.csv", keep_default_na=False) for name, f in folders.items()}
    return {name: d.loc[d["variant"] != "without_lora", ITEM_COLUMNS] for name, d in items.items()}


def pooled_effects(items: dict[str, pd.DataFrame], seed: int) -> dict:
    """The paired image effects of the draws' per-item rows pooled (``evaluation.pool_draws``); the same function
    recomputes them from ``results/lora_seeds_items.csv`` (tests/test_lora_seeds.py)."""
    families = list(dict.fromkeys(next(iter(items.values()))["family"]))
    return evaluation.image_effects(evaluation.pool_draws(items), families, CONTROL, seed=seed)


def tables(arms: dict) -> dict:
    draws, pooled = [], []
    for arm, a in arms.items():
        for seed, d in a["draws"].items():
            draws.append({"Decoding": arm, "LoRA seed offset": seed,
                          "ConceptCLIP-Gemma3 - text-only": format_interval(d["effects"][f"{GOAL_MODEL}.real_minus_text_only"]),
                          "ConceptCLIP-Gemma3 real - blanked": format_interval(d["effects"][f"{GOAL_MODEL}.real_minus_blank"]),
                          "Loops, worst model": f"{max(v['estimate'] for v in d['loops'].values()):.3f}"})
        for key, v in a["pooled"].items():
            fam, what = key.split(".")
            pooled.append({"Decoding": arm, "Draws": len(a["draws"]), "Model": NAMES.get(fam, fam),
                           "Difference": "real - text-only" if what == "real_minus_text_only" else "real - blanked",
                           "Pooled, lesion F1": format_interval(v), "Lower end above 0": "yes" if v["ci_low"] > 0 else "no",
                           "Draws with lower end above 0": a["draws_above_zero"].get(key, 0)})
    return {"draws": draws, "pooled": pooled}


def plot(arms: dict):
    fig, axes = plt.subplots(1, len(arms), figsize=(5.2 * len(arms), 3.6), squeeze=False, sharex=True)
    for ax, (arm, a) in zip(axes[0], arms.items()):
        rows = [(f"seed offset {s}", d["effects"][f"{GOAL_MODEL}.real_minus_text_only"]) for s, d in a["draws"].items()]
        rows.append((f"pooled ({len(a['draws'])} draws)", a["pooled"][f"{GOAL_MODEL}.real_minus_text_only"]))
        for i, (label, v) in enumerate(rows):
            ax.errorbar(v["estimate"], -i, xerr=[[v["estimate"] - v["ci_low"]], [v["ci_high"] - v["estimate"]]],
                        fmt="D" if label.startswith("pooled") else "o", capsize=3, color="C3" if label.startswith("pooled") else "C0")
        ax.axvline(0, color="k", lw=1)
        ax.set_yticks([-i for i in range(len(rows))], [r[0] for r in rows])
        ax.set_title(f"{arm} decoding", fontsize=10)
        ax.set_xlabel("ConceptCLIP-Gemma3 minus text-only,\nshown-artery lesion F1 (95 % patient CI)")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--no-run", action="store_true", help="summarise the runs that exist; run nothing")
    args = ap.parse_args(argv)
    cfg = load_config(args.profile, "evaluation")
    arms, rows = {}, []
    for arm in args.arms:
        for seed in SEEDS:
            if not args.no_run and run_name(seed, arm) is not None:
                run_draw(args.profile, seed, arm)
        folders = {str(s): results_dir(s, arm) for s in SEEDS if (results_dir(s, arm) / "06_evaluation_scores.csv").exists()}
        if not folders:
            continue
        draws = {s: draw_summary(f) for s, f in folders.items()}
        items = draw_items(folders)
        rows += [d.assign(arm=arm, draw=name) for name, d in items.items()]
        pooled = {k: _interval(v) for k, v in pooled_effects(items, cfg["seed"]).items()}
        above = {k: sum(d["effects"][k]["ci_low"] > 0 for d in draws.values()) for k in pooled}
        arms[arm] = {"overrides": ARMS[arm], "draws": draws, "pooled": pooled, "draws_above_zero": above,
                     "spread": {k: [min(d["effects"][k]["estimate"] for d in draws.values()),
                                    max(d["effects"][k]["estimate"] for d in draws.values())] for k in pooled},
                     "complete": len(folders) == len(SEEDS)}
    goal = f"{GOAL_MODEL}.real_minus_text_only"
    run = Run("lora_seeds", {**cfg, "seeds": list(SEEDS), "arms": {a: ARMS[a] for a in arms}})
    run.figure(plot(arms), "", show=False, caption=(
        "The goal over five LoRA draws on the committed corpus (smoke): ConceptCLIP-Gemma3 minus the text-only control "
        "on shown-artery lesion F1 per draw (circles) and pooled over the draws (diamond: the pre-registered "
        "estimate), with 95 % patient-bootstrap intervals; one panel per decoding arm."))
    if rows:   # per-item rows of every draw, so that the pooled numbers can be recomputed
        run.table(pd.concat(rows, ignore_index=True)[["arm", "draw", *ITEM_COLUMNS]], "items")
    path = run.save({"seeds": list(SEEDS), "goal_key": goal, "arms": arms,
                     "goal_met": {arm: a["complete"] and a["pooled"][goal]["ci_low"] > 0 for arm, a in arms.items()},
                     "tables": tables(arms)})
    for arm, a in arms.items():
        print(f"{arm}: pooled goal {format_interval(a['pooled'][goal])} over {len(a['draws'])} draws; "
              f"{a['draws_above_zero'][goal]} draws with lower end above 0")
    print(f"wrote {path.name}")


if __name__ == "__main__":
    main()
