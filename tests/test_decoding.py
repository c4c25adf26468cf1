"""Choosing the decoding setting from validation outputs (vlm.decoding): the scores and the rule, on hand-written
summaries in the corpus' wording."""
import pandas as pd
import pytest

from cag_utils.vlm import decoding

REF_JA = "冠動脈は右冠動脈優位である。\nLCx：#12 75%狭窄\n【診断】1枝病変（LCx）\n#12に対してPCI施行予定。"
LOOP_JA = "冠動脈は右冠動脈優位である。\nCAG所見:#6 25%狭窄、#12 25%狭窄、#12 75%狭窄。\n【診断】1枝病変(LCx)\n#12を責任病変と判断し、PCIの方針とした。"
REF_EN = "Right-dominant circulation.\nLCx: #12 75% stenosis.\nAssessment: single-vessel disease (LCx).\nPCI to #12 is planned."


def _outputs(rows):
    return pd.DataFrame([{"family": f, "model": f.upper(), "num_beams": b, "patient_id": p, "language": lang,
                          "reference": ref, "output": out} for f, b, p, lang, ref, out in rows])


def test_the_table_scores_repeats_language_plan_and_lesions_per_model_and_beam_count():
    rows = [("g", 1, "P1", "ja", REF_JA, LOOP_JA), ("g", 1, "P2", "ja", REF_JA, REF_JA),
            ("g", 1, "P3", "ja", REF_JA, REF_EN),   # a Japanese prompt answered in English
            ("g", 2, "P1", "ja", REF_JA, REF_JA), ("g", 2, "P2", "ja", REF_JA, REF_JA), ("g", 2, "P3", "en", REF_EN, REF_EN)]
    table = decoding.validation_table(_outputs(rows)).set_index("num_beams")
    assert table.loc[1, "repeated_any"] == pytest.approx(1 / 3)
    assert table.loc[1, "in_language"] == pytest.approx(2 / 3)
    assert table.loc[2, ["repeated_any", "in_language", "has_plan", "lesion_f1"]].tolist() == [0.0, 1.0, 1.0, 1.0]
    # the looping output names #6 25 % and #12 25 % besides the true #12 75 %: 3 TP of 3, 2 FP
    assert table.loc[1, "lesion_f1"] == pytest.approx(2 * 3 / (2 * 3 + 2))
    assert table.loc[1, "lesion_f1_ci_low"] <= table.loc[1, "lesion_f1"] <= table.loc[1, "lesion_f1_ci_high"]


def _table(rows):
    return pd.DataFrame([{"family": f, "num_beams": b, "repeated_any": loops, "in_language": lang, "has_plan": plan}
                         for f, b, loops, lang, plan in rows])


def test_the_rule_takes_the_smallest_beam_count_that_meets_every_target_in_every_model():
    rows = [("a", 1, 0.03, 1.0, 1.0), ("b", 1, 0.00, 1.0, 1.0),    # greedy: one model loops
            ("a", 2, 0.01, 1.0, 1.0), ("b", 2, 0.02, 1.0, 1.0),    # meets every target (2 % is allowed)
            ("a", 3, 0.00, 1.0, 1.0), ("b", 3, 0.00, 1.0, 1.0)]
    assert decoding.choose_num_beams(_table(rows)) == 2
    assert decoding.choose_num_beams(_table(rows), loop_target=0.0) == 3


def test_the_rule_never_trades_language_or_plan_for_fewer_repeats():
    rows = [("a", 1, 0.05, 1.0, 1.0), ("a", 2, 0.00, 0.97, 1.0), ("a", 3, 0.00, 1.0, 0.90), ("a", 4, 0.03, 1.0, 1.0)]
    # 2 and 3 repeat least but miss the language or the plan target: of the others, the fewest repeats
    assert decoding.choose_num_beams(_table(rows)) == 4
    # a tie in repeats goes to the smaller beam count
    assert decoding.choose_num_beams(_table(rows + [("a", 5, 0.03, 1.0, 1.0)])) == 4
    # when every setting misses the language or the plan target, repeats alone decide
    assert decoding.choose_num_beams(_table(rows[1:3])) == 2
