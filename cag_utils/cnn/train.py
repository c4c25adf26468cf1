"""Training loop of the stage-1 frame classifier (Hugging Face accelerate).

Paper setting (``PAPER_CONFIG``): ConvNeXt-Base, AdamW, lr 1e-4, batch 128, 200 epochs,
cross-entropy, TrivialAugmentWide. The paper names no input size, weight decay, schedule or
checkpoint rule; here: input 224, torch's AdamW defaults otherwise (weight decay 0.01),
constant learning rate, best checkpoint by validation macro-F1. ``lr_schedule="cosine"``
(timm's ``CosineLRScheduler``, set per epoch, with ``warmup_epochs``) is what the small
randomly initialised smoke model needs; the learning rate of each epoch is in the history.

The loop is plain accelerate, so ``accelerate launch -m cag_utils.cnn --frames ...`` runs the
same code on several GPUs (data-parallel; ``batch_size`` is per process, so the paper's
128 is 4 x 32 on four GPUs); on one CPU it is an ordinary loop. (Checked on CPU with
``torchrun --nproc_per_node 2 -m cag_utils.cnn ...`` and ``"cpu": true``: DDP over gloo.)

Files in ``out_dir``:
  best.safetensors + config.json   weights with the best validation macro-F1, and the recipe
  last.safetensors + last_state.pt weights, optimizer state, history after the last epoch
  rejected_frames.json             frames ``check_frames`` refused
  README.md                        model card (``cnn.card``): recipe and validation score; the test scores
                                   come with ``python -m cag_utils.run.model_cards`` after notebook 02
  <file>.sha256                    content hash of each of the files above (cag_utils.run.cachecheck):
                                   a resumed run whose files fail it (or cannot be read) trains again
                                   from the first epoch, saying so; ``load_trained`` raises CacheError
                                   naming the folder and the command that rebuilds it

Determinism: every epoch reseeds torch and the shuffling generator from (seed, epoch), so
an epoch depends only on the weights/optimizer state it starts from. Two runs with one seed
give identical histories on a CPU (except the ``seconds`` column), and stopping and resuming
gives the same result as an uninterrupted run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import timm
from timm.scheduler import CosineLRScheduler
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cag_utils.run.cachecheck import CacheError, check_file, fix_command, seal
from cag_utils.run.cachecheck import log as cache_log
from cag_utils.cnn.data import FrameDataset, build_transform, check_frames, default_mean_std
from cag_utils.cnn.evaluate import classification_metrics
from cag_utils.cnn.model import build_model
from cag_utils.data.labels import CLASSES
from cag_utils.run.seed import seed_everything, set_threads

__all__ = ["DEFAULT_CONFIG", "PAPER_CONFIG", "TrainResult", "load_trained", "resolve_config", "train_classifier"]

DEFAULT_CONFIG: dict[str, Any] = {
    "model_name": "convnext_atto",  # smoke profile; the paper used convnext_base
    "model_kwargs": {},  # extra timm.create_model arguments (e.g. tiny depths/dims in tests)
    "input_size": 128,
    "in_chans": 1,
    "epochs": 10,
    "batch_size": 32,
    "eval_batch_size": None,  # None = 2 x batch_size
    "lr": 1e-4,
    "lr_schedule": "constant",  # "constant" (the paper names none) | "cosine" (timm, per epoch)
    "warmup_epochs": 0,  # linear warm-up from lr / 100 (cosine schedule only)
    "weight_decay": 0.01,  # torch AdamW default: the paper gives none
    "num_workers": 0,
    "seed": 0,
    "pretrained_file": None,
    "drop_path_rate": 0.0,
    "augment": "trivialaugment",
    "label_smoothing": 0.0,
    "mixed_precision": "no",  # "no" | "bf16" | "fp16"
    "max_minutes": None,  # wall-clock guard for this call, checked between epochs: stops loudly, status "truncated"
    "threads": None,  # torch intra-op CPU threads (None: torch default); part of the result on a CPU
    "mean": None,  # None = ImageNet statistics for in_chans (data.default_mean_std)
    "std": None,
    "cpu": False,  # force CPU even when a GPU is present
    "progress": True,  # tqdm bars: True (epochs and batches) | "epochs" (one bar; notebooks) | False
}
PAPER_CONFIG: dict[str, Any] = {
    **DEFAULT_CONFIG,
    "model_name": "convnext_base",
    "input_size": 224,
    "epochs": 200,
    "batch_size": 128,
    "lr": 1e-4,
}
# Keys that change how a run is shown or guarded, never its weights: left out of run hashes and recipe checks.
NOT_RECIPE_KEYS: tuple[str, ...] = ("progress", "max_minutes")
# Keys that define the network: a resumed run must agree on them.
_ARCH_KEYS: tuple[str, ...] = ("model_name", "model_kwargs", "input_size", "in_chans")


@dataclass
class TrainResult:
    """Outcome of ``train_classifier``. ``status``: completed | truncated | no_data.

    ``truncated``: the wall-clock guard ``max_minutes`` stopped training before ``epochs``;
    such a result depends on the machine's speed and is not a reproduction of the config.
    """

    out_dir: Path
    status: str
    epochs_completed: int
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    best_val_macro_f1: float | None = None
    best_path: Path | None = None
    last_path: Path | None = None
    config_path: Path | None = None
    n_train: int = 0
    n_val: int = 0
    rejects: list[dict[str, Any]] = field(default_factory=list)

    @property
    def history_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.history)


def resolve_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """``DEFAULT_CONFIG`` updated by ``cfg``; unknown keys raise (they are usually typos)."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULT_CONFIG))
    if unknown:
        raise ValueError(f"unknown training config keys {unknown}; known: {sorted(DEFAULT_CONFIG)}")
    out = {**DEFAULT_CONFIG, **cfg}
    if out["pretrained_file"] is not None:
        out["pretrained_file"] = str(out["pretrained_file"])
    return out


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)
    seal(path)  # <file>.sha256, checked on reading (cag_utils.run.cachecheck)


def _save_weights(state_dict: dict[str, torch.Tensor], path: Path, epoch: int) -> None:
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(tmp), {"epoch": str(epoch)})
    os.replace(tmp, path)  # atomic: an interrupted save never leaves a half-written checkpoint
    seal(path)


CHECKPOINT_FILES = ("last_state.pt", "last.safetensors", "best.safetensors", "config.json")


def _resume_state(out_dir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """(training state, last weights) of a checkpoint folder; None after clearing it when any of its
    files fails its sha256 or cannot be read (logged: the run then trains again from the first epoch)."""
    files = [out_dir / name for name in CHECKPOINT_FILES]
    problem = next((p for f in files if f.exists() and (p := check_file(f))), None)
    if problem is None:
        try:
            state = torch.load(out_dir / "last_state.pt", map_location="cpu", weights_only=True)
            weights = load_file(str(out_dir / "last.safetensors"))
            if (out_dir / "best.safetensors").exists():
                load_file(str(out_dir / "best.safetensors"))
            if (out_dir / "config.json").exists():
                json.loads((out_dir / "config.json").read_text())
            return state, weights
        except Exception as exc:
            problem = f"a file is unreadable ({type(exc).__name__})"
    cache_log.warning("checkpoint %s is damaged (%s): training it again from the first epoch", out_dir.name, problem)
    for f in files:
        f.unlink(missing_ok=True)
        f.with_name(f.name + ".sha256").unlink(missing_ok=True)
    return None


@torch.no_grad()
def _validate(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator) -> dict[str, float]:
    model.eval()
    losses, preds, labels = [], [], []
    for x, y in loader:
        logits = model(x).float()
        loss = F.cross_entropy(logits, y, reduction="none")
        loss, pred, y = accelerator.gather_for_metrics((loss, logits.argmax(1), y))
        losses.append(loss.cpu()), preds.append(pred.cpu()), labels.append(y.cpu())
    if not labels:
        return {"val_loss": math.nan, "val_macro_f1": math.nan, "val_accuracy": math.nan}
    m = classification_metrics(torch.cat(labels).numpy(), torch.cat(preds).numpy())
    return {"val_loss": float(torch.cat(losses).mean()), "val_macro_f1": m["macro_f1"], "val_accuracy": m["accuracy"]}


def _make_accelerator(mixed_precision: str, cpu: bool) -> Accelerator:
    """An Accelerator; in a single process (a notebook kernel) precision may change between runs."""
    try:
        return Accelerator(mixed_precision=mixed_precision, cpu=cpu)
    except ValueError as err:
        # accelerate keeps one global state per process and refuses a new precision. With one
        # process nothing else shares that state, so resetting it is safe; never when distributed.
        if "already been initialized" not in str(err) or PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state()
        return Accelerator(mixed_precision=mixed_precision, cpu=cpu)


def train_classifier(
    frames: Any, table: pd.DataFrame, cfg: dict[str, Any] | None, out_dir: str | Path, resume: bool = True
) -> TrainResult:
    """Train on ``split == 'train'`` rows, select on ``split == 'val'``; never reads test rows.

    With ``resume`` and a ``last_state.pt`` in ``out_dir``, training continues after the
    last completed epoch up to ``cfg['epochs']`` (history and best checkpoint carry over);
    the architecture keys must match the saved run, the others (epochs, lr, ...) may change.
    Without validation frames the best checkpoint is the last one.
    """
    cfg = resolve_config(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_threads(cfg["threads"])
    accelerator = _make_accelerator(cfg["mixed_precision"], cfg["cpu"])
    main = accelerator.is_main_process
    t_start = time.perf_counter()

    usable, rejects = check_frames(frames, table)
    if main:
        _write_json(out_dir / "rejected_frames.json", rejects)
    split = table["split"].astype(str).to_numpy()
    train_idx = usable[split[usable] == "train"]
    val_idx = usable[split[usable] == "val"]
    if len(train_idx) == 0:
        # Reported, not raised: a notebook can show why nothing was trained.
        accelerator.print(f"no usable training frames ({len(rejects)} rejected); nothing trained")
        return TrainResult(out_dir, "no_data", 0, n_val=len(val_idx), rejects=rejects)

    seed_everything(cfg["seed"])
    model = build_model(
        cfg["model_name"], len(CLASSES), cfg["in_chans"], cfg["pretrained_file"], cfg["drop_path_rate"],
        **cfg["model_kwargs"],
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    if cfg["lr_schedule"] not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {cfg['lr_schedule']!r}")

    history: list[dict[str, float]] = []
    best_f1, best_epoch, start_epoch = -math.inf, None, 0
    state_path, last_path = out_dir / "last_state.pt", out_dir / "last.safetensors"
    best_path, config_path = out_dir / "best.safetensors", out_dir / "config.json"
    resumed = _resume_state(out_dir) if resume and state_path.exists() and last_path.exists() else None
    if resumed is not None:
        state, last_weights = resumed
        old = state["config"]
        clash = {k: (old.get(k), cfg[k]) for k in _ARCH_KEYS if old.get(k) != cfg[k]}
        if clash:
            raise ValueError(f"cannot resume {out_dir}: config differs in {clash}; use another out_dir")
        model.load_state_dict(last_weights)
        optimizer.load_state_dict(state["optimizer"])
        history, start_epoch = list(state["history"]), int(state["epochs_completed"])
        best_epoch = state["best_epoch"]
        best_f1 = -math.inf if best_epoch is None else history[best_epoch - 1]["val_macro_f1"]
        accelerator.print(f"resuming {out_dir.name} after epoch {start_epoch}")  # no machine paths in outputs

    mean, std = cfg["mean"], cfg["std"]
    if mean is None or std is None:
        mean, std = default_mean_std(cfg["in_chans"])
    size, chans = cfg["input_size"], cfg["in_chans"]
    train_ds = FrameDataset.from_table(
        frames, table, train_idx, build_transform(size, True, cfg["augment"], chans, mean, std)
    )
    val_ds = FrameDataset.from_table(frames, table, val_idx, build_transform(size, False, "none", chans, mean, std))
    generator = torch.Generator()
    train_dl = DataLoader(
        train_ds, batch_size=cfg["batch_size"], shuffle=True, generator=generator, num_workers=cfg["num_workers"]
    )
    val_dl = DataLoader(
        val_ds, batch_size=cfg["eval_batch_size"] or 2 * cfg["batch_size"], num_workers=cfg["num_workers"]
    )
    model, optimizer, train_dl, val_dl = accelerator.prepare(model, optimizer, train_dl, val_dl)
    scheduler = None
    if cfg["lr_schedule"] == "cosine":  # stateless in the epoch: step(epoch) sets that epoch's lr, so resume is exact
        scheduler = CosineLRScheduler(
            optimizer, t_initial=max(1, cfg["epochs"] - cfg["warmup_epochs"]), lr_min=cfg["lr"] / 100, warmup_t=cfg["warmup_epochs"],
            warmup_lr_init=cfg["lr"] / 100, warmup_prefix=True,
        )

    status = "completed"
    budget_s = None if cfg["max_minutes"] is None else 60.0 * float(cfg["max_minutes"])
    epochs = tqdm(range(start_epoch, cfg["epochs"]), desc="epochs", disable=not (main and cfg["progress"]))
    for epoch in epochs:
        t0 = time.perf_counter()
        epoch_seed = _epoch_seed(cfg["seed"], epoch)
        torch.manual_seed(epoch_seed)  # augmentation and drop-path draws
        generator.manual_seed(epoch_seed)  # shuffling order
        if scheduler is not None:
            scheduler.step(epoch)
        model.train()
        sums = torch.zeros(2, device=accelerator.device)  # (loss x n, n)
        batches = tqdm(train_dl, desc=f"epoch {epoch + 1}", leave=False, disable=not (main and cfg["progress"] is True))
        for x, y in batches:
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg["label_smoothing"])
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            sums += torch.stack([loss.detach() * len(y), torch.tensor(float(len(y)), device=sums.device)])
        sums = accelerator.reduce(sums, reduction="sum")
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "train_loss": float(sums[0] / sums[1])}
        row.update(_validate(model, val_dl, accelerator))
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        epochs.set_postfix(loss=f"{row['train_loss']:.3f}", f1=f"{row['val_macro_f1']:.3f}")

        # With no validation frames every epoch counts as best, i.e. best = last.
        f1 = row["val_macro_f1"]
        improved = math.isnan(f1) or f1 > best_f1
        if improved:
            best_f1, best_epoch = f1, epoch + 1
        weights = accelerator.get_state_dict(model)  # unwrapped (and gathered under FSDP/DeepSpeed)
        if main:
            if improved:
                _save_weights(weights, best_path, best_epoch)
                _write_json(config_path, {
                    "config": cfg, "classes": list(CLASSES), "mean": list(mean), "std": list(std),
                    "best_epoch": best_epoch, "best_val_macro_f1": None if math.isnan(f1) else f1,
                    "n_train": len(train_idx), "n_val": len(val_idx), "weights": best_path.name,
                    "versions": {"torch": torch.__version__, "timm": timm.__version__},
                })
            _save_weights(weights, last_path, epoch + 1)
            tmp = state_path.with_suffix(".tmp")
            torch.save({
                "config": cfg, "optimizer": optimizer.state_dict(), "history": history,
                "epochs_completed": epoch + 1, "best_epoch": best_epoch,
            }, tmp)
            os.replace(tmp, state_path)
            seal(state_path)
        accelerator.wait_for_everyone()

        elapsed = time.perf_counter() - t_start
        if budget_s is not None and epoch + 1 < cfg["epochs"] and elapsed + row["seconds"] > budget_s:
            # A guard, not a budget: the result now depends on the machine's speed. Say so loudly;
            # a rerun with the same out_dir resumes from here.
            status = "truncated"
            warnings.warn(f"TRAINING TRUNCATED after epoch {epoch + 1} of {cfg['epochs']}: the wall-clock guard "
                          f"max_minutes={cfg['max_minutes']} was reached; this result is not the config's",
                          RuntimeWarning, stacklevel=2)
            break

    if main and best_path.exists():   # README.md: what training knows; test scores come with model_cards' refresh
        from cag_utils.cnn.card import cnn_spec
        from cag_utils.run.model_cards import write as write_card

        write_card(out_dir, cnn_spec(out_dir))
    return TrainResult(
        out_dir=out_dir, status=status, epochs_completed=len(history), history=history,
        best_epoch=best_epoch, best_val_macro_f1=None if best_epoch is None else float(best_f1),
        # (NaN when there were no validation frames)
        best_path=best_path if best_path.exists() else None, last_path=last_path if last_path.exists() else None,
        config_path=config_path if config_path.exists() else None,
        n_train=len(train_idx), n_val=len(val_idx), rejects=rejects,
    )


def load_trained(out_dir: str | Path, which: str = "best") -> tuple[torch.nn.Module, dict[str, Any]]:
    """(model in eval mode, config.json contents) from a ``train_classifier`` output folder."""
    out_dir = Path(out_dir)
    fix = fix_command(out_dir, "02")  # notebook 02 trains a damaged checkpoint again
    paths = (out_dir / "config.json", out_dir / f"{which}.safetensors")
    for path in paths:
        if path.exists() and (problem := check_file(path)):
            raise CacheError(out_dir, problem, fix)
    try:
        info = json.loads(paths[0].read_text())
        weights = load_file(str(paths[1]))
    except FileNotFoundError:
        raise
    except Exception as exc:  # e.g. SafetensorError: incomplete metadata (a file cut short)
        raise CacheError(out_dir, f"unreadable ({type(exc).__name__})", fix) from None
    cfg = info["config"]
    model = build_model(cfg["model_name"], len(info["classes"]), cfg["in_chans"], None, 0.0, **cfg["model_kwargs"])
    model.load_state_dict(weights)
    return model.eval(), info


def main(argv: list[str] | None = None) -> None:
    """CLI: ``[accelerate launch] -m cag_utils.cnn --frames F --table T --out-dir D [--config C]``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", required=True, help="frames.npy (uint8, N x H x W), memory-mapped")
    ap.add_argument("--table", required=True, help="frame table (.parquet or .csv)")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--config", help="JSON file with training config keys")
    ap.add_argument("--paper", action="store_true", help="start from PAPER_CONFIG instead of DEFAULT_CONFIG")
    ap.add_argument("--no-resume", action="store_true")
    args = ap.parse_args(argv)
    cfg = dict(PAPER_CONFIG) if args.paper else {}
    if args.config:
        cfg.update(json.loads(Path(args.config).read_text()))
    frames = np.load(args.frames, mmap_mode="r")
    table = pd.read_parquet(args.table) if args.table.endswith(".parquet") else pd.read_csv(args.table)
    result = train_classifier(frames, table, cfg, args.out_dir, resume=not args.no_resume)
    if PartialState().is_main_process:
        summary = {k: v for k, v in asdict(result).items() if k not in ("history", "rejects")}
        print(json.dumps({**summary, "n_rejected": len(result.rejects)}, indent=2, default=str))


if __name__ == "__main__":
    main()
