"""Blinded clinician rating: the packet raters open, the import of their forms, and the summary.

The paper's cardiologists rated each model's report on a 0-10 scale. This module prepares the same
protocol; it never invents a rating (with no rating files, notebook 06 only shows the packet).

- ``build_packet`` writes one self-contained HTML page (frames embedded as base64 PNG, no network)
  and a CSV form. Cases appear in a seeded random order under codes (C01, C02, ...); within a case
  the models' reports are shuffled again and shown under hidden keys (C01-A, C01-B, ...), so a
  letter never stands for the same model twice. The key that unblinds them goes to a separate file,
  which must lie outside the packet folder.
- ``import_ratings`` reads completed forms from any number of raters and reports every problem by
  file and spreadsheet row (header = row 1): missing cells, scores that are not numbers in 0-10,
  unknown keys, a case code that does not belong to the key, duplicates, and items left unrated.
- ``summarise_ratings``: per model the mean with a 95 % patient-bootstrap interval, per rater the
  means, and inter-rater agreement as Krippendorff's alpha (interval level, ``krippendorff``).
- ``screenshot``: the packet page as headless Chromium draws it (None where Chromium is not installed).
"""
from __future__ import annotations

import base64
import html
import io
import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cag_utils.intervals import patient_bootstrap, ratio_by_patient, ratio_of_sums

SCORE_MIN, SCORE_MAX = 0, 10
FORM_COLUMNS = ("rater", "item_key", "case", "score", "comment")
KEY_COLUMNS = ("item_key", "case", "case_id", "patient_id", "model")
ENCODING = "utf-8-sig"   # with a BOM, so that spreadsheet programs read Japanese text correctly

__all__ = ["FORM_COLUMNS", "KEY_COLUMNS", "RatingCase", "RatingImportError", "RatingIssue", "SCORE_MAX", "SCORE_MIN",
           "agreement", "blind", "build_packet", "import_ratings", "read_key", "render_html", "screenshot",
           "summarise_ratings"]
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--hide-scrollbars")


@dataclass(frozen=True)
class RatingCase:
    """One key frame to rate: its frame, the pre-procedure report, and each model's output."""

    case_id: str
    patient_id: str
    image: Any                    # (H, W) uint8 array or PIL image
    pre_procedure_report: str
    outputs: Mapping[str, str]    # model label -> generated report


@dataclass(frozen=True)
class RatingIssue:
    file: str
    row: int | None               # spreadsheet row (header = 1); None for a whole-file problem
    column: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}, row {self.row if self.row is not None else '-'}, {self.column}: {self.problem}"


class RatingImportError(ValueError):
    def __init__(self, issues: Sequence[RatingIssue]):
        self.issues = list(issues)
        super().__init__(f"{len(self.issues)} problem(s) in the rating files:\n" + "\n".join(map(str, self.issues)))


# ------------------------------------------------------------------ the packet
def _png_base64(image: Any) -> str:
    from PIL import Image

    im = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _letters(n: int) -> list[str]:
    if n > len(string.ascii_uppercase):
        raise ValueError(f"{n} models per case; at most {len(string.ascii_uppercase)}")
    return list(string.ascii_uppercase[:n])


def blind(cases: Sequence[RatingCase], seed: int) -> pd.DataFrame:
    """The unblinding key: one row per (case, model) with its case code and hidden item key."""
    rng = np.random.default_rng(seed)
    width = max(2, len(str(len(cases))))
    rows = []
    for number, k in enumerate(rng.permutation(len(cases)), start=1):
        case, code = cases[k], f"C{number:0{width}d}"
        models = list(case.outputs)
        for letter, m in zip(_letters(len(models)), rng.permutation(len(models))):
            rows.append({"item_key": f"{code}-{letter}", "case": code, "case_id": case.case_id,
                         "patient_id": case.patient_id, "model": models[m]})
    return pd.DataFrame(rows, columns=list(KEY_COLUMNS))


_STYLE = """body{font-family:'Noto Sans CJK JP','Noto Sans',sans-serif;max-width:1100px;margin:auto;padding:1em;color:#222}
section{border-top:2px solid #555;padding:1em 0}.row{display:flex;gap:1.5em;align-items:flex-start}
img{width:384px;image-rendering:pixelated;border:1px solid #999}pre{white-space:pre-wrap;font-family:inherit;margin:0}
.item{border:1px solid #bbb;border-radius:6px;padding:.6em;margin:.6em 0}.key{font-weight:bold}
input[type=number]{width:4em}textarea{width:100%;height:2.5em}"""
_SCRIPT = """function csvCell(v){v=String(v??'');return /[",\\n]/.test(v)?'"'+v.replace(/"/g,'""')+'"':v}
function formCsv(){const r=document.getElementById('rater').value.trim();const rows=[%s.join(',')];
document.querySelectorAll('.item').forEach(e=>{rows.push([r,e.dataset.key,e.dataset.case,
e.querySelector('input').value,e.querySelector('textarea').value].map(csvCell).join(','))});return rows.join('\\n')+'\\n'}
function download(){const a=document.createElement('a');a.href=URL.createObjectURL(new Blob(['\\ufeff'+formCsv()],
{type:'text/csv'}));a.download='ratings_'+(document.getElementById('rater').value.trim()||'rater')+'.csv';a.click()}"""


def render_html(cases: Sequence[RatingCase], key: pd.DataFrame, title: str, instructions: str) -> str:
    """The packet page: per case the frame, the pre-procedure report and the blinded reports."""
    by_id = {c.case_id: c for c in cases}
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style><script>{_SCRIPT % json.dumps(list(FORM_COLUMNS))}</script></head><body>",
             f"<h1>{html.escape(title)}</h1><p>{html.escape(instructions)}</p>",
             "<p>Rater ID: <input id='rater' size='12'> <button onclick='download()'>Download my ratings (CSV)</button>"
             "</p>"]
    for code, items in key.groupby("case", sort=True):
        case = by_id[items["case_id"].iloc[0]]
        parts.append(f"<section><h2>Case {html.escape(code)}</h2><div class='row'>"
                     f"<img alt='key frame of case {html.escape(code)}' src='data:image/png;base64,"
                     f"{_png_base64(case.image)}'><div><h3>Pre-procedure report</h3>"
                     f"<pre>{html.escape(case.pre_procedure_report)}</pre></div></div>")
        for _, it in items.sort_values("item_key").iterrows():
            k = html.escape(it["item_key"])
            parts.append(f"<div class='item' data-key='{k}' data-case='{html.escape(code)}'><div class='key'>Report {k}"
                         f"</div><pre>{html.escape(case.outputs[it['model']])}</pre><p>Score ({SCORE_MIN}-{SCORE_MAX}): "
                         f"<input type='number' min='{SCORE_MIN}' max='{SCORE_MAX}' step='1'> Comment: "
                         f"<textarea></textarea></p></div>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def build_packet(cases: Sequence[RatingCase], packet_dir: str | Path, key_path: str | Path, *, seed: int,
                 title: str = "Blinded rating of generated angiography reports",
                 instructions: str = (f"Rate each report from {SCORE_MIN} (unusable) to {SCORE_MAX} (as good as an "
                                      "expert's) for how correctly and completely it describes the findings and the "
                                      "treatment plan for this patient. Fill in the CSV form, or the fields below and "
                                      "download them.")) -> dict[str, Path]:
    """Write ``rating_packet.html`` and ``rating_form.csv`` into ``packet_dir`` and the key to ``key_path``."""
    packet_dir, key_path = Path(packet_dir).resolve(), Path(key_path).resolve()
    if packet_dir == key_path.parent or packet_dir in key_path.parents:
        raise ValueError("the unblinding key must be written outside the packet folder")
    if len({c.case_id for c in cases}) != len(cases) or not cases:
        raise ValueError("cases must be non-empty with distinct case IDs")
    key = blind(cases, seed)
    packet_dir.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    page = packet_dir / "rating_packet.html"
    page.write_text(render_html(cases, key, title, instructions), encoding="utf-8")
    form = packet_dir / "rating_form.csv"
    pd.DataFrame({"rater": "", "item_key": key["item_key"], "case": key["case"], "score": "", "comment": ""}
                 ).sort_values("item_key").to_csv(form, index=False, encoding=ENCODING, lineterminator="\n")
    key.to_csv(key_path, index=False, encoding=ENCODING, lineterminator="\n")
    return {"html": page, "form": form, "key": key_path}


def screenshot(page: str | Path, png: str | Path, width: int = 1100, height: int = 1400,
               timeout: int = 60) -> Path | None:
    """PNG of ``page`` rendered by headless Chromium (Debian: ``chromium``), or None without Chromium."""
    import shutil
    import subprocess

    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        return None
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([exe, *CHROMIUM_FLAGS, f"--screenshot={png}", f"--window-size={width},{height}",
                    Path(page).resolve().as_uri()], check=True, capture_output=True, timeout=timeout)
    return png


# ------------------------------------------------------------------ import
def read_key(key_path: str | Path) -> pd.DataFrame:
    return pd.read_csv(key_path, dtype=str, keep_default_na=False, encoding=ENCODING)


def _read_one(path: Path, key: pd.DataFrame) -> tuple[list[dict[str, Any]], list[RatingIssue]]:
    name, issues, rows = path.name, [], []
    df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding=ENCODING)
    missing = [c for c in ("item_key", "score") if c not in df.columns]
    if missing:
        return [], [RatingIssue(name, 1, ",".join(missing), "column missing")]
    df = df.reindex(columns=list(FORM_COLUMNS), fill_value="").apply(lambda s: s.str.strip())
    default_rater = path.stem if not df["rater"].astype(bool).any() else None
    case_of = dict(zip(key["item_key"], key["case"]))
    for i, r in enumerate(df.to_dict("records"), start=2):
        problems = []
        if not r["rater"] and default_rater is None:
            problems.append(("rater", "missing"))
        if not r["item_key"]:
            problems.append(("item_key", "missing"))
        elif r["item_key"] not in case_of:
            problems.append(("item_key", f"unknown key {r['item_key']!r}"))
        elif r["case"] and r["case"] != case_of[r["item_key"]]:
            problems.append(("case", f"{r['case']!r} but key {r['item_key']} belongs to {case_of[r['item_key']]}"))
        try:
            score = float(r["score"]) if r["score"] else None
        except ValueError:
            score, problems = None, problems + [("score", f"not a number: {r['score']!r}")]
        if not r["score"]:
            problems.append(("score", "missing"))
        elif score is not None and not (SCORE_MIN <= score <= SCORE_MAX):
            problems.append(("score", f"{r['score']} outside {SCORE_MIN}-{SCORE_MAX}"))
        issues += [RatingIssue(name, i, c, p) for c, p in problems]
        if not problems:
            rows.append({"file": name, "row": i, "rater": r["rater"] or default_rater, "item_key": r["item_key"],
                         "score": score, "comment": r["comment"]})
    return rows, issues


def import_ratings(paths: Sequence[str | Path], key: pd.DataFrame | str | Path, *, strict: bool = True
                   ) -> tuple[pd.DataFrame, list[RatingIssue]]:
    """Valid ratings joined to the key (case_id, patient_id, model), and every problem found.

    ``strict`` raises ``RatingImportError`` listing all problems; otherwise the valid rows come back
    with the list. A rater is the file's ``rater`` column, or the file name when that column is empty.
    """
    key = key if isinstance(key, pd.DataFrame) else read_key(key)
    rows, issues = [], []
    for path in map(Path, paths):
        r, i = _read_one(path, key)
        rows, issues = rows + r, issues + i
    df = pd.DataFrame(rows, columns=["file", "row", "rater", "item_key", "score", "comment"])
    dup = df.duplicated(["rater", "item_key"], keep="first")
    issues += [RatingIssue(r.file, r.row, "item_key", f"{r.item_key} rated twice by {r.rater}")
               for r in df[dup].itertuples()]
    df = df[~dup]
    for (rater, file), got in df.groupby(["rater", "file"]):
        left = sorted(set(key["item_key"]) - set(got["item_key"]))
        if left:
            issues.append(RatingIssue(file, None, "item_key", f"rater {rater}: {len(left)} item(s) not rated "
                                                              f"({', '.join(left[:5])}{', ...' if len(left) > 5 else ''})"))
    if strict and issues:
        raise RatingImportError(issues)
    return df.merge(key, on="item_key", how="left").reset_index(drop=True), issues


# ------------------------------------------------------------------ summary
def agreement(ratings: pd.DataFrame) -> dict[str, Any]:
    """Krippendorff's alpha (interval) over raters x rated items; None with a note when undefined."""
    import krippendorff

    matrix = ratings.pivot_table(index="rater", columns="item_key", values="score", aggfunc="first")
    out = {"krippendorff_alpha_interval": None, "n_raters": int(matrix.shape[0]),
           "n_items_rated_twice": int((matrix.notna().sum(axis=0) >= 2).sum()), "note": ""}
    if out["n_raters"] < 2 or out["n_items_rated_twice"] == 0:
        out["note"] = "needs at least two raters rating a common item"
        return out
    values = matrix.to_numpy(dtype=float)
    if np.unique(values[~np.isnan(values)]).size < 2:
        out["note"] = "every rating is the same value; alpha is undefined"
        return out
    out["krippendorff_alpha_interval"] = float(krippendorff.alpha(reliability_data=values,
                                                                  level_of_measurement="interval"))
    return out


def summarise_ratings(ratings: pd.DataFrame, *, seed: int) -> dict[str, Any]:
    """Per model mean (95 % patient bootstrap), per rater means, and agreement, from ``import_ratings``."""
    per_model = {}
    for model, g in ratings.groupby("model", sort=True):
        stats = ratio_by_patient(g["score"], np.ones(len(g)), g["patient_id"])
        res = patient_bootstrap(stats, ratio_of_sums, seed=seed)
        per_model[model] = {**res, "estimate": float(g["score"].mean()), "n_ratings": int(len(g)),
                            "n_raters": int(g["rater"].nunique())}
    per_rater = (ratings.groupby(["rater", "model"], sort=True)["score"].agg(["mean", "count"])
                 .reset_index().rename(columns={"count": "n"}))
    return {"per_model": per_model, "per_rater": per_rater.to_dict("records"), "agreement": agreement(ratings),
            "n_raters": int(ratings["rater"].nunique()), "n_ratings": int(len(ratings))}
