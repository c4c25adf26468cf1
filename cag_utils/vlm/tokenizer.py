"""The smoke tokenizer: byte-pair encoding (``tokenizers``) on a text-only report corpus, both languages.

The corpus is drawn from the report generator (``cag_utils.synth.reports``) with its own seeds,
so no text of the image-report corpus (and no test patient) is seen. It stands in for Gemma's
pretrained SentencePiece vocabulary. The tokenizer carries the special tokens both processors need:
``<pad> <eos> <bos> <unk>``, PaliGemma's ``<image>``, and Gemma3's ``<start_of_image>``,
``<end_of_image>`` and ``<image_soft_token>``; the newline is in its alphabet because both
processors put newlines around the image. BPE rather than Unigram: on this template text a
Unigram model of the same size spends its pieces on long Japanese phrases and splits English
words into letters (summaries 2-3x longer in tokens), and sequence length is what costs time.
Digits are single tokens so that segment numbers and grades are spelled the same everywhere.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from cag_utils.synth.anatomy import sample_dominance, sample_lesions
from cag_utils.synth.reports import make_reports, sample_clinical_facts

SPECIAL = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"}
GEMMA3_TOKENS = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
PALIGEMMA_IMAGE_TOKEN = "<image>"
# Seed stream of the text corpus: never the cohort generator's streams.
TEXT_STREAM = 0x7E87


def draw_reports(n: int, seed: int) -> list[dict[str, str]]:
    """``n`` generator exams (reports only, no image), from the generator's own sampling functions."""
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, TEXT_STREAM, i])
        dominance = sample_dominance(rng)
        facts = sample_clinical_facts(rng, sample_lesions(rng, dominance), dominance)
        out.append(make_reports(facts, rng))
    return out


def corpus_texts(reports: list[dict[str, str]], templates: dict[str, str] | None = None) -> list[str | tuple[str, str]]:
    """Each report and summary in both languages, and report + summary joined. With ``templates``
    (language -> prompt template with ``{pre_procedure_report}``) also the request in the prompt's shape and
    its answer, as a pair ``(prompt + "\\n", summary)`` that ``standins.encode_texts`` tokenizes part by part,
    exactly as the VLM encoders do (``vlm.data.encode``): as an instruction-tuned model has seen such
    requests answered. (Tokenized as one string, BPE merges across the boundary, e.g. ``plan:\\nRight``,
    and the model never learns to start an answer that the encoders tokenize on its own.)"""
    texts: list[str | tuple[str, str]] = []
    for r in reports:
        for lang in ("ja", "en"):
            pre, summary = r[f"pre_procedure_report_{lang}"], r[f"treatment_summary_{lang}"]
            texts += [pre, summary, f"{pre}\n\n{summary}"]
            if templates:
                texts.append((templates[lang].format(pre_procedure_report=pre, laterality_pred="") + "\n", summary))
    return texts


def plain(texts: list[str | tuple[str, ...]]) -> list[str]:
    """The texts as strings (pairs joined), e.g. to train the tokenizer on."""
    return ["".join(t) if isinstance(t, tuple) else t for t in texts]


def train_tokenizer(texts: list[str], vocab_size: int):
    """A ``PreTrainedTokenizerFast`` (BPE, NFKC, Metaspace, single digits) with the special tokens of both families."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIAL.values()) + [PALIGEMMA_IMAGE_TOKEN, *GEMMA3_TOKENS.values()]
    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Digits(individual_digits=True)])
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=["\n"],
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)


def same_vocabulary(a: Path, b: Path) -> bool:
    """Whether the tokenizers saved in folders ``a`` and ``b`` have the same BPE vocabulary and merges
    (what makes token ids mean the same; ``tokenizer.json`` of ``save_pretrained``)."""
    model = lambda d: json.loads((Path(d) / "tokenizer.json").read_text())["model"]   # noqa: E731
    mine, theirs = model(a), model(b)
    return (mine["vocab"], mine["merges"]) == (theirs["vocab"], theirs["merges"])


def family_tokenizer(base, architecture: str):
    """The tokenizer a family's processor wants, over the same vocabulary (same ids for every trained token).

    Gemma3's exposes ``boi_token``, ``eoi_token`` and ``image_token``; PaliGemma's must not have an
    ``image_token`` attribute (its processor would take Gemma3's), and its processor then appends
    1,152 ``<loc>``/``<seg>`` tokens. The shared LM is sized for the larger (PaliGemma) vocabulary.
    """
    from transformers import PreTrainedTokenizerFast

    obj = copy.deepcopy(base.backend_tokenizer)
    if architecture == "gemma3":
        return PreTrainedTokenizerFast(tokenizer_object=obj, **SPECIAL, extra_special_tokens=GEMMA3_TOKENS)
    return PreTrainedTokenizerFast(tokenizer_object=obj, **SPECIAL)
