"""Smoke stand-ins of the pretrained parts: a Gemma-family LM and two SigLIP models.

A LoRA adapter on a random model learns little, so the smoke profile first pretrains small parts:
- the language model (``Gemma3ForCausalLM``), next-token loss on the text-only report corpus of
  ``tokenizer.draw_reports`` (its own seeds: no corpus text is seen);
- two ``SiglipModel``s, SigLIP's own sigmoid contrastive loss, on frames of the annotation cohort
  (never a corpus patient: ``annotation_frames`` drops any patient the corpus holds):
  ``siglip`` with generic captions (laterality and view), ``conceptclip`` with concept-rich captions
  (the lesions visible in the frame, as AHA segment and grade). The second is the analogue of a
  medical, concept-aligned encoder such as ConceptCLIP, and notebook 06 reuses it as the VLScore
  embedder (``load_embedder``).

Every part is written with ``save_pretrained`` into ``<root>/<name>-<hash>`` (hash of its config and
data, like the CNN checkpoints) and read back with ``from_pretrained``; a finished folder is reused.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from cag_utils.corpus import lesions_in_view

DONE = "standin.json"   # written last: a folder without it is an unfinished run


def digest(*parts: Any) -> str:
    """sha256 of JSON-able parts and byte arrays (the hash behind every stand-in folder)."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str, ensure_ascii=False).encode())
    return h.hexdigest()


def standin_dir(root: str | Path, name: str, config: dict[str, Any], *data: Any) -> Path:
    """``root / <name>-<12 hex>`` named by the config and the data that change the weights."""
    return Path(root) / f"{name}-{digest(config, *data)[:12]}"


def cached(folder: Path, build: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Run ``build(folder)`` unless the folder holds a finished stand-in; returns its record."""
    marker = folder / DONE
    if marker.is_file():
        return {**json.loads(marker.read_text()), "cached": True}
    folder.mkdir(parents=True, exist_ok=True)
    record = build(folder)
    marker.write_text(json.dumps(record, indent=1))
    return {**record, "cached": False}


# ------------------------------------------------------------------ language model
def lm_config(vocab_size: int, p: dict[str, Any]):
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=vocab_size, hidden_size=p["hidden"], intermediate_size=2 * p["hidden"],
        num_hidden_layers=p["layers"], num_attention_heads=p["heads"], num_key_value_heads=1,
        head_dim=p["hidden"] // p["heads"], max_position_embeddings=p["max_length"], sliding_window=p["max_length"],
        pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=True)


def pretrain_lm(folder: Path, tokenizer, vocab_size: int, texts: list[str], p: dict[str, Any], seed: int) -> dict[str, Any]:
    """Next-token pretraining of a small ``Gemma3ForCausalLM`` on ``texts``; saved to ``folder``.

    ``vocab_size``: of the largest family tokenizer (PaliGemma's adds 1,153 tokens after the trained ones).
    ``p``: hidden, layers, heads, max_length, steps, batch_size, lr. Returns losses per step.
    """
    from transformers import Gemma3ForCausalLM

    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(lm_config(vocab_size, p))
    enc = [[tokenizer.bos_token_id, *tokenizer(t, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
           for t in texts]
    enc = [e for e in enc if len(e) <= p["max_length"]]   # longer texts are left out, not truncated
    opt = torch.optim.AdamW(model.parameters(), lr=p["lr"], weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=p["lr"], total_steps=p["steps"], pct_start=0.1)
    rng = np.random.default_rng(seed)
    losses = []
    model.train()
    for _ in range(p["steps"]):
        batch = [enc[i] for i in rng.choice(len(enc), p["batch_size"], replace=False)]
        width = max(map(len, batch))
        ids = torch.tensor([b + [tokenizer.pad_token_id] * (width - len(b)) for b in batch])
        mask = (torch.arange(width)[None] < torch.tensor([len(b) for b in batch])[:, None]).long()
        loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad()
        losses.append(round(float(loss.detach()), 5))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"kind": "lm", "n_texts": len(enc), "n_left_out": len(texts) - len(enc), "losses": losses,
            "parameters": sum(p.numel() for p in model.parameters())}


# ------------------------------------------------------------------ SigLIP stand-ins
VIEWS = {(True, True): "LAO cranial", (True, False): "LAO caudal", (False, True): "RAO cranial",
         (False, False): "RAO caudal"}
ARTERY = {"LCA": "left coronary", "RCA": "right coronary"}


def view_name(primary: float, secondary: float) -> str:
    """C-arm angles -> 'LAO cranial' etc. (positive primary = LAO, positive secondary = cranial)."""
    if abs(secondary) < 10:
        return "LAO straight" if primary >= 0 else "RAO straight"
    return VIEWS[(primary >= 0, secondary >= 0)]


def generic_caption(row: pd.Series) -> str:
    """SigLIP stand-in: what a generic web caption would say, artery and view."""
    return f"{ARTERY[row['laterality']]} angiogram, {view_name(row['primary_angle'], row['secondary_angle'])} view"


def concept_caption(row: pd.Series) -> str:
    """ConceptCLIP stand-in: the clinical concepts in the frame, lesions as AHA segment and grade."""
    if row["key_frame_category"] == "others":
        return f"{ARTERY[row['laterality']]} artery without contrast"
    shown = lesions_in_view(row["lesions"], row["laterality"])
    findings = f"stenosis {shown.replace(';', ',')}" if shown else "no stenosis"
    return f"{ARTERY[row['laterality']]} angiogram, {findings}"


def annotation_frames(frames: np.ndarray, table: pd.DataFrame, runs: pd.DataFrame, reports: pd.DataFrame,
                      exclude_patients: set[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Annotation-cohort frames with the columns the captions need; patients in ``exclude_patients`` dropped."""
    t = table.reset_index(drop=True).assign(position=lambda d: np.arange(len(d)))
    t = t.merge(runs[["run_id", "primary_angle", "secondary_angle"]], on="run_id", how="left")
    t = t.merge(reports[["exam_id", "lesions"]], on="exam_id", how="left").fillna({"lesions": ""})
    t = t[~t["patient_id"].isin(exclude_patients)].reset_index(drop=True)
    return np.asarray(frames[t["position"].to_numpy()]), t


def siglip_config(vocab_size: int, p: dict[str, Any]):
    from transformers import SiglipConfig

    text = dict(vocab_size=vocab_size, hidden_size=p["hidden"], intermediate_size=2 * p["hidden"],
                num_hidden_layers=2, num_attention_heads=p["heads"], max_position_embeddings=p["caption_length"],
                pad_token_id=0, eos_token_id=1, bos_token_id=2)
    vision = dict(image_size=p["image_size"], patch_size=p["patch_size"], hidden_size=p["hidden"],
                  intermediate_size=2 * p["hidden"], num_hidden_layers=p["layers"], num_attention_heads=p["heads"],
                  num_channels=3)
    return SiglipConfig(text_config=text, vision_config=vision)


def image_processor(p: dict[str, Any]):
    """SigLIP image processor for gray frames: resize to image_size, scale to [-1, 1], 3 channels."""
    from transformers import SiglipImageProcessor

    proc = SiglipImageProcessor(size={"height": p["image_size"], "width": p["image_size"]},
                                image_mean=[0.5] * 3, image_std=[0.5] * 3, do_convert_rgb=True)
    proc.image_seq_length = (p["image_size"] // p["patch_size"]) ** 2   # PaliGemmaProcessor reads it
    return proc


def pixel_tensor(frames: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W) uint8 -> (N, 1, size, size) float in [-1, 1] (bilinear, antialiased); expand to 3 channels late."""
    x = torch.from_numpy(np.asarray(frames, dtype=np.float32))[:, None] / 127.5 - 1
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def train_siglip(folder: Path, tokenizer, frames: np.ndarray, captions: list[str], p: dict[str, Any],
                 seed: int) -> dict[str, Any]:
    """Contrastive (sigmoid) training of a small ``SiglipModel`` on frame-caption pairs; saved to ``folder``
    with its processor (image processor + tokenizer), so ``load_embedder(folder)`` gives it back."""
    from transformers import SiglipModel, SiglipProcessor

    torch.manual_seed(seed)
    model = SiglipModel(siglip_config(len(tokenizer), p))
    pixels = pixel_tensor(frames, p["image_size"])
    ids = tokenizer(captions, padding="max_length", max_length=p["caption_length"], truncation=False,
                    return_tensors="pt")["input_ids"]
    if ids.shape[1] > p["caption_length"]:
        raise ValueError(f"a caption is longer than caption_length={p['caption_length']} tokens")
    opt = torch.optim.AdamW(model.parameters(), lr=p["lr"], weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=p["lr"], total_steps=p["steps"], pct_start=0.1)
    rng = np.random.default_rng(seed)
    losses = []
    model.train()
    for _ in range(p["steps"]):
        idx = torch.from_numpy(rng.choice(len(ids), p["batch_size"], replace=False))
        loss = model(input_ids=ids[idx], pixel_values=pixels[idx].expand(-1, 3, -1, -1), return_loss=True).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad()
        losses.append(round(float(loss.detach()), 5))
    model.save_pretrained(folder)
    SiglipProcessor(image_processor=image_processor(p), tokenizer=tokenizer).save_pretrained(folder)
    return {"kind": "siglip", "n_pairs": len(captions), "n_distinct_captions": len(set(captions)),
            "losses": losses, "parameters": sum(q.numel() for q in model.parameters())}


def load_embedder(folder: str | Path):
    """(SiglipModel, SiglipProcessor) of a stand-in folder: the joint image-text embedder notebook 06 can reuse."""
    from transformers import SiglipModel, SiglipProcessor

    return SiglipModel.from_pretrained(folder).eval(), SiglipProcessor.from_pretrained(folder)
