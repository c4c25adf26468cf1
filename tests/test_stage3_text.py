"""The generated findings paragraph of docs/stage3.md (cag_utils.run.stage3_text): its numbers come from
results/*.json and its verdicts flip with them."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from cag_utils.run import readme_tables, stage3_text
from cag_utils.run.report import RESULTS_ROOT

SOURCES = ["05_finetune", "06_evaluation", "lesion_resolution", "lesion_learnability", "lora_recipes", "lora_seeds"]
NAME = "stage3-findings"


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A results folder holding copies of the three committed files the paragraph reads."""
    for name in SOURCES:
        shutil.copy(RESULTS_ROOT / f"{name}.json", tmp_path / f"{name}.json")
    return tmp_path


def edit(folder: Path, name: str, change) -> None:
    path = folder / f"{name}.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    change(record["results"])
    path.write_text(json.dumps(record), encoding="utf-8")


def ci(estimate: float, low: float, high: float) -> dict:
    return {"estimate": estimate, "ci_low": low, "ci_high": high, "n_patients": 22}


def text(folder: Path) -> str:
    body = readme_tables.render(NAME, folder)
    assert readme_tables.NOT_BUILT not in body
    return body


def set_goal(folder: Path, low: float, blank_low: float = 0.001) -> None:
    def change(res):
        res["image_effects"]["conceptclip_gemma3.real_minus_text_only"] = ci(0.02, low, 0.06)
        res["image_effects"]["conceptclip_gemma3.real_minus_blank"] = ci(0.02, blank_low, 0.06)
    edit(folder, "06_evaluation", change)


def set_artery(folder: Path, **accuracy: float) -> None:
    def change(res):
        for fam, value in accuracy.items():
            res["control"]["scores"][fam]["artery_accuracy_real"] = ci(value, value - 0.05, min(value + 0.05, 1.0))
    edit(folder, "05_finetune", change)


def test_the_block_is_registered_and_docs_stage3_holds_it_once():
    assert readme_tables.BLOCKS[NAME] is readme_tables.stage3_findings
    docs = (readme_tables.DOCS / "stage3.md").read_text(encoding="utf-8")
    assert len(readme_tables.blocks(docs).get(NAME, [])) == 1
    assert docs.count("**What the smoke run shows.**") == 1   # only inside the generated block


def set_summary_reliance(folder: Path, **low: float) -> None:
    def change(res):
        for fam, value in low.items():
            res["headline"][f"{fam}.image_reliance"] = ci(value + 0.01, value, value + 0.02)
    edit(folder, "05_finetune", change)


def meet_output_and_control_targets(folder: Path) -> None:
    def quality(res):
        for key, q in res["quality_summary"].items():
            if key.endswith(".with_lora"):
                q["in_language"], q["repeated_any"] = ci(1.0, 1.0, 1.0), ci(0.0, 0.0, 0.0)
    edit(folder, "06_evaluation", quality)
    set_artery(folder, paligemma=0.95, gemma3=0.95, conceptclip_gemma3=0.95)


def test_the_lead_names_every_missed_target(results: Path):
    meet_output_and_control_targets(results)
    set_goal(results, -0.003)
    assert "with one target measured and not reached: the goal below, that the frame add findings." in text(results)

    def loops(res):
        res["quality_summary"]["paligemma.with_lora"]["repeated_any"] = ci(0.03, 0.01, 0.05)
    edit(results, "06_evaluation", loops)
    set_artery(results, gemma3=0.85)
    assert ("with three targets measured and not reached: the loop target, the control's artery target and the goal "
            "below, that the frame add findings.") in text(results)
    set_goal(results, 0.001)
    assert "with two targets measured and not reached: the loop target and the control's artery target." in text(results)


def test_the_goal_sentence_flips_with_the_lower_end(results: Path):
    meet_output_and_control_targets(results)
    set_goal(results, -0.003)
    set_summary_reliance(results, paligemma=-0.01, gemma3=-0.01, conceptclip_gemma3=-0.01)
    body = text(results)
    assert "beats the text-only control by 0.020 [-0.003, 0.060]" in body
    assert "a lower end above 0, is not reached (a null result" in body
    assert "**The summaries do not use the frame:**" in body and "Where it fails, measured:" in body
    set_summary_reliance(results, conceptclip_gemma3=0.01)
    body_leaning = text(results)
    assert "**The summaries lean on the frame (ConceptCLIP-Gemma3) but add no findings from it:**" in body_leaning
    assert "lower end above 0 for ConceptCLIP-Gemma3 (" in body_leaning and "not for PaliGemma2 or Gemma3," in body_leaning
    assert "target measured and not reached: the goal below, that the frame add findings." in body
    set_goal(results, 0.001)
    body = text(results)
    assert ("beats the text-only control by 0.020 [0.001, 0.060]: the goal, a lower end above 0, is reached, and real "
            "minus blanked frame is 0.020 [0.001, 0.060], so the gain comes from the frame." in body)
    assert "not reached" not in body and "Where it fails" not in body
    assert "**The frame adds findings:**" in body
    assert "every target is met, and its goal below, that the frame add findings, is reached" in body
    set_goal(results, 0.001, blank_low=-0.01)   # beats the text-only control, but the blanked frame does as well
    body = text(results)
    assert "**ConceptCLIP-Gemma3 beats the text-only control, but not through the frame:**" in body
    assert "is reached in letter, not in substance: real minus blanked frame is 0.020 [-0.010, 0.060]" in body
    assert "Where it fails, measured:" in body and "with one target measured and not reached: the goal" in body


def test_the_control_target_names_the_models_that_meet_it(results: Path):
    set_artery(results, paligemma=0.95, gemma3=0.85, conceptclip_gemma3=0.80)
    assert "the target of 0.90 is met by PaliGemma2 only, not by Gemma3 or ConceptCLIP-Gemma3" in text(results)
    set_artery(results, paligemma=0.95, gemma3=stage3_text.TARGET_ARTERY, conceptclip_gemma3=0.80)
    assert "is met by PaliGemma2 and Gemma3, not by ConceptCLIP-Gemma3" in text(results)
    set_artery(results, paligemma=0.95, gemma3=0.91, conceptclip_gemma3=0.93)
    assert "is met by every model" in text(results)
    set_artery(results, paligemma=0.5, gemma3=0.6, conceptclip_gemma3=0.7)
    body = text(results)
    assert "is met by no model" in body
    assert "accuracy of 0.500 (PaliGemma2), 0.600 (Gemma3) and 0.700 (ConceptCLIP-Gemma3) on the real frame" in body


def test_blanked_frames_and_image_reliance_are_checked_against_chance_and_zero(results: Path):
    body = text(results)
    scores = json.loads((results / "05_finetune.json").read_text())["results"]["control"]["scores"]
    chance = max(s["artery_chance"] for s in scores.values())
    assert f"against at most chance ({chance:.3f}) on the blanked frame" in body and "every lower end above 0" in body

    def change(res):
        res["control"]["scores"]["gemma3"]["artery_accuracy_blank"] = ci(0.8, 0.7, 0.9)
        res["control"]["scores"]["paligemma"]["image_reliance"] = ci(0.1, -0.01, 0.2)
    edit(results, "05_finetune", change)
    body = text(results)
    assert "on the blanked frame 0.800 (Gemma3, above chance)" in body
    assert "The image pathway works only in part" in body and "lower end not above 0 for PaliGemma2" in body
    assert "showing that the measures can see image use" not in body


def test_numbers_are_read_from_the_results(results: Path):
    def quality(res):
        res["quality_summary"]["paligemma.with_lora"]["repeated_any"] = ci(0.1234, 0.1, 0.2)
        for fam in ("paligemma", "conceptclip_gemma3", "gemma3_text"):
            res["quality_summary"][f"{fam}.with_lora"]["in_language"] = ci(0.995, 0.99, 1.0)
        res["quality_summary"]["gemma3.with_lora"]["in_language"] = ci(0.987, 0.9, 1.0)
    edit(results, "06_evaluation", quality)

    def probes(res):
        res["probes"]["conceptclip"]["severe_lesion_auroc"] = ci(0.4, 0.3, 0.5)
        res["headline"]["gemma3.test_loss"] = ci(0.5, 0.45, 0.55)
    edit(results, "05_finetune", probes)
    body = text(results)
    assert "at least 98.7% of outputs" in body and "in at most 12.3%, so the loop target (at most 2.0%) is missed by" in body
    assert "PaliGemma2 (12.3%)" in body and "the language target" not in body
    assert "ConceptCLIP's probe does not separate frames with a lesion of 90 % or more better than SigLIP's" in body
    rows = json.loads((results / "05_finetune.json").read_text())["results"]["tables"]["probes"]
    frames, positive = re.fullmatch(r"([\d,]+) \(([\d,]+)\)", next(v for k, v in rows[0].items()
                                                                  if k.startswith("Test frames"))).groups()
    assert "AUROC 0.400 [0.300, 0.500] against" in body and f"{frames} corpus test frames, {positive} of them positive" in body
    before = json.loads((results / "05_finetune.json").read_text())["results"]["headline"]
    assert f"Gemma3 ({before['gemma3.test_loss_without_lora']['estimate']:.3f} to 0.500)" in body.split("falls for")[1]


def test_the_resolution_sentence_flips_when_128_px_loses_lesions(results: Path):
    assert "128 px does not hide them" in text(results)

    def change(res):
        res["headline"]["severe"]["visible_128"] = ci(0.5, 0.4, 0.6)
    edit(results, "lesion_resolution", change)
    body = text(results)
    assert "128 px hides some of them" in body and "0.500 [0.400, 0.600] are visible (d' of 5 or more)" in body
    assert "resolution is part of the encoders' and the CNN's failure" in body


@pytest.mark.parametrize("missing", SOURCES)
def test_a_missing_results_file_gives_a_not_built_block(results: Path, missing: str):
    (results / f"{missing}.json").unlink()
    body = readme_tables.render(NAME, results)
    assert f"not built: results/{missing}.json is not there" in body


def test_the_learnability_sentence_flips_with_the_paired_gains(results: Path):
    body = text(results)
    assert "neither more frames nor more pixels is what holds the lesions back" in body
    assert "Key frames at 256 px for stage 3 itself were not run" in body

    def change(res):
        res["verdict"]["resolution"] = ci(0.08, 0.02, 0.14)
    edit(results, "lesion_learnability", change)
    body = text(results)
    assert "256 px instead of 128 px (the same frames re-rendered) raises it by 0.080 [0.020, 0.140]" in body
    assert "more pixels help" in body


def test_the_view_counts_as_learned_only_with_a_lower_end_above_chance(results: Path):
    def change(res):
        for fam in ("paligemma", "gemma3", "conceptclip_gemma3"):
            res["control"]["scores"][fam]["view_accuracy_real"] = ci(0.30, 0.10, 0.40)   # lower end below any chance
        res["control"]["scores"]["gemma3"]["view_accuracy_real"] = ci(0.50, 0.40, 0.60)
    edit(results, "05_finetune", change)
    assert ("the view is learned above chance by Gemma3, not by PaliGemma2 or ConceptCLIP-Gemma3 (0.300 to 0.500 on "
            "the real frame" in text(results))


def test_the_recipes_sentence_flips_with_their_loops_and_goal(results: Path):
    def set_all(loops: float, goal_low: float, only: str | None = None):
        def change(res):
            for name, run in res["recipes"].items():
                if "overrides" in run and (only is None or name == only):
                    for m in run["models"].values():
                        m["loops"] = ci(loops, 0.0, loops + 0.02)
                    run["goal"] = ci(goal_low + 0.03, goal_low, goal_low + 0.06)
        edit(results, "lora_recipes", change)

    recipes = json.loads((results / "lora_recipes.json").read_text())["results"]["recipes"]
    others = [name for name, run in recipes.items() if "overrides" in run]
    assert others, "the committed study has no recipe besides the profile's"
    def set_profile_goal(low: float, committed: bool = True):
        def change(res):
            for run in res["recipes"].values():
                if "overrides" not in run:
                    run["goal"] = ci(low + 0.03, low, low + 0.06)
        edit(results, "lora_recipes", change)
        if committed:   # the study's profile row is the committed run
            edit(results, "06_evaluation", lambda res: res["image_effects"]["conceptclip_gemma3.real_minus_text_only"]
                 .update(ci(low + 0.03, low, low + 0.06)))

    set_all(0.10, -0.01)
    set_profile_goal(-0.01)
    body = text(results)
    assert "`benchmarks/lora_recipes.py`" in body and all(f"{name}: loops up to 10.0%" in body for name in others)
    assert "none of them meets the loop target or the goal" in body and "The committed run is the only one" not in body
    set_profile_goal(0.01)   # the profile's run alone reaches the goal: a best of several tries, and said so
    assert f"The committed run is the only one of these {stage3_text.COUNTS[len(recipes)]} runs" in text(results)
    assert "earlier corpus" not in text(results)
    set_profile_goal(0.02, committed=False)   # the study ran on an earlier draw of the corpus: said, with both numbers
    body = text(results)
    assert f"The profile run is the only one of these {stage3_text.COUNTS[len(recipes)]} runs" in body
    assert "These runs were made on an earlier corpus" in body and "reached the goal at 0.050 [0.020, 0.080]" in body
    set_profile_goal(0.01)
    set_all(0.01, 0.004, only=others[0])
    body = text(results)
    assert f"the loop target is met by {others[0]}; the goal is met by {others[0]}" in body
    assert "The committed run is the only one" not in body


def test_the_lora_draws_sentence_follows_the_pooled_rule(results):
    body = text(results)
    assert "`benchmarks/lora_seeds.py`" in body and "pooled over" in body

    def pooled(low: float):
        def change(r):
            for a in r["arms"].values():
                a["pooled"][r["goal_key"]] = ci(0.05, low, 0.09)
        return change

    edit(results, "lora_seeds", pooled(0.01))
    body = text(results)
    assert "0.050 [0.010, 0.090] pooled over" in body and "the goal holds for the recipe" in body
    edit(results, "lora_seeds", pooled(-0.01))
    assert "the goal does not hold for the recipe" in text(results)

    def only_beams(r):   # the secondary arm alone clears 0: a lead, not the recipe's result
        for arm, a in r["arms"].items():
            a["pooled"][r["goal_key"]] = ci(0.05, 0.01 if a["overrides"] else -0.01, 0.09)
    edit(results, "lora_seeds", only_beams)
    body = text(results)
    assert "the goal holds with 2 beams decoding, the secondary arm, but not with greedy decoding, the primary" in body
    assert "the goal holds for the recipe" not in body


def test_the_lora_draws_say_when_they_were_run_on_another_corpus(results):
    """Draw 0 of the five-draw test is the committed run; when notebook 06's goal differs from it, the test was run
    on an earlier corpus and the sentence says so instead of 'on the committed corpus'."""
    record = json.loads((results / "lora_seeds.json").read_text(encoding="utf-8"))["results"]
    goal = record["goal_key"]
    draw0 = record["arms"]["greedy"]["draws"]["0"]["effects"][goal]

    def committed(res):
        res["image_effects"][goal] = dict(draw0)
    edit(results, "06_evaluation", committed)
    assert "`vlm_lora_seed_offset` on the committed corpus," in text(results)

    def moved(res):
        res["image_effects"][goal] = {**draw0, "ci_low": draw0["ci_low"] + 0.01}
    edit(results, "06_evaluation", moved)
    body = text(results)
    assert "on another corpus than the committed one" in body and "on the committed corpus" not in body
