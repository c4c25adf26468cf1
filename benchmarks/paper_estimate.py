"""Expected time and memory of each paper-profile step on one GPU machine: an estimate until measured.

    python benchmarks/paper_estimate.py                     # ~30 s on 2 cores -> results/paper_estimate.json

Nothing here runs on a GPU. Each step's figure comes from something counted or measured here, scaled by
a stated assumption, and every row says which (``basis``):

* work is counted from ``configs/profiles/paper.yaml`` and the paper's own counts (14,686 annotated
  frames, 1,114 key frames);
* model FLOPs are exact: ``torch.utils.flop_counter.FlopCounterMode`` on ConvNeXt-Base and
  ``benchmarks/gpu_vlm.analytic_flops`` on the three VLMs built on PyTorch's meta device from their
  published configurations (the same builders ``make gpu-check`` uses);
* GPU time assumes the MFU targets of ``make gpu-check`` (25 % for the CNN, 35 % for the VLMs) on an
  H100 SXM (989.5 dense bf16 TFLOP/s), and greedy decoding at half the card's memory bandwidth;
* CPU time (generation, decoding JPEG 2000) scales this machine's measurements (``results/bench_data.json``)
  by the work and the profile's ``num_workers``; corpus and evaluation scale a one-minute ceiling on their
  smoke wall time by the exams (never the wall time itself: the estimate must not depend on machine load);
* GPU memory: the CNN's activations are the bytes autograd saves for one 224-px frame (measured on the
  CPU under bf16 autocast) times the batch, plus weights, gradients and AdamW state; a VLM's are the frozen
  bf16 weights, the trained parameters with AdamW state, the gradient-checkpointed hidden states, one
  layer's recomputed activations, and the logits/loss tensors (bytes per logit measured on a tiny model with
  the real vocabulary through transformers' own loss path, plus the fp32 gradient pair of the backward).

When ``results/gpu/gpu_check.json`` exists (``make gpu-check`` ran on a GPU), its measured step times and
peak memory are copied beside the estimate. Send that file and the paper run's ``results/paper/`` folder
back (docs/gpu-and-paper-profile.md) and this table is replaced by measurements.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402

from cag_utils.run.config import load_profile  # noqa: E402
from cag_utils.run.results import describe_device, git_sha, package_versions  # noqa: E402

# the paper's counts (reference/paper.md): frames sampled from 539 exams, key frames from 243 exams
PAPER_FRAMES, PAPER_KEY_FRAMES = 14_686, 1_114
CARD = "H100 SXM"
PEAK_TFLOPS = gpu_check.peak_tflops(CARD)      # dense bf16, from make gpu-check's table
HBM_TB_S, DECODE_BANDWIDTH_SHARE = 3.35, 0.5   # H100 SXM HBM3; greedy decoding reads every weight per token
CNN_MFU, VLM_MFU = gpu_check.TARGETS["cnn_mfu"], gpu_check.TARGETS["vlm_mfu"]   # make gpu-check's targets
LOGIT_GRAD_BYTES = 8                            # backward: the fp32 gradient in and out of log-softmax
GIB = 2 ** 30
SMOKE_CPU_STEP_CEILING_S = 60                   # notebooks 04 and 06 on the smoke profile, 2 cores


def cnn_numbers(model_name: str, size: int, in_chans: int) -> dict[str, float]:
    """Forward FLOPs, parameters and autograd-saved bytes of one frame (bf16 autocast, CPU)."""
    import timm
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        meta = timm.create_model(model_name, num_classes=6, in_chans=in_chans)
    with FlopCounterMode(display=False) as counter:
        meta(torch.empty(1, in_chans, size, size, device="meta"))
    torch.manual_seed(0)
    model = timm.create_model(model_name, num_classes=6, in_chans=in_chans).train()
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, torch.nn.Parameter):
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    batch = 2   # per-frame bytes from two frames (per-batch buffers would otherwise count whole)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.rand(batch, in_chans, size, size))
    params = sum(p.numel() for p in model.parameters())
    return {"fwd_flops_per_frame": float(counter.get_total_flops()), "params": float(params),
            "saved_bytes_per_frame": sum(saved.values()) / batch}


def logit_bytes(kind: str, vocab: int) -> float:
    """Bytes autograd keeps per logit (token x vocabulary entry) in the model's forward with labels: a tiny
    model of ``kind`` with the real vocabulary, bf16, slope between two sequence lengths."""
    import gpu_vlm

    totals = []
    for seq in (64, 128):
        model, spec = gpu_vlm.build(kind, tiny=True, dtype=torch.bfloat16, text_overrides={"vocab_size": vocab})
        model.train()
        for p in model.parameters():
            p.requires_grad_(False)
        model.get_input_embeddings().weight.requires_grad_(True)   # something upstream needs a gradient
        example = gpu_vlm.synthetic_example(spec, seq, torch.Generator().manual_seed(0))
        saved: dict[tuple, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(**{k: v.unsqueeze(0) for k, v in example.items()})
        totals.append(sum(saved.values()))
    return (totals[1] - totals[0]) / (64 * vocab)


def vlm_numbers(kind: str, cfg: dict[str, Any]) -> dict[str, float]:
    """FLOPs per optimizer step (batch x full length: the worst case) and the memory terms of one VLM."""
    import gpu_vlm

    from cag_utils.vlm import lora

    model, spec = gpu_vlm.build(kind, device="meta", dtype=torch.bfloat16)
    model = lora.lora_model(model, cfg["vlm_lora_r"], cfg["vlm_lora_alpha"], cfg["vlm_lora_dropout"],
                            cfg["vlm_lora_targets"])
    seq, batch = int(cfg["vlm_max_length"]), int(cfg["vlm_batch_size"])
    flops = gpu_vlm.analytic_flops(model, spec, seq, batch)
    text = gpu_vlm._language_model(model).config
    params = sum(p.numel() for p in model.parameters())
    trained = sum(gpu_vlm.trainable_summary(model).values())
    tokens = batch * seq
    per_logit = logit_bytes(kind, text.vocab_size) + LOGIT_GRAD_BYTES
    heads = text.num_attention_heads * text.head_dim
    memory = {
        "weights_bf16": 2 * (params - trained),
        "trained_params_fp32_adamw": 16 * trained,   # weight, gradient, two moments
        "checkpointed_hidden_states": 2 * tokens * text.hidden_size * text.num_hidden_layers,
        # one decoder layer's activations while it is recomputed: norms and q/k/v/o inputs, MLP gate/up/act/down
        "one_layer_recompute": 2 * tokens * (6 * text.hidden_size + 4 * text.intermediate_size + 3 * heads),
        "logits_and_loss": per_logit * tokens * text.vocab_size,
    }
    return {"flops_per_step": float(flops["total"]), "params": float(params), "trained": float(trained),
            "image_tokens": spec.image_tokens, "bytes_per_logit": per_logit, "memory_bytes": memory,
            "decode_weight_bytes": 2 * params}


def estimate(profile: str = "paper") -> dict[str, Any]:
    sections = load_profile(profile)
    common, data, cnn = sections["common"], sections["data"], sections["cnn"]
    ft, ev = {**common, **sections["finetune"]}, sections["evaluation"]
    workers = int(common["num_workers"])
    bench = json.loads((ROOT / "results/bench_data.json").read_text())
    gen = bench["generation"]["paper"]
    ingest_fps = bench["ingest_512_8bit"]["jpeg2000"]["frames_per_s"]   # one process, this machine
    exams = int(data["n_annotation_exams"]) + int(data["n_independent_exams"])
    frames_per_exam = gen["total_frames"] / gen["exams_at_scale"]
    rows: list[dict[str, Any]] = []

    def row(step: str, work: str, seconds: float, memory: str, basis: str) -> None:
        rows.append({"step": step, "work": work, "time_s": round(seconds), "memory": memory, "basis": basis})

    # 01: generation (CPU) and reading every annotation frame back
    gen_s = gen["total_hours_per_worker"] * 3600 / workers
    read_frames = int(data["n_annotation_exams"]) * frames_per_exam
    read_s = read_frames / ingest_fps / workers if ingest_fps else 0.0
    row("01_data", f"{exams} exams, about {gen['total_frames']:,} frames at {gen['image_size']} px",
        gen_s + read_s, f"disk {gen['total_gb']} GB",
        f"bench_data: {gen['total_hours_per_worker']} core-hours generation (2 exams timed, extrapolated)"
        + (f", JPEG 2000 ingest {ingest_fps:.0f} frames/s per process" if ingest_fps else "")
        + f", on {workers} workers")

    # 02: pretraining + training + the second start, validation passes included
    c = cnn_numbers(cnn["cnn_model"], int(cnn["cnn_input_size"]), int(cnn["cnn_in_chans"]))
    train_frames = PAPER_FRAMES * float(data["split_fractions"][0])
    val_frames = PAPER_FRAMES * float(data["split_fractions"][1])
    fps_train = PEAK_TFLOPS * 1e12 * CNN_MFU / (3 * c["fwd_flops_per_frame"])
    fps_infer = PEAK_TFLOPS * 1e12 * CNN_MFU / c["fwd_flops_per_frame"]
    epoch_s = train_frames / fps_train + val_frames / fps_infer
    starts = 2 if cnn.get("cnn_compare_start") else 1
    pretrain_s = 0.0
    if not cnn.get("cnn_pretrained_file") and cnn.get("cnn_pretrain") not in (None, "", "none"):
        pre_frames = int(cnn["cnn_pretrain_exams"]) * PAPER_FRAMES / int(data["n_annotation_exams"])
        pretrain_s = int(cnn["cnn_pretrain_epochs"]) * pre_frames / fps_train
    cnn_s = starts * int(cnn["cnn_epochs"]) * epoch_s + pretrain_s
    b = int(cnn["cnn_batch_size"])
    cnn_mem = 16 * c["params"] + b * c["saved_bytes_per_frame"]
    row("02_cnn", f"{starts} starts x {cnn['cnn_epochs']} epochs of {train_frames:,.0f} frames (batch {b})"
        + (f" + pretraining {cnn['cnn_pretrain_epochs']} epochs" if pretrain_s else ""),
        cnn_s, f"GPU {cnn_mem / GIB:.1f} GiB",
        f"{c['fwd_flops_per_frame'] / 1e9:.1f} GFLOP forward per frame x 3 at {CNN_MFU:.0%} MFU ({fps_train:,.0f} "
        f"frames/s); memory: {c['saved_bytes_per_frame'] / 2**20:.0f} MiB saved per frame x {b} + 16 B per parameter")

    # 03: decode the independent exams' frames (CPU) and classify them (GPU)
    ind_frames = int(data["n_independent_exams"]) * frames_per_exam
    ext_s = (ind_frames / ingest_fps / workers if ingest_fps else 0.0) + ind_frames / fps_infer
    row("03_extraction", f"{ind_frames:,.0f} frames of {data['n_independent_exams']} exams", ext_s,
        "GPU: below 02 (inference: no gradients, no optimizer state)", "JPEG 2000 decoding dominates (as in 01); inference at the CNN's rate")

    # 04 and 06 on the CPU: a ceiling on the smoke run's wall time, scaled by the exams (a measured wall time
    # would make the estimate depend on machine load; tests/test_paper_estimate.py checks the ceiling holds)
    smoke_exams = load_profile("smoke")["data"]["n_independent_exams"]
    scale = int(data["n_independent_exams"]) / int(smoke_exams)
    cpu_basis = f"at most {SMOKE_CPU_STEP_CEILING_S} s in the smoke run (its wall time) x {scale:.2f} (exams)"
    row("04_corpus", f"{PAPER_KEY_FRAMES:,} key frames x 2 languages", SMOKE_CPU_STEP_CEILING_S * scale, "CPU only",
        cpu_basis)

    # 05: LoRA of each family + the positive control, and greedy generation of every test output
    examples = PAPER_KEY_FRAMES * 2
    train_ex = examples * float(sections["corpus"]["corpus_split_fractions"][0])
    test_ex = examples * float(sections["corpus"]["corpus_split_fractions"][2])
    steps = math.ceil(train_ex / int(ft["vlm_batch_size"])) * int(ft["vlm_epochs"])
    per_family: dict[str, Any] = {}
    bw = HBM_TB_S * 1e12 * DECODE_BANDWIDTH_SHARE
    total_05 = 0.0
    for kind in ("paligemma", "gemma3", "conceptclip_gemma3"):
        v = vlm_numbers(kind, ft)
        step_s = v["flops_per_step"] / (PEAK_TFLOPS * 1e12 * VLM_MFU)
        # decoding: one read of all weights per token step, per batch of vlm_gen_batch_size prompts;
        # outputs: w/o LoRA, w/ LoRA, w/ LoRA on the blanked frame
        gen_batches = math.ceil(test_ex / int(ft["vlm_gen_batch_size"])) * 3
        gen_s = gen_batches * int(ft["vlm_max_new_tokens"]) * v["decode_weight_bytes"] / bw
        ctl_s = int(ft["vlm_control_max_steps"]) * step_s * 0.25 if ft.get("vlm_control") else 0.0  # short sequences
        mem = sum(v["memory_bytes"].values())
        total_05 += steps * step_s + gen_s + ctl_s
        per_family[kind] = {"step_s": step_s, "steps": steps, "generation_s": gen_s, "control_s": ctl_s,
                            "memory_gib": mem / GIB, **{k: v[k] for k in ("flops_per_step", "params", "trained",
                                                                          "bytes_per_logit")},
                            "memory_terms_gib": {k: b_ / GIB for k, b_ in v["memory_bytes"].items()}}
        row(f"05_finetune: {kind}", f"{steps} LoRA steps of {ft['vlm_batch_size']} x {ft['vlm_max_length']} tokens; "
            f"{gen_batches} generation batches of {ft['vlm_max_new_tokens']} tokens",
            steps * step_s + gen_s + ctl_s, f"GPU {mem / GIB:.1f} GiB",
            f"{v['flops_per_step'] / 1e12:.0f} TFLOP per step at {VLM_MFU:.0%} MFU ({step_s:.2f} s); decoding at "
            f"{DECODE_BANDWIDTH_SHARE:.0%} of {HBM_TB_S} TB/s; logits {v['bytes_per_logit']:.0f} B each")
    # the text-only control: Gemma3's language model without image tokens, so at most Gemma3's cost
    g = per_family["gemma3"]
    row("05_finetune: gemma3_text", f"{steps} LoRA steps, no image", steps * g["step_s"] + g["generation_s"] * 2 / 3,
        f"GPU < {g['memory_gib']:.1f} GiB", "bounded by the Gemma3 row (same language model, no image tokens)")
    row("06_evaluation", f"{test_ex:,.0f} test outputs x 4 models x 2 variants", SMOKE_CPU_STEP_CEILING_S * scale,
        "CPU, the embedder on the GPU (below 02)", cpu_basis)
    total = sum(r["time_s"] for r in rows)
    return {"card": CARD, "rows": rows, "total_s": total, "vlm": per_family,
            "cnn": {**c, "train_frames_per_s": fps_train, "memory_gib": cnn_mem / GIB},
            "assumptions": {"peak_tflops_bf16": PEAK_TFLOPS, "cnn_mfu": CNN_MFU, "vlm_mfu": VLM_MFU,
                            "hbm_tb_s": HBM_TB_S, "decode_bandwidth_share": DECODE_BANDWIDTH_SHARE,
                            "logit_grad_bytes": LOGIT_GRAD_BYTES, "num_workers": workers,
                            "paper_frames": PAPER_FRAMES, "paper_key_frames": PAPER_KEY_FRAMES,
                            "vlm_sequence": "every sequence at vlm_max_length (upper bound)"}}


def duration(seconds: float) -> str:
    """'under 1 min', '38 min', '2.4 h'."""
    if seconds < 60:
        return "under 1 min"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def paper_run(folder: Path) -> dict[str, Any] | None:
    """Wall time and device of each notebook of a paper-profile run (``results/paper/NN_name.json``)."""
    runs = {}
    for path in sorted(folder.glob("0[1-6]_*.json")):
        prov = json.loads(path.read_text()).get("provenance", {})
        runs[path.stem] = {"wall_time_s": prov.get("timing", {}).get("wall_time_s"), "device": prov.get("device")}
    return runs or None


def measured(path: Path) -> dict[str, Any] | None:
    """Step time and peak memory per part of a ``make gpu-check`` JSON, where one exists."""
    if not path.is_file():
        return None
    res = json.loads(path.read_text())
    parts = {}
    for name, part in res.get("parts", {}).items():
        if isinstance(part, dict) and "skipped" not in part and "error" not in part:
            step = part.get("step_seconds", part.get("seconds_per_step"))
            parts[name] = {"step_s": step.get("median") if isinstance(step, dict) else step,
                           "peak_memory_gib": part.get("peak_memory_gib"), "mfu": part.get("mfu")}
    return {"device": res.get("device"), "parts": parts}


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--out", type=Path, default=ROOT / "results/paper_estimate.json")
    ap.add_argument("--gpu-check", type=Path, default=ROOT / "results/gpu/gpu_check.json")
    ap.add_argument("--paper-run", type=Path, default=ROOT / "results/paper", help="a paper-profile run's results")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    est = estimate(args.profile)
    table = [{"step": r["step"], "work": r["work"], "time (estimate)": duration(r["time_s"]),
              "memory (estimate)": r["memory"], "basis": r["basis"]} for r in est["rows"]]
    record = {"notebook": "paper_estimate",
              "results": {"estimate": True, **est, "measured": {"gpu_check": measured(args.gpu_check),
                                                              "paper_run": paper_run(args.paper_run)}, "tables": {"steps": table}},
              "config": {"profile": args.profile},
              "provenance": {"git_sha": git_sha(), "device": describe_device(), "versions": package_versions(),
                             "timing": {"wall_time_s": round(time.time() - t0, 2)}}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{args.out}: {len(table)} steps, about {duration(est['total_s'])} on one {CARD} (estimate)")
    return args.out


if __name__ == "__main__":
    main()
