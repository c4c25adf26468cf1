"""BLEU and chrF with sacrebleu: corpus scores, signatures, patient intervals, paired significance.

- Tokenizers: ``ja-mecab`` (MeCab + IPAdic from sacrebleu's ``ja`` extra, offline) for Japanese,
  ``13a`` for English. chrF works on characters and needs none. Should MeCab or its dictionary
  be missing, Japanese BLEU falls back to ``char`` and the reason is returned (``tokenizer_for``).
- Both sides are normalised the same way first (``normalise``): NFKC, because the models'
  tokenizers normalise NFKC (full-width ``：（％`` come back half-width) and the references do
  not; and newlines become spaces, since one report is one sacrebleu segment.
- The estimate IS sacrebleu's ``corpus_score`` on the normalised texts. BLEU's and chrF's
  sufficient statistics (n-gram matches, totals, lengths) add up over segments, so the 95 %
  interval resamples patients and recomputes the score from summed statistics with sacrebleu's
  own ``_compute_score_from_stats`` (``cag_utils.intervals.patient_bootstrap``).
- Paired significance: sacrebleu's paired bootstrap (``PairedTest``, test ``bs``), which resamples
  segments, as its authors define it.
"""
from __future__ import annotations

import os
import unicodedata
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import pandas as pd
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.metrics.base import Metric

from cag_utils.intervals import patient_bootstrap

TOKENIZERS = {"ja": "ja-mecab", "en": "13a"}
NORMALISATION = "NFKC, whitespace (newlines included) collapsed to single spaces, both sides"
METRICS = ("bleu", "chrf")

__all__ = ["METRICS", "NORMALISATION", "TOKENIZERS", "corpus_metric", "make_metric", "normalise",
           "paired_significance", "segment_statistics", "sentence_scores", "tokenizer_for"]


def normalise(text: str) -> str:
    """NFKC and single spaces: the form both hypotheses and references are scored in."""
    return " ".join(unicodedata.normalize("NFKC", text or "").split())


def tokenizer_for(language: str) -> tuple[str, str]:
    """(sacrebleu tokenizer name, note): ``ja-mecab`` / ``13a``, or ``char`` for Japanese without MeCab."""
    name = TOKENIZERS[language]
    if name != "ja-mecab":
        return name, ""
    try:
        from sacrebleu.tokenizers.tokenizer_ja_mecab import TokenizerJaMecab

        TokenizerJaMecab()("動作確認")
        return name, ""
    except Exception as err:  # ImportError, or MeCab's RuntimeError without a dictionary
        return "char", f"ja-mecab unavailable ({type(err).__name__}: {err}); character tokenisation instead"


def make_metric(name: str, language: str) -> Metric:
    """A fresh sacrebleu metric with this compendium's settings (sacrebleu's defaults otherwise)."""
    if name == "bleu":
        return BLEU(tokenize=tokenizer_for(language)[0])
    if name == "chrf":
        return CHRF()
    raise ValueError(f"unknown metric {name!r}; expected one of {METRICS}")


def sentence_scores(name: str, hypotheses: Sequence[str], references: Sequence[str], language: str) -> np.ndarray:
    """Per-segment BLEU or chrF (0-100) on the normalised texts: sacrebleu's ``sentence_score``; BLEU with
    ``effective_order=True``, as sacrebleu advises for single sentences."""
    hyps, refs = _check(hypotheses, references)
    metric = BLEU(tokenize=tokenizer_for(language)[0], effective_order=True) if name == "bleu" else make_metric(name, language)
    return np.array([metric.sentence_score(h, [r]).score for h, r in zip(hyps, refs)], dtype=float)


def _check(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[list[str], list[str]]:
    if len(hypotheses) != len(references) or not len(hypotheses):
        raise ValueError(f"need as many hypotheses as references, at least one ({len(hypotheses)} vs {len(references)})")
    return [normalise(h) for h in hypotheses], [normalise(r) for r in references]


def segment_statistics(metric: Metric, hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """(n_segments, k) additive sufficient statistics, one row per (normalised) segment."""
    hyps, refs = _check(hypotheses, references)
    return np.asarray(metric._extract_corpus_statistics(hyps, [refs]), dtype=np.int64)


def _score_from_stats(metric: Metric):
    """Vectorised wrapper of sacrebleu's own score-from-statistics, for the bootstrap."""
    def score(summed: np.ndarray) -> np.ndarray:
        flat = summed.reshape(-1, summed.shape[-1])
        out = [metric._compute_score_from_stats([int(v) for v in row]).score for row in flat]
        return np.asarray(out, dtype=float).reshape(summed.shape[:-1])
    return score


def corpus_metric(name: str, hypotheses: Sequence[str], references: Sequence[str], patients: Sequence[Any],
                  language: str, *, seed: int) -> dict[str, Any]:
    """sacrebleu corpus score with a 95 % patient-bootstrap interval and its signature.

    Returns {"estimate", "ci_low", "ci_high", "n_patients", "signature", "tokenizer_note", "normalisation"};
    ``estimate == make_metric(name, language).corpus_score(normalised hyps, [normalised refs]).score``.
    """
    if len(patients) != len(hypotheses):
        raise ValueError(f"{len(patients)} patient IDs for {len(hypotheses)} segments")
    metric = make_metric(name, language)
    stats = segment_statistics(metric, hypotheses, references)
    per_patient = pd.DataFrame(stats).groupby(np.asarray(patients), sort=True).sum().to_numpy()
    out = patient_bootstrap(per_patient, _score_from_stats(metric), seed=seed)
    hyps, refs = _check(hypotheses, references)
    out["estimate"] = float(metric.corpus_score(hyps, [refs]).score)
    out["signature"] = metric.get_signature().format()
    out["tokenizer_note"] = tokenizer_for(language)[1]
    out["normalisation"] = NORMALISATION
    return out


@contextmanager
def _sacrebleu_seed(seed: int) -> Iterator[None]:
    """PairedTest reads its seed from $SACREBLEU_SEED only."""
    old = os.environ.get("SACREBLEU_SEED")
    os.environ["SACREBLEU_SEED"] = str(seed)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SACREBLEU_SEED", None)
        else:
            os.environ["SACREBLEU_SEED"] = old


def paired_significance(systems: dict[str, Sequence[str]], references: Sequence[str], baseline: str,
                        language: str, *, seed: int, n_samples: int = 1000) -> dict[str, Any]:
    """sacrebleu's paired bootstrap of every system against ``baseline`` (BLEU and chrF).

    Returns {"signatures": {metric: str}, "systems": {name: {metric: {score, p_value, mean, ci}}}};
    ``ci`` is sacrebleu's half-width of its 95 % interval; the baseline has no p-value. sacrebleu counts
    resampled differences strictly above the observed one, so a system whose output equals the baseline's
    gets its smallest p-value, 1 / (n_samples + 1); ``identical_to_baseline`` flags that case.
    """
    from sacrebleu.significance import PairedTest

    if seed == 0:
        raise ValueError("sacrebleu treats seed 0 as 'unseeded'; use another seed")
    if baseline not in systems:
        raise KeyError(f"baseline {baseline!r} not among {sorted(systems)}")
    refs = [normalise(r) for r in references]
    names = [baseline, *[n for n in systems if n != baseline]]
    named = [(n, _check(systems[n], references)[0]) for n in names]
    metrics = {m: make_metric(m, language) for m in METRICS}
    with _sacrebleu_seed(seed):
        signatures, scores = PairedTest(named, metrics, [refs], test_type="bs", n_samples=n_samples)()
    out: dict[str, Any] = {"signatures": {k: v.format() for k, v in signatures.items()}, "systems": {}}

    def plain(r: Any) -> dict[str, float | None]:
        return {k: None if getattr(r, k) is None else float(getattr(r, k)) for k in ("score", "p_value", "mean", "ci")}

    for i, name in enumerate(scores["System"]):
        same = name != baseline and named[i][1] == named[0][1]
        out["systems"][name] = {"identical_to_baseline": same} | {m: plain(rs[i]) for m, rs in scores.items()
                                                                  if m != "System"}
    return out
