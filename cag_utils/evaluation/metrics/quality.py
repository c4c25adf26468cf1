"""Output quality: is a generated summary well-formed, whatever its content?

Per text (``True`` is good for the language and the plan, bad for the repetitions):
- ``script_language``: "ja", "en", or "" when the text has no letters. After NFKC (full-width Latin
  becomes Latin, half-width katakana full-width) Japanese characters (hiragana, katakana, CJK
  ideographs, 々) and Latin letters are counted; the text is "ja" when Japanese characters are at
  least ``JA_SHARE`` (0.3) of the two together. Japanese summaries carry Latin abbreviations (LAD,
  PCI, CABG, 4PD) but their Japanese share stays well above it (>= 0.55 on 6,000 summaries of the
  report generator, >= 0.67 on the committed references; 0 for English ones), and an English text
  quoting a kanji or two stays below it.
- ``duplicate_lesion_segment``: one AHA segment listed twice as a lesion ``#<segment> <percent>%``
  (``findings.LESION`` on the NFKC text, so ``＃６　９０％`` counts). A culprit or staged mention
  without a percent (``#6を責任病変``, ``PCI to #6``, ``残存する#11``) is no listing.
- ``repeated_ngram``: a word ``n``-gram (``N_GRAM`` = 4) occurring twice. Words: NFKC, then MeCab
  (IPAdic, sacrebleu's ``ja-mecab`` tokenizer) for a text whose script is Japanese, whitespace words
  otherwise; each word is case-folded and stripped of surrounding punctuation and symbols, and words
  left empty (pure punctuation or symbols: ``、``, ``%``, ``（``, ``:``) are dropped, so ``stenosis,``
  and ``stenosis`` are one word and n-grams run across lines. Refinement: a lesion listing
  ``#<segment> <percent>%`` is one word (``#6 99%``). With segment and percent as separate words, a
  correct Japanese summary listing two subtotal occlusions, ``#6 99%（亜完全閉塞）、#7 99%（亜完全閉塞）``,
  repeats ``99 亜 完全 閉塞`` (33 of 6,000 summaries of the report generator); as one word, the
  4-grams of different lesions differ. On all references of ``results/05_finetune_predictions.jsonl.gz``
  and on 6,000 generator summaries neither repetition occurs, while the looping outputs of an
  undertrained smoke run (``tests/test_metrics_quality.py``, ``LOOPS``) are caught.
- ``has_plan``: ``parse_summary(text).plan != ""``.

``output_quality`` gives the share of outputs with each property per (family, variant, language),
plus language "all", each with a 95 % patient-bootstrap interval (``cag_utils.intervals``).
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from cag_utils.evaluation.metrics.findings import LESION, parse_summary
from cag_utils.evaluation.metrics.text import normalise
from cag_utils.intervals import patient_bootstrap, ratio_by_patient, ratio_of_sums

JA_SHARE = 0.3
N_GRAM = 4
SHARES = ("in_language", "repeated_lesion", "repeated_ngram", "repeated_any", "has_plan")
GROUP = ("family", "variant", "language")

# Hiragana, katakana (+ phonetic extensions; NFKC has made half-width katakana full-width), 々, CJK ideographs.
_JAPANESE = re.compile("[\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\u3005\u3400-\u4dbf\u4e00-\u9fff"
                       "\uf900-\ufaff\U00020000-\U0002fa1f]")

__all__ = ["GROUP", "JA_SHARE", "N_GRAM", "SHARES", "duplicate_lesion_segment", "has_plan", "output_quality",
           "repeated_ngram", "script_language", "text_quality", "words"]


def _is_latin(ch: str) -> bool:
    return ch.isalpha() and unicodedata.name(ch, "").startswith("LATIN")


def script_language(text: str) -> str:
    """The language of a text's script: "ja" when Japanese characters are >= ``JA_SHARE`` of Japanese +
    Latin letters (after NFKC), "en" when there are letters otherwise, "" when there are none."""
    t = unicodedata.normalize("NFKC", text or "")
    ja = len(_JAPANESE.findall(t))
    latin = sum(_is_latin(ch) for ch in t)
    if ja + latin == 0:
        return ""
    return "ja" if ja / (ja + latin) >= JA_SHARE else "en"


def duplicate_lesion_segment(text: str) -> bool:
    """Whether one segment is listed twice as ``#<segment> <percent>%`` (any percents)."""
    segments = [s for s, _ in LESION.findall(normalise(text))]
    return len(segments) != len(set(segments))


@lru_cache(maxsize=1)
def _mecab() -> Any:
    from sacrebleu.tokenizers.tokenizer_ja_mecab import TokenizerJaMecab  # MeCab + IPAdic, offline

    return TokenizerJaMecab()


def _strip(word: str) -> str:
    start, end = 0, len(word)
    while start < end and unicodedata.category(word[start])[0] in "PS":
        start += 1
    while end > start and unicodedata.category(word[end - 1])[0] in "PS":
        end -= 1
    return word[start:end].casefold()


def words(text: str) -> list[str]:
    """The words of a text for ``repeated_ngram`` (see the module docstring); a lesion listing
    ``#<segment> <percent>%`` is one word, ``#6 99%``."""
    t = normalise(text)
    split = _mecab() if script_language(t) == "ja" else (lambda s: s)
    out: list[str] = []
    start = 0
    for m in [*LESION.finditer(t), None]:
        piece = t[start:m.start() if m else len(t)]
        out += [w for w in map(_strip, split(piece).split()) if w]
        if m:
            out.append(f"#{m[1]} {int(m[2])}%")
            start = m.end()
    return out


def repeated_ngram(text: str, n: int = N_GRAM) -> bool:
    """Whether some ``n`` consecutive words occur twice (overlapping occurrences count)."""
    w = words(text)
    grams = Counter(tuple(w[i:i + n]) for i in range(len(w) - n + 1))
    return any(c > 1 for c in grams.values())


def has_plan(text: str) -> bool:
    """Whether the summary states a treatment plan the findings parser reads."""
    return parse_summary(text).plan != ""


def text_quality(text: str) -> dict[str, Any]:
    """Every per-text check of one text (``repeated_any``: either repetition)."""
    lesion, ngram = duplicate_lesion_segment(text), repeated_ngram(text)
    return {"script": script_language(text), "repeated_lesion": lesion, "repeated_ngram": ngram,
            "repeated_any": lesion or ngram, "has_plan": has_plan(text)}


def output_quality(predictions: pd.DataFrame, *, seed: int) -> pd.DataFrame:
    """Shares of well-formed outputs, one row per (family, variant, language) and per (family, variant)
    with language "all": for each of ``SHARES`` the estimate and its 95 % patient-bootstrap interval
    (``<share>_estimate``, ``<share>_ci_low``, ``<share>_ci_high``), plus ``n`` outputs and ``n_patients``.
    ``in_language``: the output's script is the prompt's language (column ``language``).
    Each distinct output is checked once."""
    texts = predictions["output"].fillna("").astype(str)
    checks = pd.DataFrame([text_quality(t) for t in texts.unique()], index=texts.unique())
    flags = checks.loc[texts.to_numpy()].reset_index(drop=True)
    flags["in_language"] = flags["script"].to_numpy() == predictions["language"].to_numpy()
    flags[list(GROUP)] = predictions[list(GROUP)].to_numpy()
    flags["patient_id"] = predictions["patient_id"].to_numpy()
    both = pd.concat([flags, flags.assign(language="all")], ignore_index=True)
    rows = []
    for key, g in both.groupby(list(GROUP), sort=True):
        row: dict[str, Any] = dict(zip(GROUP, key))
        for share in SHARES:
            x = g[share].to_numpy(dtype=float)
            ci = patient_bootstrap(ratio_by_patient(x, np.ones_like(x), g["patient_id"]), ratio_of_sums, seed=seed)
            row.update({f"{share}_{k}": ci[k] for k in ("estimate", "ci_low", "ci_high")})
        row.update(n=len(g), n_patients=g["patient_id"].nunique())
        rows.append(row)
    return pd.DataFrame(rows)
