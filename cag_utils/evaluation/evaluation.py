"""Notebook 06: score the summaries of notebook 05 and name the model the paper calls CAG-VLM.

Every (model, variant, language) cell of ``results/05_finetune_predictions.jsonl.gz`` gets
- VLScore (``cag_utils.evaluation.metrics.vlscore``) on the key frame, the reference and the output;
- BLEU and chrF (``cag_utils.evaluation.metrics.text``: sacrebleu, ``ja-mecab`` / ``13a``, NFKC both sides);
- lesion F1 over the whole exam and over the artery the key frame shows (``cag_utils.evaluation.metrics.findings``);
- the clinicians' mean rating, only when completed rating forms exist (never simulated);
each with its 95 % patient-bootstrap interval. ``item_table`` holds one row per prediction with the
parsed findings and the per-item VLScore: the per-item file from which every number is recomputed.

The selection rule (``select_model``): among the w/ LoRA models, the one with the highest value of the
first metric of ``order`` that is available (clinician rating first, as the paper chose CAG-VLM; then
VLScore), averaged over the languages it was measured in. That model gets the paper's name.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cag_utils.corpus.corpus import format_lesions, parse_lesions
from cag_utils.evaluation.metrics.findings import lesion_f1, parse_summary, restrict_to_artery
from cag_utils.evaluation.metrics.text import corpus_metric, normalise, paired_significance
from cag_utils.evaluation.metrics.vlscore import MAX_UNIT_AREA, vlscore_of_texts, vlscore_summary

VARIANTS = ("without_lora", "with_lora", "with_lora_blank_image")
VARIANT_LABELS = {"without_lora": "w/o LoRA", "with_lora": "w/ LoRA", "with_lora_blank_image": "w/ LoRA, blanked image"}
LANGUAGE_LABELS = {"ja": "Japanese", "en": "English"}
METRICS = ("vlscore", "bleu", "chrf", "f1_exam", "f1_shown_artery")
METRIC_LABELS = {"vlscore": "VLScore", "bleu": "BLEU", "chrf": "chrF", "f1_exam": "Findings F1 (exam)",
                 "f1_shown_artery": "Findings F1 (shown artery)", "rating": "Rating (0-10)"}
PAPER_NAME = "CAG-VLM"
VLSCORE_DECIMALS = 6      # per-item VLScore is rounded before averaging, so the per-item file reproduces it
TEXT_INTERVAL_KEYS = ("signature", "tokenizer_note", "normalisation")

__all__ = ["LANGUAGE_LABELS", "METRICS", "METRIC_LABELS", "PAPER_NAME", "VARIANTS", "VARIANT_LABELS",
           "best_by_metric", "cell_key", "embedder_folder", "item_table", "key_frames", "load_predictions",
           "metric_grid", "metrics_table", "order_rows", "per_item_rows", "pool_draws", "rating_cases",
           "select_model", "significance", "vlscore_items"]


def cell_key(family: str, variant: str, language: str, metric: str) -> str:
    """'gemma3.with_lora.ja.vlscore': the headline key of one metric of one cell."""
    return f"{family}.{variant}.{language}.{metric}"


def load_predictions(path: str | Path) -> pd.DataFrame:
    """Rows of notebook 05 (record, patient, model, family, variant, language, prompt, reference, output)."""
    df = pd.read_json(path, lines=True, dtype={"record_id": str, "patient_id": str})
    unknown = sorted(set(df["variant"]) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variants {unknown} in {Path(path).name}")
    return df


def order_rows(df: pd.DataFrame, families: Sequence[str]) -> pd.DataFrame:
    """Canonical row order: family as notebook 05 ran them, variant, language, record."""
    key = {"family": {f: i for i, f in enumerate(families)}, "variant": {v: i for i, v in enumerate(VARIANTS)}}
    return (df.assign(_f=df["family"].map(key["family"]), _v=df["variant"].map(key["variant"]))
            .sort_values(["_f", "_v", "language", "record_id"], kind="stable").drop(columns=["_f", "_v"])
            .reset_index(drop=True))


def item_table(predictions: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """One row per prediction: IDs, the corpus findings, and the findings parsed from the output.

    ``records``: the corpus metadata (``vlm.stage.corpus_records``); a prediction whose record is not in it
    is an error. Shown-artery lesions use the true laterality of the key frame (the artery it shows), or the
    predicted one where the truth is unknown, as the corpus' ``lesions_in_view`` does.
    """
    cols = ["frame_uid", "laterality_true", "laterality_pred", "lesions", "lesions_in_view", "dominance", "plan",
            "culprit_segment"]
    meta = records[cols].rename(columns={"frame_uid": "record_id", "lesions": "lesions_true",
                                         "lesions_in_view": "lesions_shown_true", "dominance": "dominance_true",
                                         "plan": "plan_true", "culprit_segment": "culprit_true"})
    df = predictions[["record_id", "patient_id", "model", "family", "variant", "language"]].merge(
        meta, on="record_id", how="left", validate="many_to_one", indicator=True)
    missing = sorted(df.loc[df["_merge"] != "both", "record_id"].unique())
    if missing:
        raise ValueError(f"{len(missing)} predicted record(s) not in the corpus, e.g. {missing[:3]}")
    parsed = [parse_summary(t) for t in predictions["output"]]
    df = df.drop(columns="_merge").fillna({"lesions_true": "", "lesions_shown_true": ""})
    df["lesions_pred"] = [format_lesions(list(f.lesions)) for f in parsed]
    shown = [t if isinstance(t, str) else p for t, p in zip(df["laterality_true"], df["laterality_pred"])]   # as the corpus
    df["lesions_shown_pred"] = [format_lesions(restrict_to_artery(f.lesions, lat)) for f, lat in zip(parsed, shown)]
    df["dominance_pred"] = [f.dominance for f in parsed]
    df["plan_pred"] = [f.plan for f in parsed]
    df["culprit_pred"] = [f.culprit_segment for f in parsed]
    return df


def vlscore_items(embedder: Any, predictions: pd.DataFrame, images: dict[str, Any],
                  c: float = MAX_UNIT_AREA) -> np.ndarray:
    """Per-prediction VLScore, rounded to ``VLSCORE_DECIMALS``. Each distinct image and text is embedded
    once; texts are NFKC-normalised like the text metrics' inputs."""
    scores = vlscore_of_texts(embedder, predictions["record_id"].tolist(), predictions["reference"].tolist(),
                              predictions["output"].tolist(), images, c, normalise=normalise)
    return np.round(scores, VLSCORE_DECIMALS)


def _cells(df: pd.DataFrame):
    for (family, variant, language), g in df.groupby(["family", "variant", "language"], sort=False):
        yield family, variant, language, g


def metric_grid(predictions: pd.DataFrame, items: pd.DataFrame, *, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Headline intervals of every cell and metric, and the sacrebleu signatures per language.

    ``predictions`` and ``items`` must be in the same row order (``item_table`` of ``predictions``, with a
    ``vlscore`` column). Returns ({cell_key: interval}, {language: {"bleu": sig, "chrf": sig, "tokenizer_note"}}).
    """
    if not (predictions["record_id"].to_numpy() == items["record_id"].to_numpy()).all():
        raise ValueError("predictions and items are not in the same order")
    headline, signatures = {}, {}
    texts = predictions[["reference", "output"]]
    for family, variant, language, g in _cells(items):
        t = texts.loc[g.index]
        patients = g["patient_id"].tolist()
        headline[cell_key(family, variant, language, "vlscore")] = vlscore_summary(g["vlscore"], patients, seed=seed)
        for name in ("bleu", "chrf"):
            res = corpus_metric(name, t["output"].tolist(), t["reference"].tolist(), patients, language, seed=seed)
            signatures.setdefault(language, {})[name] = res["signature"]
            signatures[language]["tokenizer_note"] = res["tokenizer_note"] or "none"
            headline[cell_key(family, variant, language, name)] = {k: v for k, v in res.items()
                                                                   if k not in TEXT_INTERVAL_KEYS}
        for metric, truth, pred in (("f1_exam", "lesions_true", "lesions_pred"),
                                    ("f1_shown_artery", "lesions_shown_true", "lesions_shown_pred")):
            headline[cell_key(family, variant, language, metric)] = lesion_f1(
                [parse_lesions(s) for s in g[truth]], [parse_lesions(s) for s in g[pred]], patients, seed=seed)
    return headline, signatures


def significance(predictions: pd.DataFrame, baseline: str, *, seed: int, n_samples: int = 1000) -> dict[str, Any]:
    """sacrebleu paired bootstrap (BLEU, chrF) per language: every w/ LoRA model against ``baseline`` (a family),
    and, per model, w/ LoRA on blanked images against w/ LoRA on the real images."""
    out: dict[str, Any] = {"between_models": {}, "blanked_vs_real": {}}
    for language, lang_df in predictions.groupby("language", sort=True):
        def outputs(family: str, variant: str) -> pd.Series:
            return (lang_df[(lang_df["family"] == family) & (lang_df["variant"] == variant)]
                    .set_index("record_id")["output"].sort_index())

        families = list(dict.fromkeys(lang_df["family"]))
        refs = (lang_df.drop_duplicates("record_id").set_index("record_id")["reference"].sort_index())
        systems = {f: outputs(f, "with_lora").reindex(refs.index).tolist() for f in families}
        out["between_models"][language] = paired_significance(systems, refs.tolist(), baseline, language,
                                                              seed=seed, n_samples=n_samples)
        out["blanked_vs_real"][language] = {
            f: paired_significance({"real": systems[f],
                                    "blanked": outputs(f, "with_lora_blank_image").reindex(refs.index).tolist()},
                                   refs.tolist(), "real", language, seed=seed, n_samples=n_samples)["systems"]["blanked"]
            for f in families}
    return out


def image_effects(items: pd.DataFrame, families: Sequence[str], control: str | None, *, seed: int,
                  truth: str = "lesions_shown_true", pred: str = "lesions_shown_pred") -> dict[str, Any]:
    """Paired differences of lesion F1 (default: the shown artery) per image model with LoRA, both languages:
    ``<family>.real_minus_blank`` (the same outputs' model on the blanked frame) and
    ``<family>.real_minus_text_only`` (the text-only control ``control`` on the same records and languages).

    Each is F1(real) - F1(other) on the same test items, with a 95 % bootstrap over patients that resamples
    both sides together (per patient: TP/FP/FN of each side, summed), so the pairing is kept."""
    from cag_utils.evaluation.metrics.findings import _f1_from_counts, lesion_counts
    from cag_utils.intervals import patient_bootstrap

    def counts(family: str, variant: str) -> pd.DataFrame:
        g = items[(items["family"] == family) & (items["variant"] == variant)].sort_values(["record_id", "language"])
        c = lesion_counts([parse_lesions(x) for x in g[truth]], [parse_lesions(x) for x in g[pred]])
        return pd.DataFrame(c, columns=["tp", "fp", "fn"], index=pd.MultiIndex.from_frame(g[["record_id", "language"]])
                            ).assign(patient=g["patient_id"].to_numpy())

    def paired(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, Any]:
        if not a.index.equals(b.index):
            raise ValueError("the two sides do not cover the same records and languages")
        per = np.stack([a.groupby("patient", sort=True)[["tp", "fp", "fn"]].sum().to_numpy(),
                        b.groupby("patient", sort=True)[["tp", "fp", "fn"]].sum().to_numpy()], axis=1)
        out = patient_bootstrap(per, lambda s: _f1_from_counts(s[..., 0, :]) - _f1_from_counts(s[..., 1, :]), seed=seed)
        out.update(f1_real=float(_f1_from_counts(per[:, 0].sum(0))), f1_other=float(_f1_from_counts(per[:, 1].sum(0))))
        return out

    out: dict[str, Any] = {}
    for f in families:
        if f == control:
            continue
        real = counts(f, "with_lora")
        out[f"{f}.real_minus_blank"] = paired(real, counts(f, "with_lora_blank_image"))
        if control:
            out[f"{f}.real_minus_text_only"] = paired(real, counts(control, "with_lora"))
    return out


def pool_draws(draws: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per-item rows of several draws of one recipe (e.g. LoRA seeds) as one table for ``image_effects``.

    Each draw's ``record_id`` gets ``|<draw>`` appended, so a record is one item per draw, and the patient stays
    the patient: the bootstrap then resamples patients with all their draws' outputs together, and the estimate
    is the F1 of the counts summed over draws (one copy of a draw gives exactly the draw's own result). Every draw
    must cover the same patients, records, languages and cells (ValueError otherwise)."""
    if not draws:
        raise ValueError("no draws to pool")
    cells = ["record_id", "language", "patient_id", "family", "variant"]
    keys = {name: sorted(map(tuple, d[cells].astype(str).to_numpy().tolist())) for name, d in draws.items()}
    first, *_ = keys
    if different := [name for name, k in keys.items() if k != keys[first]]:
        raise ValueError(f"draws {different} do not cover the same items as {first!r}")
    return pd.concat([d.assign(record_id=d["record_id"].astype(str) + f"|{name}") for name, d in draws.items()],
                     ignore_index=True)


def image_effect_table(effects: dict[str, Any], families: Sequence[str], labels: dict[str, str]) -> pd.DataFrame:
    """One row per image model: shown-artery F1 on the real frame, and the two paired differences."""
    rows = []
    for f in families:
        blank, text = effects.get(f"{f}.real_minus_blank"), effects.get(f"{f}.real_minus_text_only")
        if blank is None:
            continue
        rows.append({"Model": labels[f], "F1 real frame": f"{blank['f1_real']:.3f}",
                     "Real - blanked": _ci(blank, 3), "F1 text-only": f"{text['f1_other']:.3f}" if text else "",
                     "Real - text-only": _ci(text, 3) if text else ""})
    return pd.DataFrame(rows)


def quality_table(quality: pd.DataFrame, families: Sequence[str], labels: dict[str, str]) -> pd.DataFrame:
    """Per model and variant, both languages together: shares in the prompt's language, with a repetition,
    with a plan (``metrics.quality.output_quality`` rows of language "all"), with intervals."""
    q = quality[quality["language"] == "all"].set_index(["family", "variant"])
    rows = []
    for f in families:
        for v in VARIANTS:
            if (f, v) not in q.index:
                continue
            r = q.loc[(f, v)]
            iv = lambda share: _ci({k: r[f"{share}_{k}"] for k in ("estimate", "ci_low", "ci_high")}, 3)  # noqa: E731
            rows.append({"Model": labels[f], "Variant": VARIANT_LABELS[v], "In the prompt's language": iv("in_language"),
                         "Repeats a segment or 4-gram": iv("repeated_any"), "States a plan": iv("has_plan"),
                         "Outputs": int(r["n"])})
    return pd.DataFrame(rows)


def select_model(headline: dict[str, Any], families: Sequence[str], labels: dict[str, str],
                 order: Sequence[str] = ("rating", "vlscore"), ratings: dict[str, Any] | None = None,
                 variant: str = "with_lora") -> dict[str, Any]:
    """The best ``variant`` model by the first metric of ``order`` that has values (see the module docstring).

    ``ratings``: {family: {"estimate", "ci_low", "ci_high"}} of the rated variant, or None. Ties go to the
    earlier family. Also says whether the winner's interval overlaps the runner-up's.
    """
    for metric in order:
        if metric == "rating":
            scores = {f: ratings[f] for f in families if ratings and f in ratings}
            per_family = {f: [v] for f, v in scores.items()}
        else:
            per_family = {f: [v for k, v in headline.items() if k.startswith(f"{f}.{variant}.") and k.endswith(f".{metric}")]
                          for f in families}
            per_family = {f: v for f, v in per_family.items() if v}
        if not per_family:
            continue
        mean = {f: float(np.mean([v["estimate"] for v in vals])) for f, vals in per_family.items()}
        ranked = sorted(per_family, key=lambda f: (-mean[f], list(families).index(f)))
        best, second = ranked[0], (ranked[1] if len(ranked) > 1 else None)

        def low_high(f: str) -> tuple[float, float]:
            vals = per_family[f]
            return min(v["ci_low"] for v in vals), max(v["ci_high"] for v in vals)

        overlap = second is not None and low_high(best)[0] <= low_high(second)[1]
        languages = "the rated language" if metric == "rating" else "both languages"
        return {"family": best, "model": labels[best], "name": PAPER_NAME, "variant": variant, "metric": metric,
                "metric_label": METRIC_LABELS[metric], "scores": mean, "runner_up": second,
                "runner_up_model": labels.get(second, "") if second else "", "intervals_overlap": bool(overlap),
                "rule": (f"the {VARIANT_LABELS[variant]} model with the highest {METRIC_LABELS[metric]} (mean over "
                         f"{languages}); first available of: {', '.join(METRIC_LABELS[m] for m in order)}")}
    raise ValueError(f"no metric of {list(order)} has values")


def best_by_metric(headline: dict[str, Any], families: Sequence[str], variant: str = "with_lora") -> dict[str, str]:
    """{metric: family with the highest mean over languages} among the ``variant`` models."""
    out = {}
    for metric in METRICS:
        mean = {f: np.mean([v["estimate"] for k, v in headline.items()
                            if k.startswith(f"{f}.{variant}.") and k.endswith(f".{metric}")]) for f in families}
        out[metric] = max(families, key=lambda f: (mean[f], -list(families).index(f)))
    return out


def _ci(interval: dict[str, Any] | None, digits: int) -> str:
    if not interval or interval.get("estimate") is None or not np.isfinite(interval["estimate"]):
        return "n/a"
    text = f"{interval['estimate']:.{digits}f}"
    low, high = interval.get("ci_low"), interval.get("ci_high")
    if low is not None and high is not None and np.isfinite(low) and np.isfinite(high):
        text += f" [{low:.{digits}f}, {high:.{digits}f}]"
    return text


def metrics_table(headline: dict[str, Any], families: Sequence[str], labels: dict[str, str], languages: Sequence[str],
                  selected: dict[str, Any] | None = None, ratings: dict[str, dict[str, Any]] | None = None,
                  validity: dict[str, Any] | None = None) -> pd.DataFrame:
    """The paper's table: model x variant x language, each metric as 'estimate [low, high]'.

    BLEU and chrF are on sacrebleu's 0-100 scale (one decimal), the others in 0-1 (three decimals). The
    selected model's name is added to its row label. ``ratings``: {"family.variant": interval}, when present.
    ``validity``: ``metrics.validity.validity_summary``; a metric that fails it is marked so in its column name.
    """
    rows = []
    for family in families:
        for variant in VARIANTS:
            for language in languages:
                name = labels[family]
                if selected and family == selected["family"] and variant == selected["variant"]:
                    name = f"{name} ({selected['name']})"
                row = {"Model": name, "Variant": VARIANT_LABELS[variant], "Language": LANGUAGE_LABELS[language]}
                for metric in METRICS:
                    row[METRIC_LABELS[metric]] = _ci(headline.get(cell_key(family, variant, language, metric)),
                                                     1 if metric in ("bleu", "chrf") else 3)
                if ratings:
                    row[METRIC_LABELS["rating"]] = _ci(ratings.get(f"{family}.{variant}.{language}"), 2)
                rows.append(row)
    failed = {METRIC_LABELS[m]: f"{METRIC_LABELS[m]} (fails validity)" for m, res in (validity or {}).items()
              if not res["passes"]}
    return pd.DataFrame(rows).rename(columns=failed)


def rating_cases(predictions: pd.DataFrame, records: pd.DataFrame, images: dict[str, Any], *, n_cases: int,
                 language: str, variants: Sequence[str], seed: int) -> list:
    """``RatingCase``s for the blinded packet: ``n_cases`` test records drawn with the seed (at most one per
    patient while patients last), each with the pre-procedure report and every model's output in ``language``;
    outputs are keyed 'family.variant' so that the unblinding key maps a rating back to a table cell."""
    from cag_utils.evaluation.rating import RatingCase

    df = predictions[(predictions["language"] == language) & predictions["variant"].isin(list(variants))]
    ids = sorted(set(df["record_id"]))
    rng = np.random.default_rng(seed)
    order = [ids[k] for k in rng.permutation(len(ids))]
    patient = records.set_index("frame_uid")["patient_id"]
    first = list(dict.fromkeys(patient[order].groupby(patient[order], sort=False).head(1).index))
    chosen = (first + [r for r in order if r not in first])[:n_cases]
    report = records.set_index("frame_uid")[f"pre_procedure_report_{language}"]
    cases = []
    for rid in chosen:
        rows = df[df["record_id"] == rid]
        cases.append(RatingCase(case_id=rid, patient_id=str(patient[rid]), image=images[rid],
                                pre_procedure_report=str(report[rid]),
                                outputs={f"{r.family}.{r.variant}": r.output for r in rows.itertuples()}))
    return cases


def key_frames(corpus_dir: str | Path, records: pd.DataFrame, record_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """(H, W) uint8 key frame of each record, read from the corpus image folder."""
    from PIL import Image

    rec = records.set_index("frame_uid")
    return {r: np.asarray(Image.open(Path(corpus_dir) / rec.at[r, "split"] / rec.at[r, "file_name"]).convert("L"))
            for r in record_ids}


def embedder_folder(cfg: dict[str, Any], records: pd.DataFrame) -> Path:
    """The VLScore embedder: ``eval_embedder_path`` when set, else the committed embedder stand-in
    (``vlm.embedder_standin``: trained on whole summaries of an auxiliary cohort, checked against the profile
    and for patients shared with ``records``)."""
    from cag_utils.run.config import ConfigError, load_config
    from cag_utils.vlm import embedder_standin

    if cfg["eval_embedder_path"]:   # read as the preflight reads it: a folder (relative: from notebooks/) or the HF cache
        from cag_utils.run.preflight import local_folder

        folder = local_folder(str(cfg["eval_embedder_path"]))
        if folder is None:
            raise FileNotFoundError(f"eval_embedder_path {cfg['eval_embedder_path']!r} is neither a folder (relative "
                                    "paths are read from notebooks/) nor in the local Hugging Face cache")
        return folder
    ft = load_config(cfg["profile"], "finetune", {"seed": cfg["seed"], "torch_threads": cfg["torch_threads"]})
    if not ft["vlm_use_standins"]:
        raise ConfigError("eval_embedder_path is empty and the profile has no stand-ins (vlm_use_standins: false): "
                          "set it to a local SigLIP-format ConceptCLIP folder")
    return embedder_standin.load_folder(ft, cfg, set(records["patient_id"]))


def per_item_rows(items: pd.DataFrame) -> pd.DataFrame:
    """The per-item file: VLScore written as Python's shortest round-trip text, so that reading it back gives
    the very floats the means were taken of (``Run.table`` would otherwise keep 6 significant digits)."""
    return items.assign(vlscore=[repr(float(v)) for v in items["vlscore"]])
