"""Smoke stand-ins of the pretrained parts: a Gemma-family LM and two SigLIP models.

A LoRA adapter on a random model learns little, so the smoke profile pretrains small parts once,
outside the reproduce path (``make standins``, ``cag_utils.vlm.make_standins``), the way a real
compendium downloads PaliGemma rather than training it. The weights are committed under
``models/standins/<profile>/`` with their provenance and read back with ``from_pretrained``:
- the language model (``Gemma3ForCausalLM``), next-token loss on a text-only report corpus drawn
  from the report generator with its own seeds (``tokenizer.draw_reports``: no corpus text is
  seen), in both languages, including report-then-summary texts in the prompt's shape, so that
  before any LoRA it continues a Japanese report with a Japanese summary and an English one with
  an English summary;
- two ``SiglipModel``s on frames of an auxiliary synthetic cohort (own seed stream, patients
  disjoint from every split), 16-px patches: ``siglip`` with generic captions (artery and view),
  ``conceptclip`` with concept-rich captions (artery, view and the lesions of the shown artery as
  AHA segment and grade), the analogue of a medical, concept-aligned encoder such as ConceptCLIP.
  Notebook 06's VLScore embedder is a third SigLIP, trained on whole summaries (``vlm.embedder_standin``).

SigLIP's own loss counts every other caption of a batch as a negative; with a few dozen distinct
captions, most pairs of a batch share one, and the loss stalls. ``sigmoid_loss`` treats every pair
with the same caption as a positive (a multi-positive sigmoid loss).

Every part trains until its held-out loss plateaus (``train_loop``: evaluation every
``eval_every`` steps, stop after ``patience`` evaluations without a relative gain of
``min_delta``, or at ``max_steps``), and its record keeps the per-step losses and the held-out
curve, which ``tests/test_standins.py`` re-creates for the first steps.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from cag_utils.corpus.corpus import lesions_in_view
from cag_utils.vlm import concepts

DONE = "standin.json"   # written last: a folder without it is an unfinished run


def digest(*parts: Any) -> str:
    """sha256 of JSON-able parts and byte arrays (the hash behind every cached folder)."""
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
    """Run ``build(folder)`` unless the folder holds a finished, intact part; returns its record.

    The folder is sealed (``sealed.seal_folder``) after its record; a finished folder whose files fail
    the check (``sealed.folder_problem``) is removed and built again, logged on ``cag_utils.cache``."""
    from cag_utils.run.cachecheck import log
    from cag_utils.vlm import sealed

    marker = folder / DONE
    if marker.is_file():
        problem = sealed.folder_problem(folder)
        if problem is None:
            return {**json.loads(marker.read_text()), "cached": True}
        log.warning("cached model %s is damaged (%s): building it again", sealed.shown(folder), problem)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = build(folder)
    marker.write_text(json.dumps(record, indent=1, ensure_ascii=False))
    sealed.seal_folder(folder)
    return {**record, "cached": False}


# ------------------------------------------------------------------ one training loop for every part
def train_loop(model: torch.nn.Module, train_loss: Callable[[int], torch.Tensor], val_loss: Callable[[], float],
               p: dict[str, Any], seed: int, progress: str | None = None) -> dict[str, Any]:
    """AdamW with a linear warm-up and cosine decay over ``max_steps``; stops at the held-out plateau.

    ``train_loss(step)``: the loss of the step's batch; ``val_loss()``: the held-out loss (no grad).
    ``p``: lr, weight_decay, max_steps, warmup_steps, eval_every, patience, min_delta, and optionally
    ``stop_after`` (end after that many steps, the schedule unchanged: a test's first steps). Returns
    {"losses" (per step, 5 decimals), "val" ([step, loss] per evaluation), "steps", "stopped"}.
    """
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    torch.manual_seed(seed)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=p["lr"],
                            weight_decay=p["weight_decay"])
    sched = get_cosine_schedule_with_warmup(opt, p["warmup_steps"], p["max_steps"])
    losses, val, best, since = [], [], float("inf"), 0
    stopped = "max_steps"
    last = min(p["max_steps"], p.get("stop_after") or p["max_steps"])
    bar = tqdm(total=p["max_steps"], desc=progress, disable=progress is None, mininterval=5)
    for step in range(1, last + 1):
        model.train()
        loss = train_loss(step)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad()
        losses.append(round(float(loss.detach()), 5))
        bar.update()
        if step % p["eval_every"] == 0 or step == last:
            model.eval()
            with torch.no_grad():
                v = float(val_loss())
            val.append([step, round(v, 5)])
            bar.set_postfix(val=f"{v:.4f}")
            if v < best * (1 - p["min_delta"]):
                best, since = v, 0
            else:
                since += 1
            if since >= p["patience"]:
                stopped = "plateau" if step < p["max_steps"] else "max_steps"   # at the cap the cap stopped it
                break
    bar.close()
    return {"losses": losses, "val": val, "steps": len(losses), "stopped": stopped}


# ------------------------------------------------------------------ language model
def lm_config(vocab_size: int, p: dict[str, Any]):
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=vocab_size, hidden_size=p["hidden"], intermediate_size=2 * p["hidden"],
        num_hidden_layers=p["layers"], num_attention_heads=p["heads"], num_key_value_heads=1,
        head_dim=p["hidden"] // p["heads"], max_position_embeddings=p["max_length"], sliding_window=p["max_length"],
        pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=True)


def encode_texts(tokenizer, texts: list, max_length: int) -> list[list[int]]:
    """``<bos> text <eos>`` ids; a tuple of parts is tokenized part by part and concatenated (a prompt and its
    answer, as the VLM encoders tokenize them). Longer texts are left out, never truncated."""
    def ids(t) -> list[int]:
        parts = t if isinstance(t, tuple) else (t,)
        return [i for part in parts for i in tokenizer(part, add_special_tokens=False)["input_ids"]]

    enc = [[tokenizer.bos_token_id, *ids(t), tokenizer.eos_token_id] for t in texts]
    return [e for e in enc if len(e) <= max_length]


def lm_batch_loss(model, batch: list[list[int]], pad: int) -> torch.Tensor:
    """Mean next-token cross-entropy of right-padded sequences."""
    width = max(map(len, batch))
    ids = torch.tensor([b + [pad] * (width - len(b)) for b in batch])
    mask = (torch.arange(width)[None] < torch.tensor([len(b) for b in batch])[:, None]).long()
    return model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss


def packed_batches(enc: list[list[int]], rows: int, length: int, rng: np.random.Generator):
    """Endless (rows, length) batches of the texts concatenated in a fresh random order each pass (packing:
    no padding, so every position trains; ``<bos>``/``<eos>`` mark where one text ends and the next begins)."""
    stream: list[int] = []
    while True:
        for i in rng.permutation(len(enc)):
            stream.extend(enc[i])
            while len(stream) >= rows * length:
                yield torch.tensor(stream[:rows * length]).view(rows, length)
                stream = stream[rows * length:]


def pretrain_lm(folder: Path, tokenizer, vocab_size: int, texts: list[str], val_texts: list[str], p: dict[str, Any],
                seed: int, progress: bool = False) -> dict[str, Any]:
    """Next-token pretraining of a small ``Gemma3ForCausalLM``; saved to ``folder`` with the tokenizer.

    ``vocab_size``: of the largest family tokenizer (PaliGemma's adds 1,153 tokens after the trained ones).
    ``p``: hidden, layers, heads, max_length, batch_size (rows of ``pack_length`` packed tokens) and the
    ``train_loop`` keys. The held-out loss is the mean over held-out texts, each on its own (padded).
    """
    from transformers import Gemma3ForCausalLM

    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(lm_config(vocab_size, p))
    enc, val = encode_texts(tokenizer, texts, p["max_length"]), encode_texts(tokenizer, val_texts, p["max_length"])
    batches = packed_batches(enc, p["batch_size"], p["pack_length"], np.random.default_rng(seed))
    pad = tokenizer.pad_token_id

    def train_loss(step: int) -> torch.Tensor:
        ids = next(batches)
        return model(input_ids=ids, labels=ids).loss

    def val_loss() -> float:
        return float(np.mean([float(lm_batch_loss(model, val[i:i + 64], pad)) for i in range(0, len(val), 64)]))

    record = train_loop(model, train_loss, val_loss, p, seed, "LM" if progress else None)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"kind": "lm", "n_texts": len(enc), "n_left_out": len(texts) - len(enc), "n_val_texts": len(val),
            "n_tokens": int(sum(map(len, enc))), **record, "parameters": sum(q.numel() for q in model.parameters())}


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
    """ConceptCLIP stand-in: the generic caption and the clinical concepts of the frame, lesions of the
    shown artery as AHA segment and grade (none when the frame shows no contrast)."""
    if row["key_frame_category"] == "others":
        return f"{ARTERY[row['laterality']]} artery without contrast"
    shown = lesions_in_view(row["lesions"], row["laterality"])
    findings = f"stenosis {shown.replace(';', ',')}" if shown else "no stenosis"
    return f"{generic_caption(row)}, {findings}"


def annotation_frames(frames: np.ndarray, table: pd.DataFrame, runs: pd.DataFrame, reports: pd.DataFrame,
                      exclude_patients: set[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Frames with the columns the captions need (run angles, exam lesions); patients in ``exclude_patients`` dropped."""
    t = table.reset_index(drop=True).assign(position=lambda d: np.arange(len(d)))
    t = t.drop(columns=[c for c in ("primary_angle", "secondary_angle", "lesions") if c in t])
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
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def sigmoid_loss(logits_per_text: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss with every pair of equal captions (same ``groups`` id) a positive."""
    labels = 2.0 * (groups[:, None] == groups[None, :]).float() - 1.0
    return -torch.nn.functional.logsigmoid(labels * logits_per_text).sum() / len(groups)


def caption_ids(tokenizer, captions: list[str], length: int) -> torch.Tensor:
    ids = tokenizer(captions, padding="max_length", max_length=length, truncation=False, return_tensors="pt")["input_ids"]
    if ids.shape[1] > length:
        raise ValueError(f"a caption is longer than caption_length={length} tokens")
    return ids


def siglip_batches(n: int, batch_size: int, seed: int):
    """Endless random batches (index arrays, without repeats inside a batch) of ``n`` training pairs."""
    rng = np.random.default_rng(seed)
    while True:
        yield rng.choice(n, batch_size, replace=False)


def train_siglip(folder: Path, tokenizer, frames: np.ndarray, captions: list[str], val_frames: np.ndarray,
                 val_captions: list[str], p: dict[str, Any], seed: int, progress: bool = False,
                 order=None) -> dict[str, Any]:
    """Contrastive (multi-positive sigmoid) training of a small ``SiglipModel``; saved to ``folder`` with its
    processor (image processor + tokenizer), so ``load_embedder(folder)`` gives it back.
    ``order``: the batches as index arrays (default ``siglip_batches``; a test replays the first ones)."""
    from transformers import SiglipModel, SiglipProcessor

    torch.manual_seed(seed)
    model = SiglipModel(siglip_config(len(tokenizer), p))
    pixels, val_pixels = pixel_tensor(frames, p["image_size"]), pixel_tensor(val_frames, p["image_size"])
    ids, val_ids = caption_ids(tokenizer, captions, p["caption_length"]), caption_ids(tokenizer, val_captions,
                                                                                       p["caption_length"])
    names = sorted(set(captions) | set(val_captions))
    groups = torch.tensor([names.index(c) for c in captions])
    val_groups = torch.tensor([names.index(c) for c in val_captions])
    batches = iter(order) if order is not None else siglip_batches(len(ids), p["batch_size"], seed)
    bs = p["batch_size"]

    weight = float(p.get("concept_weight", 0.0))   # > 0: the ConceptCLIP stand-in's region-concept term
    head = concepts.ConceptHead() if weight > 0 else None
    if weight > 0:   # concepts read from the captions; the other stand-ins' captions are not concept captions
        c_ids = caption_ids(tokenizer, list(concepts.CONCEPTS), p["caption_length"])
        c_lab, c_mask = concepts.concept_targets(captions)
        v_lab, v_mask = concepts.concept_targets(val_captions)
    else:
        c_lab = c_mask = v_lab = v_mask = torch.zeros(max(len(captions), len(val_captions)), 0)

    def loss_of(px: torch.Tensor, tid: torch.Tensor, grp: torch.Tensor, lab=None, mask=None) -> torch.Tensor:
        out = model(input_ids=tid, pixel_values=px.expand(-1, 3, -1, -1))
        loss = sigmoid_loss(out.logits_per_text, grp)
        if weight > 0:
            c_emb = model.text_model(input_ids=c_ids).pooler_output
            logits = head(out.vision_model_output.last_hidden_state, c_emb)
            loss = loss + weight * concepts.concept_loss(logits, lab, mask)
        return loss

    def train_loss(step: int) -> torch.Tensor:
        idx = torch.from_numpy(np.asarray(next(batches)))
        return loss_of(pixels[idx], ids[idx], groups[idx], c_lab[idx], c_mask[idx])

    val_order = torch.from_numpy(np.random.default_rng(seed + 1).permutation(len(val_ids)))   # mixed like training

    def val_loss() -> float:   # the same batches of held-out patients at every evaluation
        n = len(val_ids) // bs * bs
        return float(np.mean([float(loss_of(val_pixels[j], val_ids[j], val_groups[j], v_lab[j], v_mask[j]))
                              for j in (val_order[i:i + bs] for i in range(0, n, bs))]))

    trained = torch.nn.ModuleList([model, head]) if weight > 0 else model
    record = train_loop(trained, train_loss, val_loss, p, seed, folder.name if progress else None)
    model.save_pretrained(folder)
    SiglipProcessor(image_processor=image_processor(p), tokenizer=tokenizer).save_pretrained(folder)
    return {"kind": "siglip", "n_pairs": len(captions), "n_distinct_captions": len(set(captions)),
            "n_val_pairs": len(val_captions), "concept_weight": weight, **record, "parameters": sum(q.numel() for q in model.parameters())}


def load_embedder(folder: str | Path):
    """(SiglipModel, SiglipProcessor) of a SigLIP stand-in folder (a joint image-text embedder)."""
    from transformers import SiglipModel, SiglipProcessor

    return SiglipModel.from_pretrained(folder).eval(), SiglipProcessor.from_pretrained(folder)
