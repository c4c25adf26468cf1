"""Findings accuracy: read a summary (Japanese or English) back into structured findings, and score it.

``parse_summary`` reads the report generator's wording (``cag_utils.synth.reports``; a test renders
every template of it in both languages and parses it back) and free clinical wording in either
language (a test set of hand-written summaries, ``tests/data/free_text_summaries.jsonl``). It returns:
- ``laterality``: the coronary arteries the text speaks of, ("LCA",), ("RCA",), both or none,
  from the segments and vessel names it mentions (left main, LAD and LCx are the LCA);
- ``dominance``: right / left / balanced (co-dominant), or "" when not stated;
- ``lesions``: (AHA segment, percent) pairs;
- ``plan``: PCI / CABG / medical / follow_up ("" when none is stated; a text naming several counts as
  the first in that order), and the PCI culprit segment.

How it reads (the vocabulary is in ``cag_utils.evaluation.metrics.wording``):
1. Text is NFKC-normalised (full-width ``＃６　９０％`` reads as ``#6 90%``) and cut into sentences
   (``。``, ``;``, a line break, a full stop before a space).
2. Sites: a segment number (``#6``, ``seg 6``, ``segment 6``, ``S6``, ``#4PD``, a bare ``4PD``; a bare
   ``#4`` or ``#16`` is no AHA segment), a range (``#6-7``; within one main vessel it covers the
   segments between), or a name: vessel + location (``proximal LAD``, ``LAD近位部``: RCA #1-#3, left
   main #5, LAD #6-#8, LCx proximal #11 and mid/distal #13) or a branch (D1 / 第一対角枝 #9, D2 #10,
   OM / 鈍角枝 #12, PL / 後側壁枝 #14 (#4AV beside the RCA), PDA / 後下行枝 #4PD (#15 beside the LCx),
   AV branch / 房室枝 #4AV). A location alone takes the nearest vessel of its sentence (``LAD: 75%
   proximal, 90% mid``). When a name and a number stand together (``proximal LAD (#6)``) the number
   wins. A vessel named alone (``LAD 90%``) refers back to a lesion read in that vessel with the same
   grade, else means its proximal segment (RCA #1, LM #5, LAD #6, LCx #11). A bypass graft's target
   (``SVG to OM``) is no native segment.
3. Grades: a percent (``90%``, ``75 %``; a range ``75-90%`` reads as its upper value), "total
   occlusion", "occluded", "CTO", 閉塞, 完全閉塞 as 100, "subtotal", 亜完全閉塞 as 99. Percents of
   ejection fraction, HbA1c, saturation, a residual stenosis or a result after ``→`` are no grade.
4. A grade belongs to a site in the same sentence only: the site after it when a preposition or a
   bracket ties them (``90% stenosis at #6``, ``90%狭窄 (#6)``, ``75% proximal``), else the site right
   before it (``#6 90%``, ``#6: 90%``, ``#6 (90%)``, ``#6に90%狭窄``, ``the mid LAD has a 50% lesion``),
   else the site right after it. A grade with no site near (``EF 60%``, ``75歳``) is no lesion.
5. Plan: a plan word negated, deferred or past is none (``no PCI``, ``PCI deferred``, ``PCI was not
   indicated``, ``previous PCI``, ``PCI見送り``, ``PCIは行わず``, ``CABGではなく``, ``PCI歴``,
   ``CABG術後``). The culprit is the site nearest a "culprit" / 責任病変 word, else the target of the
   first PCI word (``PCI to #6``, ``stent to #6``, ``#6にステント留置``).

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
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from cag_utils.evaluation.metrics import wording as W
from cag_utils.intervals import patient_bootstrap, ratio_by_patient, ratio_of_sums
from cag_utils.synth.reports import GRADES, SEGMENTS, VESSEL_OF

ARTERY_OF_VESSEL = {"rca": "RCA", "lmt": "LCA", "lad": "LCA", "lcx": "LCA"}
ARTERIES = ("LCA", "RCA")
LESION_LABELS: tuple[tuple[str, int], ...] = tuple((s, g) for s in SEGMENTS for g in GRADES)

_SEG = r"(4PD|4AV|1[0-5]|[1-35-9])(?![0-9A-Za-z])"  # AHA segments; a bare "#4" is none
LESION = re.compile(rf"#{_SEG}\s*(\d{{2,3}})\s*%")   # the generator's '#6 90%' (used by metrics.quality)
_SENTENCE = re.compile(r"[。;\n]|\.(?=\s|$)")

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


@dataclass(frozen=True)
class _Site:
    """A place in a sentence: segments (empty for a vessel named alone), its vessel, how it was named."""

    start: int
    end: int
    segments: tuple[str, ...]
    vessel: str
    kind: str            # "number", "name", "location" (a location alone) or "vessel" (a vessel alone)
    graft: bool = False


@dataclass(frozen=True)
class _Grade:
    start: int
    end: int
    percent: int


def _normalise(text: str) -> str:
    t = unicodedata.normalize("NFKC", text or "")
    t = re.sub(r"[‐‑‒–—―−〜]", lambda m: "~" if m.group() == "〜" else "-", t)
    return re.sub(r"(?i)\b(seg(?:ment)?)\.", r"\1", t)


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.split(_normalise(text)) if s.strip()]


# ----------------------------------------------------------------------------- sites
def _segment(raw: str) -> str:
    return re.sub(r"[\s-]", "", raw).upper()


def _span(a: str, b: str) -> tuple[str, ...]:
    """Segments from a to b: the stretch of one main-vessel chain, else the two ends."""
    chain = next((c for c in W.CHAINS if a in c and b in c), None)
    if chain:
        i, j = sorted((chain.index(a), chain.index(b)))
        return chain[i:j + 1]
    return (a,) if a == b else (a, b)


def _terms(sentence: str, table: dict[str, re.Pattern[str]], taken: list[tuple[int, int]]
           ) -> list[tuple[int, int, str]]:
    out = []
    for key, pattern in table.items():
        for m in pattern.finditer(sentence):
            if not any(m.start() < e and s < m.end() for s, e in taken):
                out.append((m.start(), m.end(), key))
                taken.append(m.span())
    return sorted(out)


def _named_sites(s: str, taken: list[tuple[int, int]]) -> list[_Site]:
    """Branches, vessel + location pairs, locations alone and vessels alone."""
    branches = []
    for pattern, segment, beside in W.BRANCH_TERMS:
        for m in pattern.finditer(s):
            if not any(m.start() < e and a < m.end() for a, e in taken):
                branches.append([m.start(), m.end(), segment, beside])
                taken.append(m.span())
    vessels = _terms(s, W.VESSEL_TERMS, taken)
    locations = _terms(s, W.LOCATION_TERMS, taken)
    used: set[int] = set()   # vessels that are part of a named site

    def beside(start: int, end: int, before: re.Pattern[str], after: re.Pattern[str]) -> int | None:
        for k, (vs, ve, _) in enumerate(vessels):
            if (ve <= start and after.fullmatch(s[ve:start])) or (vs >= end and before.fullmatch(s[end:vs])):
                return k
        return None

    sites = []
    for b in branches:   # 'PD of the LCx' is #15, 'RCA PL' #4AV; a location beside a branch belongs to it
        k = beside(b[0], b[1], W.BRANCH_THEN_VESSEL, W.VESSEL_THEN_LOCATION)
        segment = b[2]
        if k is not None:
            used.add(k)
            b[0], b[1] = min(b[0], vessels[k][0]), max(b[1], vessels[k][1])
            segment = b[3][1] if b[3] and vessels[k][2] == b[3][0] else segment
        for ls, le, _ in locations:
            if (le <= b[0] and W.LOCATION_THEN_VESSEL.fullmatch(s[le:b[0]])) or \
                    (ls >= b[1] and W.VESSEL_THEN_LOCATION.fullmatch(s[b[1]:ls])):
                b[0], b[1] = min(b[0], ls), max(b[1], le)
        sites.append(_Site(b[0], b[1], (segment,), VESSEL_OF[segment], "name"))
    for ls, le, loc in locations:
        if any(x.start <= ls and le <= x.end for x in sites):
            continue
        k = beside(ls, le, W.LOCATION_THEN_VESSEL, W.VESSEL_THEN_LOCATION)
        kind = "name"
        if k is None:   # a location alone: the nearest vessel before it in the sentence, else after it
            before = [j for j, v in enumerate(vessels) if v[1] <= ls]
            k = before[-1] if before else next((j for j, v in enumerate(vessels) if v[0] >= le), None)
            kind = "location"
            if k is None:
                continue
        else:
            used.add(k)
        vessel = vessels[k][2]
        span = (min(ls, vessels[k][0]), max(le, vessels[k][1])) if kind == "name" else (ls, le)
        sites.append(_Site(*span, (W.SEGMENT_AT[(vessel, loc)],), vessel, kind))
    sites += [_Site(vs, ve, (), v, "vessel") for k, (vs, ve, v) in enumerate(vessels) if k not in used]
    return sites


def _join(a: _Site, b: _Site, s: str) -> _Site | None:
    """One site for two neighbours: a name with its number, or a range."""
    gap = s[a.end:b.start]
    if {a.kind, b.kind} & {"number"} and a.kind != b.kind and (
            W.NAMED_THEN_NUMBER.fullmatch(gap) if b.kind == "number" else W.NUMBER_THEN_NAMED.fullmatch(gap)):
        return replace(a if a.kind == "number" else b, start=a.start, end=b.end)   # the number wins
    if a.kind == "vessel" and b.kind != "vessel" and W.VESSEL_THEN_LOCATION.fullmatch(gap):
        return replace(b, start=a.start)   # 'LCx OM' is the branch
    if a.segments and b.segments and a.vessel == b.vessel and W.RANGE_JOIN.fullmatch(gap):
        return _Site(a.start, b.end, _span(a.segments[0], b.segments[-1]), a.vessel,
                     "number" if "number" in (a.kind, b.kind) else "name")
    return None


def _listed(a: _Site, b: _Site, s: str) -> bool:
    """a and b are one list ('#6, #7', 'the mid RCA and distal LAD'), which may share one grade."""
    if a.kind == "number" and b.kind == "number":
        return bool(W.NUMBER_LIST_JOIN.fullmatch(s[a.end:b.start]))
    return bool(a.segments and b.segments and a.kind != "number" and b.kind != "number"
                and W.NAMED_LIST_JOIN.fullmatch(s[a.end:b.start]))


def _list_of(site: _Site, sites: list[_Site], s: str, free) -> list[_Site]:
    """The site with its free list neighbours on both sides, in text order."""
    k = sites.index(site)
    i, j = k, k
    while i > 0 and free(sites[i - 1]) and _listed(sites[i - 1], sites[i], s):
        i -= 1
    while j + 1 < len(sites) and free(sites[j + 1]) and _listed(sites[j], sites[j + 1], s):
        j += 1
    return sites[i:j + 1]


def _sites(s: str) -> list[_Site]:
    """Every site of one sentence, neighbours joined (see the module docstring, step 2)."""
    sites, taken = [], []
    for m in W.NUMBERED.finditer(s):
        a = _segment(m.group(1))
        segments = _span(a, _segment(m.group(2))) if m.group(2) else (a,)
        sites.append(_Site(m.start(), m.end(), segments, VESSEL_OF[a], "number"))
        taken.append(m.span())
    sites = sorted(sites + _named_sites(s, taken), key=lambda x: (x.start, -x.end))
    out: list[_Site] = []
    for site in sites:
        if out and site.start < out[-1].end:
            continue
        joined = _join(out[-1], site, s) if out else None
        out[-1:] = [joined] if joined else out[-1:] + [site]
    return [replace(x, graft=bool(W.GRAFT_BEFORE.search(s[:x.start]))) for x in out]


# ----------------------------------------------------------------------------- grades
def _grades(s: str) -> list[_Grade]:
    s = W.NOT_A_GRADE.sub(lambda m: " " * len(m.group()), s)   # EF 60%, HbA1c 7.9%, → 0%
    percents = [_Grade(*m.span(), int(m.group(1))) for m in W.PERCENT.finditer(s) if 10 <= int(m.group(1)) <= 100]
    words: list[_Grade] = []
    for pattern, value in ((W.SUBTOTAL, 99), (W.TOTAL, 100)):
        for m in pattern.finditer(s):
            if any(m.start() < g.end and g.start < m.end() for g in words):
                continue
            named_percent = any(g.end <= m.start() and W.WORD_AFTER_PERCENT.fullmatch(s[g.end:m.start()])
                                for g in percents)
            negated = W.NEGATED_BEFORE.search(s[:m.start()]) or W.NEGATED_AFTER.match(s, m.end())
            if not named_percent and not negated:
                words.append(_Grade(*m.span(), value))
    return sorted(percents + words, key=lambda g: g.start)


def _attach(s: str, sites: list[_Site], grades: list[_Grade]) -> list[tuple[_Site, int]]:
    """(site, percent) per site that a grade belongs to (module docstring, step 4)."""
    def between(a: int, b: int) -> bool:   # another grade between two positions
        return any(a <= g.start and g.end <= b for g in grades)

    def owned(site: _Site) -> bool:        # the grade right after a site is its own
        return any(g.start >= site.end and W.SITE_THEN_GRADE.fullmatch(s[site.end:g.start]) for g in grades)

    pairs, taken = [], set()
    for g in grades:
        before = [x for x in sites if x.end <= g.start and not between(x.end, g.start)]
        after = [x for x in sites if x.start >= g.end and not between(g.end, x.start)]
        back = before[-1] if before and id(before[-1]) not in taken else None
        back = back if back and len(s[back.end:g.start]) <= W.BACK_REACH else None
        ahead = after[0] if after and id(after[0]) not in taken and not owned(after[0]) else None
        ahead = ahead if ahead and len(s[g.end:ahead.start]) <= W.FORWARD_REACH else None
        tied = ahead and (W.GRADE_THEN_SITE.fullmatch(s[g.end:ahead.start])
                          or (ahead.kind == "location" and not s[g.end:ahead.start].strip()))
        site = ahead if tied else back or ahead
        if site:
            for x in _list_of(site, sites, s, lambda x: id(x) not in taken and (x is site or not owned(x))):
                taken.add(id(x))
                pairs.append((x, g.percent))
    return pairs


def _resolve(site: _Site, lesions: Iterable[tuple[str, int]], percent: int | None = None) -> str:
    """The segment of a vessel named alone: its read lesion with that grade (or its worst), else proximal."""
    own = sorted((l for l in lesions if VESSEL_OF[l[0]] == site.vessel and percent in (None, l[1])),
                 key=lambda l: (-l[1], SEGMENTS.index(l[0])))
    return own[0][0] if own else W.PROXIMAL_SEGMENT[site.vessel]


# ----------------------------------------------------------------------------- plan
def _plan_words(s: str) -> list[tuple[int, int, str]]:
    """(start, end, plan) of every plan word in a sentence that is not negated, deferred or past."""
    breaks = [0, *(m.end() for m in W.CLAUSE_BREAK.finditer(s)), len(s) + 1]
    out = []
    for plan, pattern in W.PLAN_TERMS:
        for m in pattern.finditer(s):
            start = max(b for b in breaks if b <= m.start())
            end = min(b for b in breaks if b > m.end()) - 1
            before, after = s[start:m.start()], s[m.end():max(end, m.end())]
            if not (W.PLAN_NEGATED_BEFORE.search(before) or W.PLAN_NEGATED_AFTER.search(after)
                    or W.PLAN_PAST_AFTER.match(after)):
                out.append((m.start(), m.end(), plan))
    return sorted(out)


def _culprit(sentences: list[tuple[str, list[_Site], list[tuple[int, int, str]]]],
             lesions: list[tuple[str, int]]) -> str:
    """The site nearest a culprit word, else the target of the first PCI word (module docstring, step 5)."""
    def segment(site: _Site) -> str:
        return site.segments[0] if site.segments else _resolve(site, lesions)

    for s, sites, _ in sentences:
        for m in W.CULPRIT.finditer(s):
            near = sorted(sites, key=lambda x: (max(x.start - m.end(), m.start() - x.end), x.start < m.start()))
            if near:
                return segment(near[0])
    for s, sites, words in sentences:
        for start, end, plan in words:
            if plan != "PCI":
                continue
            after = [x for x in sites if x.start >= end]
            before = [x for x in sites if x.end <= start]
            if after and W.PCI_TARGET_AFTER.match(s, end):
                return segment(after[0])
            if before or after:
                target = before[-1] if before else after[0]
                return segment(_list_of(target, sites, s, lambda x: True)[0])
    return ""


def parse_summary(text: str) -> Findings:
    """Structured findings of one summary in either language (see the module docstring)."""
    read, named, pairs = [], [], []
    for s in _sentences(text):
        sites = _sites(s)
        read.append((s, [x for x in sites if not x.graft], _plan_words(s)))
        pairs += [(x, p) for x, p in _attach(s, sites, _grades(s)) if not x.graft]
    lesions = {(seg, p) for x, p in pairs for seg in x.segments}
    lesions |= {(_resolve(x, lesions, p), p) for x, p in pairs if not x.segments}   # vessels named alone
    ordered = tuple(sorted(lesions, key=lambda l: (SEGMENTS.index(l[0]), -l[1])))
    arteries = {ARTERY_OF_VESSEL[x.vessel] for _, sites, _ in read for x in sites}
    arteries |= {a for a, pattern in W.ARTERY_WORDS.items() if any(pattern.search(s) for s, _, _ in read)}
    t = _normalise(text)
    dominance = next((d for d, pattern in W.DOMINANCE if pattern.search(t)), "")
    stated = {p for _, _, words in read for _, _, p in words}
    plan = next((p for p, _ in W.PLAN_TERMS if p in stated), "")
    return Findings(laterality=tuple(a for a in ARTERIES if a in arteries), dominance=dominance, lesions=ordered,
                    plan=plan, culprit_segment=_culprit(read, list(ordered)) if plan == "PCI" else "")


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
