"""The image-report corpus (notebook 04): findings, exclusions, splits, the on-disk format
(`datasets.load_dataset`), statistics, the datasheet, and no PHI in any corpus file."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pydicom
import pytest

from cag_utils.corpus import corpus, extraction
from cag_utils.data import ingest
from cag_utils.data.dataset import sampling_kwargs
from cag_utils.synth import anatomy
from cag_utils.synth.reports import make_reports, sample_clinical_facts

CFG = {"profile": "test", "data_source": "synthetic", "corpus_tokenizer_en": "13a", "corpus_tokenizer_ja": "ja-mecab"}


def test_lesion_strings_round_trip_and_artery_subset():
    assert corpus.parse_lesions("#4PD 100%; #6 90%; #11 75%") == [("4PD", 100), ("6", 90), ("11", 75)]
    assert corpus.format_lesions([("11", 75), ("6", 90), ("4PD", 100)]) == "#4PD 100%; #6 90%; #11 75%"
    assert corpus.lesions_in_view("#4PD 100%; #5 50%; #11 75%", "LCA") == "#5 50%; #11 75%"
    assert corpus.lesions_in_view("#4PD 100%; #5 50%; #11 75%", "RCA") == "#4PD 100%"
    assert corpus.lesions_in_view("", "RCA") == "" and corpus.parse_lesions(None) == []


def test_reports_without_findings_are_parsed_like_the_metrics_read_them():
    """The generator's summaries without the structured fields: exam_findings reads the English summary, or the
    Japanese one when the English is empty, with metrics.findings.parse_summary."""
    rng = np.random.default_rng(7)
    rows, expected = [], []
    for e in range(60):
        dominance = anatomy.sample_dominance(rng)
        lesions = anatomy.sample_lesions(rng, dominance)
        reports = make_reports(sample_clinical_facts(rng, lesions, dominance), rng)
        rows.append({"exam_id": f"EX-{e:012x}", "treatment_summary_ja": reports["treatment_summary_ja"],
                     "treatment_summary_en": reports["treatment_summary_en"] if e % 3 else ""})
        expected.append({"dominance": dominance,
                         "lesions": corpus.format_lesions([(l.segment, l.percent) for l in lesions]),
                         "plan": reports["plan"], "culprit_segment": reports["culprit_segment"]})
    found = corpus.exam_findings(pd.DataFrame(rows))
    assert (found["findings_source"] == "parsed_summary").all()
    assert found[list(corpus.FINDING_COLUMNS)].to_dict("records") == expected
    assert not hasattr(corpus, "findings_from_summary")


def test_free_wording_and_empty_summaries_are_parsed_and_counted():
    reports = pd.DataFrame([
        {"exam_id": "EX-a", "treatment_summary_en": "Right dominant. Proximal LAD 90%, mid RCA totally occluded. "
                                                    "Stent to the proximal LAD.", "treatment_summary_ja": "x"},
        {"exam_id": "EX-b", "treatment_summary_en": None, "treatment_summary_ja": "＃６　９０％狭窄。PCIは見送り、薬物療法。"},
        {"exam_id": "EX-c", "treatment_summary_en": "A 75-year-old man, EF 60%.", "treatment_summary_ja": ""},
        {"exam_id": "EX-d", "treatment_summary_en": "x", "treatment_summary_ja": "x", "dominance": "left",
         "lesions": "#13 75%", "plan": "PCI", "culprit_segment": "13"}])
    found = corpus.exam_findings(reports).set_index("exam_id")
    assert found.loc["EX-a", list(corpus.FINDING_COLUMNS)].tolist() == ["right", "#2 100%; #6 90%", "PCI", "6"]
    assert found.loc["EX-b", list(corpus.FINDING_COLUMNS)].tolist() == ["", "#6 90%", "medical", ""]
    assert found.loc["EX-c", list(corpus.FINDING_COLUMNS)].tolist() == ["", "", "", ""]
    assert found["findings_source"].tolist() == ["parsed_summary"] * 3 + ["report_source"]
    records = found.reset_index().loc[[0, 0, 1, 2, 3]]   # several key frames of one exam count once
    assert corpus.findings_counts(records) == {"report_source": 1, "parsed_summary": 3, "parsed_without_findings": 1}


def _tiny(n_exams: int = 8, with_lesions: bool = True):
    """Hand-made notebook-03 outputs: 2 key frames per exam, one patient per exam, 16x16 frames."""
    rows, reps, ex = [], [], []
    for e in range(n_exams):
        exam, patient = f"EX-{e:012x}", f"PT-{e:012x}"
        for r, lat in enumerate(("LCA", "RCA")):
            rows.append({"frame_uid": f"{exam}-R{r + 1:02d}-F004", "patient_id": patient, "exam_id": exam,
                         "run_id": f"{exam}-R{r + 1:02d}", "true_laterality": lat, "true_category": "better",
                         "cnn_laterality": lat, "cnn_picked": True})
        reps.append({"exam_id": exam, "pre_procedure_report_ja": f"症例は{60 + e}歳の男性。",
                     "pre_procedure_report_en": f"A {60 + e}-year-old man.",
                     "treatment_summary_ja": "LAD：#6 90%狭窄", "treatment_summary_en": "LAD: #6 90% stenosis\nPlan: PCI to #6.",
                     "dominance": "right", "lesions": "#6 90%; #2 75%" if with_lesions and e % 2 else "",
                     "plan": "PCI", "culprit_segment": "6"})
        ex.append({"exam_id": exam, "patient_id": patient, "status": "ok", "reason": ""})
    frames = np.stack([np.full((16, 16), 10 * i, np.uint8) for i in range(len(rows))])
    return pd.DataFrame(rows), pd.DataFrame(ex), pd.DataFrame(reps), frames


def test_bad_exams_are_kept_out_with_their_reason():
    picks, exams, reports, _ = _tiny(5)
    reports.loc[1, "treatment_summary_en"] = "  "
    reports = reports.drop(index=2)
    exams.loc[3, ["status", "reason"]] = ["no_key_frame", "no candidate passed the CNN rule"]
    picks = picks[picks["exam_id"] != exams.at[3, "exam_id"]]
    records, excluded = corpus.build_records(picks, exams, reports, (0.6, 0.2, 0.2), seed=0)
    reasons = dict(zip(excluded["exam_id"], excluded["reason"]))
    assert reasons == {exams.at[1, "exam_id"]: "empty treatment_summary_en", exams.at[2, "exam_id"]: "no report",
                       exams.at[3, "exam_id"]: "no key frame (no candidate passed the CNN rule)"}
    assert set(records["exam_id"]) == {exams.at[0, "exam_id"], exams.at[4, "exam_id"]}


def test_tiny_corpus_loads_with_datasets(tmp_path):
    picks, exams, reports, frames = _tiny(10)
    records, excluded = corpus.build_records(picks, exams, reports, (0.6, 0.2, 0.2), seed=3)
    assert excluded.empty and len(records) == 20
    assert records.groupby("patient_id")["split"].nunique().max() == 1
    rec = records.set_index("frame_uid")
    odd = rec[rec["exam_id"] == "EX-000000000001"]
    assert odd["lesions_in_view"].tolist() == ["#6 90%", "#2 75%"]  # LCA frame, RCA frame
    splits = corpus.split_table(records)
    stats, lengths = corpus.text_statistics(records, corpus.tokenizers())
    out = corpus.write_corpus(tmp_path / "corpus", records, frames, corpus.datasheet(records, excluded, splits, stats, CFG))
    ds = corpus.load_corpus(out)
    assert {k: v.num_rows for k, v in ds.items()} == {"train": int(splits.at["train", "records"]),
                                                      "validation": int(splits.at["val", "records"]),
                                                      "test": int(splits.at["test", "records"])}
    row = ds["train"][0]
    src = records.set_index("frame_uid").loc[row["frame_uid"]]
    assert np.array_equal(np.asarray(row["image"]), frames[int(src["frame_position"])])
    assert row["treatment_summary_ja"] == src["treatment_summary_ja"] and row["lesions"] == src["lesions"]
    assert set(corpus.RECORD_FIELDS) - {"file_name"} <= set(ds["train"].column_names)
    sheet = (out / "README.md").read_text(encoding="utf-8")
    assert sheet.count("| train |") == 1
    assert "10 exam(s)\n  from the reports file, 0 parsed, of which 0 gave\n  no finding at all" in sheet


def test_statistics_count_texts_tokens_and_vocabulary():
    picks, exams, reports, _ = _tiny(2)
    records, _ = corpus.build_records(picks, exams, reports, (0.5, 0.0, 0.5), seed=0)
    stats, lengths = corpus.text_statistics(records, corpus.tokenizers())
    s = stats.set_index(["field", "language"])
    assert s.loc[("pre_procedure_report", "en"), "texts"] == 2 and s.loc[("pre_procedure_report", "en"), "pairs"] == 4
    assert s.loc[("pre_procedure_report", "en"), "tokens_mean"] == 6  # 13a: "A 60 - year-old man ."
    assert s.loc[("treatment_summary", "ja"), "chars_max"] == len("LAD：#6 90%狭窄")
    assert s.loc[("pre_procedure_report", "ja"), "vocabulary"] > 3
    assert len(lengths) == 2 * 4


@pytest.mark.slow
def test_no_dicom_header_value_reaches_the_corpus(small_cohort, small_cfg, tmp_path):
    """Ingest the small cohort's independent exams, pick key frames with the oracle, build and write the
    corpus, then search every corpus file for the PHI the generator put into headers and folder names."""
    labels = ingest.read_labels(small_cohort / "labels.csv")
    res = ingest.ingest_cohort(small_cohort, "independent", labels, "test-salt", sampling_kwargs(small_cfg),
                               workers=1, progress=False)
    reports = ingest.read_reports(small_cohort / "reports.jsonl", res["exam_ids"])
    cands = pd.concat([res["table"], extraction.oracle_probabilities(res["table"])], axis=1)
    picks = extraction.apply_rules(cands, {"threshold": 0.5, "max_per_run": 1, "min_gap": 5})
    picks["cnn_picked"] = picks["oracle_picked"]
    exams = extraction.exam_table(picks, res["runs"], res["rejects"])
    records, excluded = corpus.build_records(picks, exams, reports, (0.4, 0.3, 0.3), seed=0)
    assert len(records) > 0
    stats, _ = corpus.text_statistics(records, corpus.tokenizers())
    out = corpus.write_corpus(tmp_path / "corpus", records, res["frames"],
                              corpus.datasheet(records, excluded, corpus.split_table(records), stats, {**small_cfg, **CFG}))
    phi: set[str] = set()
    for path in small_cohort.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        phi |= {str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.StudyDate, ds.AccessionNumber,
                ds.StudyInstanceUID, ds.SOPInstanceUID, ds.SeriesInstanceUID, path.parent.name, str(ds.InstitutionName),
                str(ds.ReferringPhysicianName), str(ds.OperatorsName)}
    assert len(phi) > 20
    files = [f for f in out.rglob("*") if f.is_file()]
    assert any(f.suffix == ".png" for f in files) and any(f.name == "metadata.jsonl" for f in files)
    for f in files:
        text = f.read_bytes().decode("latin-1") + (f.read_text(encoding="utf-8") if f.suffix in (".md", ".jsonl") else "")
        leaked = [s for s in phi if s in text]
        assert not leaked, f"{f.relative_to(out)} leaks {leaked[:3]}"
    meta = [json.loads(l) for l in (out / "train").joinpath("metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(m["patient_id"].startswith("PT-") and m["exam_id"].startswith("EX-") for m in meta)
