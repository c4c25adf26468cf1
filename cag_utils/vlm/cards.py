"""The model cards of stage 3's folders (``cag_utils.run.model_cards``): stand-ins, assembled VLMs, LoRA adapters.

Stand-in cards read only the part's record (``standin.json``) and ``provenance.json``, so they never change
when the notebooks rerun: ``make_standins`` writes them before sealing each part. An assembled VLM has no
score of its own. An adapter's card (``lora.save_adapter``) starts from ``training.json``;
``python -m cag_utils.run.model_cards`` adds ``results/05_finetune.json`` when it names the adapter
(``adapters``), and notebook 06's scores when 06 ran after that 05.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cag_utils.run.model_cards import Metric, Spec, interval_metrics, load_record, shown
from cag_utils.vlm.build import REGISTRY

TAGS = ["coronary-angiography", "synthetic-data", "stand-in"]
STANDIN_LIMITS = ("A small stand-in trained from scratch on generated text and frames: it knows only the "
                  "generator's vocabulary, views and lesions, and it is not a pretrained PaliGemma2, Gemma3, SigLIP "
                  "or ConceptCLIP.")
LOSSES = {"test_loss": "held-out {} loss w/ LoRA (nats per token)", "test_loss_blanked": "the same, blanked image",
          "image_reliance": "image reliance (blanked - real)", "test_loss_without_lora": "held-out {} loss w/o LoRA"}
CONTROL = {"artery_accuracy_real": "artery accuracy, real frame", "artery_accuracy_blank": "artery accuracy, blanked",
           "artery_chance": "artery accuracy of the commonest answer", "view_accuracy_real": "view accuracy, real frame",
           "view_accuracy_blank": "view accuracy, blanked", "view_chance": "view accuracy of the commonest answer",
           "image_reliance": "image reliance (blanked - real)"}
SCORES = {f"{lang}.{m}": f"{name} ({lang})" for lang in ("ja", "en") for m, name in
          (("vlscore", "VLScore"), ("bleu", "BLEU"), ("chrf", "chrF"), ("f1_exam", "lesion F1 over the exam"),
           ("f1_shown_artery", "lesion F1 of the shown artery"))}


def _losses(target: str) -> dict[str, str]:
    return {k: v.format(target) for k, v in LOSSES.items()}


def _curve(rec: dict[str, Any], what: str) -> list[Metric]:
    """The first and last held-out evaluation of a stand-in's training (one held-out set: no interval)."""
    val = rec.get("val") or []
    return [Metric(f"heldout_loss_{k}", f"held-out {what} loss at step {val[i][0]}", val[i][1], f"standin.json: val[{i}]")
            for k, i in (("first", 0), ("last", -1))] if val else []


def standin_spec(folder: Path, provenance: dict[str, Any] | None, profile: str) -> Spec:
    """The card of one stand-in part of ``models/standins/<profile>/``."""
    folder = Path(folder)
    rec, name = load_record(folder / "standin.json") or {}, folder.name
    conf = load_record(folder / "config.json") or {}
    prov = provenance or {}
    s, aux = prov.get("settings", {}), prov.get("aux_cohort", {})
    sha = rec.get("git_sha") or prov.get("git_sha_of_part", {}).get(name) or prov.get("git_sha", "unrecorded")
    trained = f"Trained {rec.get('steps')} steps (stopped: {rec.get('stopped')}) by the code of commit `{sha}`."
    cohort = (f"an auxiliary synthetic cohort ({aux.get('n_exams')} exams, {aux.get('n_patients')} patients, "
              f"{aux.get('n_frames')} frames; its own seed stream, split by patient, no patient in any cohort of the "
              "notebooks)")
    spec = Spec(title=f"Smoke stand-in: {name}", what="", base="None: trained from scratch (no weights downloaded).",
                data="", rebuild=f"python -m cag_utils.vlm.make_standins --profile {profile}   # make standins",
                library="transformers", task="text-generation", tags=TAGS + [name], limits=STANDIN_LIMITS,
                split="validation")   # the held-out texts, frames or patients of its own pretraining
    if rec.get("kind") == "tokenizer":
        spec.what = (f"The byte-pair-encoding tokenizer (`tokenizers`, {rec.get('vocab_size')} pieces) of the smoke "
                     "stand-ins, with the special tokens of the PaliGemma and Gemma3 processors.")
        spec.data = (f"{rec.get('n_texts')} texts (reports, summaries and prompt-shaped pairs, Japanese and English) of "
                     f"{s.get('text', {}).get('n_reports')} generated exams (seed {s.get('text', {}).get('seed')})"
                     + (", each with its run log (the artery and C-arm view of each run)."
                        if s.get("text", {}).get("view_logs") else ".")
                     + " The LM's tokenizer; the encoders' text towers have their own, saved with them.")
    elif rec.get("kind") == "lm":
        spec.what = (f"A {conf.get('num_hidden_layers')}-layer, {conf.get('hidden_size')}-wide `Gemma3ForCausalLM` "
                     f"({rec.get('parameters')} parameters), the language model of the smoke stand-ins, pretrained on "
                     "generated reports and summaries and on the profile's prompt followed by its summary. Notebook 05 "
                     "joins it to a vision stand-in and LoRA-tunes it.")
        t = s.get("text", {})
        spec.data = (f"{rec.get('n_texts')} training and {rec.get('n_val_texts')} held-out texts ({rec.get('n_tokens')} "
                     f"training tokens) of {t.get('n_reports')} and {t.get('n_val_reports')} generated exams "
                     f"(seed {t.get('seed')}), disjoint. {trained}")
        spec.metrics = _curve(rec, "next-token")
    elif rec.get("kind") == "siglip":
        v, label = conf.get("vision_config", {}), {"siglip": "SigLIP", "conceptclip": "ConceptCLIP"}.get(name, name)
        spec.what = (f"A `SiglipModel` ({rec.get('parameters')} parameters; vision tower {v.get('num_hidden_layers')} "
                     f"layers at {v.get('image_size')} px with {v.get('patch_size')}-px patches), pretrained on angiogram "
                     f"frames and captions such as \"{(rec.get('example_captions') or [''])[-1]}\". The stand-in for "
                     f"{label}: notebook 05 uses its vision tower, frozen.")
        if rec.get("concept_weight"):
            spec.what += (" Beside the caption loss, a region-concept term (weight "
                          f"{rec['concept_weight']}, `cag_utils.vlm.concepts`, the analogue of ConceptCLIP's RC-Align) "
                          "aligns each frame's best-matching patch with every concept its caption names: artery, view, "
                          "contrast, severe stenosis and severe stenosis per AHA segment.")
        spec.data = (f"{rec.get('n_pairs')} training and {rec.get('n_val_pairs')} held-out frame-caption pairs "
                     f"({rec.get('n_distinct_captions')} distinct captions) of {cohort}. {trained}")
        spec.task, spec.tags = "image-classification", spec.tags + ["siglip"]
        spec.metrics = _curve(rec, "sigmoid")
        probes = prov.get("probes_aux_heldout", {}).get(name)
        if probes:
            spec.metrics += interval_metrics(probes, "", f"provenance.json: probes_aux_heldout.{name}", {
                "laterality_accuracy": "laterality accuracy of a linear probe, held-out auxiliary patients",
                "severe_lesion_auroc": "severe-lesion (>= 90 %) AUROC of a linear probe, held-out auxiliary patients"})
            spec.data += (f" Probes: trained on {probes.get('n_train')} frames of the training patients, scored on "
                          f"{probes.get('n_test')} contrast frames of the held-out patients.")
        else:
            spec.missing = ["linear-probe scores: provenance.json has none for this part (make standins writes them)."]
    else:   # the VLScore embedder
        es = rec.get("settings", {})
        spec.what = (f"A `SiglipModel` ({rec.get('parameters')} parameters, text tower of "
                     f"{es.get('vision', {}).get('caption_length')} tokens) that embeds a frame and whole summaries by "
                     "their findings: the VLScore embedder of notebook 06.")
        spec.data = (f"{rec.get('n_train_frames')} training and {rec.get('n_val_frames')} held-out contrast frames of an "
                     f"auxiliary synthetic cohort ({es.get('aux', {}).get('n_exams')} exams, {len(rec.get('patients', []))} "
                     f"patients, split by patient, none in the notebooks' cohorts); {rec.get('n_texts')} summaries in "
                     f"{es.get('wordings')} wordings per language. {trained}")
        spec.task, spec.tags = "feature-extraction", spec.tags + ["siglip", "vlscore"]
        spec.rebuild = f"python -m cag_utils.vlm.make_standins --profile {profile} --only embedder"
        spec.metrics = _curve(rec, "pair")
        for lang, checks in rec.get("heldout_checks", {}).items():
            spec.metrics += [Metric(f"{lang}.{k}", f"share of {checks.get('n_frames')} held-out frames whose reworded "
                                    f"summary ranks above another exam's by {k.split('_')[0].replace('vlscore', 'VLScore')} "
                                    f"({lang})", v,
                                    f"standin.json: heldout_checks.{lang}.{k}")
                             for k, v in checks.items() if k != "n_frames"]
    return spec


def vlm_spec(folder: Path, standins: Path, profile: str, record: dict[str, Any] | None = None) -> Spec:
    """The card of a VLM assembled from the stand-ins in ``standins`` (notebook 05's ``assemble_families``);
    ``record``: its ``standin.json`` when that is not written yet."""
    folder = Path(folder)
    rec = record or load_record(folder / "standin.json") or {}
    fam = REGISTRY[rec.get("family") or folder.name.split("-")[0]]
    lm, vision = Path(standins) / "lm", Path(standins) / fam.vision
    join = ("its patch features pass through Gemma3's own multimodal projector" if fam.vision == "conceptclip" else
            f"joined by {REGISTRY[fam.architecture].label}'s multimodal projector")
    return Spec(
        title=f"{fam.label} assembled from the smoke stand-ins", library="transformers", task="image-text-to-text",
        what=(f"{fam.label} ({rec.get('parameters')} parameters) assembled from the language model `{shown(lm)}` and "
              f"the vision tower of `{shown(vision)}`, {join}, before any LoRA. Notebook 05 reads it with "
              "`from_pretrained`, as it reads a real checkpoint; its adapters' cards carry the scores."),
        base=f"`{shown(lm)}` and `{shown(vision)}` (their cards say how they were trained).",
        base_model=[shown(lm), shown(vision)], data="None of its own: the parts' cards say what they saw.",
        rebuild=f"python -m cag_utils.run.pipeline --profile {profile} --to 05   # notebook 05 assembles it",
        tags=TAGS + [fam.architecture], limits=STANDIN_LIMITS)


def adapter_spec(folder: Path, results: Path | None, profile: str | None) -> Spec:
    """The card of a LoRA adapter folder ``<family>-<tag>-<hash>`` (``lora.save_adapter``)."""
    folder = Path(folder)
    rec, conf = load_record(folder / "training.json") or {}, load_record(folder / "adapter_config.json") or {}
    family, tag = (folder.name.rsplit("-", 2) + ["", ""])[:2]
    fam = REGISTRY.get(family)
    label = fam.label if fam else family
    base = conf.get("base_model_name_or_path")
    on_standins = bool(base) and Path(base).parent.name == "vlm"   # assembled by notebook 05 under data/work/<p>/vlm/
    control = tag == "control"
    task = ("the positive control: it names the key frame's artery and view, given no report" if control
            else "it writes the diagnostic and treatment summary from a key frame and the pre-procedure report")
    counts = rec.get("parameters", {})
    spec = Spec(
        title=f"LoRA adapter {folder.name}", library="peft", base_model=shown(base) if base else None,
        task="text-generation" if fam and fam.text_only else "image-text-to-text",
        what=(f"A LoRA adapter (peft; r {conf.get('r')}, alpha {conf.get('lora_alpha')}, dropout "
              f"{conf.get('lora_dropout')}) on {label}'s language model, the multimodal projector trained in full; "
              f"{task}{' (text-only control: no image)' if fam and fam.text_only else ''}. "
              f"{counts.get('trainable')} trainable of {counts.get('total')} parameters, {rec.get('steps')} steps, "
              f"final training loss {rec.get('train_loss')}. Load it with `cag_utils.vlm.lora.load_adapter(base, folder)`."),
        base=(f"`{shown(base)}`" + (", assembled from the smoke stand-ins (its card names them)." if on_standins else
                                    ": its own license applies to the adapter.")) if base else "Not recorded.",
        data="The corpus of notebook 04 (key frames with bilingual reports), split by patient.",
        license="mit" if on_standins else "other", tags=["lora", "peft"] + TAGS[:2] + ([family] if family else []),
        limits=STANDIN_LIMITS if on_standins else "",
        rebuild=(f"python -m cag_utils.run.pipeline --profile {profile} --to {'05' if control else '06'}   # 05 trains it"
                 f"{'' if control else ', 06 scores its outputs'}\npython -m cag_utils.run.model_cards --profile {profile}"))
    r05 = load_record(results / "05_finetune.json") if results else None
    key = f"control.{family}" if control else family
    redo = f"run notebook 05, then `python -m cag_utils.run.model_cards --profile {profile or '<profile>'}`"
    if not (r05 and r05["results"].get("adapters", {}).get(key) == folder.name):
        spec.missing = [f"held-out losses and image reliance with 95 % patient intervals: results/05_finetune.json "
                        f"does not name this adapter ({redo})."]
        return spec
    res = r05["results"]
    seed = f"seed {r05['config']['seed']}; scored on the test split (its patients in each metric's row)."
    if control:
        spec.data += f" Target: each key frame's artery and view, from the prompt \"{res['control'].get('prompt')}\"; {seed}"
        ctrl, src = res["control"], "results/05_finetune.json: control"
        scores = {k: v for k, v in ctrl["scores"].get(family, {}).items() if k != "image_reliance"}   # = headline's
        spec.metrics = (interval_metrics(ctrl["headline"], f"{family}.", f"{src}.headline", _losses("answer"))
                        + interval_metrics(scores, "", f"{src}.scores.{family}", CONTROL, plain=True))
        return spec
    n = res["exact"].get(f"{family}.n_used") or res["exact"]["n_examples"]
    spec.data += " Examples (records x languages): " + ", ".join(f"{k} {v}" for k, v in n.items()) + f"; {seed}"
    spec.metrics = interval_metrics(res["headline"], f"{family}.", "results/05_finetune.json: headline",
                                    _losses("summary"))
    r06 = load_record(results / "06_evaluation.json")
    finished = lambda r: r["provenance"].get("timing", {}).get("finished_at", "")   # noqa: E731
    if r06 and finished(r06) >= finished(r05):
        spec.metrics += interval_metrics(r06["results"]["headline"], f"{family}.with_lora.",
                                         "results/06_evaluation.json: headline", SCORES)
    else:
        spec.missing = ["VLScore, BLEU, chrF and lesion F1 of its outputs: results/06_evaluation.json "
                        f"{'predates this notebook 05 run' if r06 else 'is missing'} (run notebook 06, then "
                        f"`python -m cag_utils.run.model_cards --profile {profile}`)."]
    return spec
