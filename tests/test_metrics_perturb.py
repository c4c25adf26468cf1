"""Perturbations of reference summaries and the metric-validity benchmark (cag_utils.evaluation.metrics.perturb, .validity)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cag_utils.evaluation.metrics import perturb, validity
from cag_utils.evaluation.metrics.findings import parse_summary
from cag_utils.vlm.tokenizer import draw_reports

LESION_TEXT = {"en": "Right-dominant circulation.\nAngiographic findings: #1 50% stenosis, #6 90% stenosis and "
                     "#11 100% (total occlusion).\nDiagnosis: two-vessel disease (LAD and LCx).\nPCI to #11 planned.",
               "ja": "冠動脈は右冠動脈優位である。\nCAG所見：#1 50%狭窄、#6 90%狭窄、#11 100%（完全閉塞）。\n"
                     "診断：2枝病変（LAD、LCx）。\n#11に対してPCI施行予定。"}


def findings(text: str) -> tuple:
    f = parse_summary(text)
    return f.dominance, f.lesions, f.plan


@pytest.fixture(scope="module")
def references() -> pd.DataFrame:
    reports = draw_reports(60, seed=11)
    rows = [{"record_id": f"r{i:03d}", "patient_id": f"p{i // 2:03d}", "language": lang,
             "reference": r[f"treatment_summary_{lang}"]} for i, r in enumerate(reports) for lang in ("ja", "en")]
    return pd.DataFrame(rows)


def test_every_kind_on_generator_summaries_changes_or_keeps_the_findings(references):
    table = perturb.perturbation_table(references, seed=0)
    assert set(table["kind"]) == set(perturb.KINDS)
    ref = references.set_index(["record_id", "language"])["reference"]
    for row in table.itertuples():
        same = findings(row.text) == findings(ref[(row.record_id, row.language)])
        assert same != row.significant, (row.kind, row.language, row.text)
        assert row.text != ref[(row.record_id, row.language)]


def test_other_patient_is_another_patient_in_the_same_language(references):
    table = perturb.perturbation_table(references, seed=0)
    other = table[table["kind"] == "other_patient"]
    by_text = references.set_index("reference")
    for row in other.itertuples():
        source = by_text.loc[[row.text]]
        assert (source["patient_id"] != row.patient_id).all() and (source["language"] == row.language).all()


@pytest.mark.parametrize("language", ["ja", "en"])
def test_each_edit_does_what_its_name_says(language):
    text, rng = LESION_TEXT[language], np.random.default_rng(0)
    before = findings(text)
    removed = findings(perturb.perturb(text, "lesion_removed", language, rng))
    assert len(removed[1]) == 2 and set(removed[1]) < set(before[1])
    moved = findings(perturb.perturb(text, "lesion_moved", language, rng))[1]
    assert len(moved) == 3 and len(set(moved) & set(before[1])) == 2
    assert {s for s, _ in moved} != {s for s, _ in before[1]}
    graded = findings(perturb.perturb(text, "grade_changed", language, rng))[1]
    assert [s for s, _ in graded] == [s for s, _ in before[1]] and graded != before[1]
    assert findings(perturb.perturb(text, "plan_changed", language, rng))[2] == "CABG"
    assert findings(perturb.perturb(text, "dominance_swapped", language, rng))[0] == "left"
    for kind in perturb.INSIGNIFICANT:
        if kind != "other_patient":
            out = perturb.perturb(text, kind, language, rng)
            assert out is not None and out != text and findings(out) == before, kind


def test_not_applicable_gives_none_and_bad_input_raises():
    plain = "No coronary stenosis; outpatient follow-up"
    rng = np.random.default_rng(0)
    for kind in ("lesion_removed", "lesion_moved", "grade_changed", "dominance_swapped", "sentences_reordered"):
        assert perturb.perturb(plain, kind, "en", rng) is None, kind
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb.perturb(plain, "typo", "en", rng)
    with pytest.raises(ValueError, match="unknown language"):
        perturb.perturb(plain, "reworded", "de", rng)
    with pytest.raises(ValueError, match="lack columns"):
        perturb.perturbation_table(pd.DataFrame({"record_id": ["a"]}), seed=0)


def test_the_table_is_seeded(references):
    a, b = (perturb.perturbation_table(references, seed=3) for _ in range(2))
    pd.testing.assert_frame_equal(a, b)
    assert not perturb.perturbation_table(references, seed=4).equals(a)


class BagOfWords:
    """A toy embedder: texts as normalised token counts, images as a fixed vector (VLScore then follows the text)."""

    def __init__(self, vocabulary: list[str]):
        self.index = {w: k for k, w in enumerate(vocabulary)}

    def embed_images(self, images):
        v = np.zeros((len(images), len(self.index) + 1))
        v[:, -1] = 1.0
        return v

    def embed_texts(self, texts):
        v = np.zeros((len(texts), len(self.index) + 1))
        for row, t in enumerate(texts):
            for w in t.replace("\n", " ").split():
                if w in self.index:
                    v[row, self.index[w]] += 1
        norm = np.linalg.norm(v, axis=1, keepdims=True)
        return v / np.where(norm > 0, norm, 1)


def test_validity_summary_separates_a_valid_from_a_blind_metric(references):
    refs = references[references["language"] == "en"].reset_index(drop=True)
    table = perturb.perturbation_table(refs, seed=0)
    words = sorted({w for t in pd.concat([refs["reference"], table["text"]]) for w in t.split()})
    images = {r: np.zeros((8, 8), np.uint8) for r in refs["record_id"]}
    scores = validity.score_perturbations(refs, table, embedder=BagOfWords(words), images=images,
                                          laterality={r: "LCA" for r in refs["record_id"]})
    ref_rows = scores[scores["kind"] == "reference"]
    assert np.allclose(ref_rows[["vlscore", "f1_exam", validity.CONTROL]], 1.0)
    assert np.allclose(ref_rows[["bleu", "chrf"]], 100.0)
    summary = validity.validity_summary(scores, seed=0)
    # the positive control orders every reference; lesion F1 ties on plan and dominance changes, so it fails
    assert summary[validity.CONTROL]["ordered"]["estimate"] == 1.0 and summary[validity.CONTROL]["passes"]
    assert summary["f1_exam"]["ordered"]["estimate"] == 0.0 and not summary["f1_exam"]["passes"]
    assert summary["f1_exam"]["drop"]["plan_changed"]["estimate"] == 0.0
    assert summary["f1_exam"]["drop"]["lesion_removed"]["estimate"] > 0.2
    # every drop is the mean of reference minus perturbed score, with an interval around it
    wide = scores.pivot_table(index=["record_id", "language"], columns="kind", values="chrf")
    d = summary["chrf"]["drop"]["reworded"]
    assert d["estimate"] == pytest.approx((wide["reference"] - wide["reworded"]).dropna().mean())
    assert d["ci_low"] <= d["estimate"] <= d["ci_high"]
    tab = validity.validity_table(summary, {"f1_exam": "F1"}).set_index("Measure")
    assert list(tab.loc["Verdict"]) == ["passes" if summary[m]["passes"] else "fails" for m in summary]
    assert tab.loc["Verdict", "F1"] == "fails" and tab.loc["Verdict", validity.CONTROL_LABEL] == "passes"


def test_the_model_table_marks_a_failing_metric():
    from cag_utils.evaluation import evaluation

    tab = evaluation.metrics_table({}, ["gemma3"], {"gemma3": "Gemma3"}, ["en"],
                                   validity={"bleu": {"passes": False}, "vlscore": {"passes": True}})
    assert "BLEU (fails validity)" in tab.columns and "BLEU" not in tab.columns
    assert "VLScore" in tab.columns
