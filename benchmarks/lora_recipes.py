"""Does another LoRA recipe stop the loops or make the frame add findings? Stage 3, side by side (issue 22).

Notebooks 05 and 06 are run again with one recipe change each (`python -m cag_utils.run.pipeline --only 05
--only 06 -p KEY=VALUE --run-name lora-<recipe>`; outputs under `runs/`, the committed ones untouched), and
every recipe's stage-3 targets are read from its results files beside the profile's own (the committed run) and
those of trials that retrained a stand-in (`TRIALS`, kept under `results/trials/`):
held-out summary loss with LoRA, the share of w/ LoRA outputs that repeat a lesion segment or a 4-gram
(target: at most 2 % for every model), the positive control's artery accuracy, and the shown-artery lesion
F1 of ConceptCLIP-Gemma3 minus the text-only control (goal: lower end above 0), all with the notebooks' 95 %
patient-bootstrap intervals. Writes `results/lora_recipes.json` and `figures/lora_recipes.png|pdf`.
Not part of CI or `make reproduce` (one notebook-05 run per recipe, about 5 minutes each on 2 cores; the
pipeline skips a recipe whose run is up to date):

    python benchmarks/lora_recipes.py            # all recipes
    python benchmarks/lora_recipes.py --no-run   # only summarise runs/lora-*/ that exist
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without install

from cag_utils.intervals import format_interval  # noqa: E402
from cag_utils.run.config import load_config  # noqa: E402
from cag_utils.run.results import Run  # noqa: E402

# one change each against the profile: Gemma3's image tokens pooled 2x2 (the profile's before commit 05a031a), the
# paper's learning rate, twice the steps, the best validation checkpoint
RECIPES = {
    "16 image tokens (2x2 pooled)": {"vlm_gemma3_image_tokens": 16},
    "lr 0.0002": {"vlm_lr": 0.0002},
    "240 steps": {"vlm_max_steps": 240, "vlm_epochs": 5},
    "best of 8 evaluations": {"vlm_load_best": True, "vlm_eval_points": 8},
}
# trials that changed a stand-in, not notebook 05's recipe: their notebook 05-06 results, kept under results/trials/
TRIALS = {
    "LM stand-in with 6 layers, 16 image tokens": ({"vlm_standin_layers": 6, "vlm_gemma3_image_tokens": 16},
                                                   "results/trials/lm-6-layers-ffd950e"),
}
LOOP_TARGET = 0.02


def run_name(recipe: str) -> str:
    return "lora-" + "".join(c if c.isalnum() else "-" for c in recipe).strip("-")


def run_recipe(profile: str, recipe: str, overrides: dict) -> None:
    run_stage3(profile, run_name(recipe), overrides)


def run_stage3(profile: str, name: str, overrides: dict) -> None:
    """Notebooks 05 and 06 with ``overrides`` under ``runs/<name>/`` (the committed outputs untouched)."""
    cmd = [sys.executable, "-m", "cag_utils.run.pipeline", "--profile", profile, "--only", "05", "--only", "06",
           "--run-name", name]
    for key, value in overrides.items():
        cmd += ["-p", f"{key}={json.dumps(value)}"]
    print(" ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def _interval(cell: dict) -> dict:
    return {k: cell[k] for k in ("estimate", "ci_low", "ci_high")}


def summarise(results_dir: Path) -> dict:
    """The stage-3 targets of one run, from its ``05_finetune.json`` and ``06_evaluation.json``."""
    r5 = json.loads((results_dir / "05_finetune.json").read_text())["results"]
    r6 = json.loads((results_dir / "06_evaluation.json").read_text())["results"]
    models = {}
    for fam, head in ((k.split(".")[0], v) for k, v in r5["headline"].items() if k.endswith(".test_loss")):
        m = {"loss_with_lora": _interval(head),
             "loops": _interval(r6["quality_summary"][f"{fam}.with_lora"]["repeated_any"])}
        ctrl = r5.get("control", {}).get("scores", {}).get(fam)
        if ctrl:
            m["control_artery"] = _interval(ctrl["artery_accuracy_real"])
        models[fam] = m
    return {"models": models, "goal": _interval(r6["image_effects"]["conceptclip_gemma3.real_minus_text_only"])}


NAMES = {"paligemma": "PaliGemma2", "gemma3": "Gemma3", "conceptclip_gemma3": "ConceptCLIP-Gemma3",
         "gemma3_text": "Gemma3 text-only"}


def table(summary: dict) -> list[dict]:
    """One row per recipe: each model's loop share, the controls' lowest artery accuracy, the goal."""
    rows = []
    for rec, s in summary.items():
        row = {"Recipe": rec}
        row.update({f"Loops, {NAMES.get(f, f)}": format_interval(m["loops"]) for f, m in s["models"].items()})
        arteries = [m["control_artery"]["estimate"] for m in s["models"].values() if "control_artery" in m]
        row["Control artery accuracy (lowest model)"] = f"{min(arteries):.3f}" if arteries else ""
        row["ConceptCLIP-Gemma3 - text-only, lesion F1"] = format_interval(s["goal"])
        rows.append(row)
    return rows


def plot(summary: dict):
    rows = [{"recipe": rec, "model": fam, **m["loops"]} for rec, s in summary.items() for fam, m in s["models"].items()]
    loops = pd.DataFrame(rows)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 1.4]})
    fams = list(dict.fromkeys(loops["model"]))
    width = 0.8 / len(fams)
    for i, fam in enumerate(fams):
        d = loops[loops["model"] == fam].set_index("recipe").reindex(list(summary))
        x = [j + (i - (len(fams) - 1) / 2) * width for j in range(len(d))]
        a.errorbar(x, d["estimate"], yerr=[d["estimate"] - d["ci_low"], d["ci_high"] - d["estimate"]], fmt="o",
                   capsize=3, label=fam)
    a.axhline(LOOP_TARGET, color="k", ls="--", lw=1, label="target (at most)")
    a.set_xticks(range(len(summary)), list(summary), rotation=15)
    a.set_ylabel("w/ LoRA outputs that loop")
    a.legend(fontsize=7, ncol=2)
    g = pd.DataFrame([{"recipe": rec, **s["goal"]} for rec, s in summary.items()])
    b.errorbar(range(len(g)), g["estimate"], yerr=[g["estimate"] - g["ci_low"], g["ci_high"] - g["estimate"]],
               fmt="o", capsize=3, color="C2")
    b.axhline(0, color="k", lw=1)
    b.set_xticks(range(len(g)), g["recipe"], rotation=15)
    b.set_ylabel("ConceptCLIP-Gemma3 minus text-only,\nshown-artery lesion F1")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--no-run", action="store_true", help="summarise the runs that exist; run nothing")
    args = ap.parse_args(argv)
    cfg = load_config(args.profile, "finetune")
    base = f"profile (lr {cfg['vlm_lr']}, {cfg['vlm_max_steps']} steps)"
    summary = {base: summarise(ROOT / "results")}
    for recipe, overrides in RECIPES.items():
        if not args.no_run:
            run_recipe(args.profile, recipe, overrides)
        folder = ROOT / "runs" / run_name(recipe) / "results"
        if (folder / "06_evaluation.json").exists():
            summary[recipe] = {"overrides": overrides, **summarise(folder)}
    for trial, (overrides, folder) in TRIALS.items():
        summary[trial] = {"overrides": overrides, "results": folder, **summarise(ROOT / folder)}
    run = Run("lora_recipes", {**cfg, "recipes": RECIPES, "trials": {k: v[1] for k, v in TRIALS.items()}})
    run.figure(plot(summary), "", show=False, caption=(
        "Stage-3 LoRA recipes side by side (smoke): left, the share of w/ LoRA outputs that repeat a lesion segment "
        "or a 4-gram, per model, with 95 % patient intervals (dashed: the target, at most 2 %); right, "
        "ConceptCLIP-Gemma3 minus the text-only control on shown-artery lesion F1 (the goal: a lower end above 0)."))
    met = {rec: all(m["loops"]["estimate"] <= LOOP_TARGET for m in s["models"].values()) for rec, s in summary.items()}
    path = run.save({"recipes": summary, "loop_target": LOOP_TARGET, "loop_target_met": met,
                     "goal_met": {rec: s["goal"]["ci_low"] > 0 for rec, s in summary.items()},
                     "tables": {"recipes": table(summary)}})
    for rec, s in summary.items():
        loops = ", ".join(f"{fam} {m['loops']['estimate']:.3f}" for fam, m in s["models"].items())
        print(f"{rec}: loops {loops}; goal {s['goal']['estimate']:.3f} [{s['goal']['ci_low']:.3f}, "
              f"{s['goal']['ci_high']:.3f}]")
    print(f"wrote {path.name}")


if __name__ == "__main__":
    main()
