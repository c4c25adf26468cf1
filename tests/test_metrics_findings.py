"""The findings parser reads back every summary template of the report generator; lesion F1."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import f1_score

from cag_utils.metrics.findings import (Findings, label_accuracy, lesion_counts, lesion_f1, lesion_indicators,
                                        parse_summary, restrict_to_artery)
from cag_utils.synth import reports as R
from cag_utils.synth.anatomy import sample_dominance, sample_lesions

SUMMARY_TABLES = (R.DOMINANCE_TEMPLATES, R.LESION_TEMPLATES, R.NO_LESION_TEMPLATES, R.DIAGNOSIS_TEMPLATES,
                  R.STAGED_TEMPLATES, *R.PLAN_TEMPLATES.values())
N_VARIANTS = max(len(t) for t in SUMMARY_TABLES)

# Lesion sets that reach every plan, diagnosis wording, grade wording and vessel label.
LESION_SETS = {
    "none": (),
    "mild": (("6", 25),),
    "moderate": (("2", 50), ("13", 25)),
    "pci_single": (("7", 90),),
    "pci_staged": (("1", 75), ("6", 99), ("7", 90)),
    "pci_branches": (("4PD", 100), ("4AV", 50), ("14", 75)),
    "left_main": (("5", 50), ("9", 25)),
    "left_main_3vd": (("5", 75), ("3", 90), ("8", 75), ("15", 99)),
    "three_vessel": (("2", 99), ("10", 90), ("13", 100)),
}


class ScriptedRng:
    """Stands in for numpy's Generator in the renderer: every draw picks paraphrase ``k`` (mod its count)."""

    def __init__(self, k: int):
        self.k = k

    def integers(self, n: int) -> int:
        return self.k % n


def _facts(lesions, dominance: str) -> R.ClinicalFacts:
    return R.ClinicalFacts(age=66, sex="F", risk_factors=(), history=(), complaint="screening", noninvasive=(),
                           dominance=dominance, lesions=tuple(R.Lesion(s, p) for s, p in lesions))


def _expected(facts: R.ClinicalFacts) -> Findings:
    plan, culprit = R.treatment_plan(facts.lesions)
    arteries = {"RCA" if R.VESSEL_OF[l.segment] == "rca" else "LCA" for l in facts.lesions}
    return Findings(laterality=tuple(a for a in ("LCA", "RCA") if a in arteries), dominance=facts.dominance,
                    lesions=tuple((l.segment, l.percent) for l in R.sort_lesions(facts.lesions)), plan=plan,
                    culprit_segment=culprit or "")


def test_the_fixture_reaches_every_plan_and_grade():
    plans = {R.treatment_plan([R.Lesion(s, p) for s, p in ls])[0] for ls in LESION_SETS.values()}
    assert plans == set(R.PLANS)
    assert {p for ls in LESION_SETS.values() for _, p in ls} == set(R.GRADES)
    assert {R.VESSEL_OF[s] for ls in LESION_SETS.values() for s, _ in ls} == set(R.VESSELS)


@pytest.mark.parametrize("k", range(N_VARIANTS))
def test_every_summary_template_round_trips(k):
    """Paraphrase k of every table, every dominance, every lesion set, both languages."""
    for (name, lesions), dominance in itertools.product(LESION_SETS.items(), R.DOMINANCES):
        facts = _facts(lesions, dominance)
        plan, culprit = R.treatment_plan(facts.lesions)
        ja, en = R._summary(facts, plan, culprit, ScriptedRng(k))
        for text in (ja, en):
            assert parse_summary(text) == _expected(facts), (name, dominance, text)


def test_random_generator_exams_round_trip():
    for seed in range(400):
        rng = np.random.default_rng([seed, 11])
        dominance = R.DOMINANCES[seed % 3] if seed % 5 == 0 else sample_dominance(rng)
        facts = R.sample_clinical_facts(rng, sample_lesions(rng, dominance), dominance)
        reports = R.make_reports(facts, rng)
        expected = _expected(facts)
        assert (expected.plan, expected.culprit_segment) == (reports["plan"], reports["culprit_segment"])
        for lang in ("ja", "en"):
            assert parse_summary(reports[f"treatment_summary_{lang}"]) == expected, reports[f"treatment_summary_{lang}"]


def test_model_like_text_variants():
    wide = parse_summary("右冠動脈優位。ＬＡＤ：＃６　９０％狭窄\n方針：＃６に対しＰＣＩ。")
    assert wide == Findings(("LCA",), "right", (("6", 90),), "PCI", "6")
    odd = parse_summary("#4 90% stenosis, #16 75% stenosis, #6 80% stenosis.")
    assert odd.lesions == (("6", 80),) and odd.plan == "" and odd.dominance == ""
    assert parse_summary("") == Findings((), "", (), "", "")
    assert parse_summary("RCA: #2 75% stenosis. Plan: CABG.").laterality == ("RCA",)


def test_restrict_to_artery():
    lesions = [("1", 75), ("5", 50), ("4PD", 90), ("13", 25)]
    assert restrict_to_artery(lesions, "RCA") == [("1", 75), ("4PD", 90)]
    assert restrict_to_artery(lesions, "LCA") == [("5", 50), ("13", 25)]
    assert restrict_to_artery(lesions, None) == []


def test_lesion_f1_is_scikit_learns_micro_f1():
    truth = [[("6", 90), ("1", 75)], [], [("13", 100)], [("5", 50)], []]
    pred = [[("6", 90), ("1", 50)], [("7", 25)], [("13", 100)], [], [("6", 80)]]
    counts = lesion_counts(truth, pred)
    assert counts.sum(0).tolist() == [2, 3, 2]   # TP, FP, FN (the 80 % lesion is a false positive)
    res = lesion_f1(truth, pred, ["a", "a", "b", "c", "d"], seed=5)
    y_true, y_pred = lesion_indicators(truth, pred)
    assert res["estimate"] == f1_score(y_true, y_pred, average="micro", zero_division=1.0)
    assert res["estimate"] == pytest.approx(2 * 2 / (2 * 2 + 3 + 2))
    assert (res["tp"], res["fp"], res["fn"], res["n_patients"]) == (2, 3, 2, 4)
    assert res["ci_low"] <= res["estimate"] <= res["ci_high"]
    assert lesion_f1([[]], [[]], ["a"], seed=1)["estimate"] == 1.0   # nothing to find, nothing claimed


def test_label_accuracy_is_scikit_learns():
    from sklearn.metrics import accuracy_score

    truth, pred = ["PCI", "CABG", "medical", "PCI", "follow_up"], ["PCI", "PCI", "medical", "", "follow_up"]
    res = label_accuracy(truth, pred, ["a", "b", "b", "c", "d"], seed=2)
    assert res["estimate"] == accuracy_score(truth, pred) == 0.6 and res["n_patients"] == 4
    assert res["ci_low"] <= res["estimate"] <= res["ci_high"]
