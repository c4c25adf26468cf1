"""Controlled perturbations of a reference summary, for the metric-validity benchmark (notebook 06).

A metric that measures findings must score a report that changes a finding below a report that says
the same findings differently. This module derives both kinds from a reference, in either language
(the approach of VLScore's own benchmark, Dawidowicz et al., arXiv 2410.17357: controlled
perturbations of reference reports):

*significant* (a finding changes; ``parse_summary`` reads different findings):
- ``lesion_removed``: one lesion mention deleted (its line too, when nothing else is left on it);
- ``lesion_moved``: one lesion moved to a segment of the other artery (#6 -> e.g. #2);
- ``grade_changed``: one grade changed across the significance line (>= 75 % -> 50 %, else -> 90 %);
- ``plan_changed``: the plan words swapped (PCI -> CABG, CABG -> PCI, medical therapy -> PCI,
  follow-up -> medical therapy);
- ``dominance_swapped``: right <-> left dominance, balanced -> right;
- ``other_patient``: another patient's whole summary in the same language, with other findings.

*insignificant* (the findings stay; ``parse_summary`` reads the same):
- ``sentences_reordered``: the lines (or sentences) in another order;
- ``reworded``: the same findings in other words (``REWORDING``: a fixed phrase table per language);
- ``width_spacing``: full-width characters and ideographic-space indents (Japanese) or extra spaces
  (English).

Every edit is a text edit, so it applies to any report that writes lesions as ``#<segment> <percent>%``
(the generator's and the models' notation); a kind that does not apply to a text (no lesion, no stated
dominance, a single sentence) gives ``None`` and is counted as not applicable. Choices (which lesion,
which target segment, which other patient, which order) come from a seeded generator.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from cag_utils.evaluation.metrics.findings import parse_summary
from cag_utils.synth.reports import GRADES, SEGMENTS, VESSEL_OF, Lesion, lesion_text

SIGNIFICANT = ("lesion_removed", "lesion_moved", "grade_changed", "plan_changed", "dominance_swapped",
               "other_patient")
INSIGNIFICANT = ("sentences_reordered", "reworded", "width_spacing")
KINDS = SIGNIFICANT + INSIGNIFICANT
KIND_LABELS = {"lesion_removed": "lesion removed", "lesion_moved": "lesion moved", "grade_changed": "grade changed",
               "plan_changed": "plan changed", "dominance_swapped": "dominance swapped",
               "other_patient": "another patient's summary", "sentences_reordered": "sentences reordered",
               "reworded": "reworded", "width_spacing": "width / spacing"}

_SEG = r"(4PD|4AV|1[0-5]|[1-35-9])(?![0-9A-Za-z])"
LESION_PHRASE = re.compile(rf"#{_SEG}\s*(\d{{2,3}})\s*%(?:\s*stenosis|\s*\((?:subtotal|total) occlusion\)"
                           r"|狭窄|（亜?完全閉塞）)?")
_SEPARATORS = (", ", " and ", "、")
PLAN_SWAP = {"en": {"PCI": ("PCI", "CABG"), "CABG": ("CABG", "PCI"), "medical": ("medical therapy", "PCI"),
                    "follow_up": ("follow-up", "medical therapy")},
             "ja": {"PCI": ("PCI", "CABG"), "CABG": ("CABG", "PCI"), "medical": ("薬物療法", "PCI"),
                    "follow_up": ("経過観察", "薬物療法")}}
DOMINANCE_SWAP = {"en": (("right-dominant", "left-dominant"), ("left-dominant", "right-dominant"),
                         ("balanced (co-dominant)", "right-dominant")),
                  "ja": (("右冠動脈優位", "左冠動脈優位"), ("左冠動脈優位", "右冠動脈優位"), ("バランス型", "右冠動脈優位"))}
REWORDING = {"en": (("Angiographic findings:", "CAG findings:"), ("Coronary angiography showed", "CAG revealed"),
                    ("stenosis", "narrowing"), ("Diagnosis:", "Impression:"), ("Conclusion:", "Impression:"),
                    ("Assessment:", "Impression:"), ("planned", "scheduled"), ("circulation", "system"),
                    ("is judged to be", "is considered"), ("Referred to cardiac surgery", "Surgical referral"),
                    ("will be continued", "is continued"), ("Risk factor management", "Risk factor control")),
             "ja": (("CAG所見：", "造影所見："), ("冠動脈造影では", "CAGでは"), ("を認めた", "がみられた"),
                    ("診断：", "診断名："), ("と判断", "と診断"), ("施行予定", "実施予定"), ("方針：", "治療方針："),
                    ("の方針", "の予定"), ("を認めず", "なし"))}
_FULL_WIDTH = {c: chr(ord(c) + 0xFEE0) for c in "0123456789#%:()ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"}

__all__ = ["INSIGNIFICANT", "KINDS", "KIND_LABELS", "SIGNIFICANT", "perturb", "perturbation_table"]


def _phrase(segment: str, percent: int, language: str) -> str:
    if percent in GRADES and segment in SEGMENTS:
        ja, en = lesion_text(Lesion(segment, percent))
        return ja if language == "ja" else en
    return f"#{segment} {percent}%"


def _pick(matches: list, rng: np.random.Generator):
    return matches[int(rng.integers(len(matches)))] if matches else None


def lesion_removed(text: str, language: str, rng: np.random.Generator) -> str | None:
    m = _pick(list(LESION_PHRASE.finditer(text)), rng)
    if m is None:
        return None
    start, end = m.span()
    before, after = text[:start], text[end:]
    sep = next((s for s in _SEPARATORS if before.endswith(s)), None)
    if sep:
        before = before[:-len(sep)]
    else:
        sep = next((s for s in _SEPARATORS if after.startswith(s)), "")
        after = after[len(sep):]
    lines = (before + after).split("\n")
    old = text.split("\n")
    kept = [l for l, o in zip(lines, old) if LESION_PHRASE.search(l) or not LESION_PHRASE.search(o)] \
        if len(lines) == len(old) else lines
    return "\n".join(kept)


def lesion_moved(text: str, language: str, rng: np.random.Generator) -> str | None:
    m = _pick(list(LESION_PHRASE.finditer(text)), rng)
    if m is None:
        return None
    present = {s for s, _ in re.findall(rf"#{_SEG}\s*(\d{{2,3}})", text)}
    other = [s for s in SEGMENTS if (VESSEL_OF[s] == "rca") != (VESSEL_OF[m.group(1)] == "rca") and s not in present]
    target = _pick(other, rng)
    return text[:m.start()] + _phrase(target, int(m.group(2)), language) + text[m.end():]


def grade_changed(text: str, language: str, rng: np.random.Generator) -> str | None:
    m = _pick(list(LESION_PHRASE.finditer(text)), rng)
    if m is None:
        return None
    new = 50 if int(m.group(2)) >= 75 else 90
    return text[:m.start()] + _phrase(m.group(1), new, language) + text[m.end():]


def plan_changed(text: str, language: str, rng: np.random.Generator) -> str | None:
    plan = parse_summary(text).plan
    if plan not in PLAN_SWAP[language]:
        return None
    old, new = PLAN_SWAP[language][plan]
    return re.sub(re.escape(old), new, text, flags=re.I)


def dominance_swapped(text: str, language: str, rng: np.random.Generator) -> str | None:
    for old, new in DOMINANCE_SWAP[language]:
        hit = re.search(re.escape(old), text, flags=re.I)
        if hit:
            new = new[0].upper() + new[1:] if hit.group(0)[0].isupper() else new
            return text[:hit.start()] + new + text[hit.end():]
    return None


def sentences_reordered(text: str, language: str, rng: np.random.Generator) -> str | None:
    lines = [l for l in text.split("\n") if l.strip()]
    joiner = "\n"
    if len(lines) < 2:
        lines = [s for s in re.split(r"(?<=[.。])\s*", text) if s.strip()]
        joiner = "" if language == "ja" else " "
    if len(lines) < 2:
        return None
    order = rng.permutation(len(lines))
    if (order == np.arange(len(lines))).all():
        order = np.roll(order, 1)
    return joiner.join(lines[k] for k in order)


def reworded(text: str, language: str, rng: np.random.Generator) -> str | None:
    out = text
    for old, new in REWORDING[language]:
        out = out.replace(old, new)
    return out if out != text else None


def width_spacing(text: str, language: str, rng: np.random.Generator) -> str | None:
    if language == "ja":
        out = "".join(_FULL_WIDTH.get(c, c) for c in text).replace("\n", "\n\u3000")
    else:
        out = re.sub(r"([.:;,])\s", r"\1  ", text).replace("%", " %")
    return out if out != text else None


_EDITS: dict[str, Callable[[str, str, np.random.Generator], str | None]] = {
    "lesion_removed": lesion_removed, "lesion_moved": lesion_moved, "grade_changed": grade_changed,
    "plan_changed": plan_changed, "dominance_swapped": dominance_swapped,
    "sentences_reordered": sentences_reordered, "reworded": reworded, "width_spacing": width_spacing}


def perturb(text: str, kind: str, language: str, rng: np.random.Generator) -> str | None:
    """``text`` with one perturbation of ``kind`` (not ``other_patient``), or None where it does not apply."""
    if kind not in _EDITS:
        raise ValueError(f"unknown perturbation {kind!r}; expected one of {tuple(_EDITS)}")
    if language not in ("ja", "en"):
        raise ValueError(f"unknown language {language!r}")
    out = _EDITS[kind](text, language, rng)
    return None if out is None or out == text else out


def _findings(text: str) -> tuple[Any, ...]:
    f = parse_summary(text)
    return f.dominance, f.lesions, f.plan


def perturbation_table(references: pd.DataFrame, *, seed: int) -> pd.DataFrame:
    """Every applicable perturbation of every reference.

    ``references``: columns record_id, patient_id, language, reference (one row per test record and language).
    Returns one row per (reference, kind): record_id, patient_id, language, kind, significant, text.
    ``other_patient`` takes, in a seeded order, the first summary of another patient in the same language whose
    parsed findings differ.
    """
    need = {"record_id", "patient_id", "language", "reference"}
    if need - set(references.columns):
        raise ValueError(f"references lack columns {sorted(need - set(references.columns))}")
    rows = []
    for i, r in enumerate(references.itertuples(index=False)):
        rng = np.random.default_rng([seed, i])
        for kind in KINDS:
            if kind == "other_patient":
                pool = references[(references["language"] == r.language) & (references["patient_id"] != r.patient_id)]
                own = _findings(r.reference)
                text = next((t for t in pool["reference"].iloc[rng.permutation(len(pool))]
                             if _findings(t) != own), None)
            else:
                text = perturb(r.reference, kind, r.language, rng)
            if text is not None:
                rows.append({"record_id": r.record_id, "patient_id": r.patient_id, "language": r.language,
                             "kind": kind, "significant": kind in SIGNIFICANT, "text": text})
    return pd.DataFrame(rows, columns=["record_id", "patient_id", "language", "kind", "significant", "text"])
