"""Glue between a profile's ``finetune`` section (keys ``vlm_*``) and the stage-3 modules.

Smoke (``vlm_use_standins: true``): ``load_standins`` reads the committed stand-ins (``make standins``),
``assemble_families`` builds the VLMs from them and saves each with ``save_pretrained``; every
later step reads them back through ``build.load_vlm``, the path a real checkpoint takes.
Paper (``vlm_use_standins: false``): ``check_checkpoints`` finds every local checkpoint before any
work starts, and ``build.load_family`` reads them.

``finetune_family`` then runs one family end to end: encode, generate without LoRA, LoRA-train (or
reuse the adapter of an identical earlier run, by hash), generate with LoRA on real and on blanked
images, and compute the held-out summary losses behind the image-reliance measure.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cag_utils.intervals import format_interval
from cag_utils.run.cachecheck import CacheError
from cag_utils.run.cachecheck import log as cache_log
from cag_utils.vlm import build, data, generate, lora, sealed, standins, tokenizer

GEN_VARIANTS = ("without_lora", "with_lora", "with_lora_blank_image")


# ------------------------------------------------------------------ corpus
def corpus_records(corpus_dir: Path) -> pd.DataFrame:
    """Metadata of every corpus record (``corpus.load_corpus``; the image column is not decoded)."""
    from cag_utils.corpus.corpus import load_corpus

    ds = load_corpus(corpus_dir)
    parts = [ds[s].remove_columns([c for c in ds[s].column_names if c == "image"]).to_pandas() for s in ds]
    rec = pd.concat(parts, ignore_index=True)
    if "file_name" not in rec:   # the image-folder loader turns file_name into the image column
        rec["file_name"] = [f"images/{u}.png" for u in rec["frame_uid"]]
    return rec.sort_values(["split", "frame_uid"]).reset_index(drop=True)


def templates(cfg: dict[str, Any]) -> dict[str, str]:
    return {lang: cfg[f"vlm_prompt_{lang}"] for lang in data.LANGUAGES}


# ------------------------------------------------------------------ stand-ins (smoke)
class StandinsOutOfDate(RuntimeError):
    """The committed stand-ins were made with other settings than the profile's (or are missing)."""


def load_standins(cfg: dict[str, Any], other_patients: set[str]) -> dict[str, Any]:
    """The committed stand-ins of ``vlm_standins_dir`` (``make standins``): folders, records, provenance.

    Fails when they are missing or were made with other ``vlm_standin_*`` settings, and when a patient of
    their auxiliary cohort is in ``other_patients`` (the cohorts the notebooks use).
    """
    from cag_utils.run.config import REPO_ROOT
    from cag_utils.vlm import make_standins

    root = REPO_ROOT / cfg["vlm_standins_dir"]
    fix = f"run `make standins` (python -m cag_utils.vlm.make_standins --profile {cfg['profile']})"
    prov_file = root / "provenance.json"
    if not prov_file.is_file():
        raise StandinsOutOfDate(f"no stand-ins in {cfg['vlm_standins_dir']}: {fix}")
    try:
        prov = json.loads(prov_file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CacheError(sealed.shown(prov_file.parent), f"provenance.json is unreadable ({type(exc).__name__})",
                         sealed.standin_fix(cfg["profile"])) from None
    wanted = json.loads(json.dumps(make_standins.params(cfg)))
    if prov["settings"] != wanted:
        diff = sorted(f"{g}.{k}" for g in wanted for k in (wanted[g] if isinstance(wanted[g], dict) else [g])
                      if not isinstance(wanted[g], dict) or prov["settings"].get(g, {}).get(k) != wanted[g][k])
        raise StandinsOutOfDate(f"the stand-ins in {cfg['vlm_standins_dir']} were made with other settings "
                                f"({', '.join(diff) or 'seed'}): {fix}")
    shared = set(prov["aux_cohort"]["patients"]) & set(map(str, other_patients))
    if shared:
        raise ValueError(f"{len(shared)} patient(s) of the stand-ins' auxiliary cohort are in the notebooks' cohorts")
    folders = {name: root / name for name in make_standins.PARTS}
    for folder in folders.values():   # SHA256SUMS written by make_standins (else: readable)
        sealed.require_intact(folder, sealed.standin_fix(cfg["profile"]))
    records = {name: json.loads((f / standins.DONE).read_text()) for name, f in folders.items()}
    return {"folders": folders, "records": records, "provenance": prov}


def standin_table(parts: dict[str, Any]) -> pd.DataFrame:
    """One row per stand-in: parameters, steps, why it stopped, last held-out loss, wall time."""
    rows = {}
    for name, r in parts["records"].items():
        if r.get("kind") == "tokenizer":
            continue
        rows[name] = {"parameters": r["parameters"], "steps": r["steps"], "stopped": r["stopped"],
                      "held-out loss (last)": r["val"][-1][1], "wall (s)": parts["provenance"]["wall_seconds"][name]}
    return pd.DataFrame(rows).T


def caption_frames(cfg: dict[str, Any], corpus_patients: set[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Annotation-cohort frames with run angles and exam lesions, without any corpus patient (probe training)."""
    from cag_utils.data.dataset import dataset_dir, load_annotation

    frames, table = load_annotation(cfg)
    folder = dataset_dir(cfg, "annotation")
    runs, reports = pd.read_parquet(folder / "runs.parquet"), pd.read_parquet(folder / "reports.parquet")
    return standins.annotation_frames(frames, table, runs, reports, corpus_patients)


def encoder_probes(cfg: dict[str, Any], parts: dict[str, Any], records: pd.DataFrame, corpus_dir: Path
                   ) -> dict[str, Any]:
    """Linear probes of both frozen encoders: trained on annotation-cohort frames (no corpus patient), scored
    on the corpus test key frames; laterality accuracy and severe-lesion AUROC with patient intervals."""
    from cag_utils.evaluation.evaluation import key_frames
    from cag_utils.vlm import probe

    frames, table = caption_frames(cfg, set(records["patient_id"]))
    table = table.assign(has_contrast=table["key_frame_category"] != "others",
                         severe=[probe.severe_in_view(standins.lesions_in_view(l, lat))
                                 for l, lat in zip(table["lesions"], table["laterality"])])
    test = records[records["split"] == "test"].reset_index(drop=True)
    test = test.assign(laterality=[t if isinstance(t, str) else p for t, p in zip(test["laterality_true"],
                                                                                   test["laterality_pred"])],
                       severe=[probe.severe_in_view(v) for v in test["lesions_in_view"]])
    test_frames = np.stack(list(key_frames(corpus_dir, records, test["frame_uid"]).values()))
    out = {}
    for name in ("siglip", "conceptclip"):
        out[name] = probe.probe_report(probe.pooled_features(parts["folders"][name], frames), table,
                                       probe.pooled_features(parts["folders"][name], test_frames), test,
                                       seed=int(cfg["seed"]))
    return out


def probe_table(probes: dict[str, Any]) -> pd.DataFrame:
    """One row per encoder: laterality accuracy and severe-lesion AUROC of its linear probe."""
    label = {"siglip": "SigLIP stand-in", "conceptclip": "ConceptCLIP stand-in"}
    return pd.DataFrame([{"Encoder": label[n], "Laterality accuracy": format_interval(p["laterality_accuracy"]),
                          "Severe lesion (>= 90 %) AUROC": format_interval(p["severe_lesion_auroc"]),
                          "Test frames (severe)": f"{p['n_test']} ({p['severe_lesion_auroc']['n_positive']})",
                          "Training frames": p["n_train"]} for n, p in probes.items()])


CONTROL_FRAMES = ("corpus", "annotation")   # vlm_control_train_frames: the control's training frames


def control_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The positive control's recipe: the summary recipe with its own step budget, learning rate and decoding length."""
    return {**cfg, "vlm_max_steps": cfg["vlm_control_max_steps"], "vlm_max_new_tokens": cfg["vlm_control_max_new_tokens"],
            "vlm_lr": cfg["vlm_control_lr"],
            "vlm_epochs": max(int(cfg["vlm_epochs"]), 100)}   # the step budget decides


def run_controls(cfg: dict[str, Any], sources: dict[str, Path | None], records: pd.DataFrame, corpus_dir: Path,
                 adapter_root: Path) -> dict[str, dict[str, Any]]:
    """The positive control of every image family (``cag_utils.vlm.control``): LoRA on artery-and-view targets."""
    from cag_utils.data.dataset import dataset_dir
    from cag_utils.vlm import control

    runs = pd.read_parquet(dataset_dir(cfg, "independent") / "runs.parquet")
    examples = control.control_examples(records, corpus_dir, runs, cfg["vlm_control_prompt"])
    if cfg["vlm_control_train_frames"] == "annotation":   # the probes' training frames: no corpus patient
        frames, table = caption_frames(cfg, set(records["patient_id"]))
        examples["train"] = control.annotation_examples(frames, table, adapter_root.parent / "control_frames",
                                                        cfg["vlm_control_prompt"])
    ccfg = control_config(cfg)
    return {name: finetune_family(ccfg, name, sources[name], examples, adapter_root, tag="control")
            for name in cfg["vlm_families"] if not build.family(name).text_only}


def assemble_families(cfg: dict[str, Any], root: Path, parts: dict[str, Any]) -> dict[str, Path]:
    """Each family assembled from the stand-ins and written with ``save_pretrained`` (cached by hash)."""
    out = {}
    for name in cfg["vlm_families"]:
        fam = build.family(name)
        vision = parts["folders"][fam.vision]
        digests = parts["provenance"]["records"]
        folder = standins.standin_dir(root, fam.architecture + "-" + fam.vision,
                                      {"image_tokens": cfg["vlm_gemma3_image_tokens"]}, digests["lm"],
                                      digests["tokenizer"], digests[fam.vision])

        def make(f: Path, name=name, vision=vision) -> dict[str, Any]:
            from cag_utils.run import model_cards
            from cag_utils.vlm import cards

            model, processor = build.assemble(name, parts["folders"]["lm"], vision, cfg["vlm_gemma3_image_tokens"])
            model.save_pretrained(f)
            processor.save_pretrained(f)
            record = {"kind": "vlm", "family": name, "parameters": lora.parameter_counts(model)["total"]}
            model_cards.write(f, cards.vlm_spec(f, parts["folders"]["lm"].parent, cfg["profile"], record))
            return record

        standins.cached(folder, make)
        out[name] = folder
    return out


# ------------------------------------------------------------------ paper: checkpoints first
def check_checkpoints(cfg: dict[str, Any]) -> dict[str, str]:
    """Every checkpoint the profile's families need, found locally (else CheckpointMissing at once)."""
    allow = bool(cfg["vlm_allow_download"])
    found = {}
    for name in cfg["vlm_families"]:
        fam = build.family(name)
        found[fam.path_key] = build._local(cfg[fam.path_key], f"{fam.label} checkpoint", fam.path_key, allow)
        if fam.vision == "conceptclip":
            found["vlm_conceptclip_path"] = build._local(cfg["vlm_conceptclip_path"], "ConceptCLIP image encoder",
                                                         "vlm_conceptclip_path", allow)
    return found


def check_before_training(cfg: dict[str, Any]) -> None:
    """The checks that must fail before any work: families, languages, templates, LoRA pattern syntax, the
    control's training frames."""
    for name in cfg["vlm_families"]:
        build.family(name)
    if cfg.get("vlm_control") and cfg["vlm_control_train_frames"] not in CONTROL_FRAMES:
        raise ValueError(f"vlm_control_train_frames must be one of {list(CONTROL_FRAMES)}, "
                         f"got {cfg['vlm_control_train_frames']!r}")
    langs = data.languages(cfg["vlm_languages"])
    for lang in langs:
        data.check_template(cfg[f"vlm_prompt_{lang}"], f"vlm_prompt_{lang}")
    import re

    try:
        re.compile(cfg["vlm_lora_targets"])
    except re.error as exc:
        raise ValueError(f"LoRA target pattern {cfg['vlm_lora_targets']!r} is not a valid regex: {exc}") from None
    if not cfg["vlm_use_standins"]:
        check_checkpoints(cfg)


# ------------------------------------------------------------------ one family end to end
def train_params(cfg: dict[str, Any]) -> dict[str, Any]:
    p = {"batch_size": cfg["vlm_batch_size"], "epochs": cfg["vlm_epochs"], "max_steps": cfg["vlm_max_steps"],
         "lr": cfg["vlm_lr"], "warmup_ratio": cfg["vlm_warmup_ratio"], "weight_decay": cfg["vlm_weight_decay"],
         "max_grad_norm": cfg["vlm_max_grad_norm"], "eval_points": cfg["vlm_eval_points"], "device": cfg["device"]}
    if cfg.get("vlm_load_best"):   # only when on, so that adapters trained without the key keep their names
        p["load_best"] = True
    return p


def lora_seed(cfg: dict[str, Any]) -> int:
    """The seed of LoRA's initialisation and batch order: the profile's seed plus ``vlm_lora_seed_offset``
    (0 by default; another value repeats stage 3 with a new draw of the same recipe)."""
    return int(cfg["seed"]) + int(cfg.get("vlm_lora_seed_offset") or 0)


def lora_params(cfg: dict[str, Any]) -> dict[str, Any]:
    return {"r": cfg["vlm_lora_r"], "alpha": cfg["vlm_lora_alpha"], "dropout": cfg["vlm_lora_dropout"],
            "targets": cfg["vlm_lora_targets"]}


def finetune_family(cfg: dict[str, Any], name: str, source: Path | None, examples: dict[str, list[data.Example]],
                    adapter_root: Path, tag: str = "lora") -> dict[str, Any]:
    """Encode, generate w/o LoRA, train LoRA (cached adapter reused), generate w/ LoRA on real and blanked
    images, held-out losses. ``source``: the assembled stand-in folder (smoke) or None (paper checkpoints).
    The text-only family sees no image at all: its blanked-image outputs and losses are its real ones.
    ``tag`` names the adapter folder (``<family>-<tag>-<hash>``), e.g. ``control`` for the positive control."""
    fam = build.family(name)
    arch, text_only = fam.architecture, fam.text_only
    dtype = torch.bfloat16 if torch.cuda.is_available() and cfg["device"] != "cpu" else None
    model, processor = build.load_family(name, cfg, source, dtype=dtype)
    if torch.cuda.is_available() and cfg["device"] != "cpu":
        model = model.cuda()
    pad = processor.tokenizer.pad_token_id
    train_col, gen_col = data.Collator(pad), data.Collator(pad, left=True)
    blank = cfg["vlm_blank_value"]
    encode = lambda exs, length, **kw: data.encode_examples(arch, processor, exs, length, text_only=text_only, **kw)  # noqa: E731
    enc, kept, skipped = {}, {}, []
    for split, exs in examples.items():
        enc[split], kept[split], sk = encode(exs, cfg["vlm_max_length"])
        skipped.append(sk)
    test_prompts = encode(kept["test"], 10**9, with_target=False)[0]
    if not text_only:
        test_blank = encode(kept["test"], 10**9, with_target=True, blank_value=blank)[0]
        blank_prompts = encode(kept["test"], 10**9, with_target=False, blank_value=blank)[0]
    gen = lambda m, e: generate.generate(m, processor, e, gen_col, cfg["vlm_gen_batch_size"], cfg["vlm_max_new_tokens"],  # noqa: E731
                                         cfg["vlm_repetition_penalty"], cfg["vlm_num_beams"])
    outputs, timing = {}, {}
    outputs["without_lora"], timing["generate_without_lora"] = gen(model, test_prompts)
    base_losses = generate.example_losses(model, enc["test"], train_col, cfg["vlm_gen_batch_size"])

    lp, tp = lora_params(cfg), train_params(cfg)
    folder = adapter_folder(cfg, name, source, kept, adapter_root, tag)
    if reusable_adapter(folder):
        model, record = lora.load_adapter(model, folder)
        counts = record["parameters"]
    else:
        torch.manual_seed(lora_seed(cfg))
        model = lora.lora_model(model, lp["r"], lp["alpha"], lp["dropout"], lp["targets"])
        counts = lora.parameter_counts(model)
        t0 = time.process_time()
        record = lora.train(model, enc["train"], enc["val"], train_col, tp, folder, lora_seed(cfg))
        record.update(parameters=counts, cpu_seconds=time.process_time() - t0,
                      train_tokens=_trained_tokens(enc["train"], record["steps"], tp["batch_size"]))
        lora.save_adapter(model, folder, record, merge=bool(cfg["vlm_save_merged"]))
    timing["train_seconds"] = record["train_runtime_s"]
    timing["train_tokens"] = record["train_tokens"]
    outputs["with_lora"], timing["generate_with_lora"] = gen(model, test_prompts)
    real = generate.example_losses(model, enc["test"], train_col, cfg["vlm_gen_batch_size"])
    if text_only:   # nothing to blank
        outputs["with_lora_blank_image"], timing["generate_with_lora_blank_image"] = list(outputs["with_lora"]), \
            {"tokens": 0, "seconds": 0.0}
        blanked = real.copy()
    else:
        outputs["with_lora_blank_image"], timing["generate_with_lora_blank_image"] = gen(model, blank_prompts)
        blanked = generate.example_losses(model, test_blank, train_col, cfg["vlm_gen_batch_size"])
    return {"family": name, "examples": kept, "outputs": outputs, "losses": {"without_lora": base_losses, "real": real,
            "blank": blanked}, "skipped": pd.concat(skipped, ignore_index=True), "record": record,
            "parameters": counts, "adapter": folder, "timing": timing,
            "length": {s: data.length_stats(e) for s, e in enc.items()}}


def adapter_folder(cfg: dict[str, Any], name: str, source: Path | None, kept: dict[str, list[data.Example]],
                   adapter_root: Path, tag: str = "lora") -> Path:
    """``<adapter_root>/<family>-<tag>-<hash>``: named by everything that changes the adapter's weights (LoRA and
    training settings, seed, base model, the training and validation examples), so a rerun finds it again."""
    origin = source.name if source is not None else str(cfg[build.family(name).path_key])   # staging folders differ
    tp = {k: v for k, v in train_params(cfg).items() if k != "device"}
    key = standins.digest(lora_params(cfg), tp, lora_seed(cfg), origin, build.family(name).text_only,
                          [(e.record_id, e.language, e.prompt, e.reference) for e in kept["train"] + kept["val"]])[:12]
    return adapter_root / f"{name}-{tag}-{key}"


def reusable_adapter(folder: Path) -> bool:
    """Whether ``folder`` holds a finished adapter (``training.json``) that passes its SHA256SUMS (else: loads);
    a damaged one is removed, to be trained again (logged on ``cag_utils.cache``)."""
    if not (folder / "training.json").is_file():
        return False
    if (problem := sealed.folder_problem(folder)) is None:
        return True
    cache_log.warning("LoRA adapter %s is damaged (%s): training it again", sealed.shown(folder), problem)
    shutil.rmtree(folder)
    return False


def _trained_tokens(encoded: list[dict[str, torch.Tensor]], steps: int, batch_size: int) -> int:
    """Tokens the optimizer saw: mean sequence length x examples drawn (steps x batch size)."""
    mean = float(np.mean([len(e["input_ids"]) for e in encoded])) if encoded else 0.0
    return int(round(mean * steps * batch_size))


# ------------------------------------------------------------------ outputs
def prediction_rows(res: dict[str, Any], label: str) -> list[dict[str, Any]]:
    """JSONL rows: record ID, patient, model, variant, language, prompt, reference, output."""
    rows = []
    for variant in GEN_VARIANTS:
        for ex, out in zip(res["examples"]["test"], res["outputs"][variant]):
            rows.append({"record_id": ex.record_id, "patient_id": ex.patient_id, "model": label, "family": res["family"],
                         "variant": variant, "language": ex.language, "prompt": ex.prompt, "reference": ex.reference,
                         "output": out})
    return rows


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> Path:
    """JSONL, gzip-compressed when the name ends in .gz (mtime 0: the same rows give the same bytes)."""
    import gzip

    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    if path.suffix == ".gz":
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as fh:
            fh.write(text)
    else:
        path.write_bytes(text)
    return path


def headline(results: dict[str, dict[str, Any]], seed: int) -> dict[str, dict[str, Any]]:
    """``<family>.test_loss``, ``.test_loss_blanked``, ``.image_reliance`` (blanked - real), ``.test_loss_without_lora``."""
    from cag_utils.intervals import patient_bootstrap, ratio_by_patient, ratio_of_sums

    out = {}
    for name, res in results.items():
        patients = [e.patient_id for e in res["examples"]["test"]]
        stats = generate.reliance_stats(res["losses"]["real"], res["losses"]["blank"], patients)
        for k, v in generate.reliance_intervals(stats, seed).items():
            out[f"{name}.{k}"] = v
        base = res["losses"]["without_lora"]
        out[f"{name}.test_loss_without_lora"] = patient_bootstrap(ratio_by_patient(base[:, 0], base[:, 1], patients),
                                                                  ratio_of_sums, seed=seed)
    return out


def loss_table(head: dict[str, dict[str, Any]], results: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Per model: held-out summary loss w/o LoRA, w/ LoRA (real images), blanked images, and the gap."""
    rows = []
    for name, res in results.items():
        rows.append({"Model": build.family(name).label, "Trainable parameters": res["parameters"]["trainable"],
                     "Loss w/o LoRA": format_interval(head[f"{name}.test_loss_without_lora"]),
                     "Loss w/ LoRA": format_interval(head[f"{name}.test_loss"]),
                     "Loss, blanked image": format_interval(head[f"{name}.test_loss_blanked"]),
                     "Image reliance (blanked - real)": format_interval(head[f"{name}.image_reliance"])})
    return pd.DataFrame(rows)


def plot_training_curves(results: dict[str, dict[str, Any]], parts: dict[str, Any] | None = None,
                         controls: dict[str, dict[str, Any]] | None = None):
    """LoRA training and validation loss per model (summaries, and the positive control when given) and, in
    smoke, the stand-ins' held-out pretraining losses (the plateau each one was trained to)."""
    import matplotlib.pyplot as plt

    panels = [("LoRA: summaries", results)] + ([("LoRA: positive control (artery, view)", controls)] if controls else [])
    n = len(panels) + (1 if parts else 0)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.4))
    axes = np.atleast_1d(axes)
    for ax, (title, res_set) in zip(axes, panels):
        for name, res in res_set.items():
            h = pd.DataFrame(res["record"]["history"])
            t = h.dropna(subset=["loss"])
            line, = ax.plot(t["step"], t["loss"], label=f"{build.family(name).label} train")
            if "eval_loss" in h:
                e = h.dropna(subset=["eval_loss"])
                ax.plot(e["step"], e["eval_loss"], "o--", color=line.get_color(), label=f"{build.family(name).label} val")
        ax.set(xlabel="LoRA step", ylabel="target cross-entropy", title=title)
        ax.legend(fontsize=6)
    if parts:
        ax = axes[-1]
        for key, label in (("lm", "LM (next token)"), ("siglip", "SigLIP (sigmoid)"), ("conceptclip", "ConceptCLIP (sigmoid)")):
            v = np.asarray(parts["records"][key]["val"], dtype=float)
            ax.plot(v[:, 0], v[:, 1], "o-", ms=3, label=f"{label}, {parts['records'][key]['stopped']}")
        ax.set(xlabel="pretraining step", ylabel="held-out loss", yscale="log", title="Stand-ins (make standins)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def save_predictions(run, rows: list[dict[str, Any]]) -> Path:
    """``results/<notebook>_predictions.jsonl.gz`` (recorded as a per-item file of the run). Gzip: the
    1,764 smoke rows (3 models x 3 variants x 196 test examples, each with its prompt) are 3.6 MB as
    plain text and about a tenth of that compressed; ``pandas.read_json(path, lines=True)`` reads it."""
    from cag_utils.run.config import output_root, results_dir

    path = write_jsonl(rows, results_dir(run.cfg["profile"]) / f"{run.name}_predictions.jsonl.gz")
    run.tables.append(path.relative_to(output_root()).as_posix())
    return path


def timing_summary(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Training and generation tokens/s and peak memory per model (timing: differs between runs)."""
    import resource

    out: dict[str, Any] = {}
    for name, res in results.items():
        t = res["timing"]
        gen_tok = sum(t[f"generate_{v}"]["tokens"] for v in GEN_VARIANTS)
        gen_s = sum(t[f"generate_{v}"]["seconds"] for v in GEN_VARIANTS)
        out[name] = {"train_tokens_per_s": t["train_tokens"] / t["train_seconds"] if t["train_seconds"] else None,
                     "train_seconds": t["train_seconds"], "generate_tokens_per_s": gen_tok / gen_s if gen_s else None,
                     "generate_seconds": gen_s}
    out["peak_memory_mb"] = (torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available()
                             else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out
