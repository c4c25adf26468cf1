"""Stage 2b: the bilingual image-report corpus (notebook 04).

One record per key frame of notebook 03 (CNN rule): the frame as a PNG, pseudonymous patient
and exam IDs, laterality (predicted and true), the exam's pre-procedure report and
diagnostic/treatment summary in Japanese and English, and the structured findings behind
the summary: coronary dominance, lesions, plan (PCI / CABG / medical / follow_up) and culprit
segment, plus the lesions that lie in the artery the frame shows.

Lesions are written as the generator writes them in reports.jsonl, ``"#6 90%; #11 75%"``
(AHA segment, percent diameter stenosis; ``""`` = none; ``parse_lesions`` reads it back).
Strings rather than nested lists keep the metadata schema the same in every split, which the
``datasets`` image-folder loader requires. Where a report source lacks the structured fields
(a real export), ``exam_findings`` reads them from the English summary (the Japanese one when the
English is empty) with ``cag_utils.evaluation.metrics.findings.parse_summary``, the parser of the findings
metrics; the record's ``findings_source`` says which was used, and the datasheet counts both.

The artery shown: left coronary (segments 5-15) for an LCA frame, right (1-4) for an RCA frame,
after ``VESSEL_OF`` of ``cag_utils.synth.reports``; the true laterality is used where known,
else the predicted one.

On disk (``write_corpus``; loads with ``datasets.load_dataset("imagefolder", data_dir=...)``):

    corpus/README.md                      datasheet (generated from the counts)
    corpus/{train,val,test}/metadata.jsonl  one JSON object per record (``file_name`` = images/<frame_uid>.png)
    corpus/{train,val,test}/images/*.png
    corpus/SHA256SUMS                     sha256 of every file above; ``load_corpus`` checks them
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cag_utils.data.splits import SPLITS, patient_split
from cag_utils.evaluation.metrics.findings import parse_summary
from cag_utils.run.cachecheck import CacheError, check_folder, fix_command, write_sums
from cag_utils.synth.reports import DOMINANCES, PLANS, SEGMENTS, VESSEL_OF

LANGUAGES = ("ja", "en")
TEXT_FIELDS = ("pre_procedure_report", "treatment_summary")
TEXT_COLUMNS = tuple(f"{f}_{l}" for f in TEXT_FIELDS for l in LANGUAGES)
FINDING_COLUMNS = ("dominance", "lesions", "plan", "culprit_segment")
LESION_PATTERN = re.compile(r"#(4PD|4AV|1[0-5]|[1-9])\s+(\d{2,3})%")
ARTERY_VESSELS = {"LCA": ("lmt", "lad", "lcx"), "RCA": ("rca",)}
RECORD_FIELDS = ("file_name", "frame_uid", "patient_id", "exam_id", "run_id", "split", "laterality_pred",
                 "laterality_true", "key_frame_category_true", *TEXT_COLUMNS, "dominance", "lesions",
                 "lesions_in_view", "plan", "culprit_segment", "findings_source")


# ---------------------------------------------------------------- structured findings
def parse_lesions(text: str | None) -> list[tuple[str, int]]:
    """'#6 90%; #4PD 100%' (or any text with '#<segment> <percent>%') -> [("6", 90), ("4PD", 100)]."""
    return [(s, int(p)) for s, p in LESION_PATTERN.findall(text or "")]


def format_lesions(lesions: list[tuple[str, int]]) -> str:
    """[("6", 90)] -> '#6 90%' (the generator's format), segments in report order."""
    ordered = sorted(lesions, key=lambda l: (SEGMENTS.index(l[0]), -l[1]))
    return "; ".join(f"#{s} {p}%" for s, p in ordered)


def lesions_in_view(lesions: str, laterality: str | None) -> str:
    """The lesions of ``lesions`` that lie in the artery of ``laterality`` (LCA: 5-15, RCA: 1-4)."""
    vessels = ARTERY_VESSELS.get(str(laterality), ())
    return format_lesions([(s, p) for s, p in parse_lesions(lesions) if VESSEL_OF[s] in vessels])


def _parsed_findings(summary_en: str, summary_ja: str) -> dict[str, str]:
    """The findings ``parse_summary`` reads in the English summary (the Japanese one when it is empty)."""
    text = summary_en if isinstance(summary_en, str) and summary_en.strip() else summary_ja
    f = parse_summary(text if isinstance(text, str) else "")
    return {"dominance": f.dominance, "lesions": format_lesions(list(f.lesions)), "plan": f.plan,
            "culprit_segment": f.culprit_segment}


def exam_findings(reports: pd.DataFrame) -> pd.DataFrame:
    """Per exam: the structured findings from the report source, or parsed from the summary."""
    rows = []
    for _, r in reports.iterrows():
        have = all(isinstance(r.get(c), str) for c in FINDING_COLUMNS) and r.get("dominance") in DOMINANCES \
            and r.get("plan") in PLANS
        if have:
            f = {c: r[c] for c in FINDING_COLUMNS}
            f["lesions"] = format_lesions(parse_lesions(f["lesions"]))
        else:
            f = _parsed_findings(r.get("treatment_summary_en"), r.get("treatment_summary_ja"))
        rows.append({"exam_id": r["exam_id"], **f, "findings_source": "report_source" if have else "parsed_summary"})
    return pd.DataFrame(rows, columns=["exam_id", *FINDING_COLUMNS, "findings_source"])


def findings_counts(records: pd.DataFrame) -> dict[str, int]:
    """Exams by the source of their findings, and parsed exams whose summary gave no finding at all."""
    exams = records.drop_duplicates("exam_id")
    parsed = exams[exams["findings_source"] == "parsed_summary"]
    empty = (parsed[list(FINDING_COLUMNS)].fillna("") == "").all(axis=1)
    return {"report_source": int((exams["findings_source"] == "report_source").sum()),
            "parsed_summary": len(parsed), "parsed_without_findings": int(empty.sum())}


# ---------------------------------------------------------------- records
def _is_empty(value: Any) -> bool:
    return not isinstance(value, str) or not value.strip()


def exclusions(exams: pd.DataFrame, reports: pd.DataFrame) -> pd.DataFrame:
    """Exams kept out of the corpus, with the reason: no key frame / no readable run (notebook 03),
    no report, or an empty report or summary text."""
    rep = reports.set_index("exam_id") if "exam_id" in reports else pd.DataFrame()
    rows = []
    for _, e in exams.iterrows():
        reasons = []
        if e["status"] != "ok":
            reasons.append(e["status"].replace("_", " ") + (f" ({e['reason']})" if e["reason"] else ""))
        if e["exam_id"] not in rep.index:
            reasons.append("no report")
        else:
            empty = [c for c in TEXT_COLUMNS if c not in rep.columns or _is_empty(rep.at[e["exam_id"], c])]
            if empty:
                reasons.append("empty " + ", ".join(empty))
        if reasons:
            rows.append({"exam_id": e["exam_id"], "patient_id": e["patient_id"], "reason": "; ".join(reasons)})
    return pd.DataFrame(rows, columns=["exam_id", "patient_id", "reason"])


def build_records(picks: pd.DataFrame, exams: pd.DataFrame, reports: pd.DataFrame,
                  split_fractions: tuple[float, float, float], seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(records, excluded exams). Records: one per CNN key frame of a usable exam, split by patient.

    ``picks``: notebook 03's candidate rows (index = position in the independent frames array).
    """
    excluded = exclusions(exams, reports)
    kf = picks[picks["cnn_picked"] & ~picks["exam_id"].isin(excluded["exam_id"])]
    findings = exam_findings(reports).set_index("exam_id")
    texts = reports.set_index("exam_id")[list(TEXT_COLUMNS)]
    rec = pd.DataFrame({
        "frame_position": kf.index.to_numpy(),
        "file_name": [f"images/{u}.png" for u in kf["frame_uid"]],
        "frame_uid": kf["frame_uid"].to_numpy(), "patient_id": kf["patient_id"].to_numpy(),
        "exam_id": kf["exam_id"].to_numpy(), "run_id": kf["run_id"].to_numpy(),
        "laterality_pred": kf["cnn_laterality"].to_numpy(), "laterality_true": kf["true_laterality"].to_numpy(),
        "key_frame_category_true": kf["true_category"].to_numpy(),
    })
    rec = rec.join(texts, on="exam_id").join(findings, on="exam_id")
    shown = [t if isinstance(t, str) else p for t, p in zip(rec["laterality_true"], rec["laterality_pred"])]
    rec["lesions_in_view"] = [lesions_in_view(l, s) for l, s in zip(rec["lesions"], shown)]
    rec["split"] = patient_split(rec["patient_id"], tuple(split_fractions), seed).to_numpy() if len(rec) else []
    return rec[["frame_position", *RECORD_FIELDS]].reset_index(drop=True), excluded


def split_table(records: pd.DataFrame) -> pd.DataFrame:
    """Records, exams and patients per split (train, val, test, total)."""
    g = records.groupby("split").agg(records=("frame_uid", "size"), exams=("exam_id", "nunique"),
                                     patients=("patient_id", "nunique")).reindex(list(SPLITS), fill_value=0)
    g.loc["total"] = [len(records), records["exam_id"].nunique(), records["patient_id"].nunique()]
    return g


# ---------------------------------------------------------------- on disk
def write_corpus(out_dir: str | Path, records: pd.DataFrame, frames: Any, datasheet_text: str | None = None) -> Path:
    """Image folder per split with metadata.jsonl (see module docstring); replaces an older corpus there."""
    import shutil

    from PIL import Image

    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    for split in SPLITS:
        part = records[records["split"] == split]
        folder = out_dir / split
        (folder / "images").mkdir(parents=True, exist_ok=True)
        with open(folder / "metadata.jsonl", "w", encoding="utf-8") as fh:
            for _, r in part.iterrows():
                Image.fromarray(np.asarray(frames[int(r["frame_position"])], dtype=np.uint8)).save(folder / r["file_name"])
                fh.write(json.dumps({k: r[k] for k in RECORD_FIELDS}, ensure_ascii=False) + "\n")
    if datasheet_text is not None:
        (out_dir / "README.md").write_text(datasheet_text, encoding="utf-8")
    write_sums(out_dir, [p.relative_to(out_dir).as_posix() for p in sorted(out_dir.rglob("*")) if p.is_file()])
    return out_dir


def load_corpus(out_dir: str | Path):
    """The corpus as a ``datasets.DatasetDict`` (splits train, validation, test), after checking every
    file against the SHA256SUMS ``write_corpus`` recorded (CacheError naming the folder and the fix)."""
    import datasets

    if problems := check_folder(out_dir):
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise CacheError(out_dir, "; ".join(problems[:3]) + more, fix_command(out_dir, "04"))

    datasets.disable_progress_bars()
    return datasets.load_dataset("imagefolder", data_dir=str(out_dir))


# ---------------------------------------------------------------- statistics
def tokenizers(en: str = "13a", ja: str = "ja-mecab") -> dict[str, Any]:
    """sacrebleu tokenizers per language (offline; ja-mecab uses the IPAdic that sacrebleu[ja] installs)."""
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
    from sacrebleu.tokenizers.tokenizer_intl import TokenizerV14International
    from sacrebleu.tokenizers.tokenizer_ja_mecab import TokenizerJaMecab
    from sacrebleu.tokenizers.tokenizer_char import TokenizerChar

    known = {"13a": Tokenizer13a, "intl": TokenizerV14International, "ja-mecab": TokenizerJaMecab,
             "char": TokenizerChar}
    for name in (en, ja):
        if name not in known:
            raise ValueError(f"unknown tokenizer {name!r}; known: {sorted(known)}")
    return {"en": known[en](), "ja": known[ja]()}


def text_statistics(records: pd.DataFrame, toks: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per field and language: texts, pairs, characters and tokens (mean, median, max), vocabulary;
    per text: field, language, characters, tokens) over each exam's texts (one per exam)."""
    per_exam = records.drop_duplicates("exam_id")
    pairs = records.groupby("exam_id").size()
    lengths, rows = [], []
    for field in TEXT_FIELDS:
        for lang in LANGUAGES:
            col = f"{field}_{lang}"
            tokens = [toks[lang](t).split() for t in per_exam[col]]
            chars = per_exam[col].str.len().to_numpy()
            n_tok = np.array([len(t) for t in tokens])
            vocab = {w for t in tokens for w in t}
            rows.append({"field": field, "language": lang, "texts": len(per_exam),
                         "pairs": int(pairs.loc[per_exam["exam_id"]].sum()),
                         "chars_mean": float(chars.mean()) if len(chars) else float("nan"),
                         "chars_median": float(np.median(chars)) if len(chars) else float("nan"),
                         "chars_max": int(chars.max()) if len(chars) else 0,
                         "tokens_mean": float(n_tok.mean()) if len(n_tok) else float("nan"),
                         "tokens_median": float(np.median(n_tok)) if len(n_tok) else float("nan"),
                         "tokens_max": int(n_tok.max()) if len(n_tok) else 0, "vocabulary": len(vocab)})
            lengths += [{"field": field, "language": lang, "exam_id": e, "characters": int(c), "tokens": int(n)}
                        for e, c, n in zip(per_exam["exam_id"], chars, n_tok)]
    return pd.DataFrame(rows), pd.DataFrame(lengths)


def images_per_exam(records: pd.DataFrame) -> dict[str, float | int]:
    """Key frames (records) per exam in the corpus: mean, median, min, max."""
    n = records.groupby("exam_id").size()
    if n.empty:
        return {"mean": 0.0, "median": 0.0, "min": 0, "max": 0}
    return {"mean": float(n.mean()), "median": float(n.median()), "min": int(n.min()), "max": int(n.max())}


def plot_length_histograms(lengths: pd.DataFrame, bins: int = 30):
    """Token-length histograms: one panel per field, Japanese and English overlaid."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TEXT_FIELDS), figsize=(5 * len(TEXT_FIELDS), 3))
    for ax, field in zip(np.atleast_1d(axes), TEXT_FIELDS):
        part = lengths[lengths["field"] == field]
        edges = np.histogram_bin_edges(part["tokens"], bins=bins)
        for lang, name in (("ja", "Japanese (ja-mecab)"), ("en", "English (13a)")):
            ax.hist(part.loc[part["language"] == lang, "tokens"], bins=edges, alpha=0.6, label=name)
        ax.set_title(field.replace("_", " "), fontsize=10)
        ax.set_xlabel("tokens per text")
        ax.set_ylabel("exams")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- datasheet
def datasheet(records: pd.DataFrame, excluded: pd.DataFrame, splits: pd.DataFrame, stats: pd.DataFrame,
              cfg: dict[str, Any]) -> str:
    """Markdown data card generated from the counts (provenance, languages, fields, splits, use, limits)."""
    synthetic = cfg.get("data_source") == "synthetic"
    ipe = images_per_exam(records)
    split_rows = "\n".join(f"| {s} | {r['records']} | {r['exams']} | {r['patients']} |" for s, r in splits.iterrows())
    stat_rows = "\n".join(f"| {r['field'].replace('_', ' ')} | {r['language']} | {r['chars_mean']:.0f} | "
                          f"{r['tokens_mean']:.0f} | {r['vocabulary']} |" for _, r in stats.iterrows())
    reasons = excluded["reason"].value_counts()
    found = findings_counts(records)
    excl = "\n".join(f"- {n} exam(s): {why}" for why, n in reasons.items()) or "- none"
    source = ("**Synthetic.** Frames are rendered by the compendium's angiography simulator "
              "(`cag_utils.synth`) and the reports are template-generated parallel texts consistent with the "
              "simulated lesions; no patient data." if synthetic else
              "**Real exams** read from a local DICOM export and reports file (`data_source: dicom_dir`); "
              "headers were de-identified (DICOM PS3.15 basic profile); report text is passed through as given.")
    return f"""# CAG-VLM corpus ({cfg['profile']} profile)

Coronary angiography key frames paired with Japanese and English reports, one record per key
frame. Generated by notebook 04 of the CAG-VLM compendium from the key frames of notebook 03;
every number below is counted from the records.

## Provenance
{source}
Key frames were picked by the notebook-02 ConvNeXt with the rule of `cag_utils.corpus.extraction`
(threshold on P(run laterality, better), at most a few per run), from independent exams whose
patients were never used to train or select the CNN.

## Size and splits (by patient: no patient in two splits)
| split | records | exams | patients |
| --- | --- | --- | --- |
{split_rows}

Images per exam: mean {ipe['mean']:.2f}, min {ipe['min']}, max {ipe['max']}.

Exams kept out, with the reason:
{excl}

## Languages and text fields
Japanese (`ja`) and English (`en`), parallel: `pre_procedure_report_*` (before the procedure)
and `treatment_summary_*` (diagnostic and treatment summary). Lengths over one text per exam
(tokens: sacrebleu `{cfg['corpus_tokenizer_ja']}` for ja, `{cfg['corpus_tokenizer_en']}` for en):

| field | language | mean characters | mean tokens | vocabulary |
| --- | --- | --- | --- | --- |
{stat_rows}

## Fields of a record (`metadata.jsonl`)
- `file_name`: the PNG (8-bit gray, the frame as read and normalised by the loader);
- `frame_uid`, `patient_id`, `exam_id`, `run_id`: pseudonyms (salted hashes; no DICOM header value);
- `laterality_pred` (CNN, run majority), `laterality_true`, `key_frame_category_true` (generator truth; empty for real exams);
- the four texts above;
- `dominance` (right / left / balanced), `lesions` (`"#<AHA segment> <percent>%"` joined by `"; "`),
  `plan` (PCI / CABG / medical / follow_up), `culprit_segment` (PCI only);
- `lesions_in_view`: the lesions in the artery this frame shows (LCA: segments 5-15, RCA: 1-4),
  to tell a model that reads the image from one that only restates the report;
- `findings_source`: `report_source` (structured fields of the reports file) or `parsed_summary`
  (read from the summary by `cag_utils.evaluation.metrics.findings.parse_summary`): {found['report_source']} exam(s)
  from the reports file, {found['parsed_summary']} parsed, of which {found['parsed_without_findings']} gave
  no finding at all.

Load: `datasets.load_dataset("imagefolder", data_dir="<this folder>")`.

## Intended use
Fine-tuning and evaluating vision-language models that write a report from an angiography
key frame (stage 3 of the compendium), and testing that pipeline end to end.

## Limits
- {"Synthetic images and template texts: far less varied than clinical reports; results do not transfer to patients." if synthetic else "Real report text is not de-identified by this code; check it before sharing."}
- All key frames of an exam share the exam's texts; a frame shows one artery, the summary covers both.
- Key frames come from an imperfect CNN: some are not truly "better" frames and a few carry the wrong
  laterality (`laterality_true` says which).
- Small: {len(records)} records from {records['patient_id'].nunique() if len(records) else 0} patients.
"""


def plot_record(frames: Any, record: pd.Series):
    """One record: its PNG frame, titled with IDs, laterality and the lesions in view."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.2, 3.4))
    ax.imshow(np.asarray(frames[int(record["frame_position"])]), cmap="gray", vmin=0, vmax=255)
    ax.axis("off")
    ax.set_title(f"{record['exam_id']} {record['run_id'][-3:]}\npredicted {record['laterality_pred']}, "
                 f"true {record['laterality_true']}\nin view: {record['lesions_in_view'] or 'no lesion'}", fontsize=8)
    fig.tight_layout()
    return fig
