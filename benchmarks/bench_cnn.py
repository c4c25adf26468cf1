"""Throughput of the stage-1 ConvNeXt on this machine: inference, training, data, contrast.

Two profiles: the smoke model (the ``cnn`` section of configs/profiles/smoke.yaml: what the
CPU notebooks train) and the paper model (convnext_base, 224 px; the paper trains batch 128 for 200 epochs on ~14.7k
frames). Weights are random (speed does not depend on them). Training speed is timed over a
few optimizer steps and scaled to one epoch of ``--epoch-frames-*`` frames; the paper
estimate also multiplies by 200 epochs. Data-pipeline and contrast throughput are per core.

    python benchmarks/bench_cnn.py --out results/bench_cnn.json   # ~1 min on 2 idle cores, ~2 loaded
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from cag_utils.cnn.contrast import vessel_contrast_batch  # noqa: E402
from cag_utils.cnn.data import build_transform  # noqa: E402
from cag_utils.cnn.model import build_model, count_parameters  # noqa: E402
from cag_utils.run.config import load_config  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_inference(model: torch.nn.Module, size: int, batch: int, n_batches: int, device: torch.device,
                    dtype: torch.dtype | None) -> dict:
    model.eval()
    x = torch.randn(batch, 1, size, size, device=device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        model(x)  # warm-up (allocations, kernel selection)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(n_batches):
            model(x)
        _sync(device)
    dt = time.perf_counter() - t0
    return {"batch_size": batch, "batches_timed": n_batches, "seconds": dt, "frames_per_s": batch * n_batches / dt}


def bench_training(model: torch.nn.Module, size: int, batch: int, steps: int, device: torch.device,
                   dtype: torch.dtype | None, epoch_frames: int, epochs: int) -> dict:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 1, size, size, device=device)
    y = torch.randint(0, 6, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up (also creates the AdamW state)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    dt = time.perf_counter() - t0
    fps = batch * steps / dt
    epoch_s = epoch_frames / fps
    return {
        "batch_size": batch, "steps_timed": steps, "seconds": dt, "seconds_per_step": dt / steps,
        "frames_per_s": fps, "epoch_frames": epoch_frames, "seconds_per_epoch": epoch_s,
        "epochs": epochs, "hours_for_epochs": epoch_s * epochs / 3600,
    }


def bench_transform(source_size: int, input_size: int, n: int) -> dict:
    """Single-process cost of the training transform (resize + TrivialAugmentWide + normalise)."""
    t = build_transform(input_size, train=True, augment="trivialaugment", in_chans=1)
    img = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, source_size, source_size), dtype=np.uint8))
    torch.manual_seed(0)
    t(img)
    t0 = time.perf_counter()
    for _ in range(n):
        t(img)
    dt = time.perf_counter() - t0
    return {"source_size": source_size, "input_size": input_size, "frames": n, "frames_per_s": n / dt}


def bench_contrast(size: int, n: int) -> dict:
    frames = np.random.default_rng(0).integers(0, 256, (n, size, size), dtype=np.uint8)
    t0 = time.perf_counter()
    vessel_contrast_batch(frames)
    dt = time.perf_counter() - t0
    return {"frame_size": size, "frames": n, "frames_per_s": n / dt, "minutes_for_15k_frames": 15000 / (n / dt) / 60}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/bench_cnn.json")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (GPU runs)")
    ap.add_argument("--epoch-frames-smoke", type=int, default=None,
                    help="train frames per smoke epoch (default: the train split of results/01_data.json)")
    # 70 % of the paper's 14,686 frames (its split sizes are not published)
    ap.add_argument("--epoch-frames-paper", type=int, default=10280)
    ap.add_argument("--paper-train-batch", type=int, default=None, help="default: 8 on CPU, 128 on GPU")
    ap.add_argument("--train-steps-paper", type=int, default=2)
    args = ap.parse_args()

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    gpu = device.type == "cuda"
    dtype = torch.bfloat16 if args.bf16 else None
    torch.manual_seed(0)
    t_all = time.perf_counter()
    smoke = load_config("smoke", "cnn")
    if args.epoch_frames_smoke is None:
        data_json = Path(__file__).resolve().parents[1] / "results" / "01_data.json"
        args.epoch_frames_smoke = (json.loads(data_json.read_text())["results"]["split_counts"]["train"]
                                   if data_json.is_file() else 1500)
    smoke_kwargs = dict(smoke["cnn_model_kwargs"])
    profiles = {
        # name: model, input size, inference batch/batches, train batch/steps, epoch frames, epochs
        "smoke": (smoke["cnn_model"], smoke["cnn_input_size"], 64, 4 if not gpu else 20, smoke["cnn_batch_size"],
                  12 if not gpu else 20, args.epoch_frames_smoke, smoke["cnn_epochs"]),
        "paper": ("convnext_base", 224, 16 if not gpu else 128, 2 if not gpu else 10,
                  args.paper_train_batch or (8 if not gpu else 128), args.train_steps_paper if not gpu else 10,
                  args.epoch_frames_paper, 200),
    }
    out: dict = {
        "torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
        "device": torch.cuda.get_device_name(device) if gpu else f"cpu ({platform.processor() or platform.machine()})",
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "autocast": "bf16" if dtype else "fp32", "weights": "random init", "in_chans": 1, "profiles": {},
    }
    for name, (model_name, size, ib, nb, tb, steps, epoch_frames, epochs) in profiles.items():
        model = build_model(model_name, in_chans=1, **(smoke_kwargs if name == "smoke" else {})).to(device)
        res = {"model": model_name, "input_size": size, "parameters": count_parameters(model)}
        res["inference"] = bench_inference(model, size, ib, nb, device, dtype)
        res["training"] = bench_training(model, size, tb, steps, device, dtype, epoch_frames, epochs)
        print(f"{name}: {model_name}@{size} inference {res['inference']['frames_per_s']:.1f} frames/s, "
              f"training {res['training']['frames_per_s']:.2f} frames/s "
              f"= {res['training']['seconds_per_epoch']:.0f} s/epoch of {epoch_frames} frames", flush=True)
        out["profiles"][name] = res
        del model
    out["data_transform"] = [bench_transform(128, 128, 200), bench_transform(512, 224, 100)]
    out["vessel_contrast"] = [bench_contrast(128, 256), bench_contrast(512, 128)]
    out["total_seconds"] = time.perf_counter() - t_all
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path} in {out['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
