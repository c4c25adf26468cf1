"""A stand-in for ImageNet pretraining: the ConvNeXt first learns C-arm angles on other patients.

The paper's ConvNeXt started from ImageNet weights; the smoke profile cannot download them. Instead
the same network is first trained on an **auxiliary synthetic cohort** to regress the free ground
truth of the generator: the C-arm primary and secondary angles of each run (DICOM header
``PositionerPrimaryAngle``/``PositionerSecondaryAngle``), scaled by 1/45. Predicting the projection
from the image means reading the shape of the projected tree and catheter, which is what
laterality depends on; the six labels are never used.

- **Patients.** The auxiliary cohort is generated with its own seed (a SeedSequence child of the
  profile seed), de-identified with the same salt as the main cohorts, and ``check_disjoint``
  asserts that none of its pseudonymous patients is in any split of the main cohorts.
- **Weights.** Only the backbone is kept: the regression head is dropped and the 1-channel stem is
  stored as the equivalent 3-channel (RGB) stem, so the file is a timm state dict like an
  ImageNet checkpoint and goes through the same path (``cnn_pretrained_file``, timm's pretrained
  overlay, which sums the RGB stem back to gray and starts a fresh 6-way head).
- **Cache.** ``data/work/<profile>/pretrain-<hash>/``: ``cohort/`` (sampled frames and table, hash
  of the generator settings) and ``<model>-<hash>/backbone.safetensors`` (hash of cohort and
  training settings), so a fresh clone computes it once. Both are checked against the sha256
  recorded when they were written (cag_utils.run.cachecheck); a damaged one is built again (logged).

Profile keys (``cnn`` section): ``cnn_pretrain`` (``none`` | ``synthetic_angles``),
``cnn_pretrain_exams``, ``cnn_pretrain_epochs``, ``cnn_pretrain_lr``. A non-empty
``cnn_pretrained_file`` (a user's ImageNet checkpoint) wins over ``cnn_pretrain``.
Architecture, input size, batch size, augmentation and threads come from the classifier's config.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from timm.scheduler import CosineLRScheduler
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from cag_utils.cnn.data import FrameDataset, build_transform, default_mean_std
from cag_utils.cnn.model import build_model
from cag_utils.cnn.train import NOT_RECIPE_KEYS, _epoch_seed, _make_accelerator, _save_weights, _write_json, resolve_config
from cag_utils.run.cachecheck import CacheError, check_file, check_folder, fix_command
from cag_utils.run.cachecheck import log as cache_log
from cag_utils.run.seed import seed_everything, set_threads

__all__ = [
    "PRETRAIN_TASKS", "PretrainResult", "aux_cohort_settings", "build_aux_cohort", "check_disjoint",
    "export_backbone", "pretrain_backbone", "pretrained_weights",
]

# task -> (target columns of the auxiliary frame table, scale dividing each)
PRETRAIN_TASKS: dict[str, dict[str, float]] = {
    "synthetic_angles": {"primary_angle": 45.0, "secondary_angle": 45.0},
}
AUX_STREAM = 0x505245  # "PRE": the auxiliary cohort's seed is SeedSequence([seed, AUX_STREAM])
VAL_FRACTION = 0.15  # auxiliary patients held out to monitor the regression (never used to pick weights)
BACKBONE_FILE = "backbone.safetensors"


@dataclass
class PretrainResult:
    """Outcome of ``pretrained_weights``: the weights file and how it was made."""

    path: Path | None
    source: str  # "none" | "user_file" | task name
    cached: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    n_train: int = 0
    n_val: int = 0
    n_patients: int = 0
    name: str = ""  # cache folder names, for display (no machine paths)

    def summary(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        return {"source": self.source, "weights": self.name, "n_train_frames": self.n_train,
                "n_val_frames": self.n_val, "n_patients": self.n_patients, "epochs": len(self.history),
                "val_mae_deg": last.get("val_mae_deg"), "val_mae_deg_mean_predictor": last.get("val_mae_deg_baseline")}


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def aux_cohort_settings(data_cfg: dict[str, Any], n_exams: int, image_size: int, stream: int = AUX_STREAM) -> dict[str, Any]:
    """Data-stage settings of the auxiliary cohort: the profile's generator, its own seed and size.

    No independent exams, no annotator noise (labels are not used). ``image_size`` is the main frames'.
    ``stream`` names the seed stream (another stream: another set of patients, e.g. the ceiling study's).
    """
    seed = int(np.random.SeedSequence([int(data_cfg["seed"]), int(stream)]).generate_state(1)[0])
    return {**data_cfg, "seed": seed, "n_annotation_exams": int(n_exams), "n_independent_exams": 0,
            "image_size": int(image_size), "annotator_noise": 0.0}


def build_aux_cohort(aux_cfg: dict[str, Any], out_dir: Path, progress: bool = True) -> tuple[np.ndarray, pd.DataFrame]:
    """Generate, read, de-identify and sample the auxiliary cohort (cached in ``out_dir``).

    Returns (frames, table) with the run's header angles and the exam's lesions (``'#6 90%; ...'``, for
    the stage-3 stand-ins' captions) on every frame row and a patient split
    (``train``/``val``). The raw DICOM files are deleted once read.
    """
    from cag_utils.data import ingest
    from cag_utils.data.dataset import sampling_kwargs
    from cag_utils.data.deid import resolve_salt
    from cag_utils.data.splits import patient_split
    from cag_utils.synth.cohort import generate_cohort

    out_dir = Path(out_dir)
    if (out_dir / "frames.npy").is_file() and (out_dir / "frames.parquet").is_file():
        try:
            return ingest.load_dataset(out_dir)
        except CacheError as err:
            cache_log.warning("pretraining cohort %s is damaged (%s): building it again", out_dir.parent.name,
                              err.problem)
    raw = out_dir.parent / "raw"
    generate_cohort(raw, aux_cfg, workers=aux_cfg["num_workers"], progress=progress)
    labels = ingest.read_labels(raw / "labels.csv")
    res = ingest.ingest_cohort(raw, "annotation", labels, resolve_salt(aux_cfg), sampling_kwargs(aux_cfg),
                               workers=aux_cfg["num_workers"], progress=progress)
    runs = res["runs"][["run_id", "primary_angle", "secondary_angle"]]
    table = res["table"].drop(columns=[c for c in ("primary_angle", "secondary_angle") if c in res["table"]])
    table = table.merge(runs, on="run_id", how="left", validate="many_to_one")
    reports = ingest.read_reports(raw / "reports.jsonl", res["exam_ids"])[["exam_id", "lesions"]]
    table = table.merge(reports, on="exam_id", how="left", validate="many_to_one").fillna({"lesions": ""})
    split = patient_split(table["patient_id"], (1 - VAL_FRACTION, VAL_FRACTION, 0.0), aux_cfg["seed"])
    table["split"] = split.replace({"test": "val"})  # patient_split keeps one patient for a test split: monitor it too
    ingest.save_dataset(out_dir, res["frames"], {"frames": table})
    shutil.rmtree(raw, ignore_errors=True)
    return ingest.load_dataset(out_dir)


def check_disjoint(aux_patients: Any, **cohorts: Any) -> None:
    """Raise if a pseudonymous patient of the auxiliary cohort is in any named main cohort."""
    aux = set(map(str, aux_patients))
    for name, patients in cohorts.items():
        shared = aux & set(map(str, patients))
        if shared:
            raise ValueError(f"{len(shared)} auxiliary pretraining patients are also in the {name} cohort "
                             f"(e.g. {sorted(shared)[0]}); pretraining must not see them")


class _RegressionDataset(Dataset):
    """(image, float target vector) pairs; images as ``FrameDataset`` makes them."""

    def __init__(self, frames: Any, indices: np.ndarray, transform: Any, targets: np.ndarray) -> None:
        self.images = FrameDataset(frames, indices, transform)
        self.targets = torch.as_tensor(targets, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i][0], self.targets[i]


def export_backbone(state_dict: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A timm-style (ImageNet-like) state dict: classifier dropped, 1-channel stem stored as RGB.

    timm adapts an RGB stem to one channel by summing over the channels, so the gray kernel is
    stored divided by three in each of the three channels.
    """
    classifier = model.pretrained_cfg.get("classifier", "head.fc")
    out = {k: v for k, v in state_dict.items() if not k.startswith(classifier + ".")}
    stem = model.pretrained_cfg.get("first_conv", "stem.0") + ".weight"
    if stem in out and out[stem].shape[1] == 1:
        out[stem] = out[stem].repeat(1, 3, 1, 1) / 3.0
    return out


def pretrain_backbone(frames: Any, table: pd.DataFrame, task: str, cfg: dict[str, Any], out_dir: Path) -> list[dict]:
    """Train the classifier's architecture to regress ``PRETRAIN_TASKS[task]`` targets; save its backbone.

    ``cfg``: a training config (``cag_utils.cnn.train``; its epochs and lr are the pretraining's).
    Rows with ``split == 'train'`` are trained on, ``'val'`` only monitored (mean absolute error in
    degrees beside that of predicting the training mean). The last epoch's backbone is kept.
    """
    cfg = resolve_config(cfg)
    targets = PRETRAIN_TASKS[task]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_threads(cfg["threads"])
    accelerator = _make_accelerator(cfg["mixed_precision"], cfg["cpu"])
    scale = np.array(list(targets.values()), dtype=np.float32)
    y = table[list(targets)].to_numpy(np.float32) / scale
    split = table["split"].astype(str).to_numpy()
    train_idx, val_idx = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")

    seed_everything(cfg["seed"])
    model = build_model(cfg["model_name"], len(targets), cfg["in_chans"], None, cfg["drop_path_rate"],
                        **cfg["model_kwargs"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    mean, std = default_mean_std(cfg["in_chans"])
    size, chans = cfg["input_size"], cfg["in_chans"]
    generator = torch.Generator()
    train_dl = DataLoader(_RegressionDataset(frames, train_idx, build_transform(size, True, cfg["augment"], chans, mean, std),
                                             y[train_idx]),
                          batch_size=cfg["batch_size"], shuffle=True, generator=generator, num_workers=cfg["num_workers"])
    val_dl = DataLoader(_RegressionDataset(frames, val_idx, build_transform(size, False, "none", chans, mean, std), y[val_idx]),
                        batch_size=2 * cfg["batch_size"], num_workers=cfg["num_workers"])
    model, optimizer, train_dl, val_dl = accelerator.prepare(model, optimizer, train_dl, val_dl)
    scheduler = CosineLRScheduler(optimizer, t_initial=max(1, cfg["epochs"] - cfg["warmup_epochs"]), lr_min=cfg["lr"] / 100,
                                  warmup_t=cfg["warmup_epochs"], warmup_lr_init=cfg["lr"] / 100, warmup_prefix=True)
    baseline = float(np.abs(y[val_idx] - y[train_idx].mean(0)).mean() * scale.mean()) if len(val_idx) else math.nan
    history: list[dict[str, float]] = []
    main = accelerator.is_main_process
    for epoch in tqdm(range(cfg["epochs"]), desc="pretraining epochs", disable=not (main and cfg["progress"])):
        t0 = time.perf_counter()
        seed = _epoch_seed(cfg["seed"], epoch)
        torch.manual_seed(seed)
        generator.manual_seed(seed)
        scheduler.step(epoch)
        model.train()
        sums = torch.zeros(2, device=accelerator.device)
        for x, t in train_dl:
            loss = F.mse_loss(model(x).float(), t)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            sums += torch.stack([loss.detach() * len(t), torch.tensor(float(len(t)), device=sums.device)])
        sums = accelerator.reduce(sums, reduction="sum")
        model.eval()
        errors = []
        with torch.no_grad():
            for x, t in val_dl:
                errors.append(accelerator.gather_for_metrics((model(x).float() - t).abs()).cpu())
        mae = float(torch.cat(errors).mean() * float(scale.mean())) if errors else math.nan
        history.append({"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                        "train_mse": float(sums[0] / sums[1]), "val_mae_deg": mae, "val_mae_deg_baseline": baseline,
                        "seconds": time.perf_counter() - t0})
    weights = accelerator.get_state_dict(model)
    if main:
        _save_weights(export_backbone(weights, accelerator.unwrap_model(model)), out_dir / BACKBONE_FILE, cfg["epochs"])
        _write_json(out_dir / "pretrain.json", {"task": task, "targets": targets, "config": cfg, "history": history,
                                                "n_train": len(train_idx), "n_val": len(val_idx)})
    accelerator.wait_for_everyone()
    return history


def pretrained_weights(cfg: dict[str, Any], train_cfg: dict[str, Any], image_size: int,
                       main_patients: dict[str, Any] | None = None, progress: bool = True) -> PretrainResult:
    """The weights file the classifier starts from, made (once) if the profile asks for pretraining.

    ``cfg``: the effective ``cnn`` stage config (common + cnn keys); ``train_cfg``: the classifier's
    training config (``stage.train_config``), whose architecture the pretraining uses;
    ``main_patients``: cohort name -> patient IDs that the auxiliary cohort must not contain
    (default: both processed cohorts of notebook 01).
    """
    from cag_utils.run.config import load_config, work_dir

    if cfg.get("cnn_pretrained_file"):
        path = Path(cfg["cnn_pretrained_file"])
        return PretrainResult(path, "user_file", cached=True, name=path.name)
    task = cfg.get("cnn_pretrain") or "none"
    if task == "none":
        return PretrainResult(None, "none")
    if task not in PRETRAIN_TASKS:
        raise ValueError(f"cnn_pretrain must be 'none' or one of {sorted(PRETRAIN_TASKS)}, got {task!r}")
    data_cfg = {**load_config(cfg["profile"], "data"), **{k: cfg[k] for k in ("seed", "num_workers") if k in cfg}}
    aux_cfg = aux_cohort_settings(data_cfg, cfg["cnn_pretrain_exams"], image_size)
    from cag_utils.data.dataset import sampling_kwargs
    from cag_utils.synth.cohort import generator_settings

    cohort_key = {"generator": generator_settings(aux_cfg), "sampling": sampling_kwargs(aux_cfg),
                  "salt": hashlib.sha256(str(aux_cfg["deid_salt"]).encode()).hexdigest(), "val": VAL_FRACTION}
    root = work_dir(cfg["profile"]) / f"pretrain-{_hash(cohort_key)}"
    frames, table = build_aux_cohort(aux_cfg, root / "cohort", progress)
    if main_patients is None:
        main_patients = _main_patients(cfg)
    check_disjoint(table["patient_id"], **main_patients)

    pcfg = {**train_cfg, "epochs": int(cfg["cnn_pretrain_epochs"]), "lr": float(cfg["cnn_pretrain_lr"]),
            "pretrained_file": None, "progress": bool(progress)}
    keep = {k: v for k, v in pcfg.items() if k not in NOT_RECIPE_KEYS}
    out_dir = root / f"{pcfg['model_name']}-{_hash({'task': task, 'train': keep})}"
    meta = out_dir / "pretrain.json"
    cached = (out_dir / BACKBONE_FILE).is_file() and meta.is_file()
    if cached and (problem := backbone_problem(out_dir)):
        cache_log.warning("pretrained backbone %s/%s is damaged (%s): pretraining it again", root.name, out_dir.name,
                          problem)
        cached = False
    history = json.loads(meta.read_text())["history"] if cached else pretrain_backbone(frames, table, task, pcfg, out_dir)
    split = table["split"].astype(str)
    return PretrainResult(out_dir / BACKBONE_FILE, task, cached, history, int((split == "train").sum()),
                          int((split == "val").sum()), int(table["patient_id"].nunique()),
                          f"{root.name}/{out_dir.name}/{BACKBONE_FILE}")


def backbone_problem(out_dir: Path) -> str | None:
    """Why the cached backbone of `out_dir` cannot be used (sha256 differs, unreadable), or None."""
    for path in (out_dir / BACKBONE_FILE, out_dir / "pretrain.json"):
        if problem := check_file(path):
            return problem
    try:
        load_file(str(out_dir / BACKBONE_FILE))
        json.loads((out_dir / "pretrain.json").read_text())["history"]
    except Exception as exc:
        return f"unreadable ({type(exc).__name__})"
    return None


def _main_patients(cfg: dict[str, Any]) -> dict[str, Any]:
    """Patient IDs of the processed cohorts of notebook 01 (each split of the annotation cohort)."""
    from cag_utils.data.dataset import COHORTS, dataset_dir

    out: dict[str, Any] = {}
    for cohort in COHORTS:
        path = dataset_dir(cfg, cohort) / "frames.parquet"
        if path.is_file() and (problems := check_folder(path.parent)):
            raise CacheError(path.parent, "; ".join(problems), fix_command(path.parent, "01"))
        if path.is_file():
            t = pd.read_parquet(path, columns=["patient_id"] + (["split"] if cohort == "annotation" else []))
            groups = t.groupby("split")["patient_id"] if cohort == "annotation" else [(cohort, t["patient_id"])]
            out.update({str(name): ids.to_numpy() for name, ids in groups})
    return out


def load_backbone(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict stored by ``pretrain_backbone`` (for inspection and tests)."""
    return load_file(str(path))
