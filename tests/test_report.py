"""cag_utils.run.report: macro names, number formats, escaped tables, deterministic output."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cag_utils.run import report


def record(notebook: str, results: dict, profile: str = "smoke") -> dict:
    return {"notebook": notebook, "results": results, "config": {"profile": profile},
            "figures": [f"figures/{notebook}_curves.png"],
            "provenance": {"git_sha": "0123456789abcdef0123456789abcdef01234567-dirty",
                           "device": "cpu: x86_64, 4 threads",
                           "timing": {"wall_time_s": 1.0, "finished_at": "2025-01-01T00:00:00"}}}


def write(folder: Path, name: str, data: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(data))


RESULTS = {
    "n_exams": 14686,
    "test": {"laterality_f1": 0.96123, "top10": 3, "low-contrast F1": 0.5},
    "split_fractions": [0.6, 0.2, 0.2],
    "curve": list(range(100)),
    "series": {"history": [{"epoch": 1, "loss": 0.5}], "short": [1, 2]},
    "note": "50% of A&B_c",
    "tables": {"cohort": [{"split": "train_a", "n_exams": 1200, "share %": 0.5},
                          {"split": "R&D", "n_exams": 3, "share %": None}],
               "per_class": {"LCA_better": {"f1": 0.9}, "RCA_bad": {"f1": 0.1}},
               "not_a_table": [1, 2, 3]},
}


def balanced(text: str) -> bool:
    depth = 0
    for ch in re.sub(r"\\[{}]", "", text):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def test_macro_names_follow_the_documented_rule():
    assert report.macro_name("01_data", ("n_exams",)) == "DataNExams"
    assert report.macro_name("02_cnn", ("test", "laterality_f1")) == "CnnTestLateralityFOne"
    assert report.macro_name("05_eval", ("top10", "vlScore")) == "EvalTopOneZeroVlScore"
    assert report.macro_name("03_x", ("per_class", "0")) == "XPerClassZero"
    for path in [("é-ß", "a"), ("k 2",), ("x.y/z",)]:
        assert re.fullmatch(r"[A-Za-z]+", report.macro_name("01_data", path))


def test_generated_macros_are_letters_only_sorted_and_complete(tmp_path: Path):
    write(tmp_path / "results", "01_data", record("01_data", RESULTS))
    report.generate("smoke", tmp_path / "results", tmp_path / "gen")
    text = (tmp_path / "gen" / "macros.tex").read_text()
    names = re.findall(r"\\newcommand\{\\([^}]*)\}", text)
    assert all(re.fullmatch(r"[A-Za-z]+", n) for n in names)
    own = [n for n in names if n != "ResultsProfile"]
    assert own == sorted(own)
    assert r"\newcommand{\DataNExams}{14{,}686}" in text
    assert r"\newcommand{\DataTestLateralityFOne}{0.961}" in text
    assert r"\newcommand{\DataTestLowContrastFOne}{0.500}" in text
    assert r"\newcommand{\DataSplitFractionsTwo}{0.200}" in text
    assert r"\newcommand{\DataNote}{50\% of A\&B\_c}" in text
    assert "Curve" not in text and "Cohort" not in text   # long lists and tables get no macros
    assert "Series" not in text and "History" not in text  # nor raw series
    assert balanced(text)


def test_colliding_keys_are_an_error(tmp_path: Path):
    write(tmp_path / "results", "01_data", record("01_data", {"n_exams": 1, "nExams": 2}))
    with pytest.raises(report.ReportError, match="DataNExams"):
        report.generate("smoke", tmp_path / "results", tmp_path / "gen")


@pytest.mark.parametrize("value, text", [
    (14686, "14{,}686"), (7, "7"), (-1234, r"\ensuremath{-}1{,}234"), (0.96123, "0.961"),
    (1234.5, "1{,}234.500"), (0.0, "0.000"), (1.234e-5, r"\ensuremath{1.23\times 10^{-5}}"),
    (True, "true"), (None, "n/a"), ("a_b", r"a\_b"),
])
def test_format_value(value, text):
    assert report.format_value(value) == text


def test_tables_are_booktabs_and_escaped(tmp_path: Path):
    write(tmp_path / "results", "01_data", record("01_data", RESULTS))
    report.generate("smoke", tmp_path / "results", tmp_path / "gen")
    cohort = (tmp_path / "gen" / "table_01_data_cohort.tex").read_text()
    assert r"\begin{tabular}{lrr}" in cohort and r"\toprule" in cohort and r"\bottomrule" in cohort
    assert r"split & n\_exams & share \% \\" in cohort
    assert r"train\_a & 1{,}200 & 0.500 \\" in cohort and r"R\&D & 3 & n/a \\" in cohort
    per_class = (tmp_path / "gen" / "table_01_data_per_class.tex").read_text()
    assert r"LCA\_better & 0.900 \\" in per_class
    assert not (tmp_path / "gen" / "table_01_data_not_a_table.tex").exists()
    floats = (tmp_path / "gen" / "floats_01_data.tex").read_text()
    assert r"\input{\GeneratedDir/table_01_data_cohort.tex}" in floats
    assert r"\IfFileExists{../figures/01_data_curves.pdf}" in floats
    for path in (tmp_path / "gen").glob("*.tex"):
        assert balanced(path.read_text()), path.name


def test_provenance_skips_and_determinism(tmp_path: Path):
    results, gen = tmp_path / "results", tmp_path / "gen"
    write(results, "02_cnn", record("02_cnn", {"test": {"acc": 0.5}}))
    write(results, "01_data", record("01_data", RESULTS))
    write(results, "bench_io", {"name": "io", "seconds": 3.2})
    (results / "03_x.json.failed").write_text("{}")
    first = report.generate("smoke", results, gen)
    assert first["skipped"] == ["bench_io.json: no 'results' object"]
    provenance = (gen / "provenance.tex").read_text()
    assert provenance.index("01") < provenance.index("02")
    assert r"\texttt{0123456789ab-dirty}" in provenance and r"x86\_64" in provenance
    macros = (gen / "macros.tex").read_text()
    assert macros.index("% 01_data") < macros.index("% 02_cnn") and "skipped bench_io.json" in macros
    snapshot = {p.name: p.read_text() for p in gen.iterdir()}
    assert report.generate("smoke", results, gen)["written"] == []
    assert {p.name: p.read_text() for p in gen.iterdir()} == snapshot

    # A table that disappears from the results disappears from paper/generated.
    write(results, "01_data", record("01_data", {"n_exams": 1}))
    report.generate("smoke", results, gen)
    assert not (gen / "table_01_data_cohort.tex").exists()


def test_other_profiles_go_to_a_subfolder(tmp_path: Path, capsys):
    write(tmp_path / "results" / "paper", "01_data", record("01_data", {"n_exams": 539}, "paper"))
    argv = ["--profile", "paper", "--results-root", str(tmp_path / "results"),
            "--generated-root", str(tmp_path / "gen")]
    assert report.main(argv) == 0
    text = (tmp_path / "gen" / "paper" / "macros.tex").read_text()
    assert r"\newcommand{\ResultsProfile}{paper}" in text and r"{\DataNExams}{539}" in text
    assert not (tmp_path / "gen" / "macros.tex").exists()
    assert "2 macros" in capsys.readouterr().out


def test_intervals_get_a_ci_macro(tmp_path: Path):
    interval = {"estimate": 0.8123, "ci_low": 0.7456, "ci_high": 0.8634, "n_patients": 18}
    undefined = {"estimate": 1.0, "ci_low": None, "ci_high": None, "n_patients": 1}
    write(tmp_path / "results", "02_cnn", record("02_cnn", {"headline": {"test.laterality_f1": interval,
                                                                        "one.acc": undefined}}))
    report.generate("smoke", tmp_path / "results", tmp_path / "gen")
    macros = (tmp_path / "gen" / "macros.tex").read_text()
    assert r"\newcommand{\CnnHeadlineTestLateralityFOneCi}{0.812 [0.746, 0.863]}" in macros
    assert r"\newcommand{\CnnHeadlineTestLateralityFOneNPatients}{18}" in macros
    assert r"\newcommand{\CnnHeadlineOneAccCi}{1.000}" in macros


def test_captions_come_from_the_results_file(tmp_path: Path):
    rec = record("02_cnn", RESULTS)
    rec["captions"] = {"curves": "Loss per epoch & what to see.", "cohort": "Exams per split."}
    write(tmp_path / "results", "02_cnn", rec)
    report.generate("smoke", tmp_path / "results", tmp_path / "gen")
    floats = (tmp_path / "gen" / "floats_02_cnn.tex").read_text()
    assert r"\caption{Loss per epoch \& what to see.}" in floats and r"\caption{Exams per split.}" in floats
    assert r"\caption{Per class (notebook 02\_cnn).}" in floats   # no caption given: a plain one


def test_a_runs_one_figure_is_named_after_the_run(output_root):
    """Run.figure(fig, "") writes figures/<name>.png|pdf with its caption under <name> (the benchmarks' figures)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cag_utils.run.results import Run

    run = Run("bench_probe", {"profile": "smoke"})
    run.figure(plt.figure(), "", show=False, caption="What it shows.")
    run.figure(plt.figure(), "curve", show=False, caption="Per step.")
    assert run.figures == ["figures/bench_probe.png", "figures/bench_probe_curve.png"]
    assert run.captions == {"bench_probe": "What it shows.", "curve": "Per step."}
    assert all((output_root / f).with_suffix(s).is_file() for f in run.figures for s in (".png", ".pdf"))


def test_a_seed_spread_of_another_recipe_gives_no_macros(tmp_path: Path):
    """variance_02_cnn.json measured with other settings than the committed 02_cnn.json describes a run that is no
    longer committed: the paper gets no macro from it (its sentence and figure sit behind \\ifresult)."""
    results, gen = tmp_path / "results", tmp_path / "gen"
    committed = record("02_cnn", {"test": {"acc": 0.5}})
    committed["config"]["cnn_epochs"] = 15
    write(results, "02_cnn", committed)
    spread = record("variance_02_cnn", {"n_seeds": 5})
    spread["config"].update(cnn_epochs=15, seed=7, n_seeds=5)
    write(results, "variance_02_cnn", spread)
    assert r"\VarianceZeroTwoCnnNSeeds}{5}" in (gen / "macros.tex").read_text() if report.generate(
        "smoke", results, gen)["skipped"] == [] else False
    spread["config"]["cnn_epochs"] = 30
    write(results, "variance_02_cnn", spread)
    out = report.generate("smoke", results, gen)
    assert out["skipped"] == ["variance_02_cnn.json: measured with another recipe (cnn_epochs: 30, committed 15)"]
    assert "VarianceZeroTwoCnn" not in (gen / "macros.tex").read_text().replace("% skipped variance_02_cnn", "")
