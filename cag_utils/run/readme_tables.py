"""The headline tables of README.md (and docs/*.md), generated from results/*.json.

    python -m cag_utils.run.report --profile smoke     # also rewrites these blocks (default profile only)

A generated block sits between two marker comments; everything between them is replaced:

    <!-- generated:headline-stage1 -->
    ...
    <!-- /generated -->

Blocks (BLOCKS): `headline-stage1` (notebook 02), `seed-spread-stage1` (notebook 02 beside
`results/variance_02_cnn.json`, with the tolerance of `cag_utils.run.tolerance`), `headline-stage2` (03, 04), `headline-stage3` (05) and
`headline-evaluation` (06), `paper-estimate` (`benchmarks/paper_estimate.py`), `budget` (the time budgets,
`benchmarks/budget.py`), `stage3-findings` (the findings
paragraph of docs/stage3.md from notebooks 05, 06 and `benchmarks/lesion_resolution.py`; `cag_utils.run.stage3_text`).
Besides, `table NN_name TABLE [COLUMN=VALUE]` renders a notebook's own table (`results.tables.TABLE` of
`results/NN_name.json`) as it stands, optionally only the rows whose COLUMN is VALUE (quote a value with
spaces: `Variant="w/ LoRA"`). Numbers use `cag_utils.run.report`'s formatting (three decimals, thousands
separators), without its LaTeX; intervals read `0.972 [0.953, 0.984]` (95 % patient-bootstrap intervals).
BLEU and chrF keep one decimal, as notebook 06 shows them. A results file that is missing, or that lacks
a key a block needs, gives a block that says so (`make reproduce` does not stop for it);
`tests/test_readme.py` fails on such a block and on any block that differs from what results/ gives.
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any, Callable

from cag_utils.run.config import REPO_ROOT
from cag_utils.run.report import RESULTS_ROOT, format_value, load_records

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
REFRESH_COMMAND = "python -m cag_utils.run.report --profile smoke"
BLOCK = re.compile(r"(<!-- generated:(?P<name>[^\n]*?) -->\n)(?P<body>.*?)(<!-- /generated -->)", re.S)
NOT_BUILT = "not built:"

# Display names of the stage-3 families (as cag_utils.vlm.build.REGISTRY labels them; a test checks it).
MODELS = {"paligemma": "PaliGemma2", "gemma3": "Gemma3", "conceptclip_gemma3": "ConceptCLIP-Gemma3",
          "gemma3_text": "Gemma3 text-only"}
LANGUAGES = {"ja": "Japanese", "en": "English"}


class Missing(LookupError):
    """A results file or key that a block needs."""


def number(value: Any, decimals: int = 3) -> str:
    """`cag_utils.run.report.format_value` as plain text (`1,523`, `0.972`, `-0.003`, `true`); `decimals` other
    than 3 rounds floats to that many places instead."""
    if isinstance(value, float):
        if decimals != 3:
            return f"{value:,.{decimals}f}"
        if value != 0 and abs(value) < 0.0005:
            return f"{value:.2e}"
    return format_value(value).replace("{,}", ",").replace(r"\ensuremath{-}", "-")


def interval(value: dict[str, Any], decimals: int = 3) -> str:
    """'0.972 [0.953, 0.984]' (the estimate alone when the interval is undefined)."""
    text = number(value["estimate"], decimals)
    low, high = value.get("ci_low"), value.get("ci_high")
    if isinstance(low, (int, float)) and isinstance(high, (int, float)):
        text += f" [{number(low, decimals)}, {number(high, decimals)}]"
    return text


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |",
            *("| " + " | ".join(row) + " |" for row in rows)]


class Results:
    """The `results` objects of a results folder, by notebook; `get` raises Missing with the path."""

    def __init__(self, results_dir: Path):
        self.dir = Path(results_dir)
        records, _ = load_records(self.dir)
        self.by_notebook = {str(rec.get("notebook") or path.stem): rec["results"] for path, rec in records}
        self.configs = {str(rec.get("notebook") or path.stem): rec.get("config") for path, rec in records}

    def get(self, notebook: str, *keys: str) -> Any:
        if notebook not in self.by_notebook:
            raise Missing(f"results/{notebook}.json is not there (run `make reproduce`)")
        value: Any = self.by_notebook[notebook]
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                raise Missing(f"results/{notebook}.json has no {'/'.join(keys)}")
            value = value[key]
        return value


def stage1(res: Results) -> list[str]:
    head = lambda key: res.get("02_cnn", "headline", key)  # noqa: E731
    rows = []
    for subset, label, n_frames in [("test", "test", "n_test"),
                                    ("low_contrast", "low-contrast (lowest quartile of vessel contrast)",
                                     "n_low_contrast")]:
        rows.append([label, number(res.get("02_cnn", "exact", n_frames)),
                     number(head(f"{subset}.laterality_f1")["n_patients"]),
                     *(interval(head(f"{subset}.{m}")) for m in ("laterality_f1", "key_frame_f1", "macro_f1",
                                                                 "accuracy"))])
    return [f"Key-frame classifier (ConvNeXt, six classes) on the held-out patients of the annotation cohort "
            f"(`results/02_cnn.json`, `headline`):", "",
            *table(["subset", "frames", "patients", "laterality F1", "key-frame F1", "6-class macro-F1",
                    "accuracy"], rows)]


def seed_spread(res: Results) -> list[str]:
    """The committed CNN beside its seed spread and the tolerance of the re-execution check (cag_utils.run.tolerance)."""
    from cag_utils.run.tolerance import K_SD, load_spread, spread_recipe_differences, tolerance_table

    spread, other = load_spread(res.dir, "02_cnn"), spread_recipe_differences(res.dir, "02_cnn")
    note = []
    if other:   # shown for what it is, and not applied (tolerance.load_spread)
        spread = json.loads((res.dir / "variance_02_cnn.json").read_text(encoding="utf-8"))["results"]["metrics"]
        note = [f"**The seed spread below was measured with another recipe than the committed run's "
                f"({'; '.join(other)})**, so the re-execution check does not apply its tolerance; `make variance` "
                "measures the committed recipe.", ""]
    if not spread:
        raise Missing("results/variance_02_cnn.json is not there (run `make variance`)")
    n_seeds = len(next(iter(spread.values()))["values"])
    rows = []
    for row in tolerance_table({"results": {"headline": res.get("02_cnn", "headline")}}, spread):
        seeds = spread.get(row["metric"])
        rows.append([row["metric"], interval(row),
                     f"{number(seeds['mean'])} ± {number(seeds['sd'])}" if seeds else "not measured",
                     f"{number(seeds['min'])}–{number(seeds['max'])}" if seeds else "",
                     "not applied" if other else number(row["tolerance"]) if row["tolerance"] is not None else "none"])
    return note + table(["metric", "committed [95 % interval]", f"{n_seeds}-seed mean ± sd", "seed range",
                  f"tolerance ({K_SD:g} sd)"], rows)


def stage2(res: Results) -> list[str]:
    head = lambda key: res.get("03_extraction", "headline", key)  # noqa: E731
    ex = lambda key: res.get("03_extraction", "exact", key)  # noqa: E731
    co = lambda key: res.get("04_corpus", "exact", key)  # noqa: E731
    paper = number(res.get("03_extraction", "paper_key_frames_per_exam"), 1)
    rows = [[label, number(ex(n_key)), *(interval(head(f"{rule}.{m}")) for m in
                                         ("key_frames_per_exam", "precision_better", "laterality_accuracy")),
             number(ex(n_without))]
            for rule, label, n_key, n_without in [
                ("cnn_rule", "CNN", "n_key_frames_cnn", "n_exams_without_key_frame"),
                ("oracle_rule", "oracle (true labels)", "n_key_frames_oracle", "n_exams_without_key_frame_oracle")]]
    lesion = interval(res.get("04_corpus", "headline", "corpus.records_with_lesion_in_view"))
    return [f"Key frames picked from the independent exams ({number(ex('n_exams'))} exams, "
            f"{number(ex('n_patients'))} patients, {number(ex('n_candidates'))} candidate frames; "
            f"`results/03_extraction.json`, `headline`):", "",
            *table(["rule", "key frames", f"per exam (paper: {paper})", 'truly "better"', "laterality right",
                    "exams without key frame"], rows), "",
            f"Corpus (`results/04_corpus.json`): {number(co('n_records'))} records from {number(co('n_exams'))} "
            f"exams of {number(co('n_patients'))} patients, split by patient into train "
            f"{number(co('n_records_train'))} ({number(co('n_patients_train'))} patients), validation "
            f"{number(co('n_records_val'))} ({number(co('n_patients_val'))}) and test "
            f"{number(co('n_records_test'))} ({number(co('n_patients_test'))}); records that show one of the "
            f"exam's lesions: {lesion}."]


def stage3(res: Results) -> list[str]:
    head = lambda key: res.get("05_finetune", "headline", key)  # noqa: E731
    families = [f for f in MODELS if f"{f}.test_loss" in res.get("05_finetune", "headline")]
    control = res.get("05_finetune", "control", "scores")
    rows = []
    for fam in families:
        scores = control.get(fam)
        rows.append([MODELS[fam], interval(head(f"{fam}.test_loss_without_lora")), interval(head(f"{fam}.test_loss")),
                     interval(head(f"{fam}.image_reliance")),
                     *([interval(scores["artery_accuracy_real"]), interval(scores["artery_accuracy_blank"])]
                       if scores else ["(no image)", "(no image)"])])
    n = res.get("05_finetune", "exact", "n_examples")
    return [f"LoRA fine-tuning on the stand-ins, {number(n['test'])} test examples (corpus test records × 2 "
            f"languages; `results/05_finetune.json`). Summary loss in nats per token; image reliance = loss "
            f"with the blanked image − loss with the real one; the positive control names the key frame's "
            f"artery:", "",
            *table(["model", "summary loss w/o LoRA", "w/ LoRA", "summary image reliance",
                    "control: artery, real frame", "artery, blanked"], rows)]


EVAL_METRICS = [("vlscore", "VLScore", 3), ("bleu", "BLEU", 1), ("chrf", "chrF", 1),
                ("f1_exam", "findings F1 (exam)", 3), ("f1_shown_artery", "findings F1 (shown artery)", 3)]


def evaluation(res: Results) -> list[str]:
    head = res.get("06_evaluation", "headline")
    families = [f for f in MODELS if any(k.startswith(f"{f}.with_lora.") for k in head)]
    selected = res.get("06_evaluation", "selection")
    rows = []
    for fam in families:
        for lang, language in LANGUAGES.items():
            keys = [f"{fam}.with_lora.{lang}.{m}" for m, _, _ in EVAL_METRICS]
            if not all(k in head for k in keys):
                continue
            name = MODELS[fam] + (f" ({selected['name']})" if fam == selected.get("family") else "")
            rows.append([name, language, *(interval(head[k], d) for k, (_, _, d) in zip(keys, EVAL_METRICS))])
    validity = res.get("06_evaluation", "validity", "summary")
    rows.append(["metric validity: share ordered", "both", *(
        f"{interval(validity[m]['ordered'])} ({'passes' if validity[m]['passes'] else 'fails'})"
        for m, _, _ in EVAL_METRICS)])
    control = validity.get("findings_exact")
    scores = selected.get("scores", {})
    runner = selected.get("runner_up")
    lines = [f"Summaries of the w/ LoRA models on the test split ({number(res.get('06_evaluation', 'exact', 'n_records'))} "
             f"records of {number(res.get('06_evaluation', 'exact', 'n_patients'))} patients; "
             f"`results/06_evaluation.json`, `headline`, `selection`, `validity`). {selected['name']} is "
             f"{selected['model']}, chosen by {selected['metric_label']} (mean over both languages "
             f"{number(scores.get(selected['family']))}; runner-up {selected.get('runner_up_model')} "
             f"{number(scores.get(runner))}; intervals overlap: {number(selected.get('intervals_overlap'))}). "
             f"The last row is the metric-validity benchmark: the share of references whose significant "
             f"perturbations all score below their insignificant ones (passes at "
             f"{number(res.get('06_evaluation', 'validity', 'pass_share'), 2)}"
             + (f"; the exact-findings control: {interval(control['ordered'])}" if control else "") + "):", "",
             *table(["model", "language", *(label for _, label, _ in EVAL_METRICS)], rows)]
    return lines


def results_table(res: Results, notebook: str, name: str, *filters: str) -> list[str]:
    """A notebook's `tables.<name>` (list of row dicts) as markdown; rows kept where every COLUMN=VALUE holds."""
    rows = res.get(notebook, "tables", name)
    if not (isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows)):
        raise Missing(f"results/{notebook}.json: tables/{name} is not a list of rows")
    for rule in filters:
        column, _, value = rule.partition("=")
        rows = [r for r in rows if str(r.get(column)) == value]
    if not rows:
        raise Missing(f"results/{notebook}.json: no row of tables/{name} has {' and '.join(filters)}")
    header: list[str] = []
    for row in rows:
        header += [k for k in row if k not in header]
    cell = lambda v: number(v) if not isinstance(v, str) else v  # noqa: E731
    return [f"(`results/{notebook}.json`, `tables.{name}`)", "",
            *table(header, [[cell(r.get(k)).replace("|", "\\|") for k in header] for r in rows])]


def paper_estimate(res: Results) -> list[str]:
    """Time and memory per paper-profile step (benchmarks/paper_estimate.py), with a paper run's measured wall
    time beside it once `results/paper/` holds one."""
    rows = res.get("paper_estimate", "tables", "steps")
    runs = (res.get("paper_estimate", "measured") or {}).get("paper_run") or {}
    header = ["step", "time (estimate)", "memory (estimate)"] + (["measured wall time"] if runs else [])
    body = []
    for row in rows:
        measured = runs.get(row["step"].split(":")[0], {}).get("wall_time_s")
        body.append([row["step"], row["time (estimate)"], row["memory (estimate)"]]
                    + ([f"{number(measured / 60, 1)} min" if measured else "not run"] if runs else []))
    card = res.get("paper_estimate", "card")
    total = res.get("paper_estimate", "total_s") / 3600
    return [f"Estimates until measured: one {card}, about {number(total, 1)} h in all (`results/paper_estimate.json`).",
            "", *table(header, body)]


def budget(res: Results) -> list[str]:
    """The two time budgets as `benchmarks/budget.py` (`make budget`) last measured them, from fresh clones, with the
    machine's CNN step time beside them (results/budget.json: a bench file, read directly)."""
    path = res.dir / "budget.json"
    if not path.is_file():
        raise Missing("results/budget.json is not there (run `make budget`)")
    record = json.loads(path.read_text(encoding="utf-8"))
    body = []
    for command, r in record["commands"].items():
        notebooks = r.get("notebooks_s") or {}
        counts = r.get("counts")
        body.append([f"`make {command}`", f"{number(r['total_s'] / 60, 1)} min", f"{r['budget_s'] // 60} min",
                     "met" if r["met"] else ("failed" if r["rc"] else "missed"), f"{number(r['install_s'] / 60, 1)} min",
                     f"{number(sum(notebooks.values()) / 60, 1)} min",
                     f"{number(r['step_s_before'], 2)} s, {number(r['step_s_after'], 2)} s",
                     f"{counts['passed']:,} passed, {counts['failed']} failed, {counts['skipped']} skipped" if counts else ""])
    return [f"Commit {record['git_sha'][:7]}, {record['machine']['cpu_count']} cores of an {record['machine']['processor']},"
            f" started {record['started_at'][:10]} (`results/budget.json`, `figures/budget.png`).", "",
            *table(["command", "wall time", "budget", "verdict", "install", "notebooks", "CNN step before, after",
                    "tests"], body)]


def stage3_findings(res: Results) -> list[str]:
    """docs/stage3.md's findings paragraph (cag_utils.run.stage3_text, imported here: it imports this module)."""
    from cag_utils.run.stage3_text import findings

    return findings(res)


BLOCKS: dict[str, Callable[[Results], list[str]]] = {
    "headline-stage1": stage1, "seed-spread-stage1": seed_spread, "headline-stage2": stage2, "headline-stage3": stage3,
    "headline-evaluation": evaluation, "paper-estimate": paper_estimate, "stage3-findings": stage3_findings,
    "budget": budget,
}


def render(name: str, results_dir: Path = RESULTS_ROOT) -> str:
    """The text between a block's markers (a blank line either side of the lines)."""
    words = shlex.split(name)
    if name not in BLOCKS and not (len(words) >= 3 and words[0] == "table"):
        return f"\n*({NOT_BUILT} unknown block {name!r}; known: {', '.join(BLOCKS)}, table NN_name TABLE)*\n\n"
    try:
        lines = (BLOCKS[name](Results(results_dir)) if name in BLOCKS
                 else results_table(Results(results_dir), *words[1:]))
    except (Missing, KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        lines = [f"*({NOT_BUILT} {exc})*"]
    return "\n" + "\n".join(lines) + "\n\n"


def refresh(text: str, results_dir: Path = RESULTS_ROOT) -> str:
    """The text with every generated block rewritten from results_dir."""
    cache: dict[str, str] = {}

    def sub(m: re.Match) -> str:
        body = cache.setdefault(m["name"], render(m["name"], results_dir))
        return m.group(1) + body + m.group(4)

    return BLOCK.sub(sub, text)


def blocks(text: str) -> dict[str, list[str]]:
    """name -> the bodies of its blocks in a text."""
    found: dict[str, list[str]] = {}
    for m in BLOCK.finditer(text):
        found.setdefault(m["name"], []).append(m["body"])
    return found


def documents(root: Path = REPO_ROOT) -> list[Path]:
    """README.md and docs/*.md: the files whose generated blocks are kept current."""
    return [p for p in [Path(root) / "README.md", *sorted((Path(root) / "docs").glob("*.md"))] if p.is_file()]


def update(paths: list[Path] | None = None, results_dir: Path = RESULTS_ROOT) -> list[Path]:
    """Rewrite the generated blocks of the documents; returns the files that changed."""
    changed = []
    for path in documents() if paths is None else paths:
        text = path.read_text(encoding="utf-8")
        new = refresh(text, results_dir)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed
