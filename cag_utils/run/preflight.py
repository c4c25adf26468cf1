"""Preflight: before a run starts, check what each of its steps will need, without heavy work.

    python -m cag_utils.run.pipeline --profile paper --check      # the table alone (exit 2 on a problem)
    python -m cag_utils.run.pipeline --profile paper --from 05 --check

Every run of the pipeline does this first and stops before its first step when anything a
step of the run needs is missing: a checkpoint whose absence notebook 05 would otherwise find
hours after notebook 01 started. Checks read folder listings and config.json only; no model is
loaded. One small function per check, each returning `Row`s; `check_steps` runs those of every
step's profile section, and `format_table` prints them: step, check, OK or the problem with its fix.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from cag_utils.run.config import REPO_ROOT, ConfigError, key_sections, load_config, validate_overrides, work_dir

# Papermill runs the notebooks in notebooks/: a relative checkpoint path is read from there.
NOTEBOOK_CWD = REPO_ROOT / "notebooks"
# Files a checkpoint folder needs, by kind: any one of the names (or glob patterns) will do.
FILES = {
    "config": ("config.json",),
    "weights": ("*.safetensors", "model.safetensors.index.json"),
    "tokenizer": ("tokenizer.json", "tokenizer.model"),
    "processor": ("preprocessor_config.json", "processor_config.json"),
}
GPU_SECTIONS = ("cnn", "extraction", "finetune")   # the sections whose notebooks read `device`


@dataclass(frozen=True)
class Row:
    check: str
    problem: str = ""   # empty: OK
    detail: str = ""    # OK: what was found; else: the fix
    step: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem


# ---------------------------------------------------------------- checkpoint folders
def missing_files(folder: Path, kinds: Iterable[str]) -> list[str]:
    """What a checkpoint folder lacks: kinds of FILES with no file, and shards its index names but lacks."""
    missing = [f"{kind} ({' or '.join(FILES[kind])})" for kind in kinds
               if not any(any(folder.glob(name)) for name in FILES[kind])]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()))
        missing += [f"shard {s}" for s in shards if not (folder / s).is_file()]
    return missing


def local_folder(value: str) -> Path | None:
    """The folder a checkpoint setting names, read as build._local reads it: a folder (relative paths
    from notebooks/), or a hub id whose snapshot is in the local Hugging Face cache (notebook 06 reads
    eval_embedder_path through this function too)."""
    path = Path(value) if Path(value).is_absolute() else NOTEBOOK_CWD / value
    if path.is_dir():
        return path.resolve()
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(value, "config.json")
    except (ImportError, ValueError):
        cached = None
    return Path(cached).parent if isinstance(cached, str) else None


def check_checkpoint(what: str, key: str, value: str, kinds: Sequence[str], model_types: Sequence[str] = (),
                     allow_download: bool = False, trust_remote_code: bool = False) -> Row:
    """One checkpoint setting: the folder exists, holds `kinds` of files, and its config.json names one
    of `model_types` (or ships its own code that `trust_remote_code` allows: only the ConceptCLIP encoder's
    loader runs a folder's code; the VLM loaders and the VLScore embedder read transformers' own classes)."""
    setting = f"-p {key}=/path/to/folder (or set it in the profile's YAML)"
    if not value:
        return Row(what, f"{key} is empty", f"place the checkpoint folder on this machine and set {setting}")
    folder = local_folder(value)
    if folder is None:
        if allow_download:
            return Row(what, detail=f"{value} is not local; transformers downloads it (vlm_allow_download: true)")
        hub = re.fullmatch(r"[\w.-]+/[\w.-]+", value) and not value.startswith(".")
        return Row(what, f"{value!r} ({key}) is neither a folder (relative paths are read from notebooks/) nor "
                         "in the local Hugging Face cache",
                   (f"`huggingface-cli download {value}` where the hub can be reached, copy the cache here; or "
                    if hub else "copy the checkpoint folder there, or ") + setting.replace("/path/", "/absolute/path/"))
    missing = missing_files(folder, kinds)
    if missing:
        return Row(what, f"{folder} lacks {', '.join(missing)}", "copy the complete checkpoint folder")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    model_type = config.get("model_type")
    if model_types and model_type not in model_types:
        if not (config.get("auto_map") and trust_remote_code):
            fix = ("set -p vlm_conceptclip_trust_remote_code=true after reading the folder's model code"
                   if config.get("auto_map") and key == "vlm_conceptclip_path"
                   else f"point {key} at a {' or '.join(model_types)} checkpoint")
            wanted = " or ".join(model_types)
            return Row(what, f"{folder}: config.json has model_type {model_type!r}, not {wanted}", fix)
    return Row(what, detail=f"{folder} ({model_type})")


def check_standins(cfg: Mapping[str, Any]) -> Row:
    """Smoke: the committed stand-ins (provenance.json, the same vlm_standin_* settings, every part's files)."""
    from cag_utils.run.cachecheck import CacheError
    from cag_utils.vlm import make_standins, stage

    damaged = None
    try:
        parts = stage.load_standins(dict(cfg), set())
    except CacheError as exc:   # a part's files fail SHA256SUMS or are unreadable; missing files named below
        damaged = exc
        parts = {"folders": {name: REPO_ROOT / cfg["vlm_standins_dir"] / name for name in make_standins.PARTS}}
    except (OSError, ValueError, KeyError, RuntimeError) as exc:   # StandinsOutOfDate: a RuntimeError
        return Row("stand-in checkpoints", str(exc), f"make standins (profile {cfg['profile']})")
    needs = {"tokenizer": ("tokenizer",), "lm": ("config", "weights", "tokenizer")}
    missing = [f"{name}: {m}" for name, folder in parts["folders"].items()
               for m in missing_files(folder, needs.get(name, ("config", "weights", "tokenizer", "processor")))]
    if missing:
        return Row("stand-in checkpoints", "; ".join(missing), f"make standins (profile {cfg['profile']})")
    if damaged is not None:
        return Row("stand-in checkpoints", str(damaged), damaged.fix)
    return Row("stand-in checkpoints", detail=f"{cfg['vlm_standins_dir']} (provenance.json, settings match)")


# ---------------------------------------------------------------- one function per section
def check_data(cfg: Mapping[str, Any]) -> list[Row]:
    """Notebook 01: the synthetic cohort fits on the disk, or the real exams, their salt, labels and reports."""
    if cfg["data_source"] == "synthetic":
        return [check_disk(cfg)]
    if cfg["data_source"] != "dicom_dir":
        return [Row("data source", f"data_source is {cfg['data_source']!r}", "-p data_source=synthetic or dicom_dir")]
    from cag_utils.data.dataset import COHORTS
    from cag_utils.data.deid import SALT_ENV, SaltError, resolve_salt

    root = REPO_ROOT / cfg["dicom_dir"]
    lacking = [c for c in COHORTS if not (root / c).is_dir()]
    if not cfg["dicom_dir"]:
        rows = [Row("DICOM exams", "dicom_dir is empty", "-p dicom_dir=/path/to/export")]
    elif lacking:
        rows = [Row("DICOM exams", f"dicom_dir {cfg['dicom_dir']!r} lacks the folders {', '.join(lacking)}",
                    f"put the exams under <dicom_dir>/{{{','.join(COHORTS)}}}/ (docs/real-data.md)")]
    else:
        rows = [Row("DICOM exams", detail=f"{root} ({', '.join(COHORTS)}); notebook 01 checks the disk space "
                                          "from their headers")]
    try:
        resolve_salt(cfg)
        rows.append(Row("de-identification salt", detail=f"a secret salt (${SALT_ENV} or deid_salt_file)"))
    except SaltError as exc:
        head, _, rest = str(exc).partition(". ")
        rows.append(Row("de-identification salt", head, rest or f"export {SALT_ENV}=<a secret of 16+ characters>, "
                        "or -p deid_salt_file=/a/file/outside/the/repository"))
    return rows + [check_input_file(cfg, key) for key in ("labels_csv", "reports_jsonl") if cfg[key]]


def check_disk(cfg: Mapping[str, Any]) -> Row:
    """Free disk space for the synthetic cohort (`diskspace.cohort_bytes`), unless it is already there."""
    from cag_utils.run.diskspace import DiskSpaceError, cohort_bytes, folder_bytes, require_space
    from cag_utils.synth.cohort import cohort_is_current

    raw = work_dir(cfg["profile"]) / "raw"
    if cohort_is_current(raw, dict(cfg)):
        return Row("disk space", detail=f"the cohort is already generated in {raw}")
    need, how = cohort_bytes(dict(cfg))
    note = io.StringIO()
    try:
        with contextlib.redirect_stdout(note):   # its "needs most of the free space" note joins the row
            require_space(raw, need, "the synthetic cohort", how, reclaimable=folder_bytes(raw))
    except DiskSpaceError as exc:
        return Row("disk space", str(exc).split("; free")[0],
                   "free some space, or set $CAG_OUTPUT_ROOT to a larger disk")
    return Row("disk space", detail=f"about {need / 1e9:.2f} GB for the cohort: {how}" + (
        f"; {note.getvalue().strip()}" if note.getvalue().strip() else ""))


def check_input_file(cfg: Mapping[str, Any], key: str) -> Row:
    """labels_csv / reports_jsonl: the file exists and parses as notebook 01 reads it (ingest)."""
    from cag_utils.data import ingest

    path = REPO_ROOT / cfg[key]
    if not path.is_file():
        return Row(key, f"no file {cfg[key]!r}", f"-p {key}=/path/to/file (relative paths: from the repository)")
    try:
        if key == "labels_csv":
            return Row(key, detail=f"{path}: {len(ingest.read_labels(path))} label rows")
        lines = ingest._report_lines(path)
    except (ValueError, UnicodeDecodeError) as exc:
        return Row(key, f"{path} does not parse ({exc})", "fix the file (docs/real-data.md: columns and format)")
    usable = sum(isinstance(r, dict) and isinstance(r.get("exam"), str) for _, r in lines)
    if not usable:
        return Row(key, f"{path}: no line is a JSON object with an 'exam' field",
                   "one JSON object per line (docs/real-data.md)")
    return Row(key, detail=f"{path}: {usable} of {len(lines)} lines are reports with an 'exam'")


def check_cnn(cfg: Mapping[str, Any]) -> list[Row]:
    """Notebook 02: a timm model of that name, and the local ImageNet weights when the profile names them."""
    import timm

    rows = [Row("CNN architecture", f"timm has no model {cfg['cnn_model']!r}", "-p cnn_model=convnext_base")
            if not timm.is_model(cfg["cnn_model"]) else Row("CNN architecture", detail=cfg["cnn_model"])]
    if cfg["cnn_pretrained_file"]:
        path = Path(cfg["cnn_pretrained_file"])
        path = path if path.is_absolute() else NOTEBOOK_CWD / path
        rows.append(Row("CNN pretrained weights", detail=str(path)) if path.is_file() else
                    Row("CNN pretrained weights", f"no file {cfg['cnn_pretrained_file']!r} (relative paths: from "
                        "notebooks/)", "-p cnn_pretrained_file=/absolute/path, or \"\" for cnn_pretrain"))
    return rows


def check_finetune(cfg: Mapping[str, Any]) -> list[Row]:
    """Notebook 05: its own setting checks, then the stand-ins (smoke) or every family's checkpoint (paper)."""
    from cag_utils.vlm import build, stage

    try:   # families, languages, prompt templates, LoRA pattern; the checkpoints get rows of their own
        stage.check_before_training({**cfg, "vlm_use_standins": True})
    except (ValueError, KeyError) as exc:
        return [Row("fine-tuning settings", str(exc), "fix the vlm_* setting it names")]
    if cfg["vlm_use_standins"]:
        return [check_standins(cfg)]
    rows, allow = {}, bool(cfg["vlm_allow_download"])
    for name in cfg["vlm_families"]:
        fam = build.family(name)
        if fam.path_key not in rows:   # Gemma3's folder serves three families: one row
            rows[fam.path_key] = check_checkpoint(f"{fam.label} checkpoint", fam.path_key, cfg[fam.path_key],
                                                  ("config", "weights", "tokenizer", "processor"),
                                                  (fam.architecture,), allow)
        if fam.vision == "conceptclip":
            rows["vlm_conceptclip_path"] = check_checkpoint(
                "ConceptCLIP encoder", "vlm_conceptclip_path", cfg["vlm_conceptclip_path"], ("config", "weights"),
                ("siglip", "siglip_vision_model"), allow, bool(cfg["vlm_conceptclip_trust_remote_code"]))
    return list(rows.values())


def check_evaluation(cfg: Mapping[str, Any]) -> list[Row]:
    """Notebook 06: the VLScore embedder (`evaluation.embedder_folder`): eval_embedder_path, else the embedder
    stand-in (present and made with this profile's settings)."""
    kinds, what = ("config", "weights", "tokenizer", "processor"), "evaluation embedder"
    if cfg["eval_embedder_path"]:
        return [check_checkpoint(what, "eval_embedder_path", cfg["eval_embedder_path"], kinds, ("siglip",))]
    ft = load_config(cfg["profile"], "finetune", {"seed": cfg["seed"]})
    if not ft["vlm_use_standins"]:
        return [check_checkpoint(what, "eval_embedder_path", "", kinds)]
    from cag_utils.vlm import embedder_standin

    fix = f"python -m cag_utils.vlm.make_standins --profile {cfg['profile']} --only embedder"
    try:
        folder = embedder_standin.load_folder(ft, dict(cfg), set())
    except (embedder_standin.EmbedderOutOfDate, ValueError, RuntimeError) as exc:   # CacheError: a RuntimeError
        return [Row(what, str(exc), fix)]
    return [check_checkpoint(what, "vlm_standins_dir", str(folder.resolve()), kinds, ("siglip",))]


SECTION_CHECKS: dict[str, Callable[[Mapping[str, Any]], list[Row]]] = {
    "data": check_data, "cnn": check_cnn, "finetune": check_finetune, "evaluation": check_evaluation}


def check_device(cfg: Mapping[str, Any]) -> Row:
    """A CUDA device when the profile asks for one (`device: cuda`); `-p device=cpu` allows the CPU."""
    import torch

    device, found = str(cfg["device"]), torch.cuda.is_available()
    if device.startswith("cuda") and not found:
        return Row("CUDA device", f"the profile asks for a GPU (device: {device}) and torch sees none",
                   "run on a machine with a CUDA GPU, or allow the CPU (hours at this scale): -p device=cpu")
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        return Row("CUDA device", f"device is {device!r}", "-p device=cuda, cpu or auto")
    used = "the CPU" if device == "cpu" or not found else f"cuda: {torch.cuda.get_device_name(0)}"
    return Row("CUDA device", detail=f"device: {device} -> {used}" + ("" if found else " (no GPU visible)"))


# ---------------------------------------------------------------- the run
def check_steps(profile: str, steps: Sequence[Any], overrides: Mapping[str, Any], profiles_dir: Path | None = None,
                up_to_date: Iterable[str] = ()) -> list[Row]:
    """The rows of every step (objects with `name` and `section`, e.g. pipeline.Step); steps named in
    `up_to_date` are skipped by the run, so they get one row saying so."""
    skip, rows, device_done = set(up_to_date), [], False
    try:
        validate_overrides(profile, overrides, tuple(sorted({s.section for s in steps})), profiles_dir)
        rows.append(Row("overrides", detail=", ".join(f"{k}={v}" for k, v in overrides.items()) or "none",
                        step="all"))
    except ConfigError as exc:
        rows.append(Row("overrides", str(exc).split("; known:")[0],
                        f"correct or drop that -p (the keys are in configs/profiles/{profile}.yaml)", step="all"))
    owners = key_sections(profile, profiles_dir)
    for step in steps:
        if step.name in skip:
            rows.append(Row("up to date", detail="the run skips it (--force reruns it; not checked)", step=step.name))
            continue
        own = {k: v for k, v in overrides.items() if owners.get(k) in (step.section, "common")}
        try:
            cfg = load_config(profile, step.section, own, profiles_dir)
        except ConfigError as exc:
            rows.append(Row("settings", str(exc), "correct or drop that -p", step=step.name))
            continue
        found = [Row("settings", detail=f"section {step.section}" + "".join(f", {k}={v}" for k, v in own.items()))]
        if step.section in GPU_SECTIONS and "device" in cfg and not device_done:
            found.append(check_device(cfg))
            device_done = True
        found += SECTION_CHECKS.get(step.section, lambda _: [])(cfg)
        rows += [Row(r.check, r.problem, r.detail, step.name) for r in found]
    return rows


def format_table(rows: Sequence[Row], width: int = 110) -> str:
    """step | check | result, with long results wrapped under their column; a last line with the verdict."""
    w1, w2 = (max([len(h)] + [len(getattr(r, a)) for r in rows]) for h, a in (("step", "step"), ("check", "check")))
    indent = " " * (w1 + w2 + 4)
    lines = [f"{'step':<{w1}}  {'check':<{w2}}  result", f"{'-' * w1}  {'-' * w2}  {'-' * 6}"]
    for r in rows:
        result = f"OK  {r.detail}" if r.ok else f"PROBLEM  {r.problem.rstrip('.')}. Fix: {r.detail}"
        lines.append(textwrap.fill(result, width=max(width, len(indent) + 40), initial_indent=f"{r.step:<{w1}}  "
                                   f"{r.check:<{w2}}  ", subsequent_indent=indent, break_on_hyphens=False))
    bad = sum(not r.ok for r in rows)
    lines.append(f"preflight: {bad} problem(s); nothing was run" if bad else "preflight: all OK")
    return "\n".join(lines)
