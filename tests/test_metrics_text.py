"""BLEU / chrF wrappers: the estimate is sacrebleu's own corpus score; intervals resample patients."""
from __future__ import annotations

import numpy as np
import pytest
import sacrebleu

from cag_utils.evaluation.metrics.text import (_score_from_stats, corpus_metric, make_metric, normalise, paired_significance,
                                    segment_statistics, tokenizer_for)
from cag_utils.synth.reports import ClinicalFacts, Lesion, make_reports


def _facts(seed: int) -> ClinicalFacts:
    rng = np.random.default_rng(seed)
    segments = rng.choice(["1", "2", "6", "7", "11", "13"], size=int(rng.integers(0, 3)), replace=False)
    lesions = tuple(Lesion(str(s), int(rng.choice([50, 75, 90, 99]))) for s in segments)
    return ClinicalFacts(age=60 + seed % 20, sex="M", risk_factors=("hypertension",), history=(),
                         complaint="effort_angina", noninvasive=(), dominance="right", lesions=lesions)


@pytest.fixture(scope="module")
def corpus():
    """12 summaries of 6 patients, in both languages; a 'good' system drops the last line, a 'poor' one
    outputs another exam's summary."""
    reports = [make_reports(_facts(s), np.random.default_rng(s)) for s in range(12)]
    out = {"patients": [f"P{i // 2}" for i in range(12)]}
    for lang in ("ja", "en"):
        refs = [r[f"treatment_summary_{lang}"] for r in reports]
        out[lang] = {"refs": refs, "good": ["\n".join(t.split("\n")[:-1]) or t for t in refs],
                     "poor": refs[3:] + refs[:3]}
    return out


def test_normalise_is_nfkc_with_single_spaces():
    assert normalise("方針：＃６に対しPCI。\n（９０％）") == "方針:#6に対しPCI。 (90%)"
    assert normalise("  a\n\nb  ") == "a b"


def test_japanese_tokenizer_is_mecab_offline():
    name, note = tokenizer_for("ja")
    assert (name, note) == ("ja-mecab", ""), note
    assert tokenizer_for("en") == ("13a", "")


@pytest.mark.parametrize("lang", ["ja", "en"])
@pytest.mark.parametrize("name", ["bleu", "chrf"])
def test_estimate_is_sacrebleus_corpus_score(corpus, lang, name):
    refs, hyps = corpus[lang]["refs"], corpus[lang]["good"]
    res = corpus_metric(name, hyps, refs, corpus["patients"], lang, seed=7)
    nh, nr = [normalise(h) for h in hyps], [normalise(r) for r in refs]
    expected = (sacrebleu.corpus_bleu(nh, [nr], tokenize={"ja": "ja-mecab", "en": "13a"}[lang]) if name == "bleu"
                else sacrebleu.corpus_chrf(nh, [nr]))
    assert res["estimate"] == expected.score
    assert res["n_patients"] == 6 and res["ci_low"] <= res["estimate"] <= res["ci_high"]
    assert ("tok:ja-mecab" in res["signature"] if name == "bleu" and lang == "ja" else True)
    assert ("tok:13a" in res["signature"] if name == "bleu" and lang == "en" else True)
    # the statistics add up: their sum gives the same score
    metric = make_metric(name, lang)
    stats = segment_statistics(metric, hyps, refs)
    assert _score_from_stats(metric)(stats.sum(0)) == pytest.approx(expected.score, abs=1e-12)
    assert corpus_metric(name, hyps, refs, corpus["patients"], lang, seed=7) == res  # seeded


def test_full_width_and_line_breaks_do_not_cost_points(corpus):
    refs = corpus["ja"]["refs"]
    wide = [r.replace(":", "：").replace("%", "％").replace("\n", " \n ") for r in refs]
    assert corpus_metric("bleu", wide, refs, corpus["patients"], "ja", seed=1)["estimate"] == pytest.approx(100.0)


def test_better_system_scores_higher_and_is_significant(corpus):
    refs = corpus["en"]["refs"]
    good = corpus_metric("bleu", corpus["en"]["good"], refs, corpus["patients"], "en", seed=3)
    poor = corpus_metric("bleu", corpus["en"]["poor"], refs, corpus["patients"], "en", seed=3)
    assert good["estimate"] > poor["estimate"]
    res = paired_significance({"poor": corpus["en"]["poor"], "good": corpus["en"]["good"], "same": corpus["en"]["poor"]},
                              refs, baseline="poor", language="en", seed=12345, n_samples=200)
    assert set(res["signatures"]) == {"BLEU", "chrF2"} and "bs:200" in res["signatures"]["BLEU"]
    systems = res["systems"]
    assert systems["poor"]["BLEU"]["p_value"] is None
    assert systems["good"]["BLEU"]["score"] == pytest.approx(good["estimate"])
    assert systems["good"]["BLEU"]["p_value"] < 0.05 and systems["good"]["chrF2"]["p_value"] < 0.05
    near = corpus["en"]["poor"][:-1] + corpus["en"]["good"][-1:]   # one segment changed
    res = paired_significance({"poor": corpus["en"]["poor"], "near": near, "same": corpus["en"]["poor"]}, refs,
                              baseline="poor", language="en", seed=12345, n_samples=200)
    assert res["systems"]["near"]["BLEU"]["p_value"] > 0.05 and not res["systems"]["near"]["identical_to_baseline"]
    assert res["systems"]["same"]["identical_to_baseline"]
    with pytest.raises(ValueError):
        paired_significance({"poor": refs}, refs, baseline="poor", language="en", seed=0)


def test_mismatched_lengths_are_refused(corpus):
    with pytest.raises(ValueError):
        corpus_metric("bleu", ["a"], ["a", "b"], ["p"], "en", seed=1)
    with pytest.raises(ValueError):
        corpus_metric("bleu", ["a", "b"], ["a", "b"], ["p"], "en", seed=1)
