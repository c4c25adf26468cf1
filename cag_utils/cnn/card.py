"""The model card of a stage-1 checkpoint folder (``cag_utils.run.model_cards``; notebook 02).

``train_classifier`` writes it with what training knows (recipe, best epoch, validation score);
``python -m cag_utils.run.model_cards --profile <p>`` adds the test scores of ``results/02_cnn.json``
and the split of ``results/01_data.json`` when 02's record names this folder (``training.checkpoint``).
"""
from __future__ import annotations

from pathlib import Path

from cag_utils.run.model_cards import Spec, interval_metrics, load_record, profile_of, shown

LABELS = {f"{subset}.{m}": f"{name}, {where}" for subset, where in (("test", "test"), ("low_contrast", "low-contrast test"))
          for m, name in (("laterality_f1", "laterality F1"), ("key_frame_f1", "key-frame F1"),
                          ("macro_f1", "6-class macro-F1"), ("accuracy", "accuracy"))}


def cnn_spec(folder: Path, results: Path | None = None) -> Spec:
    """What the card of ``folder`` (best.safetensors + config.json) says; ``results``: the results/ folder."""
    folder = Path(folder)
    saved = load_record(folder / "config.json") or {}
    c, profile = saved.get("config", {}), profile_of(folder)
    r02 = load_record(results / "02_cnn.json") if results else None
    matched = bool(r02) and r02["results"].get("training", {}).get("checkpoint") == folder.name
    r01 = load_record(results / "01_data.json") if matched else None

    what = (f"A ConvNeXt (timm `{c.get('model_name')}`, {c.get('in_chans')}-channel {c.get('input_size')} px input) "
            f"that labels one angiogram frame with one of six classes, laterality (LCA, RCA) x key-frame category "
            f"(better, bad, others): {', '.join(saved.get('classes', []))}. `best.safetensors` holds the epoch with the "
            f"best validation macro-F1 (epoch {saved.get('best_epoch')}, {_num(saved.get('best_val_macro_f1'))}); "
            "`config.json` the recipe, class order and normalisation. Load it with "
            "`cag_utils.cnn.train.load_trained(folder)`; notebook 03 runs it to pick key frames.")
    start = c.get("pretrained_file")
    base = (f"Starting weights `{shown(start)}` (a local timm checkpoint, e.g. the synthetic angle pretraining of "
            "`cag_utils.cnn.pretrain`)." if start else
            f"None: random initialisation of timm's `{c.get('model_name')}` architecture (no weights downloaded).")
    data = [f"- Training: {saved.get('n_train')} frames; validation (epoch selection): {saved.get('n_val')} frames; "
            f"split by patient, seed {c.get('seed')}; {c.get('epochs')} epochs, augmentation `{c.get('augment')}`."]
    spec = Spec(title=f"Key-frame classifier {folder.name}", what=what, base=base, data="", rebuild="",
                library="timm", task="image-classification", base_model=shown(start) if start else None,
                tags=["image-classification", "timm", "convnext", "coronary-angiography", "synthetic-data"],
                limits=f"One training run, seed {c.get('seed')}, at {c.get('input_size')} px; the spread over seeds "
                       "and the scores with more training patients are in docs/stage1.md.")
    if matched:
        res = r02["results"]
        spec.metrics = interval_metrics(res["headline"], "", "results/02_cnn.json: headline", LABELS)
        ex = res["exact"]
        data.append(f"- Test: {ex['n_test']} frames of {ex['n_test_patients']} held-out patients "
                    f"({ex['n_low_contrast']} low-contrast frames: {res.get('low_contrast_definition')}).")
        if r01:
            e = r01["results"]["exact"]
            data.append(f"- Patients per split (results/01_data.json): " +
                        ", ".join(f"{k} {v}" for k, v in e["split_patients"].items()) +
                        f"; cohort `{e['dataset']}` ({e['n_annotation_exams']} annotation exams).")
        data.append(f"- Intervals: {res.get('interval_method')}.")
        rebuild = (f"python -m cag_utils.run.pipeline --profile {profile} --to 02   # notebooks 01-02 (part of make reproduce)\n"
                   f"python -m cag_utils.run.model_cards --profile {profile}")
    else:
        spec.missing = ["test scores with 95 % patient intervals: results/02_cnn.json does not name this checkpoint "
                        f"(run notebook 02, then `python -m cag_utils.run.model_cards --profile {profile or '<profile>'}`)."]
        rebuild = ("# config.json's `config` is the recipe; on the same frames this rebuilds the folder:\n"
                   "cag_utils.cnn.train.train_classifier(frames, table, config, folder)"
                   + (f"\n# the pipeline's own checkpoint: python -m cag_utils.run.pipeline --profile {profile} --to 02"
                      if profile else ""))
    spec.data, spec.rebuild = "\n".join(data), rebuild
    return spec


def _num(v: float | None) -> str:
    return "none recorded" if v is None else f"validation macro-F1 {v:.3f}"
