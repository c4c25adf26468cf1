"""Notebook 06's numbers, recomputed from the committed files with sacrebleu's and scikit-learn's own functions.

Reads only committed files: `results/06_evaluation.json`, its per-item file `results/06_evaluation_scores.csv`
and notebook 05's `results/05_finetune_predictions.jsonl.gz`; fails naming the file and the command that makes
it when one is missing (tests/conftest.py `require`).
Every estimate must match exactly (same library call on the same inputs), and lie inside its interval.
"""
from __future__ import annotations

import json
import unicodedata

import numpy as np
import pandas as pd
import pytest
from sacrebleu.metrics import BLEU, CHRF
from sklearn.metrics import f1_score
from sklearn.preprocessing import MultiLabelBinarizer

RECORD = "results/06_evaluation.json"
SCORES = "results/06_evaluation_scores.csv"
PREDICTIONS = "results/05_finetune_predictions.jsonl.gz"
CELL = ["family", "variant", "language"]


@pytest.fixture(scope="module")
def record(require) -> dict:
    return json.loads(require(RECORD).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def scores(require) -> pd.DataFrame:
    return pd.read_csv(require(SCORES), dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def predictions(require) -> pd.DataFrame:
    return pd.read_json(require(PREDICTIONS), lines=True, dtype={"record_id": str, "patient_id": str})


def _nfkc(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _check(interval: dict, value: float, n_patients: int, name: str) -> None:
    assert interval["estimate"] == value, f"{name}: results {interval['estimate']!r}, recomputed {value!r}"
    assert interval["n_patients"] == n_patients, name
    if interval["ci_low"] is not None:
        assert interval["ci_low"] - 1e-12 <= value <= interval["ci_high"] + 1e-12, name


def test_per_item_file_matches_the_predictions(record, scores, predictions):
    exact = record["results"]["exact"]
    assert len(scores) == len(predictions) == exact["n_predictions"]
    key = ["record_id", *CELL]
    assert not scores.duplicated(key).any()
    assert set(map(tuple, scores[key].to_numpy())) == set(map(tuple, predictions[key].to_numpy()))
    assert scores["record_id"].nunique() == exact["n_records"] and scores["patient_id"].nunique() == exact["n_patients"]
    assert scores.groupby(CELL).ngroups == exact["n_cells"]
    assert "results/06_evaluation_scores.csv" in record["per_item_files"]  # the others: tests/test_evidence.py


@pytest.mark.parametrize("metric", ["bleu", "chrf"])
def test_bleu_and_chrf_are_sacrebleus_corpus_scores(record, predictions, metric):
    headline, signatures = record["results"]["headline"], record["results"]["signatures"]
    for (family, variant, language), g in predictions.groupby(CELL):
        scorer = BLEU(tokenize="ja-mecab" if language == "ja" else "13a") if metric == "bleu" else CHRF()
        value = scorer.corpus_score([_nfkc(t) for t in g["output"]], [[_nfkc(t) for t in g["reference"]]]).score
        _check(headline[f"{family}.{variant}.{language}.{metric}"], value, g["patient_id"].nunique(),
               f"{family}.{variant}.{language}.{metric}")
        assert signatures[language][metric] == scorer.get_signature().format()


@pytest.mark.parametrize("metric,truth,pred", [("f1_exam", "lesions_true", "lesions_pred"),
                                               ("f1_shown_artery", "lesions_shown_true", "lesions_shown_pred")])
def test_findings_f1_is_scikit_learns_micro_f1(record, scores, metric, truth, pred):
    headline = record["results"]["headline"]

    def sets(column: pd.Series) -> list[set[str]]:
        return [set(filter(None, s.split("; "))) for s in column]

    for (family, variant, language), g in scores.groupby(CELL):
        t, p = sets(g[truth]), sets(g[pred])
        binarizer = MultiLabelBinarizer().fit(t + p)
        value = float(f1_score(binarizer.transform(t), binarizer.transform(p), average="micro", zero_division=1.0))
        name = f"{family}.{variant}.{language}.{metric}"
        _check(headline[name], value, g["patient_id"].nunique(), name)
        tp = sum(len(a & b) for a, b in zip(t, p))
        assert (headline[name]["tp"], headline[name]["fp"], headline[name]["fn"]) == (
            tp, sum(len(b) for b in p) - tp, sum(len(a) for a in t) - tp), name


def test_vlscore_is_the_mean_of_the_per_item_scores(record, scores):
    headline = record["results"]["headline"]
    decimals = record["results"]["vlscore"]["per_item_decimals"]
    for (family, variant, language), g in scores.groupby(CELL, sort=False):
        values = g["vlscore"].astype(float).to_numpy()
        assert np.array_equal(values, np.round(values, decimals)) and ((0 <= values) & (values <= 1)).all()
        name = f"{family}.{variant}.{language}.vlscore"
        _check(headline[name], float(np.mean(values)), g["patient_id"].nunique(), name)


def test_parsed_findings_in_the_per_item_file_come_from_the_outputs(scores, predictions):
    from cag_utils.corpus.corpus import format_lesions
    from cag_utils.evaluation.metrics.findings import parse_summary

    key = ["record_id", *CELL]
    merged = scores.merge(predictions[[*key, "output"]], on=key, validate="one_to_one")
    assert [format_lesions(list(parse_summary(t).lesions)) for t in merged["output"]] == merged["lesions_pred"].tolist()


def test_the_selected_model_follows_the_stated_rule(record):
    res = record["results"]
    sel, headline = res["selection"], res["headline"]
    if sel["metric"] != "rating":   # without ratings: the mean over languages of the w/ LoRA models' metric
        families = list(sel["scores"])
        mean = {f: np.mean([v["estimate"] for k, v in headline.items()
                            if k.startswith(f"{f}.{sel['variant']}.") and k.endswith(f".{sel['metric']}")])
                for f in families}
        assert sel["family"] == max(families, key=lambda f: (mean[f], -families.index(f)))
        assert not res["exact"]["ratings_present"]
    assert any(sel["name"] in row["Model"] for row in res["tables"]["metrics"])
