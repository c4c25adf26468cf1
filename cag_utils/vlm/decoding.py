"""Choosing the decoding setting (profile key ``vlm_num_beams``) from validation outputs, never from test ones.

``validation_table`` scores decoded validation summaries as notebook 06 scores the test ones
(``metrics.quality``: a repeated lesion segment or 4-gram, the prompt's language, a plan; ``metrics.findings``:
micro lesion F1 against the reference), one row per model and beam count. ``choose_num_beams`` applies ``RULE``.
``benchmarks/decoding.py`` runs both on the adapters of notebook 05.
"""
from __future__ import annotations

import pandas as pd

from cag_utils.evaluation.metrics.findings import lesion_f1, parse_summary
from cag_utils.evaluation.metrics.quality import text_quality

LOOP_TARGET = 0.02      # issue 22: at most 2 % of w/ LoRA outputs repeat a lesion segment or a 4-gram
LANGUAGE_TARGET = 0.98  # at least 98 % in the prompt's language
PLAN_TARGET = 0.95      # at least 95 % parse into findings with a plan
RULE = ("the smallest num_beams whose validation outputs meet the loop, language and plan targets in every model; "
        "if none does, of those that meet the language and plan targets (all, if none does) the one with the fewest "
        "repeats in its worst model (ties: the smaller)")


def validation_table(outputs: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Per (family, model, num_beams): ``n`` outputs and the shares ``repeated_any``, ``in_language``,
    ``has_plan``, and ``lesion_f1`` with its 95 % patient-bootstrap interval (``lesion_f1_ci_low|high``).
    ``outputs``: columns family, model, num_beams, patient_id, language, reference, output."""
    flags = pd.DataFrame([text_quality(t) for t in outputs["output"].fillna("")], index=outputs.index)
    scored = outputs.assign(repeated_any=flags["repeated_any"],
                            in_language=flags["script"].to_numpy() == outputs["language"].to_numpy(),
                            has_plan=flags["has_plan"])
    rows = []
    for (family, model, beams), g in scored.groupby(["family", "model", "num_beams"], sort=False):
        f1 = lesion_f1([parse_summary(t).lesions for t in g["reference"]],
                       [parse_summary(t).lesions for t in g["output"].fillna("")], g["patient_id"].tolist(), seed=seed)
        rows.append({"family": family, "model": model, "num_beams": int(beams), "n": len(g),
                     **{k: float(g[k].mean()) for k in ("repeated_any", "in_language", "has_plan")},
                     "lesion_f1": f1["estimate"], "lesion_f1_ci_low": f1["ci_low"], "lesion_f1_ci_high": f1["ci_high"]})
    return pd.DataFrame(rows)


def choose_num_beams(table: pd.DataFrame, loop_target: float = LOOP_TARGET) -> int:
    """The beam count that ``RULE`` picks from ``validation_table``'s rows."""
    by = table.groupby("num_beams")
    worst = pd.DataFrame({"loops": by["repeated_any"].max(), "language": by["in_language"].min(),
                          "plan": by["has_plan"].min()}).sort_index()
    fluent = worst[(worst["language"] >= LANGUAGE_TARGET) & (worst["plan"] >= PLAN_TARGET)]
    candidates = fluent if len(fluent) else worst
    ok = candidates[candidates["loops"] <= loop_target]
    if len(ok):
        return int(ok.index[0])
    return int(candidates["loops"].idxmin())   # idxmin: the first (smallest) of equal minima
