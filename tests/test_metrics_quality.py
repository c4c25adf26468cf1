"""Output quality: script language, repetitions and the plan, on hand-written texts, on the committed
references and model outputs, and ``output_quality`` against a direct computation."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from cag_utils.evaluation.metrics import quality as Q
from cag_utils.evaluation.metrics.quality import (SHARES, duplicate_lesion_segment, has_plan, output_quality, repeated_ngram,
                                       script_language, words)
from cag_utils.intervals import patient_bootstrap, ratio_by_patient, ratio_of_sums
from cag_utils.synth import reports as R
from cag_utils.synth.anatomy import sample_dominance, sample_lesions

FAMILIES = ("conceptclip_gemma3", "gemma3", "paligemma")


@pytest.fixture(scope="module")
def predictions(require) -> pd.DataFrame:
    return pd.read_json(require("results/05_finetune_predictions.jsonl.gz"), lines=True)


@pytest.fixture(scope="module")
def references(predictions) -> pd.DataFrame:
    refs = predictions[["reference", "language"]].drop_duplicates().reset_index(drop=True)
    assert set(refs["language"]) == {"ja", "en"} and refs["language"].value_counts().min() >= 10
    return refs


@pytest.mark.parametrize("text, expected", [
    ("", ""), (None, ""), ("12345 %#", ""), ("１２３％、＃６", ""), (" \n\t", ""),
    ("The stenosis (狭窄) of the LAD was treated by PCI.", "en"),  # English quoting a kanji compound
    ("LAD #6 90%狭窄、LCx #11 75%狭窄。CABGの方針。", "ja"),  # 7 Japanese characters to 10 Latin letters
    ("冠動脈に狭窄病変なし。", "ja"),
    ("ＣＯＲＯＮＡＲＹ　ＳＴＥＮＯＳＩＳ", "en"),  # full-width Latin is Latin
    ("ｶﾃｰﾃﾙ検査", "ja"),  # half-width katakana is Japanese
    ("ＣＡＧ所見：＃６　９０％狭窄", "ja"),
    ("Right-dominant circulation.\nNo coronary stenosis.", "en"),
])
def test_script_language_edge_cases(text, expected):
    assert script_language(text) == expected


def test_script_language_threshold_is_the_japanese_share():
    assert Q.JA_SHARE == 0.3
    assert script_language("abcdefg" + "狭窄病") == "ja"  # 3 / 10
    assert script_language("abcdefgh" + "狭窄病") == "en"  # 3 / 11


def test_every_committed_reference_is_classified_as_its_language(references):
    got = references["reference"].map(script_language)
    assert (got == references["language"]).all(), references[got != references["language"]]


@pytest.mark.parametrize("text, expected", [
    ("#11 90% stenosis and #11 90% stenosis", True),
    ("#6 75%狭窄、#6 90%狭窄", True),  # the same segment with another grade is still listed twice
    ("＃６　７５％狭窄、＃６　７５％狭窄", True),  # full-width
    ("LAD: #6 99% (subtotal occlusion)\n#6 is judged to be the culprit lesion; PCI is planned.", False),
    ("LAD: #6 99% (subtotal occlusion)\nPCI to #6 planned.", False),
    ("LAD：#6 99%（亜完全閉塞）\n#6を責任病変と判断し、PCIの方針とした。\n残存する#7は後日staged PCIを検討。", False),
    ("#1 90% stenosis and #11 90% stenosis", False),  # #1 is no prefix of #11
    ("#4PD 50% stenosis and #4AV 50% stenosis", False),
    ("No coronary stenosis.", False), ("", False),
])
def test_duplicate_lesion_segment(text, expected):
    assert duplicate_lesion_segment(text) is expected


def test_words_drop_punctuation_and_keep_a_lesion_whole():
    assert words("No significant stenosis; outpatient follow-up.") == [
        "no", "significant", "stenosis", "outpatient", "follow-up"]
    assert words("冠動脈に狭窄病変なし。") == ["冠動脈", "に", "狭窄", "病変", "なし"]  # MeCab, not characters
    assert words("＃６　９９％（亜完全閉塞）、#7 99%狭窄") == ["#6 99%", "亜", "完全", "閉塞", "#7 99%", "狭窄"]
    assert words("、。：% # （）") == []


@pytest.mark.parametrize("text, expected", [
    ("Assessment: single-vessel disease disease disease disease disease", True),  # overlapping 4-grams
    ("No significant coronary stenosis. no significant coronary stenosis!", True),  # case and punctuation
    ("Risk factors: hypertension. Risk factors: hypertension.", False),  # only 3 words repeat
    ("No coronary stenosis.\nAssessment: no significant coronary stenosis.\n"
     "No significant stenosis; outpatient follow-up.", False),
    ("特記すべき既往なし。\n特記すべき既往なし。", True),
    ("有意狭窄なし。\n有意狭窄なく、外来で経過観察とする。", False),
    ("#6 99%（亜完全閉塞）、#7 99%（亜完全閉塞）、#11 99%（亜完全閉塞）を認めた。", False),  # three lesions
    ("#11 90% stenosis and #11 90% stenosis and #11 90% stenosis", True),
    ("", False),
])
def test_repeated_ngram(text, expected):
    assert repeated_ngram(text) is expected


def test_repeated_ngram_length_is_a_parameter():
    text = "有意狭窄なし。\n有意狭窄なく、外来で経過観察とする。"
    assert repeated_ngram(text, n=2) and not repeated_ngram(text, n=3)


@pytest.mark.parametrize("text, expected", [
    ("Plan: follow-up.", True), ("#6に対してPCI施行予定。", True), ("心臓血管外科にコンサルトし、CABGの方針。", True),
    ("The coronary system is right-dominant.\nAngiographic findings: #1 90% stenosis", False),
    ("右冠動脈優位。", False), ("", False),
])
def test_has_plan(text, expected):
    assert has_plan(text) is expected


def test_committed_references_never_repeat_and_state_a_plan(references):
    for check in (duplicate_lesion_segment, repeated_ngram):
        flagged = references["reference"][references["reference"].map(check)]
        assert flagged.empty, (check.__name__, flagged.tolist())
    assert references["reference"].map(has_plan).all()


def test_generator_summaries_are_well_formed():
    """Beyond the committed references: 200 exams of the report generator, both languages."""
    for seed in range(200):
        rng = np.random.default_rng(seed)
        dominance = sample_dominance(rng)
        facts = R.sample_clinical_facts(rng, sample_lesions(rng, dominance), dominance)
        reports = R.make_reports(facts, rng)
        for lang in ("ja", "en"):
            text = reports[f"treatment_summary_{lang}"]
            assert script_language(text) == lang, text
            assert not duplicate_lesion_segment(text) and not repeated_ngram(text), text
            assert has_plan(text), text


# Outputs of an earlier, undertrained smoke run (LM pretrained for 150 steps): the loops the checks must catch.
LOOPS = [
    "The coronary system is right-dominant.\nAngiographic findings: #1 90% stenosis and #11 90% stenosis and "
    "#11 90% stenosis, #112 90% stenosis, #12 90% stenosis and",
    "The coronary system is right-dominant.\nCoronary angiography showed #1 90% stenosis and #11 90% stenosis and "
    "#11 90% stenosis and #112 90% stenosis and #112 90% ",
    "500000000%狭窄、#111111111100%狭窄、#111111111111111111111111111111 2を責任病変と判断し、PCIの方針とした。",
]


def test_loops_of_an_undertrained_model_are_caught():
    for text in LOOPS[:2]:
        assert duplicate_lesion_segment(text) and repeated_ngram(text), text
    assert script_language(LOOPS[0]) == "en" and script_language(LOOPS[2]) == "ja"


def _small_frame() -> pd.DataFrame:
    outputs = {
        "ok_ja": "右冠動脈優位。\n冠動脈に狭窄病変なし。\n有意狭窄なく、外来で経過観察とする。",
        "ok_en": "Right-dominant circulation.\nNo coronary stenosis.\nNo significant stenosis; outpatient follow-up.",
        "loop_en": "#11 90% stenosis and #11 90% stenosis and #12 90% stenosis and #12",
        "loop_ja": "特記すべき既往なし。\n特記すべき既往なし。",
        "empty": "",
    }
    rows = [  # family, variant, language, patient, output
        ("a", "lora", "ja", "P1", "ok_ja"), ("a", "lora", "ja", "P2", "loop_en"), ("a", "lora", "ja", "P3", "loop_ja"),
        ("a", "lora", "en", "P1", "ok_en"), ("a", "lora", "en", "P2", "ok_ja"), ("a", "lora", "en", "P3", "loop_en"),
        ("a", "lora", "en", "P3", "ok_en"), ("a", "base", "ja", "P1", "empty"), ("a", "base", "ja", "P2", "ok_ja"),
        ("b", "lora", "en", "P1", "loop_en"), ("b", "lora", "en", "P2", "ok_en"), ("b", "lora", "en", "P4", "empty"),
    ]
    df = pd.DataFrame(rows, columns=["family", "variant", "language", "patient_id", "output"])
    df["output"] = df["output"].map(outputs)
    return df


def test_output_quality_equals_a_direct_computation():
    df = _small_frame()
    got = output_quality(df, seed=3)
    direct = pd.DataFrame({
        "in_language": [script_language(t) == l for t, l in zip(df["output"], df["language"])],
        "repeated_lesion": [duplicate_lesion_segment(t) for t in df["output"]],
        "repeated_ngram": [repeated_ngram(t) for t in df["output"]],
        "has_plan": [has_plan(t) for t in df["output"]],
    })
    direct["repeated_any"] = direct["repeated_lesion"] | direct["repeated_ngram"]
    assert direct.any().all() and not direct.all().any()  # the frame exercises both outcomes of each check
    keys = {("a", "lora", "ja"), ("a", "lora", "en"), ("a", "base", "ja"), ("b", "lora", "en"),
            ("a", "lora", "all"), ("a", "base", "all"), ("b", "lora", "all")}
    assert set(map(tuple, got[["family", "variant", "language"]].to_numpy())) == keys and len(got) == len(keys)
    for _, row in got.iterrows():
        mask = (df["family"] == row["family"]) & (df["variant"] == row["variant"])
        if row["language"] != "all":
            mask &= df["language"] == row["language"]
        assert row["n"] == mask.sum() and row["n_patients"] == df.loc[mask, "patient_id"].nunique()
        for share in SHARES:
            x = direct.loc[mask, share].astype(float)
            assert row[f"{share}_estimate"] == pytest.approx(x.mean()), (share, dict(row))
            ci = patient_bootstrap(ratio_by_patient(x, np.ones(len(x)), df.loc[mask, "patient_id"]), ratio_of_sums,
                                   seed=3)
            assert (row[f"{share}_ci_low"], row[f"{share}_ci_high"]) == pytest.approx(
                (ci["ci_low"], ci["ci_high"]), nan_ok=True)
    row = got.set_index(["family", "variant", "language"]).loc[("a", "lora", "en")]
    assert row["in_language_estimate"] == pytest.approx(3 / 4) and row["repeated_any_estimate"] == pytest.approx(1 / 4)
    assert row["in_language_ci_low"] <= 0.75 <= row["in_language_ci_high"]


def test_output_quality_on_the_committed_predictions(predictions, monkeypatch):
    calls = []
    monkeypatch.setattr(Q, "text_quality", lambda t, f=Q.text_quality: calls.append(t) or f(t))
    start = time.perf_counter()
    got = output_quality(predictions, seed=0).set_index(["family", "variant", "language"])
    elapsed = time.perf_counter() - start
    assert len(calls) == predictions["output"].nunique()  # each distinct text checked once
    assert elapsed < 30, f"{elapsed:.1f} s for {len(predictions)} outputs"
    assert len(got) == predictions.groupby(["family", "variant"]).ngroups * 3
    n_test = predictions[predictions["variant"] == "with_lora"].groupby("family").size()
    for family in FAMILIES:
        lora = got.loc[(family, "with_lora", "all")]
        assert lora["n"] == n_test[family]
        assert lora["repeated_any_ci_low"] <= lora["repeated_any_estimate"] <= lora["repeated_any_ci_high"]
    # The references as outputs: in their language, no repetition, a plan, everywhere.
    as_refs = output_quality(predictions.assign(output=predictions["reference"]), seed=0)
    assert (as_refs[["in_language_estimate", "has_plan_estimate"]] == 1).all().all()
    assert (as_refs[["repeated_lesion_estimate", "repeated_ngram_estimate", "repeated_any_estimate"]] == 0).all().all()
