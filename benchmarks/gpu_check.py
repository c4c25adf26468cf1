"""GPU check of the paper profile's training steps at full size: throughput and peak memory.

Run by ``make gpu-check`` on a machine with a GPU (writes ``$OUT/gpu_check.json``, else
``results/gpu_check.json``). What it measures, with random weights and inputs (speed and
memory do not depend on them):

* CNN (stage 1): the paper's ConvNeXt-Base at 224 px, batch 128, bf16 autocast, AdamW:
  training frames/s, seconds per epoch of the paper's ~10.3k training frames, hours for 200
  epochs, peak GPU memory; inference frames/s at batch 256;
* the same loop end to end through ``cag_utils.cnn.train_classifier`` (accelerate, bf16,
  safetensors checkpoints) for one epoch on random frames, to show the library path runs on
  the GPU and to time it against the bare loop.

The VLM LoRA steps (stage 3) join this script with the fine-tuning stage. On a CPU the same
script runs with small settings (``--device cpu --model convnext_atto --size 64 ...``); the
tests do that.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cnn import bench_inference, bench_training  # noqa: E402  (same folder)
from cag_utils.cnn.model import build_model, count_parameters  # noqa: E402


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def cnn_training(model_name: str, size: int, batch: int, steps: int, device: torch.device, bf16: bool,
                 epoch_frames: int, epochs: int) -> dict:
    """Bare AdamW steps of the classifier (bench_cnn's loop): throughput and peak memory."""
    _peak_reset(device)
    model = build_model(model_name, in_chans=1).to(device)
    out = {"model": model_name, "input_size": size, "parameters": count_parameters(model),
           **bench_training(model, size, batch, steps, device, torch.bfloat16 if bf16 else None, epoch_frames, epochs),
           "peak_memory_gib": _peak_gib(device)}
    del model
    return out


def cnn_inference(model_name: str, size: int, batch: int, batches: int, device: torch.device, bf16: bool) -> dict:
    _peak_reset(device)
    model = build_model(model_name, in_chans=1).to(device)
    out = {**bench_inference(model, size, batch, batches, device, torch.bfloat16 if bf16 else None),
           "peak_memory_gib": _peak_gib(device)}
    del model
    return out


def cnn_library_epoch(model_name: str, size: int, batch: int, n_frames: int, device: torch.device, bf16: bool,
                      workers: int) -> dict:
    """One epoch of ``train_classifier`` on random frames (the notebook's code path)."""
    try:
        import pandas as pd

        from cag_utils.cnn.train import train_classifier
        from cag_utils.labels import CLASSES
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


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "results"), "gpu_check.json"))
    ap.add_argument("--device", default="cuda", help="cuda (default) | cpu (small check of the script itself)")
    ap.add_argument("--model", default="convnext_base")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--infer-batch", type=int, default=256)
    ap.add_argument("--epoch-frames", type=int, default=10280, help="70 % of the paper's 14,686 frames")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--library-frames", type=int, default=2048, help="frames for the train_classifier epoch")
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --device cpu for a small check")
    bf16 = device.type == "cuda"
    torch.manual_seed(0)
    t_all = time.perf_counter()
    out: dict = {
        "device": torch.cuda.get_device_name(device) if bf16 else f"cpu ({platform.machine()})",
        "torch": torch.__version__, "python": platform.python_version(), "autocast": "bf16" if bf16 else "fp32",
        "cnn_training": cnn_training(args.model, args.size, args.batch, args.steps, device, bf16,
                                     args.epoch_frames, args.epochs),
        "cnn_inference": cnn_inference(args.model, args.size, args.infer_batch, max(2, args.steps // 2), device, bf16),
        "cnn_library_epoch": cnn_library_epoch(args.model, args.size, args.batch, args.library_frames, device, bf16,
                                               args.workers),
    }
    out["total_seconds"] = time.perf_counter() - t_all
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    tr = out["cnn_training"]
    print(f"{args.model}@{args.size} batch {args.batch}: {tr['frames_per_s']:.0f} train frames/s, "
          f"{tr['hours_for_epochs']:.2f} h for {args.epochs} epochs, peak {tr['peak_memory_gib']} GiB; wrote {path}")
    return out


if __name__ == "__main__":
    main()
