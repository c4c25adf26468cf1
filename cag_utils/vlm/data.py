"""Prompts, bad-input rules, encoding and collators.

Input: the key frame plus a language-specific prompt that holds the pre-procedure report; target:
the diagnostic and treatment summary in the same language. Languages: ``ja``, ``en`` or ``both``
(every record twice). Templates are profile strings with ``{field}`` slots; a field outside
``PROMPT_FIELDS`` fails before anything is encoded (``check_template``).

Bad input (``make_examples``, ``encode_examples``): a record whose image is missing or unreadable,
whose report or summary is empty in that language, or whose encoded prompt + image tokens + summary
exceeds ``max_length`` tokens is skipped and listed with its ID and the reason. Nothing is truncated.

Encoding, per family:
- PaliGemma: the processor with ``suffix=`` (``<image>``*n ``<bos>`` prompt ``\\n`` summary ``<eos>``);
  it returns ``labels`` (-100 on image and prompt) and ``token_type_ids`` (1 on the suffix);
- Gemma3: ``<bos><start_of_image>`` prompt ``\\n``, expanded by the processor (it adds no BOS), then the
  summary ids and ``<eos>``; ``labels`` -100 outside the summary, ``token_type_ids`` 1 on image tokens.
Training batches are right-padded; generation batches left-padded.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cag_utils.vlm.collate import Collator  # noqa: F401  (re-exported; a torch-only module)

LANGUAGES = ("ja", "en")
PROMPT_FIELDS = ("pre_procedure_report", "laterality_pred")


@dataclass(frozen=True)
class Example:
    record_id: str        # frame_uid (pseudonymous)
    patient_id: str
    split: str
    language: str
    prompt: str
    reference: str
    image_path: str


def languages(setting: str) -> tuple[str, ...]:
    if setting == "both":
        return LANGUAGES
    if setting in LANGUAGES:
        return (setting,)
    raise ValueError(f"vlm_languages must be 'ja', 'en' or 'both', got {setting!r}")


def check_template(template: str, name: str = "prompt") -> None:
    """Fail on a ``{field}`` that is not in ``PROMPT_FIELDS`` (before any training starts)."""
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    unknown = sorted(set(fields) - set(PROMPT_FIELDS))
    if unknown:
        raise ValueError(f"{name} template has unknown field(s) {unknown}; known: {list(PROMPT_FIELDS)}")


def make_examples(records: pd.DataFrame, corpus_dir: Path, langs: tuple[str, ...],
                  templates: dict[str, str]) -> tuple[list[Example], pd.DataFrame]:
    """(examples, skipped) from corpus records (``metadata.jsonl`` rows with ``split``)."""
    for lang in langs:
        check_template(templates[lang], f"vlm_prompt_{lang}")
    out, skipped = [], []
    for _, r in records.iterrows():
        path = Path(corpus_dir) / r["split"] / r["file_name"]
        for lang in langs:
            pre, summary = r.get(f"pre_procedure_report_{lang}"), r.get(f"treatment_summary_{lang}")
            reason = ("missing image" if not path.is_file() else
                      "empty pre-procedure report" if not isinstance(pre, str) or not pre.strip() else
                      "empty summary" if not isinstance(summary, str) or not summary.strip() else None)
            if reason:
                skipped.append({"record_id": r["frame_uid"], "split": r["split"], "language": lang, "reason": reason})
                continue
            prompt = templates[lang].format(pre_procedure_report=pre, laterality_pred=r.get("laterality_pred", ""))
            out.append(Example(r["frame_uid"], r["patient_id"], r["split"], lang, prompt, summary, str(path)))
    return out, pd.DataFrame(skipped, columns=["record_id", "split", "language", "reason"])


def load_image(path: str, blank_value: int | None = None):
    """The frame as an RGB PIL image; ``blank_value``: a constant frame of the same size instead."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L")
        if blank_value is not None:
            im = Image.new("L", im.size, int(blank_value))
        return im.convert("RGB")


def _prompt_text(arch: str, processor, prompt: str) -> str:
    tok = processor.tokenizer
    # PaliGemma's processor inserts <bos> after the image tokens and "\n" after the prompt itself
    return f"<image>{prompt}" if arch == "paligemma" else f"{tok.bos_token}{tok.boi_token}{prompt}\n"


def encode(arch: str, processor, ex: Example, with_target: bool, blank_value: int | None = None,
           text_only: bool = False) -> dict[str, torch.Tensor]:
    """One example as 1-D tensors (+ pixel_values (3, H, W)); with_target adds the summary and labels.

    ``text_only`` (Gemma3 only): ``<bos>`` prompt ``\\n`` summary, no image token and no pixels, the input
    of the text-only control (``blank_value`` then changes nothing: there is no image to blank).
    """
    if text_only:
        if arch != "gemma3":
            raise ValueError("the text-only control is a Gemma3 language model; got architecture " + repr(arch))
        return _encode_text_only(processor.tokenizer, ex, with_target)
    image = load_image(ex.image_path, blank_value)
    text = _prompt_text(arch, processor, ex.prompt)
    if arch == "paligemma":
        kw = {"suffix": ex.reference} if with_target else {}
        enc = processor(text=text, images=image, return_tensors="pt", **kw)
        out = {k: enc[k][0] for k in ("input_ids", "attention_mask", "token_type_ids")}
        if with_target:
            out["labels"] = enc["labels"][0]
    else:
        enc = processor(text=text, images=image, return_tensors="pt")
        ids, tt = enc["input_ids"][0], enc["token_type_ids"][0]
        labels = torch.full_like(ids, -100)
        if with_target:
            tok = processor.tokenizer
            target = torch.tensor(tok(ex.reference, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
            ids, tt = torch.cat([ids, target]), torch.cat([tt, torch.zeros_like(target)])
            labels = torch.cat([labels, target])
        out = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": tt}
        if with_target:
            out["labels"] = labels
    out["pixel_values"] = enc["pixel_values"][0]
    return out


def _encode_text_only(tok, ex: Example, with_target: bool) -> dict[str, torch.Tensor]:
    ids = [tok.bos_token_id, *tok(f"{ex.prompt}\n", add_special_tokens=False)["input_ids"]]
    labels = [-100] * len(ids)
    if with_target:
        target = tok(ex.reference, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids, labels = ids + target, labels + target
    ids_t = torch.tensor(ids)
    out = {"input_ids": ids_t, "attention_mask": torch.ones_like(ids_t), "token_type_ids": torch.zeros_like(ids_t)}
    if with_target:
        out["labels"] = torch.tensor(labels)
    return out


def encode_examples(arch: str, processor, examples: list[Example], max_length: int, with_target: bool = True,
                    blank_value: int | None = None, text_only: bool = False
                    ) -> tuple[list[dict[str, torch.Tensor]], list[Example], pd.DataFrame]:
    """(encoded, kept examples, skipped) with the over-long rule applied to the full (target) length."""
    encoded, kept, skipped = [], [], []
    for ex in examples:
        full = encode(arch, processor, ex, True, blank_value, text_only)
        if len(full["input_ids"]) > max_length:
            skipped.append({"record_id": ex.record_id, "split": ex.split, "language": ex.language,
                            "reason": f"longer than the context: {len(full['input_ids'])} > {max_length} tokens"})
            continue
        encoded.append(full if with_target else encode(arch, processor, ex, False, blank_value, text_only))
        kept.append(ex)
    return encoded, kept, pd.DataFrame(skipped, columns=["record_id", "split", "language", "reason"])


def example_table(examples: list[Example]) -> pd.DataFrame:
    return pd.DataFrame([e.__dict__ for e in examples])


def length_stats(encoded: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    n = np.array([len(e["input_ids"]) for e in encoded])
    t = np.array([int((e["labels"] != -100).sum()) for e in encoded if "labels" in e])
    return {"mean_tokens": float(n.mean()) if len(n) else 0.0, "max_tokens": int(n.max()) if len(n) else 0,
            "mean_target_tokens": float(t.mean()) if len(t) else 0.0}
