"""Findings accuracy: read a summary (Japanese or English) back into structured findings, and score it.

``parse_summary`` understands the wording of the report generator (``cag_utils.synth.reports``),
which is also what the fine-tuned models learn to write; a test renders every template of it in
both languages and parses it back. It returns:
- ``laterality``: the coronary arteries the text speaks of, ("LCA",), ("RCA",), both or none,
  from the AHA segments and vessel names it mentions (left main, LAD and LCx are the LCA);
- ``dominance``: right / left / balanced, or "" when not stated;
- ``lesions``: (AHA segment, percent) pairs, every ``#<segment> <percent>%``;
- ``plan``: PCI / CABG / medical / follow_up ("" when none is stated; a text naming several counts as
  the first in that order) and the PCI culprit segment.
Text is NFKC-normalised first (full-width ``＃６　９０％`` reads as ``#6 90%``); a bare ``#4`` or
``#16`` is no AHA segment and is ignored, while a percent off the report scale (e.g. 80 %) is kept.

Lesion F1 compares sets of (segment, percent grade) pairs, so a lesion at the right segment with
the wrong grade is one false positive and one false negative. It is micro-averaged over records
(2 TP / (2 TP + FP + FN)) and equals scikit-learn's ``f1_score(average="micro")`` on the
record x (segment, percent) indicator matrices (``lesion_indicators``), which gives the estimate.
The shown-artery variant keeps, on both sides, only segments of the artery the key frame shows
(LCA: #5-#15, RCA: #1-#4): that number measures reading the image rather than copying the prompt.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cag_utils.intervals import patient_bootstrap, ratio_by_patient, ratio_of_sums
from cag_utils.synth.reports import GRADES, SEGMENTS, VESSEL_OF

ARTERY_OF_VESSEL = {"rca": "RCA", "lmt": "LCA", "lad": "LCA", "lcx": "LCA"}
ARTERIES = ("LCA", "RCA")
LESION_LABELS: tuple[tuple[str, int], ...] = tuple((s, g) for s in SEGMENTS for g in GRADES)

_SEG = r"(4PD|4AV|1[0-5]|[1-35-9])(?![0-9A-Za-z])"  # AHA segments; a bare "#4" is none
LESION = re.compile(rf"#{_SEG}\s*(\d{{2,3}})\s*%")
_CULPRIT = re.compile(rf"PCI to #{_SEG}\b|#{_SEG} is judged to be the culprit|#{_SEG}(?:に対し|を責任病変)")
_VESSEL_WORDS = {  # vessel names of the generator's lesion lines and diagnoses, both languages
    "RCA": re.compile(r"(?<![A-Za-z])RCA(?![A-Za-z])|(?i:right coronary artery)|右冠動脈(?!優位)"),
    "LCA": re.compile(r"(?<![A-Za-z])(?:LAD|LCx|LMT|LM|LCA)(?![A-Za-z])|(?i:left main|left coronary artery)"
                      r"|左主幹部|左冠動脈(?!優位)")}
_DOMINANCE = (("right", re.compile(r"right-dominant|右冠動脈優位", re.I)),
              ("left", re.compile(r"left-dominant|左冠動脈優位", re.I)),
              ("balanced", re.compile(r"balanced|co-dominant|バランス型", re.I)))
_PLAN = (("CABG", re.compile(r"CABG")), ("PCI", re.compile(r"PCI")),
         ("medical", re.compile(r"medical therapy|薬物療法", re.I)),
         ("follow_up", re.compile(r"follow-up|経過観察", re.I)))

__all__ = ["ARTERIES", "Findings", "LESION", "LESION_LABELS", "label_accuracy", "lesion_counts", "lesion_f1",
           "lesion_indicators", "parse_summary", "restrict_to_artery"]


@dataclass(frozen=True)
class Findings:
    """What a summary says, in the corpus' codes."""

    laterality: tuple[str, ...]
    dominance: str
    lesions: tuple[tuple[str, int], ...]
    plan: str
    culprit_segment: str


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text or "")


def parse_summary(text: str) -> Findings:
    """Structured findings of one summary in either language (see the module docstring)."""
    t = _normalise(text)
    lesions = tuple(sorted({(s, int(p)) for s, p in LESION.findall(t)},
                           key=lambda l: (SEGMENTS.index(l[0]), -l[1])))
    arteries = {ARTERY_OF_VESSEL[VESSEL_OF[s]] for s in re.findall(rf"#{_SEG}", t)}
    arteries |= {a for a, pattern in _VESSEL_WORDS.items() if pattern.search(t)}
    dominance = next((d for d, pattern in _DOMINANCE if pattern.search(t)), "")
    plan = next((p for p, pattern in _PLAN if pattern.search(t)), "")
    culprit = _CULPRIT.search(t) if plan == "PCI" else None
    return Findings(laterality=tuple(a for a in ARTERIES if a in arteries), dominance=dominance, lesions=lesions,
                    plan=plan, culprit_segment=next((g for g in culprit.groups() if g), "") if culprit else "")


def restrict_to_artery(lesions: Iterable[tuple[str, int]], laterality: str | None) -> list[tuple[str, int]]:
    """The lesions in the artery a frame shows (LCA: left main, LAD, LCx; RCA: #1-#4)."""
    return [(s, p) for s, p in lesions if ARTERY_OF_VESSEL[VESSEL_OF[s]] == laterality]


def lesion_counts(truth: Sequence[Iterable[tuple[str, int]]], predicted: Sequence[Iterable[tuple[str, int]]]
                  ) -> np.ndarray:
    """(n_records, 3) counts of true positives, false positives and false negatives (set semantics)."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} truths for {len(predicted)} predictions")
    rows = []
    for t, p in zip(truth, predicted):
        t, p = set(t), set(p)
        rows.append((len(t & p), len(p - t), len(t - p)))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def _f1_from_counts(c: np.ndarray) -> np.ndarray:
    tp, fp, fn = c[..., 0], c[..., 1], c[..., 2]
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 1.0)  # nothing to find, nothing found


def lesion_indicators(*lesion_lists: Sequence[Iterable[tuple[str, int]]]) -> list[np.ndarray]:
    """One (n_records, n_labels) 0/1 matrix per argument, over ``LESION_LABELS`` (segment x report
    grade) plus any other (segment, percent) that occurs, so that scikit-learn counts every lesion."""
    seen = {(str(s), int(p)) for lists in lesion_lists for lesions in lists for s, p in lesions}
    labels = list(LESION_LABELS) + sorted(seen - set(LESION_LABELS), key=lambda l: (SEGMENTS.index(l[0]), l[1]))
    index = {label: k for k, label in enumerate(labels)}
    out = []
    for lists in lesion_lists:
        m = np.zeros((len(lists), len(labels)), dtype=np.int8)
        for row, lesions in enumerate(lists):
            for s, p in lesions:
                m[row, index[(str(s), int(p))]] = 1
        out.append(m)
    return out


def lesion_f1(truth: Sequence[Iterable[tuple[str, int]]], predicted: Sequence[Iterable[tuple[str, int]]],
              patients: Sequence[Any], *, seed: int) -> dict[str, Any]:
    """Micro lesion F1 with a 95 % patient-bootstrap interval, plus the summed TP/FP/FN.

    The estimate is scikit-learn's ``f1_score(*lesion_indicators(truth, predicted), average="micro",
    zero_division=1.0)``.
    """
    import pandas as pd
    from sklearn.metrics import f1_score

    counts = lesion_counts(truth, predicted)
    per_patient = pd.DataFrame(counts).groupby(np.asarray(patients), sort=True).sum().to_numpy()
    out = patient_bootstrap(per_patient, _f1_from_counts, seed=seed)
    y_true, y_pred = lesion_indicators(truth, predicted)
    out["estimate"] = float(f1_score(y_true, y_pred, average="micro", zero_division=1.0))
    out.update(dict(zip(("tp", "fp", "fn"), (int(v) for v in counts.sum(0)))))
    return out


def label_accuracy(truth: Sequence[str], predicted: Sequence[str], patients: Sequence[Any], *, seed: int
                   ) -> dict[str, Any]:
    """Accuracy of one finding (dominance, plan, culprit segment) with a 95 % patient-bootstrap interval;
    the estimate is scikit-learn's ``accuracy_score(truth, predicted)`` (an unstated finding, "", is wrong)."""
    from sklearn.metrics import accuracy_score

    truth, predicted = [str(t) for t in truth], [str(p) for p in predicted]
    correct = np.array([t == p for t, p in zip(truth, predicted)], dtype=float)
    out = patient_bootstrap(ratio_by_patient(correct, np.ones_like(correct), patients), ratio_of_sums, seed=seed)
    out["estimate"] = float(accuracy_score(truth, predicted))
    return out
