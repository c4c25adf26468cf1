"""Metric validity: does each evaluation metric score changed findings below reworded ones?

Every perturbation of ``cag_utils.evaluation.metrics.perturb`` is scored against its reference with every metric of
notebook 06 (VLScore on the key frame, sentence BLEU and chrF, lesion F1 over the exam and over the shown
artery). Per metric (``validity_summary``):
- ``ordered``: the share of references (test record x language) where every significant perturbation scores
  strictly below every insignificant one (a tie fails: a metric blind to a change cannot rank it);
- ``beats_other_patient``: the share where every insignificant perturbation scores above another patient's
  summary (the reference said differently outranks a wrong report);
- ``drop``: per kind, the mean score drop from the reference scored against itself;
- ``passes``: ``ordered`` reaches ``pass_share``.
The positive control ``findings_exact`` (1 when the parsed dominance, lesions and plan all equal the reference's,
else 0) shows that the benchmark can be passed: every significant kind changes a parsed finding and no
insignificant one does, so it orders every reference unless the parser misreads a perturbed text.
Shares and drops carry 95 % patient-bootstrap intervals (``cag_utils.intervals``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from cag_utils.evaluation.metrics.findings import _f1_from_counts, lesion_counts, parse_summary, restrict_to_artery
from cag_utils.evaluation.metrics.perturb import INSIGNIFICANT, KINDS, SIGNIFICANT
from cag_utils.evaluation.metrics.text import normalise, sentence_scores
from cag_utils.evaluation.metrics.vlscore import vlscore_of_texts
from cag_utils.intervals import patient_bootstrap, ratio_by_patient, ratio_of_sums

METRICS = ("vlscore", "bleu", "chrf", "f1_exam", "f1_shown_artery", "findings_exact")
SCALE = {"vlscore": 1.0, "bleu": 100.0, "chrf": 100.0, "f1_exam": 1.0, "f1_shown_artery": 1.0, "findings_exact": 1.0}
CONTROL = "findings_exact"
CONTROL_LABEL = "Exact findings (control)"

__all__ = ["CONTROL", "CONTROL_LABEL", "METRICS", "SCALE", "references_of", "score_perturbations", "validity_summary", "validity_table"]


def references_of(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per test record and language (record_id, patient_id, language, reference), sorted."""
    cols = ["record_id", "patient_id", "language", "reference"]
    return (predictions[cols].drop_duplicates(["record_id", "language"]).sort_values(["language", "record_id"])
            .reset_index(drop=True))


def score_perturbations(references: pd.DataFrame, perturbations: pd.DataFrame, *, embedder: Any,
                        images: dict[str, Any], laterality: dict[str, str]) -> pd.DataFrame:
    """One row per scored text: the perturbations, plus each reference scored against itself (kind
    ``reference``); a column per metric of ``METRICS``.

    ``references``: record_id, patient_id, language, reference. ``perturbations``: ``perturbation_table``'s
    rows. ``laterality``: record_id -> the artery the key frame shows (for the shown-artery F1).
    """
    own = references.assign(kind="reference", significant=False, text=references["reference"])
    rows = pd.concat([own[["record_id", "patient_id", "language", "kind", "significant", "text"]], perturbations],
                     ignore_index=True).merge(references[["record_id", "language", "reference"]],
                                              on=["record_id", "language"], how="left", validate="many_to_one")
    out = rows.drop(columns="reference").copy()
    out["vlscore"] = vlscore_of_texts(embedder, rows["record_id"].tolist(), rows["reference"].tolist(),
                                      rows["text"].tolist(), images, normalise=normalise)
    for name in ("bleu", "chrf"):
        out[name] = np.nan
        for language, g in rows.groupby("language"):
            out.loc[g.index, name] = sentence_scores(name, g["text"].tolist(), g["reference"].tolist(), language)
    ref_findings = {t: parse_summary(t) for t in set(rows["reference"])}
    text_findings = [parse_summary(t) for t in rows["text"]]
    truth = [ref_findings[t].lesions for t in rows["reference"]]
    found = [f.lesions for f in text_findings]
    side = [laterality.get(r) for r in rows["record_id"]]
    out["f1_exam"] = _f1_from_counts(lesion_counts(truth, found))
    out["f1_shown_artery"] = _f1_from_counts(lesion_counts([restrict_to_artery(t, s) for t, s in zip(truth, side)],
                                                           [restrict_to_artery(f, s) for f, s in zip(found, side)]))
    same = [(a.dominance, a.lesions, a.plan) == (b.dominance, b.lesions, b.plan)
            for a, b in zip((ref_findings[t] for t in rows["reference"]), text_findings)]
    out[CONTROL] = np.asarray(same, dtype=float)
    return out


def _share(flags: pd.Series, patients: pd.Series, seed: int) -> dict[str, Any]:
    values = flags.to_numpy(dtype=float)
    out = patient_bootstrap(ratio_by_patient(values, np.ones_like(values), patients.to_numpy()), ratio_of_sums,
                            seed=seed)
    out["estimate"] = float(values.mean())
    out["n"] = int(len(values))
    return out


def validity_summary(scores: pd.DataFrame, *, seed: int, pass_share: float = 0.95) -> dict[str, Any]:
    """Per metric: ``ordered``, ``beats_other_patient``, ``drop`` per kind, ``passes`` (module docstring)."""
    out: dict[str, Any] = {}
    key = ["record_id", "language"]
    for metric in METRICS:
        wide = scores.pivot_table(index=key, columns="kind", values=metric, aggfunc="first")
        patients = scores.drop_duplicates(key).set_index(key)["patient_id"].reindex(wide.index)
        sig = wide[[k for k in SIGNIFICANT if k in wide]].max(axis=1)
        insig = wide[[k for k in INSIGNIFICANT if k in wide]].min(axis=1)
        both = sig.notna() & insig.notna()
        res = {"ordered": _share((insig > sig)[both], patients[both], seed)}
        other = wide["other_patient"].notna() & insig.notna() if "other_patient" in wide else both & False
        res["beats_other_patient"] = _share((insig > wide.get("other_patient"))[other], patients[other], seed) \
            if other.any() else None
        res["drop"] = {}
        for kind in KINDS:
            if kind not in wide:
                continue
            have = wide[kind].notna()
            drop = (wide["reference"] - wide[kind])[have]
            iv = patient_bootstrap(ratio_by_patient(drop.to_numpy(), np.ones(int(have.sum())),
                                                    patients[have].to_numpy()), ratio_of_sums, seed=seed)
            iv.update(estimate=float(drop.mean()), n=int(have.sum()), significant=kind in SIGNIFICANT)
            res["drop"][kind] = iv
        res["passes"] = bool(res["ordered"]["estimate"] >= pass_share)
        out[metric] = res
    return out


def validity_table(summary: dict[str, Any], labels: dict[str, str], digits: int = 3) -> pd.DataFrame:
    """One column per metric, one row per measure: the verdict, the two shares with intervals and the drop of
    each kind (a metric per column keeps the table narrow enough for a page)."""
    from cag_utils.evaluation.metrics.perturb import KIND_LABELS
    from cag_utils.intervals import format_interval

    rows = []
    for metric, res in summary.items():
        d = 1 if SCALE[metric] > 1 else digits
        row = {"Metric": CONTROL_LABEL if metric == CONTROL else labels.get(metric, metric), "Verdict": "passes" if res["passes"] else "fails",
               "Significant below insignificant": format_interval(res["ordered"], digits),
               "Reworded above other patient": format_interval(res["beats_other_patient"], digits)
               if res["beats_other_patient"] else "n/a"}
        for kind, iv in res["drop"].items():
            if kind != "reference":
                row[f"drop: {KIND_LABELS[kind]}"] = format_interval(iv, d)
        rows.append(row)
    wide = pd.DataFrame(rows).set_index("Metric").T
    return wide.rename_axis(index="Measure", columns=None).reset_index()
