"""The paper's three VLMs at full size with random weights, and their LoRA step through ``cag_utils.vlm``.

Speed and memory do not depend on the weights, so the models are built from their published
configuration values (no download):

* ``paligemma``: PaliGemma2-3B at 448 px (``google/paligemma2-3b-pt-448``): Gemma2-2B text model,
  SigLIP-So400m/14 vision tower, 1024 image tokens;
* ``gemma3``: Gemma3-4B (``google/gemma-3-4b-it``): SigLIP-So400m/14 at 896 px, 256 image tokens;
* ``conceptclip_gemma3``: the same Gemma3-4B with a SigLIP-So400m/14 encoder at 384 px (1152 wide) in
  ConceptCLIP's position, joined as ``cag_utils.vlm.build.PooledPatchEncoder`` joins it in the paper
  profile (27x27 patches average-pooled to Gemma3's 64x64 grid, then Gemma3's own projector).

``tiny=True`` gives the same code with scaled-down widths and depths (CPU tests). The training step is
notebook 05's: ``lora.lora_model`` (the profile's r, alpha, dropout, targets; projector trained in
full) and ``lora.train`` (the Hugging Face Trainer; bf16 and gradient checkpointing on a GPU) over
``collate.Collator`` batches; generation is ``generate.generate``. Only the inputs are synthetic:
random token ids of exactly the profile's sequence length laid out as the processors lay them out
(image tokens, prompt, summary + EOS with labels), and random pixels.

FLOPs (for MFU) are measured, not estimated: ``torch.utils.flop_counter.FlopCounterMode`` over one
forward + backward of the LoRA model on one example of the same length, without gradient
checkpointing, times the batch size. These are *model* FLOPs: matrix products, convolutions and
attention (SDPA kernels or the eager matmuls), full attention matrices (no causal or sliding-window
discount), and the recomputed forward of gradient checkpointing is not counted (PaLM's MFU
convention). For LoRA the backward costs about one forward, not two: activation gradients flow
through the frozen weights (2·N·T) but weight gradients exist only for the adapter and the projector.
``analytic_flops`` writes that out term by term as a cross-check.
"""
from __future__ import annotations

import contextlib
import gc
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

# --------------------------------------------------------------------------- published configurations
# SigLIP So400m/14: google/siglip-so400m-patch14-384 config.json (vision_config); the same tower sits in
# PaliGemma2 (convert_paligemma2_weights_to_hf.py in transformers) and Gemma3 (convert_gemma3_weights.py).
SIGLIP_SO400M = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                     patch_size=14, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=False)
# PaliGemma2-3B: text = Gemma2-2B. transformers' convert_paligemma2_weights_to_hf.py, VARIANT_CONFIGS["2b"]
# (hidden 2304, 26 layers, MLP 9216, 8 heads / 4 KV heads of 256, query_pre_attn_scalar 256), vocab 257152
# padded by 64 to 257216 (google/paligemma2-3b-pt-448 config.json), image token 257152; the rest from
# google/gemma-2-2b-it config.json (sliding window 4096, logit soft-capping 50 / 30, gelu_pytorch_tanh).
PALIGEMMA2_TEXT = dict(vocab_size=257216, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                       num_attention_heads=8, num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256,
                       hidden_activation="gelu_pytorch_tanh", sliding_window=4096, attn_logit_softcapping=50.0,
                       final_logit_softcapping=30.0, max_position_embeddings=8192)
PALIGEMMA2_IDS = dict(image=257152, bos=2, eos=1, pad=0)
# Gemma3-4B: transformers' convert_gemma3_weights.py, _VARIANTS["gemma3_4b"] (= google/gemma-3-4b-it
# config.json): vocab 262208, hidden 2560, MLP 10240, 34 layers, 8 heads / 4 KV heads of 256, sliding
# window 1024 (5 local : 1 global layers, the config default), query_pre_attn_scalar 256; vision SigLIP
# So400m at 896 px; 256 image tokens; <start_of_image> 255999, <end_of_image> 256000, image token 262144.
# RoPE scaling of the global layers is left at the default: it changes no shape and no FLOP.
GEMMA3_4B_TEXT = dict(vocab_size=262208, hidden_size=2560, intermediate_size=10240, num_hidden_layers=34,
                      num_attention_heads=8, num_key_value_heads=4, head_dim=256, sliding_window=1024,
                      query_pre_attn_scalar=256, max_position_embeddings=131072)
GEMMA3_IDS = dict(image=262144, boi=255999, eoi=256000, bos=2, eos=1, pad=0)

# tiny: the same code, scaled down (CPU tests); image 56 px / patch 14 = a 4x4 grid
TINY_TEXT = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32, max_position_embeddings=1024)
TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=14,
                   hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=False)
TINY_IDS = dict(image=500, boi=498, eoi=499, bos=2, eos=1, pad=0)

KINDS = ("paligemma", "gemma3", "conceptclip_gemma3")
LABELS = {"paligemma": "PaliGemma2-3B (448 px)", "gemma3": "Gemma3-4B",
          "conceptclip_gemma3": "Gemma3-4B + SigLIP-So400m/14 (384 px) in the ConceptCLIP position"}


@dataclass(frozen=True)
class Spec:
    """What the synthetic inputs of a built model must look like."""
    kind: str
    arch: str               # paligemma | gemma3 (transformers model_type)
    image_size: int         # pixels the model takes
    image_tokens: int       # image placeholder tokens per example
    ids: dict               # image / boi / eoi / bos / eos / pad token ids
    text_low: int           # random text ids are drawn from [text_low, text_high)
    text_high: int


def _text_high(ids: dict, vocab: int) -> int:
    return min([v for v in ids.values() if v > 10] + [vocab])


def build(kind: str, tiny: bool = False, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
          attn_implementation: str | None = None, seed: int = 0, text_overrides: dict | None = None):
    """(model, spec): a random-weight VLM of ``kind`` built directly on ``device`` in ``dtype``;
    ``text_overrides`` replace text-model settings (``paper_estimate``: a tiny model with the real vocabulary)."""
    from transformers import (AutoModelForImageTextToText, Gemma3Config, PaliGemmaConfig, SiglipVisionConfig,
                              SiglipVisionModel)

    from cag_utils.vlm.build import PooledPatchEncoder

    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    vision = dict(TINY_VISION if tiny else SIGLIP_SO400M)
    ids = dict(TINY_IDS if tiny else (PALIGEMMA2_IDS if kind == "paligemma" else GEMMA3_IDS))
    kw = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if kind == "paligemma":
        text = dict(TINY_TEXT, sliding_window=4096, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                    hidden_activation="gelu_pytorch_tanh") if tiny else dict(PALIGEMMA2_TEXT)
        text.update(text_overrides or {})
        size = 56 if tiny else 448
        vision.update(image_size=size, projection_dim=text["hidden_size"])
        cfg = PaliGemmaConfig(text_config=dict(text, model_type="gemma2"), vision_config=vision,
                              image_token_index=ids["image"], projection_dim=text["hidden_size"],
                              pad_token_id=ids["pad"], bos_token_id=ids["bos"], eos_token_id=ids["eos"])
        tokens = (size // vision["patch_size"]) ** 2
    else:
        text = dict(TINY_TEXT, sliding_window=16) if tiny else dict(GEMMA3_4B_TEXT)
        text.update(text_overrides or {})
        size = 56 if tiny else 896
        tokens = 4 if tiny else 256
        vision.update(image_size=size)
        cfg = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=tokens,
                           boi_token_index=ids["boi"], eoi_token_index=ids["eoi"], image_token_index=ids["image"],
                           pad_token_id=ids["pad"], bos_token_id=ids["bos"], eos_token_id=ids["eos"])
    cfg.text_config.pad_token_id = ids["pad"]
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(cfg, dtype=dtype, **kw)
        if kind == "conceptclip_gemma3":   # as build.load_family joins a ConceptCLIP encoder to Gemma3
            enc_size = 42 if tiny else 384  # tiny: 3x3 patches pooled up to the 4x4 grid; full: 27x27 -> 64x64
            enc_cfg = SiglipVisionConfig(**dict(vision, image_size=enc_size))
            if attn_implementation:
                enc_cfg._attn_implementation = attn_implementation
            enc = SiglipVisionModel(enc_cfg).to(dtype=model.dtype)
            vc = model.config.vision_config
            model.model.vision_tower = PooledPatchEncoder(enc, enc_size, vc.image_size // vc.patch_size)
    spec = Spec(kind, "paligemma" if kind == "paligemma" else "gemma3", size, tokens, ids, 10,
                _text_high(ids, text["vocab_size"]))
    return model.eval(), spec


# --------------------------------------------------------------------------- synthetic encodings
def synthetic_example(spec: Spec, seq_len: int, gen: torch.Generator, with_target: bool = True,
                      target_len: int | None = None) -> dict[str, torch.Tensor]:
    """One encoding as ``data.encode`` lays it out, of exactly ``seq_len`` tokens (prompt only without target).

    PaliGemma: image tokens, <bos>, prompt | summary, <eos> (token_type_ids 1 on the suffix);
    Gemma3: <bos>, <start_of_image>, image tokens, <end_of_image>, prompt | summary, <eos> (token_type_ids 1 on
    the image tokens). Labels: -100 outside the summary."""
    i = spec.ids
    head = ([i["image"]] * spec.image_tokens + [i["bos"]] if spec.arch == "paligemma"
            else [i["bos"], i["boi"]] + [i["image"]] * spec.image_tokens + [i["eoi"]])
    n_text = seq_len - len(head)
    if n_text < 4:
        raise ValueError(f"sequence length {seq_len} leaves no room for text after {len(head)} image/special tokens")
    n_target = (target_len or max(2, n_text // 4)) if with_target else 0
    n_prompt = n_text - n_target
    prompt = torch.randint(spec.text_low, spec.text_high, (n_prompt,), generator=gen).tolist()
    target = torch.randint(spec.text_low, spec.text_high, (n_target - 1,), generator=gen).tolist() + [i["eos"]] \
        if with_target else []
    ids = torch.tensor(head + prompt + target)
    if spec.arch == "paligemma":
        tt = torch.tensor([0] * (len(head) + n_prompt) + [1] * n_target)
    else:
        tt = (ids == i["image"]).long()
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": tt,
           "pixel_values": torch.rand(3, spec.image_size, spec.image_size, generator=gen) * 2 - 1}
    if with_target:
        out["labels"] = torch.cat([torch.full((len(head) + n_prompt,), -100), torch.tensor(target)])
    return out


# --------------------------------------------------------------------------- FLOPs
def measured_flops(model, example: dict[str, torch.Tensor], collator, device) -> dict[str, Any]:
    """FlopCounterMode over one forward + backward of one example (no gradient checkpointing)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    batch = {k: v.to(device) for k, v in collator([example]).items()}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    with FlopCounterMode(display=False) as counter:
        with autocast:
            loss = model(**batch).loss
        loss.backward()
    model.zero_grad(set_to_none=True)
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return {"total": int(counter.get_total_flops()), "by_op": by_op}


def analytic_flops(model, spec: Spec, seq_len: int, batch: int = 1) -> dict[str, int]:
    """Model FLOPs of one LoRA training step, term by term (T = batch x seq_len tokens):

    language model: forward 2·N·T and activation-gradient backward 2·N·T over its frozen linear weights
    N (with the tied LM head); attention 4·B·S²·H·d per layer forward, twice that backward; LoRA
    adapters (trained) 6·N_lora·T; vision tower forward only (frozen, its input needs no gradient);
    projector forward + weight gradients 4·N_proj per image token."""
    lm_lin = lora_n = vis = proj = 0
    lm = _language_model(model)
    for name, m in model.named_modules():
        if not isinstance(m, torch.nn.Linear):
            continue
        n = m.weight.numel()
        if "lora_" in name:
            lora_n += n if ".default" in name else 0
        elif "multi_modal_projector" in name:
            proj += n if "original_module" not in name else 0
        elif "vision_tower" in name:
            vis += n
        elif "language_model" in name or name.endswith("lm_head"):
            lm_lin += n
    for name, p in model.named_parameters():   # Gemma3's projector is a bare matrix, not a Linear
        if "multi_modal_projector" in name and "mm_input_projection_weight" in name and "original_module" not in name:
            proj += p.numel()
    tc = lm.config
    T = batch * seq_len
    heads, hd, layers = tc.num_attention_heads, tc.head_dim, tc.num_hidden_layers
    attn = 12 * layers * batch * seq_len ** 2 * heads * hd
    vt = _vision_encoder(model)
    vcfg = vt.config
    patches = (vcfg.image_size // vcfg.patch_size) ** 2
    conv = 2 * (3 * vcfg.patch_size ** 2 * vcfg.hidden_size) * patches * batch
    vision = 2 * vis * patches * batch + conv + 4 * vcfg.num_hidden_layers * batch * patches ** 2 * vcfg.hidden_size
    proj_tokens = spec.image_tokens if spec.arch == "gemma3" else patches
    out = {"lm_linear_fwd_bwd": 4 * lm_lin * T, "lm_attention_fwd_bwd": attn, "lora_fwd_bwd": 6 * lora_n * T,
           "vision_fwd": vision, "projector_fwd_wgrad": 4 * proj * proj_tokens * batch}
    out["total"] = sum(out.values())
    out["params"] = {"lm_linear_incl_head": lm_lin, "lora": lora_n, "vision_linear": vis, "projector": proj}
    return out


def _language_model(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model.language_model


def _vision_encoder(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    vt = base.model.vision_tower
    return vt.encoder if hasattr(vt, "encoder") and hasattr(vt.encoder, "config") else vt


def trainable_summary(model) -> dict[str, int]:
    """Trainable parameters by kind: LoRA adapters, the projector (trained in full), anything else."""
    out = {"lora": 0, "projector": 0, "other": 0}
    for name, p in model.named_parameters():
        if p.requires_grad:
            out["lora" if "lora_" in name else "projector" if "multi_modal_projector" in name else "other"] += p.numel()
    return out


# --------------------------------------------------------------------------- the step check
def step_timer(device: torch.device):
    """A ``TrainerCallback`` that records the wall-clock time at train begin and at every optimizer-step end
    (after a CUDA synchronisation), so step i lasts ``times[i+1] - times[i]`` as the Trainer runs it."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def _mark(self):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.times.append(time.perf_counter())

        def on_train_begin(self, args, state, control, **kw):
            self._mark()

        def on_step_end(self, args, state, control, **kw):
            self._mark()

    return StepTimer()


def paper_finetune(profile: str = "paper") -> dict[str, Any]:
    """The profile's ``common`` + ``finetune`` keys (yaml only; no other import)."""
    from cag_utils.run.config import load_profile

    sections = load_profile(profile)
    return {**sections["common"], **sections["finetune"]}


def vlm_check(kind: str, cfg: dict[str, Any], device: torch.device, tiny: bool = False, warmup: int = 2,
              steps: int = 5, seq_len: int | None = None, batch: int | None = None, gen_batch: int | None = None,
              gen_prompt: int = 256, gen_new_tokens: int = 32, peak_tflops: float | None = None,
              attn_implementation: str | None = None) -> dict[str, Any]:
    """Build ``kind``, apply LoRA and train ``warmup + steps`` optimizer steps through ``lora.train``;
    time the steps, measure FLOPs, peak memory and a short batched greedy generation."""
    from cag_utils.vlm import generate, lora
    from cag_utils.vlm.collate import Collator

    t_part = time.perf_counter()
    gpu = device.type == "cuda"
    seq_len = int(seq_len or cfg["vlm_max_length"])
    batch = int(batch or cfg["vlm_batch_size"])
    gen_batch = int(gen_batch or cfg["vlm_gen_batch_size"])
    seed = int(cfg["seed"])
    if gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    model, spec = build(kind, tiny=tiny, dtype=torch.bfloat16 if gpu else None, device=device,
                        attn_implementation=attn_implementation, seed=seed)
    model = model.to(device)   # as stage.finetune_family (a no-op when built there)
    build_s = time.perf_counter() - t0
    total_params = sum(p.numel() for p in model.parameters())
    torch.manual_seed(seed)   # as stage.finetune_family, then the notebook's LoRA settings
    model = lora.lora_model(model, cfg["vlm_lora_r"], cfg["vlm_lora_alpha"], cfg["vlm_lora_dropout"],
                            cfg["vlm_lora_targets"])
    counts, kinds = lora.parameter_counts(model), trainable_summary(model)
    collator = Collator(spec.ids["pad"])
    gen = torch.Generator().manual_seed(seed)
    example = synthetic_example(spec, seq_len, gen)
    flops1 = measured_flops(model, example, collator, device)
    analytic = analytic_flops(model, spec, seq_len, 1)
    if gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    train_set = [example] + [synthetic_example(spec, seq_len, gen) for _ in range(batch * (warmup + steps) - 1)]
    params = {"batch_size": batch, "epochs": 1, "max_steps": warmup + steps, "lr": cfg["vlm_lr"],
              "warmup_ratio": cfg["vlm_warmup_ratio"], "weight_decay": cfg["vlm_weight_decay"],
              "max_grad_norm": cfg["vlm_max_grad_norm"], "eval_points": cfg["vlm_eval_points"],
              "device": "cuda" if gpu else "cpu"}
    timer = step_timer(device)
    with tempfile.TemporaryDirectory() as tmp:
        record = lora.train(model, train_set, [], collator, params, Path(tmp), seed, callbacks=[timer])
    del train_set
    dts = [b - a for a, b in zip(timer.times, timer.times[1:])]
    timed = dts[warmup:] or dts
    step_s = statistics.median(timed)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if gpu else None
    reserved = torch.cuda.max_memory_reserved(device) / 2**30 if gpu else None
    step_flops = flops1["total"] * batch
    achieved = step_flops / step_s / 1e12
    grad_norms = [h["grad_norm"] for h in record["history"] if "grad_norm" in h]
    out = {
        "family": kind, "label": LABELS[kind], "size": "tiny" if tiny else "full (published configuration values)",
        "dtype": "bf16 (weights) + bf16 autocast" if gpu else "fp32", "gradient_checkpointing": bool(gpu),
        "attn_implementation": getattr(_language_model(model).config, "_attn_implementation", None),
        "seq_len": seq_len, "batch_size": batch, "image_size": spec.image_size, "image_tokens": spec.image_tokens,
        "parameters": {"total_base": int(total_params), "trainable": counts["trainable"], **{f"trainable_{k}": v
                       for k, v in kinds.items()}},
        "lora": {"r": cfg["vlm_lora_r"], "alpha": cfg["vlm_lora_alpha"], "dropout": cfg["vlm_lora_dropout"],
                 "targets": cfg["vlm_lora_targets"]},
        "warmup_steps": warmup, "timed_steps": len(timed), "optimizer_steps": record["steps"],
        "step_seconds": {"median": step_s, "mean": statistics.fmean(timed), "min": min(timed), "max": max(timed),
                         "first_step": dts[0] if dts else None},
        "tokens_per_s": batch * seq_len / step_s, "images_per_s": batch / step_s,
        "peak_memory_gib": peak, "peak_reserved_gib": reserved,
        "flops": {"method": "torch.utils.flop_counter.FlopCounterMode, one forward+backward of one example at "
                            "seq_len without gradient checkpointing, times batch (model FLOPs; recompute not counted)",
                  "per_step": step_flops, "per_example_measured": flops1["total"], "by_op_per_example": flops1["by_op"],
                  "per_example_analytic": analytic["total"],
                  "analytic_terms_per_example": {k: v for k, v in analytic.items() if k not in ("total",)},
                  "measured_over_analytic": flops1["total"] / analytic["total"] if analytic["total"] else None},
        "achieved_tflops": achieved, "peak_tflops_bf16_dense": peak_tflops,
        "mfu": achieved / peak_tflops if peak_tflops else None,
        "train_loss": record["train_loss"], "grad_norms": grad_norms, "build_seconds": build_s,
    }
    # a short batched greedy generation with the trained adapter (generate.generate, left-padded batches)
    n_prompt = min(seq_len, spec.image_tokens + 2 + gen_prompt)
    prompts = [synthetic_example(spec, n_prompt, gen, with_target=False) for _ in range(gen_batch)]
    tok = SimpleNamespace(pad_token_id=spec.ids["pad"], eos_token_id=spec.ids["eos"],
                          batch_decode=lambda x, skip_special_tokens=True: [" ".join(map(str, r.tolist())) for r in x])
    if gpu:
        torch.cuda.reset_peak_memory_stats(device)
    _, g = generate.generate(model, SimpleNamespace(tokenizer=tok), prompts, Collator(spec.ids["pad"], left=True),
                             gen_batch, gen_new_tokens)
    out["generation"] = {"batch_size": gen_batch, "prompt_tokens": n_prompt, "max_new_tokens": gen_new_tokens,
                         "new_tokens": g["tokens"], "seconds": g["seconds"],
                         "new_tokens_per_s": g["tokens"] / g["seconds"] if g["seconds"] else None,
                         "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if gpu else None}
    out["seconds_total"] = time.perf_counter() - t_part
    del model
    gc.collect()
    if gpu:
        torch.cuda.empty_cache()
    return out
