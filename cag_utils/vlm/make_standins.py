"""``make standins``: pretrain the smoke stand-ins once and write them where the profile reads them.

    python -m cag_utils.vlm.make_standins --profile smoke          # -> models/standins/smoke/

Writes ``tokenizer/``, ``lm/``, ``siglip/`` and ``conceptclip/`` (``save_pretrained`` folders, each
with its record ``standin.json``: losses per step, held-out curve, parameters), then notebook 06's
VLScore embedder ``embedder/`` (``vlm.embedder_standin``, its own record and settings; ``--only embedder``
retrains it alone, leaving notebook 05's parts and their provenance as they are), and
``provenance.json`` (the stand-in settings, git SHA, versions, wall time per part, the auxiliary
cohort's size and pseudonymous patients, and linear-probe scores of both encoders on its held-out
patients). Each part gets a model card (``README.md``, ``vlm.cards``) from its record and the provenance. Deterministic: the same settings and code give the same loss logs
(``tests/test_standins.py`` retrains the first steps of each part and compares). Each part folder gets a
``SHA256SUMS`` last (``vlm.sealed``), which notebook 05 checks; ``--seal`` writes it for finished folders.

Data, none of it from the cohorts the notebooks use:
- text: ``tokenizer.draw_reports`` (the report generator with its own seed stream), training and
  held-out reports disjoint by index, and with ``vlm_standin_view_logs`` each report's run log
  (``view_log``: the artery and C-arm view of each run, drawn as the cohort generator draws them), so
  the LM knows the words of angiographic views as a real pretrained LM does (without it "right", "LAO"
  and "cranial" are spelled letter by letter, see docs/stage3.md). The encoders' text towers (SigLIP,
  ConceptCLIP, the VLScore embedder) have their own tokenizer, trained on the reports alone, as a real
  SigLIP's tokenizer is not Gemma's; it is saved in each encoder's processor (``encoder_tokenizer``);
- frames: an auxiliary synthetic cohort (``cnn.pretrain.aux_cohort_settings`` with the stream
  ``STANDIN_STREAM``), split by patient into training and held-out frames. Notebook 05 checks that
  none of its patients is in the annotation cohort or the corpus.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cag_utils.run import model_cards
from cag_utils.run.cachecheck import SUMS_NAME
from cag_utils.vlm import build, cards, concepts, embedder_standin, probe, sealed, standins, tokenizer

STANDIN_STREAM = 0x564C4D   # "VLM": the auxiliary cohort's seed stream (the CNN pretraining uses its own)
PARTS = ("tokenizer", "lm", "siglip", "conceptclip")
CAPTIONS = {"siglip": standins.generic_caption, "conceptclip": standins.concept_caption}


def params(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every setting that changes a stand-in, from the profile's ``vlm_standin_*`` keys."""
    loop = {"warmup_steps": cfg["vlm_standin_warmup_steps"], "eval_every": cfg["vlm_standin_eval_every"],
            "patience": cfg["vlm_standin_patience"], "min_delta": cfg["vlm_standin_min_delta"], "weight_decay": 0.01}
    lm = {"hidden": cfg["vlm_standin_hidden"], "layers": cfg["vlm_standin_layers"], "heads": cfg["vlm_standin_heads"],
          "max_length": cfg["vlm_max_length"], "max_steps": cfg["vlm_standin_lm_max_steps"],
          "batch_size": cfg["vlm_standin_lm_batch_size"], "pack_length": cfg["vlm_standin_lm_pack_length"],
          "lr": cfg["vlm_standin_lm_lr"], **loop}
    vision = {"hidden": cfg["vlm_standin_hidden"], "layers": cfg["vlm_standin_vision_layers"],
              "heads": cfg["vlm_standin_heads"], "image_size": cfg["vlm_standin_image_size"],
              "patch_size": cfg["vlm_standin_patch_size"], "caption_length": cfg["vlm_standin_caption_length"],
              "max_steps": cfg["vlm_standin_siglip_max_steps"], "batch_size": cfg["vlm_standin_siglip_batch_size"],
              "lr": cfg["vlm_standin_siglip_lr"], **loop, "weight_decay": 0.05}
    text = {"n_reports": cfg["vlm_standin_text_reports"], "n_val_reports": cfg["vlm_standin_val_reports"],
            "vocab_size": cfg["vlm_standin_vocab_size"], "seed": cfg["seed"],
            "templates": {lang: cfg[f"vlm_prompt_{lang}"] for lang in ("ja", "en")},
            **({"view_logs": True} if cfg.get("vlm_standin_view_logs") else {})}   # absent when off: older sets match
    aux = {"n_exams": cfg["vlm_standin_aux_exams"], "stream": STANDIN_STREAM}
    concept = {"weight": cfg["vlm_standin_concept_weight"], "concepts": list(concepts.CONCEPTS)}
    return {"text": text, "lm": lm, "vision": vision, "concepts": concept, "aux": aux, "seed": int(cfg["seed"])}


def vision_params(p: dict[str, Any], name: str) -> dict[str, Any]:
    """The training settings of one SigLIP stand-in: ``conceptclip`` adds the region-concept term
    (``vlm.concepts``, weight ``vlm_standin_concept_weight``), ``siglip`` has only the caption loss."""
    return {**p["vision"], "concept_weight": float(p["concepts"]["weight"]) if name == "conceptclip" else 0.0}


VIEW_STREAM = 0x5649   # "VI": the run logs' own draws beside each text report


def view_log(rng: np.random.Generator) -> str:
    """One exam's runs as a cath-lab log lists them: ``Runs: left coronary artery, LAO cranial; ...``
    (``synth.cohort.exam_views``, the generator's own view draw; the view named as ``standins.view_name``)."""
    from cag_utils.synth.cohort import exam_views

    runs = [f"{standins.ARTERY[lat]} artery, {standins.view_name(*angles)}" for lat, angles in exam_views(rng)]
    return "Runs: " + "; ".join(runs) + "."


def texts(p: dict[str, Any], view_logs: bool | None = None) -> tuple[list[str], list[str]]:
    """(training, held-out) texts of the LM and tokenizer: reports, summaries, prompt-shaped pairs and
    (``view_logs``: None = as the settings say) each exam's run log."""
    t = p["text"]
    n = t["n_reports"] + t["n_val_reports"]
    reports = tokenizer.draw_reports(n, t["seed"])
    logs = ([view_log(np.random.default_rng([t["seed"], VIEW_STREAM, i])) for i in range(n)]
            if (t.get("view_logs") if view_logs is None else view_logs) else [])
    shaped = lambda rs, ls: tokenizer.corpus_texts(rs, t["templates"]) + ls   # noqa: E731
    return (shaped(reports[:t["n_reports"]], logs[:t["n_reports"]]),
            shaped(reports[t["n_reports"]:], logs[t["n_reports"]:]))


def encoder_tokenizer(p: dict[str, Any], folder: Path):
    """The encoders' text-tower tokenizer, saved to ``folder`` and read back: BPE on the training texts without
    run logs (with ``view_logs`` off, the LM's tokenizer itself)."""
    from transformers import AutoTokenizer

    tok = tokenizer.train_tokenizer(tokenizer.plain(texts(p, view_logs=False)[0]), p["text"]["vocab_size"])
    tok.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def aux_frames(cfg: dict[str, Any], p: dict[str, Any], progress: bool = True) -> tuple[np.ndarray, pd.DataFrame]:
    """The auxiliary cohort's sampled frames and table (angles, lesions, patient split), cached in data/work."""
    from cag_utils.cnn.pretrain import aux_cohort_settings, build_aux_cohort
    from cag_utils.run.config import load_config, work_dir

    data_cfg = {**load_config(cfg["profile"], "data"), **{k: cfg[k] for k in ("seed", "num_workers")}}
    aux_cfg = aux_cohort_settings(data_cfg, p["aux"]["n_exams"], p["vision"]["image_size"], p["aux"]["stream"])
    key = standins.digest({k: v for k, v in aux_cfg.items() if k != "num_workers"})[:12]
    frames, table = build_aux_cohort(aux_cfg, work_dir(cfg["profile"]) / f"standin-aux-{key}" / "cohort", progress)
    table = table.reset_index(drop=True)
    table["has_contrast"] = table["key_frame_category"] != "others"
    table["severe"] = [probe.severe_in_view(standins.lesions_in_view(l, lat))
                       for l, lat in zip(table["lesions"], table["laterality"])]
    return frames, table


def probe_scores(folders: dict[str, Path], frames: np.ndarray, table: pd.DataFrame, seed: int) -> dict[str, Any]:
    """Each encoder's probes, trained on the auxiliary training patients, scored on its held-out ones."""
    train = (table["split"] == "train").to_numpy()
    out = {}
    for name in ("siglip", "conceptclip"):
        x = probe.pooled_features(folders[name], frames)
        test = ~train & table["has_contrast"].to_numpy()
        out[name] = probe.probe_report(x[train], table[train], x[test], table[test], seed=seed)
    return out


def make(cfg: dict[str, Any], out: Path, progress: bool = True, stop_after: int | None = None,
         lm_only: bool = False) -> dict[str, Any]:
    """Train every part into ``out`` (replacing what is there). ``stop_after``: only that many steps per
    part (the loss logs then equal the first entries of a full run's; for tests). ``lm_only``: train the
    tokenizer and the LM, keep the encoders in ``out`` (``keep_encoders`` checks that they still match).

    The parts train in a staging folder beside ``out`` and replace ``out``'s parts only once all of them
    and the probes are done, so an interrupted run (or a ``git add`` during one) never sees half a set."""
    final = Path(out)
    out = final.with_name(final.name + ".staging")
    shutil.rmtree(out, ignore_errors=True)
    kept = keep_encoders(cfg, final) if lm_only else None
    prov = _train_parts(cfg, out, progress, stop_after, kept)
    final.mkdir(parents=True, exist_ok=True)
    trained = PARTS if kept is None else TEXT_PARTS
    for name in trained:
        shutil.rmtree(final / name, ignore_errors=True)
        os.replace(out / name, final / name)
    (final / "provenance.json").write_text(json.dumps(prov, indent=1, ensure_ascii=False))
    shutil.rmtree(out)
    for name in trained:   # the card needs the probes above; written into the sealed part, which is sealed again
        model_cards.write(final / name, cards.standin_spec(final / name, prov, cfg["profile"]))
    return prov


TEXT_PARTS = ("tokenizer", "lm")   # what ``--only lm`` retrains; the encoders do not read them


def keep_encoders(cfg: dict[str, Any], root: Path) -> dict[str, Any]:
    """The provenance of the committed set in ``root``, after checking that its encoders are what the current
    settings would train: the same vision, concept and auxiliary-cohort settings and the same text-tower
    tokenizer (``encoder_tokenizer``). Raises ``ValueError`` naming what differs (then run ``make standins``)."""
    import tempfile

    prov, p = json.loads((root / "provenance.json").read_text()), json.loads(json.dumps(params(cfg)))
    fix = f"the committed encoders are out of date; retrain all parts (make standins --profile {cfg['profile']})"
    for key in ("vision", "concepts", "aux", "seed"):
        if prov["settings"].get(key) != p[key]:
            raise ValueError(f"settings.{key} changed: {fix}")
    with tempfile.TemporaryDirectory() as tmp:
        encoder_tokenizer(p, Path(tmp))
        for name in CAPTIONS:
            if not tokenizer.same_vocabulary(Path(tmp), root / name):
                raise ValueError(f"{name}'s text-tower tokenizer differs from the one the settings give: {fix}")
    return prov


def _train_parts(cfg: dict[str, Any], out: Path, progress: bool, stop_after: int | None,
                 kept: dict[str, Any] | None = None) -> dict[str, Any]:
    """Tokenizer, LM and both vision stand-ins trained into ``out``; their provenance (not yet written).
    ``kept``: the provenance of encoders kept as they are (``keep_encoders``): only the tokenizer and LM train."""
    from transformers import AutoTokenizer

    from cag_utils.run.results import describe_device, git_sha, package_versions

    p, seed = params(cfg), int(cfg["seed"])
    sha = git_sha()   # the code that trains: read before anything can change the tree
    out.mkdir(parents=True, exist_ok=True)
    walls: dict[str, float] = {}
    cap = (lambda q: {**q, "stop_after": stop_after}) if stop_after else (lambda q: q)   # noqa: E731

    t0 = time.perf_counter()
    train_texts, val_texts = texts(p)
    tok_dir = _fresh(out / "tokenizer")
    tok = tokenizer.train_tokenizer(tokenizer.plain(train_texts), p["text"]["vocab_size"])
    tok.save_pretrained(tok_dir)
    _write_record(tok_dir, {"kind": "tokenizer", "n_texts": len(train_texts), "vocab_size": len(tok)})
    sealed.seal_folder(tok_dir)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    pali = tokenizer.family_tokenizer(tok, "paligemma")
    build.make_processor("paligemma", pali, standins.image_processor(p["vision"]), 1)   # adds <loc>/<seg> tokens
    walls["tokenizer"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    lm_dir = _fresh(out / "lm")
    _write_record(lm_dir, standins.pretrain_lm(lm_dir, tok, len(pali), train_texts, val_texts, cap(p["lm"]), seed,
                                               progress))
    sealed.seal_folder(lm_dir)
    walls["lm"] = time.perf_counter() - t0
    if kept is not None:
        return _with_kept_encoders(kept, p, sha, walls, out)

    enc_tok = encoder_tokenizer(p, out / ENCODER_TOKENIZER) if p["text"].get("view_logs") else tok
    t0 = time.perf_counter()
    frames, table = aux_frames(cfg, p, progress)
    walls["aux_cohort"] = time.perf_counter() - t0
    train = (table["split"] == "train").to_numpy()
    for name, caption in CAPTIONS.items():
        t0 = time.perf_counter()
        caps = [caption(r) for _, r in table.iterrows()]
        folder = _fresh(out / name)
        rec = standins.train_siglip(folder, enc_tok, frames[train], [c for c, k in zip(caps, train) if k], frames[~train],
                                    [c for c, k in zip(caps, train) if not k], cap(vision_params(p, name)), seed,
                                    progress)
        rec["example_captions"] = sorted(set(caps))[:3]
        _write_record(folder, rec)
        write_first_batches(folder, frames[train], [c for c, k in zip(caps, train) if k], p["vision"], seed)
        sealed.seal_folder(folder)
        walls[name] = time.perf_counter() - t0
    folders = {name: out / name for name in PARTS}
    provenance = {
        "settings": p, "git_sha": sha, "versions": package_versions(), "device": describe_device(),
        "wall_seconds": {k: round(v, 1) for k, v in walls.items()}, "stop_after": stop_after,
        "aux_cohort": {"n_exams": p["aux"]["n_exams"], "n_frames": int(len(table)), "n_train_frames": int(train.sum()),
                       "n_patients": int(table["patient_id"].nunique()),
                       "patients": sorted(map(str, table["patient_id"].unique()))},
        "probes_aux_heldout": probe_scores(folders, frames, table, seed),
        "records": {name: _record_digest(out / name) for name in PARTS},
    }
    shutil.rmtree(out / ENCODER_TOKENIZER, ignore_errors=True)   # kept in each encoder's processor
    return provenance


ENCODER_TOKENIZER = "encoder-tokenizer"   # staging only


def _with_kept_encoders(kept: dict[str, Any], p: dict[str, Any], sha: str, walls: dict[str, float],
                        out: Path) -> dict[str, Any]:
    """Provenance of a set whose tokenizer and LM were retrained (in ``out``) beside kept encoders: the encoders'
    entries (wall times, probes, records, aux cohort) as they were, and the commit that trained them."""
    from cag_utils.run.results import describe_device, package_versions

    by_part = {name: kept.get("git_sha_of_part", {}).get(name, kept["git_sha"]) for name in CAPTIONS}
    return {**kept, "settings": p, "git_sha": sha, "git_sha_of_part": by_part, "versions": package_versions(),
            "device": describe_device(),
            "wall_seconds": {**kept["wall_seconds"], **{k: round(v, 1) for k, v in walls.items()}},
            "records": {**kept["records"], **{name: _record_digest(out / name) for name in TEXT_PARTS}}}


FIRST_BATCHES = "first_batches.npz"   # the frames and captions of a SigLIP stand-in's first steps
N_FIRST = 3


def write_first_batches(folder: Path, frames: np.ndarray, captions: list[str], p: dict[str, Any], seed: int,
                        k: int = N_FIRST) -> Path:
    """Save the training pairs of the first ``k`` steps (in step order), so that a test can replay those
    steps without regenerating the auxiliary cohort and compare the losses with the committed log."""
    batches = standins.siglip_batches(len(captions), p["batch_size"], seed)
    idx = np.concatenate([next(batches) for _ in range(k)])
    path = folder / FIRST_BATCHES
    np.savez_compressed(path, frames=np.asarray(frames[idx]), captions=np.asarray([captions[i] for i in idx]))
    return path


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _write_record(folder: Path, record: dict[str, Any]) -> None:
    (folder / standins.DONE).write_text(json.dumps(record, indent=1, ensure_ascii=False))


def _record_digest(folder: Path) -> str:
    """sha256 over a part's files (names and bytes; not the test's first batches, SHA256SUMS nor the model card,
    which is written after it): what notebook 05 names its caches by."""
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.name not in (FIRST_BATCHES, SUMS_NAME, model_cards.CARD):
            h.update(f.relative_to(folder).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def seal_parts(out: Path, names: list[str]) -> list[Path]:
    """SHA256SUMS of each finished part folder of ``out`` (one with its record ``standin.json``), e.g. for
    folders trained before the sums were written; the files are taken as they are, so run it on a clean tree."""
    return [sealed.seal_folder(out / name) for name in names if (out / name / standins.DONE).is_file()]


def default_out(profile: str) -> Path:
    from cag_utils.run.config import REPO_ROOT

    return REPO_ROOT / "models" / "standins" / profile


def main(argv: list[str] | None = None) -> None:
    from cag_utils.run.config import load_config
    from cag_utils.run.seed import seed_everything

    ap = argparse.ArgumentParser(prog="python -m cag_utils.vlm.make_standins", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--out", type=Path, default=None, help="folder (default models/standins/<profile>)")
    ap.add_argument("--only", choices=["embedder", "lm"], default=None,
                    help="embedder: retrain only notebook 06's VLScore embedder (reads the SigLIP stand-in's text "
                         "tokenizer already in the folder); lm: retrain only the tokenizer and the LM, keeping the "
                         "encoders after checking that their settings and text tokenizer still match")
    ap.add_argument("--no-embedder", action="store_true",
                    help="train notebook 05's parts only (tokenizer, LM, SigLIP, ConceptCLIP), not the embedder")
    ap.add_argument("--seal", action="store_true",
                    help="train nothing: record SHA256SUMS of the finished part folders (with --only: that part)")
    args = ap.parse_args(argv)
    cfg = load_config(args.profile, "finetune")
    out = args.out or default_out(args.profile)
    if args.seal:
        for path in seal_parts(out, [args.only] if args.only else [*PARTS, embedder_standin.NAME]):
            print(f"wrote {sealed.shown(path)}")
        return
    seed_everything(cfg["seed"], threads=cfg["torch_threads"])
    t0 = time.perf_counter()
    if args.only in (None, "lm"):
        prov = make(cfg, out, lm_only=args.only == "lm")
        print(json.dumps({"wall_seconds": prov["wall_seconds"], "probes_aux_heldout": prov["probes_aux_heldout"]},
                         indent=1))
    if args.no_embedder or args.only == "lm":
        print(f"total {time.perf_counter() - t0:.0f} s")
        return
    ft, ev = embedder_standin.configs(args.profile)
    rec = embedder_standin.make(ft, ev, out)
    print(json.dumps({"embedder": {k: rec[k] for k in ("steps", "stopped", "heldout_checks", "wall_seconds")}}, indent=1))
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
