"""GPU check of the paper profile's training steps at full size: speed, memory and MFU.

Run by ``make gpu-check`` on a machine with a CUDA GPU; writes ``$OUT/gpu_check.json`` when ``OUT`` is
set, else ``results/gpu/gpu_check.json`` (after every part, so a run cut short keeps what it measured).
Weights and inputs are random: speed and memory do not depend on them. Parts, in this order:

* ``vlm:<family>`` for PaliGemma2-3B (448 px), Gemma3-4B, and Gemma3-4B with a SigLIP-So400m encoder in the
  ConceptCLIP position, built from their published configuration values (``gpu_vlm``): bf16 LoRA at the
  paper profile's sequence length (``vlm_max_length``) and batch (``vlm_batch_size``) through notebook 05's
  code (``cag_utils.vlm.lora``, the Hugging Face Trainer, bf16, gradient checkpointing): warm-up and timed
  optimizer steps, tokens/s, images/s, peak memory, MFU; then a short batched greedy generation;
* ``cnn_training`` / ``cnn_training_compiled``: the paper's ConvNeXt-Base at 224 px, batch 128, AdamW,
  bf16 autocast, channels-last, eager and under ``torch.compile`` (``--no-compile`` drops the second):
  frames/s, hours for 200 epochs of ~10.3k frames, peak memory, MFU;
* ``cnn_inference``: frames/s at batch 256;
* ``cnn_library_epoch``: one epoch through ``cag_utils.cnn.train_classifier`` (the notebook's path).

MFU = model FLOPs per step / step time / the card's dense bf16 peak (``PEAK_TFLOPS_BF16``; unknown card:
MFU null). Model FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``: for the VLMs over one forward +
backward (see ``gpu_vlm``); for the CNN 3 x one forward (the counter's convolution-backward formula ignores
``groups`` and would overcount ConvNeXt's depthwise convolutions).
``--budget-s`` (default 420 s) skips, loudly and on the record, every part whose rough cost estimate would
overrun it. Without CUDA the script says so, writes nothing and exits 0; ``--device cpu`` runs the same code
with tiny models (the tests do).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    import numpy as np
    import torch

    import gpu_vlm  # (same folder; torch only at import)
except ImportError as _missing:   # a python3 without PyTorch: certainly nothing to measure here
    torch = None
    _MISSING = _missing.name

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s: NVIDIA's datasheets give the sparse figure, halved
# here. H100 / H200: "H100 Tensor Core GPU" and "H200 Tensor Core GPU" datasheets (SXM 1,979, PCIe 1,513,
# NVL 1,671 sparse); A100: "A100 Tensor Core GPU" datasheet (312 dense); L40S: datasheet (733 sparse);
# L4: datasheet (242 sparse); A10: datasheet (125 dense). First match of the device name wins.
PEAK_TFLOPS_BF16 = (
    ("H200 NVL", 835.5), ("H200", 989.5), ("GH200", 989.5),
    ("H100 NVL", 835.5), ("H100 PCIe", 756.5), ("H100", 989.5),   # "NVIDIA H100 80GB HBM3" is the SXM part
    ("A100", 312.0), ("L40S", 366.5), ("L4", 121.0), ("A10", 125.0),
)
PEAK_SOURCE = "NVIDIA datasheets, dense bf16 tensor-core peak (sparse figure / 2)"
# the targets; an "80 GB" H100 / A100 holds 81,559 MiB = 79.6 GiB
TARGETS = {"cnn_mfu": 0.25, "vlm_mfu": 0.35, "vlm_fits_gib": 79.6}
# rough seconds per part on one H100/H200 (the budget guard's estimates)
ESTIMATE_S = {"vlm": 75.0, "cnn_training": 20.0, "cnn_training_compiled": 120.0, "cnn_inference": 10.0,
              "cnn_library_epoch": 60.0}


def peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_TFLOPS_BF16:
        if key.lower() in device_name.lower():
            return value
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


# --------------------------------------------------------------------------- CNN (stage 1)
def _cnn(model_name: str, tiny: bool):
    from cag_utils.cnn.model import build_model, count_parameters

    kw = {"depths": (1, 1, 1, 1), "dims": (8, 16, 32, 64)} if tiny else {}
    return build_model(model_name, in_chans=1, **kw), count_parameters


def cnn_training(model_name: str, size: int, batch: int, steps: int, device: torch.device, bf16: bool,
                 compile_model: bool, epoch_frames: int, epochs: int, peak: float | None, tiny: bool = False) -> dict:
    """AdamW steps of the classifier on random frames (bench_cnn's loop) in channels-last, bf16 autocast,
    optionally under ``torch.compile``; FLOPs of one step: 3 x the forward's, measured with FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    _peak_reset(device)
    torch.manual_seed(0)
    model, count = _cnn(model_name, tiny)
    model = model.to(device, memory_format=torch.channels_last).train()
    x = torch.randn(batch, 1, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 6, (batch,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def loss_of(m):
        with autocast:
            return torch.nn.functional.cross_entropy(m(x).float(), y)

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        loss_of(model)
    flops = 3 * int(counter.get_total_flops())   # forward + backward (activation and weight gradients, 2x forward)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    run = torch.compile(model) if compile_model else model

    def step() -> None:
        loss = loss_of(run)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step()   # warm-up: allocations, kernel choice, compilation
    step()
    _sync(device)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    dt = (time.perf_counter() - t0) / steps
    fps = batch / dt
    achieved = flops / dt / 1e12
    out = {"model": model_name, "input_size": size, "parameters": count(model), "batch_size": batch,
           "channels_last": True, "autocast": "bf16" if bf16 else "fp32", "compiled": compile_model,
           "warmup_seconds": warm_s, "steps_timed": steps, "seconds_per_step": dt, "frames_per_s": fps,
           "epoch_frames": epoch_frames, "seconds_per_epoch": epoch_frames / fps, "epochs": epochs,
           "hours_for_epochs": epoch_frames / fps * epochs / 3600, "flops_per_step": flops,
           "flops_method": "3 x FlopCounterMode over one eager forward (its convolution_backward formula ignores "
                           "groups and overcounts ConvNeXt's depthwise convolutions ~80x, so backward is not counted)",
           "achieved_tflops": achieved, "mfu": achieved / peak if peak else None, "peak_memory_gib": _peak_gib(device)}
    del run, model, opt
    return out


def cnn_inference(model_name: str, size: int, batch: int, batches: int, device: torch.device, bf16: bool,
                  tiny: bool = False) -> dict:
    from bench_cnn import bench_inference

    _peak_reset(device)
    model, _ = _cnn(model_name, tiny)
    model = model.to(device, memory_format=torch.channels_last)
    out = {**bench_inference(model, size, batch, batches, device, torch.bfloat16 if bf16 else None),
           "channels_last_weights": True, "peak_memory_gib": _peak_gib(device)}
    del model
    return out


def cnn_library_epoch(model_name: str, size: int, batch: int, n_frames: int, device: torch.device, bf16: bool,
                      workers: int) -> dict:
    """One epoch of ``train_classifier`` on random frames (the notebook's code path)."""
    try:
        import pandas as pd

        from cag_utils.cnn.train import train_classifier
        from cag_utils.data.labels import CLASSES
    except ImportError as err:  # the GPU machine may lack a library of the CPU venv
        return {"skipped": f"missing module: {err.name}"}
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (n_frames, size, size), dtype=np.uint8)
    labels = rng.integers(0, len(CLASSES), n_frames)
    table = pd.DataFrame({
        "frame_uid": [f"f{i}" for i in range(n_frames)],
        "laterality": [CLASSES[k].split("_")[0] for k in labels],
        "key_frame_category": [CLASSES[k].split("_")[1] for k in labels],
        "label": labels, "split": np.where(np.arange(n_frames) % 10 == 0, "val", "train"),
    })
    cfg = {"model_name": model_name, "input_size": size, "batch_size": batch, "epochs": 1, "num_workers": workers,
           "mixed_precision": "bf16" if bf16 else "no", "cpu": device.type == "cpu", "progress": False}
    _peak_reset(device)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = train_classifier(frames, table, cfg, tmp, resume=False)
        dt = time.perf_counter() - t0
    n_train = res.n_train
    return {"frames": n_frames, "n_train": n_train, "batch_size": batch, "dataloader_workers": workers,
            "seconds": dt, "train_frames_per_s_incl_validation": n_train / dt, "status": res.status,
            "peak_memory_gib": _peak_gib(device)}


# --------------------------------------------------------------------------- the run
def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    for name in ("transformers", "peft", "timm", "accelerate"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def targets(out: dict) -> dict:
    """The issue's targets, met or not, from what was measured (None: not measured)."""
    cnn = [p.get("mfu") for k, p in out["parts"].items() if k.startswith("cnn_training") and isinstance(p, dict)]
    cnn = [m for m in cnn if m is not None]
    vlm = {k: p for k, p in out["parts"].items() if k.startswith("vlm:") and "step_seconds" in p}
    res = {"cnn_mfu_at_least": TARGETS["cnn_mfu"], "cnn_best_mfu": max(cnn) if cnn else None,
           "cnn_met": (max(cnn) >= TARGETS["cnn_mfu"]) if cnn else None,
           "vlm_mfu_at_least": TARGETS["vlm_mfu"], "vlm_fits_gib": TARGETS["vlm_fits_gib"], "vlm": {}}
    for k, p in vlm.items():
        mem = p.get("peak_reserved_gib")
        mfu = p.get("mfu")
        res["vlm"][k] = {"mfu": mfu, "mfu_met": None if mfu is None else mfu >= TARGETS["vlm_mfu"],
                         "peak_reserved_gib": mem, "fits": None if mem is None else mem < TARGETS["vlm_fits_gib"],
                         "headroom_gib": None if mem is None else TARGETS["vlm_fits_gib"] - mem}
    return res


def main(argv: list[str] | None = None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = (Path(os.environ["OUT"]) if os.environ.get("OUT") else Path("results/gpu")) / "gpu_check.json"
    ap.add_argument("--out", default=str(default_out))
    ap.add_argument("--device", default="cuda", help="cuda (default) | cpu (tiny models: a check of the script itself)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="skip parts whose estimate would overrun this")
    ap.add_argument("--parts", default="vlm,cnn_training,cnn_inference,cnn_library_epoch,cnn_training_compiled",
                    help="comma-separated; 'vlm' = all three families, or vlm:<family>")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="also time the CNN under torch.compile (default: on for CUDA)")
    ap.add_argument("--profile", default="paper", help="profile whose finetune section sets the VLM step")
    ap.add_argument("--vlm-warmup", type=int, default=2)
    ap.add_argument("--vlm-steps", type=int, default=4)
    ap.add_argument("--vlm-seq-len", type=int, default=None, help="default: the profile's vlm_max_length")
    ap.add_argument("--vlm-batch", type=int, default=None, help="default: the profile's vlm_batch_size")
    ap.add_argument("--gen-batch", type=int, default=None, help="default: the profile's vlm_gen_batch_size")
    ap.add_argument("--gen-prompt", type=int, default=256, help="text tokens of each generation prompt")
    ap.add_argument("--gen-new-tokens", type=int, default=32)
    ap.add_argument("--attn", default=None, help="attn_implementation (default: transformers' choice, sdpa)")
    ap.add_argument("--model", default="convnext_base")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--infer-batch", type=int, default=256)
    ap.add_argument("--epoch-frames", type=int, default=10280, help="70 %% of the paper's 14,686 frames")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--library-frames", type=int, default=2048, help="frames for the train_classifier epoch")
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args(argv)

    if torch is None:
        print(f"gpu_check: {_MISSING} is not installed for {sys.executable}; nothing measured, nothing written.")
        return None
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine; nothing measured, nothing written. "
              "Run it on a GPU machine (make gpu-check), or pass --device cpu for the small check of the script.")
        return None
    gpu = device.type == "cuda"
    tiny = not gpu
    compile_model = gpu if args.compile is None else args.compile
    name = torch.cuda.get_device_name(device) if gpu else f"cpu ({platform.machine()})"
    peak = peak_tflops(name) if gpu else None
    cfg = gpu_vlm.paper_finetune(args.profile)
    t_all = time.perf_counter()
    out: dict = {
        "device": name, "device_capability": list(torch.cuda.get_device_capability(device)) if gpu else None,
        "gpu_memory_gib": torch.cuda.get_device_properties(device).total_memory / 2**30 if gpu else None,
        "versions": versions(), "models": "tiny (CPU check of the script)" if tiny else "full size, random weights",
        "peak_tflops_bf16_dense": peak,
        "peak_source": PEAK_SOURCE if peak else f"device {name!r} not in PEAK_TFLOPS_BF16: MFU left null",
        "profile": args.profile, "budget_s": args.budget_s, "parts": {}, "skipped_for_budget": [],
    }
    path = Path(args.out)

    def write() -> None:
        out["total_seconds"] = time.perf_counter() - t_all
        out["targets"] = targets(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2, default=str))

    cnn_size, cnn_batch = (64, 4) if tiny else (args.size, args.batch)
    cnn_model = "convnext_atto" if tiny else args.model
    jobs = []
    for part in [p.strip() for p in args.parts.split(",") if p.strip()]:
        if part == "vlm":
            jobs += [f"vlm:{k}" for k in gpu_vlm.KINDS]
        elif part == "cnn_training_compiled" and not compile_model:
            continue
        else:
            jobs.append(part)
    for job in jobs:
        elapsed = time.perf_counter() - t_all
        est = ESTIMATE_S.get(job.split(":")[0], 60.0) * (0.1 if tiny else 1.0)
        if elapsed + est > args.budget_s:
            msg = f"skipped: {elapsed:.0f} s spent + ~{est:.0f} s estimated > budget {args.budget_s:.0f} s"
            print(f"gpu_check: BUDGET: {job} {msg}", flush=True)
            out["parts"][job] = {"skipped": msg}
            out["skipped_for_budget"].append(job)
            write()
            continue
        print(f"gpu_check: {job} ...", flush=True)
        t0 = time.perf_counter()
        try:
            if job.startswith("vlm:"):
                res = gpu_vlm.vlm_check(
                    job.split(":", 1)[1], cfg, device, tiny=tiny, warmup=args.vlm_warmup if gpu else 1,
                    steps=args.vlm_steps if gpu else 2, seq_len=args.vlm_seq_len or (None if gpu else 32),
                    batch=args.vlm_batch or (None if gpu else 2), gen_batch=args.gen_batch or (None if gpu else 2),
                    gen_prompt=args.gen_prompt if gpu else 8, gen_new_tokens=args.gen_new_tokens if gpu else 4,
                    peak_tflops=peak, attn_implementation=args.attn)
            elif job in ("cnn_training", "cnn_training_compiled"):
                res = cnn_training(cnn_model, cnn_size, cnn_batch, args.steps if gpu else 2, device, gpu,
                                   job.endswith("compiled"), args.epoch_frames, args.epochs, peak, tiny)
            elif job == "cnn_inference":
                res = cnn_inference(cnn_model, cnn_size, args.infer_batch if gpu else 4,
                                    max(2, args.steps // 2) if gpu else 2, device, gpu, tiny)
            elif job == "cnn_library_epoch":
                res = cnn_library_epoch(cnn_model, cnn_size, cnn_batch, args.library_frames if gpu else 40, device,
                                        gpu, args.workers if gpu else 0)
            else:
                raise ValueError(f"unknown part {job!r}")
        except Exception as exc:   # one broken part must not lose the others' figures
            res = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
            print(f"gpu_check: {job} FAILED: {res['error']}", flush=True)
        res.setdefault("part_seconds", time.perf_counter() - t0)
        out["parts"][job] = res
        _peak_reset(device)
        write()
        print(f"gpu_check: {job}: {summary(res)}", flush=True)
    write()
    print(f"gpu_check: wrote {path} ({out['total_seconds']:.0f} s); targets: {json.dumps(out['targets'])}")
    return out


def summary(res: dict) -> str:
    if "skipped" in res or "error" in res:
        return res.get("skipped") or res["error"]
    if "step_seconds" in res:
        mfu = "n/a" if res["mfu"] is None else f"{res['mfu']:.1%}"
        mem = "n/a" if res["peak_reserved_gib"] is None else f"{res['peak_reserved_gib']:.1f} GiB"
        return (f"{res['step_seconds']['median']:.3f} s/step, {res['tokens_per_s']:.0f} tok/s, "
                f"{res['images_per_s']:.1f} img/s, MFU {mfu}, peak {mem}, "
                f"generation {res['generation']['new_tokens_per_s']:.0f} new tok/s")
    if "frames_per_s" in res:
        mfu = res.get("mfu")
        return f"{res['frames_per_s']:.0f} frames/s" + (f", MFU {mfu:.1%}" if mfu is not None else "")
    return f"{res.get('seconds', 0):.1f} s"


if __name__ == "__main__":
    main()
