"""Notebook 06's glue (`cag_utils.evaluation.evaluation`): the per-item table, VLScore per item, the selection rule, the table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cag_utils.evaluation import evaluation
from cag_utils.evaluation.evaluation import PAPER_NAME, cell_key, item_table, metrics_table, rating_cases, select_model

FAMILIES = ["paligemma", "gemma3"]
LABELS = {"paligemma": "PaliGemma2", "gemma3": "Gemma3"}


def _iv(estimate: float, width: float = 0.05) -> dict:
    return {"estimate": estimate, "ci_low": estimate - width, "ci_high": estimate + width, "n_patients": 3}


def _headline(values: dict[str, float]) -> dict:
    """{family: VLScore} for w/ LoRA in both languages; other metrics 0.5."""
    out = {}
    for f in FAMILIES:
        for v in evaluation.VARIANTS:
            for lang in ("ja", "en"):
                for m in evaluation.METRICS:
                    out[cell_key(f, v, lang, m)] = _iv(values[f] if (m == "vlscore" and v == "with_lora") else 0.5)
    return out


def _records() -> pd.DataFrame:
    return pd.DataFrame({"frame_uid": ["r1", "r2", "r3"], "patient_id": ["P1", "P1", "P2"], "split": "test",
                         "file_name": "x.png", "laterality_true": ["LCA", "RCA", "LCA"], "laterality_pred": ["LCA", "RCA", "RCA"],
                         "lesions": ["#6 90%; #1 75%", "#6 90%; #1 75%", ""], "lesions_in_view": ["#6 90%", "#1 75%", ""],
                         "dominance": "right", "plan": "PCI", "culprit_segment": "6",
                         "pre_procedure_report_ja": "報告", "pre_procedure_report_en": "report"})


def _predictions() -> pd.DataFrame:
    rows = []
    for f in FAMILIES:
        for rid, pid in (("r1", "P1"), ("r2", "P1"), ("r3", "P2")):
            rows.append({"record_id": rid, "patient_id": pid, "model": LABELS[f], "family": f, "variant": "with_lora",
                         "language": "en", "reference": "Right-dominant. #6 90% stenosis.",
                         "output": "Right-dominant. #6 90% stenosis and #2 50% stenosis." if f == "gemma3" else "No stenosis."})
    return pd.DataFrame(rows)


def test_item_table_parses_outputs_and_keeps_the_shown_artery():
    items = item_table(_predictions(), _records())
    g = items[items["family"] == "gemma3"].set_index("record_id")
    assert g.at["r1", "lesions_pred"] == "#2 50%; #6 90%" or g.at["r1", "lesions_pred"] == "#6 90%; #2 50%"
    assert g.at["r1", "lesions_shown_pred"] == "#6 90%"     # LCA frame: the RCA lesion #2 is not in view
    assert g.at["r2", "lesions_shown_pred"] == "#2 50%"     # RCA frame
    assert g.at["r1", "dominance_pred"] == "right"


def test_item_table_refuses_a_prediction_outside_the_corpus():
    with pytest.raises(ValueError, match="not in the corpus"):
        item_table(_predictions(), _records().iloc[:2])


def test_vlscore_items_embeds_each_text_once_and_rounds():
    class Counting:
        texts: list = []

        def embed_images(self, images):
            return np.tile([1.0, 0.0, 0.0], (len(images), 1))

        def embed_texts(self, texts):
            self.texts += list(texts)
            return np.array([[1.0, (len(t) % 11) / 3, 1 - (len(t) % 5) / 2] for t in texts])

    emb = Counting()
    preds = _predictions()
    scores = evaluation.vlscore_items(emb, preds, {r: np.zeros((4, 4), np.uint8) for r in ("r1", "r2", "r3")})
    assert len(emb.texts) == len(set(emb.texts)) == 3    # one reference, two distinct outputs
    assert np.array_equal(scores, np.round(scores, evaluation.VLSCORE_DECIMALS)) and (scores <= 1).all()
    same = preds["output"] == preds["reference"]
    assert (scores[~same] < 1).all()


def test_selection_prefers_ratings_and_falls_back_to_vlscore():
    headline = _headline({"paligemma": 0.9, "gemma3": 0.7})
    by_vlscore = select_model(headline, FAMILIES, LABELS)
    assert (by_vlscore["family"], by_vlscore["metric"], by_vlscore["name"]) == ("paligemma", "vlscore", PAPER_NAME)
    assert by_vlscore["intervals_overlap"] is False
    by_rating = select_model(headline, FAMILIES, LABELS, ratings={"paligemma": _iv(6.0, 1), "gemma3": _iv(7.2, 1)})
    assert (by_rating["family"], by_rating["metric"]) == ("gemma3", "rating") and by_rating["intervals_overlap"]
    tie = select_model(_headline({"paligemma": 0.8, "gemma3": 0.8}), FAMILIES, LABELS)
    assert tie["family"] == "paligemma"      # ties go to the earlier family


def test_table_names_the_selected_model_and_formats_intervals():
    headline = _headline({"paligemma": 0.9, "gemma3": 0.8})
    sel = select_model(headline, FAMILIES, LABELS)
    table = metrics_table(headline, FAMILIES, LABELS, ["ja", "en"], sel)
    assert len(table) == len(FAMILIES) * len(evaluation.VARIANTS) * 2
    named = table[table["Model"].str.contains(PAPER_NAME)]
    assert set(named["Variant"]) == {"w/ LoRA"} and set(named["Model"]) == {f"PaliGemma2 ({PAPER_NAME})"}
    assert named["VLScore"].iloc[0] == "0.900 [0.850, 0.950]" and "Rating (0-10)" not in table


def test_rating_cases_take_one_record_per_patient_first():
    cases = rating_cases(_predictions(), _records(), {r: np.zeros((4, 4), np.uint8) for r in ("r1", "r2", "r3")},
                         n_cases=2, language="en", variants=["with_lora"], seed=3)
    assert len({c.patient_id for c in cases}) == 2
    assert set(cases[0].outputs) == {"paligemma.with_lora", "gemma3.with_lora"}
