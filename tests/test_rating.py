"""Blinded rating packet, import validation and aggregation (on hand-written fixture forms, not simulated raters)."""
from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import krippendorff
import numpy as np
import pandas as pd
import pytest

from cag_utils.evaluation.rating import (FORM_COLUMNS, RatingCase, RatingImportError, build_packet, import_ratings, read_key,
                              summarise_ratings)

MODELS = ("gemma3 w/ LoRA", "paligemma2 w/ LoRA", "gemma3 w/o LoRA")


def _cases() -> list[RatingCase]:
    rng = np.random.default_rng(0)
    return [RatingCase(case_id=f"rec{i}", patient_id=f"P{i // 2}", image=rng.integers(0, 256, (24, 24), dtype=np.uint8),
                       pre_procedure_report=f"{60 + i}歳男性。\n【主訴】労作時胸痛 <b>&",
                       outputs={m: f"右冠動脈優位。\n#{i + 1} 90%狭窄 ({m[:3]}-{i})" for m in MODELS})
            for i in range(4)]


@pytest.fixture()
def packet(tmp_path):
    return build_packet(_cases(), tmp_path / "packet", tmp_path / "sealed" / "key.csv", seed=42)


def test_packet_is_self_contained_and_blinded(packet):
    page = packet["html"].read_text(encoding="utf-8")
    key = read_key(packet["key"])
    assert len(key) == 12 and key["item_key"].is_unique
    assert packet["key"].parent != packet["html"].parent
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == 4 and all(base64.b64decode(b).startswith(b"\x89PNG") for b in images)
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", page)   # nothing fetched from outside
    for m in MODELS:   # no model name, not even escaped, in the page or the form
        assert m not in page and m.replace("/", "&#x2F;") not in page
    form = pd.read_csv(packet["form"], dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert tuple(form.columns) == FORM_COLUMNS and sorted(form["item_key"]) == sorted(key["item_key"])
    assert not any(m in packet["form"].read_text(encoding="utf-8-sig") for m in MODELS)
    assert "&lt;b&gt;&amp;" in page and "<b>&" not in page   # report text is escaped
    # shuffled: the letter of a model changes between cases; seeded: the same key again
    letters = key.assign(letter=key["item_key"].str[-1]).groupby("model")["letter"].nunique()
    assert (letters > 1).any()
    assert read_key(build_packet(_cases(), packet["html"].parent.parent / "p2",
                                 packet["html"].parent.parent / "k2.csv", seed=42)["key"]).equals(key)


def test_key_must_stay_outside_the_packet(tmp_path):
    with pytest.raises(ValueError, match="outside"):
        build_packet(_cases(), tmp_path / "packet", tmp_path / "packet" / "key.csv", seed=1)


def _fill(form: Path, out: Path, rater: str, scores: dict[str, object], comment: str = "") -> None:
    df = pd.read_csv(form, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    df["rater"] = rater
    df["score"] = [str(scores.get(k, "")) for k in df["item_key"]]
    df["comment"] = comment
    df.to_csv(out, index=False, encoding="utf-8-sig")


# Fixture scores by model, written out by hand (a test fixture, not a simulation of clinicians).
FIXTURE = {"A": {MODELS[0]: [8, 7, 9, 6], MODELS[1]: [6, 5, 7, 5], MODELS[2]: [2, 3, 1, 2]},
           "B": {MODELS[0]: [7, 7, 8, 6], MODELS[1]: [6, 4, 6, 6], MODELS[2]: [3, 3, 2, 1]}}


def _scores(key: pd.DataFrame, rater: str) -> dict[str, int]:
    order = {c: i for i, c in enumerate(sorted(set(key["case_id"])))}
    return {r.item_key: FIXTURE[rater][r.model][order[r.case_id]] for r in key.itertuples()}


def test_aggregation_on_fixture_forms(packet, tmp_path):
    key = read_key(packet["key"])
    _fill(packet["form"], tmp_path / "a.csv", "A", _scores(key, "A"), comment="良い")
    _fill(packet["form"], tmp_path / "dr_b.csv", "", _scores(key, "B"))   # rater from the file name
    ratings, issues = import_ratings([tmp_path / "a.csv", tmp_path / "dr_b.csv"], packet["key"])
    assert issues == [] and len(ratings) == 24 and set(ratings["rater"]) == {"A", "dr_b"}
    out = summarise_ratings(ratings, seed=3)
    for m in MODELS:
        expected = np.mean(FIXTURE["A"][m] + FIXTURE["B"][m])
        pm = out["per_model"][m]
        assert pm["estimate"] == expected and pm["n_ratings"] == 8 and pm["n_patients"] == 2
        assert pm["ci_low"] <= pm["estimate"] <= pm["ci_high"]
    per_rater = pd.DataFrame(out["per_rater"]).set_index(["rater", "model"])
    assert per_rater.loc[("A", MODELS[0]), "mean"] == 7.5 and per_rater.loc[("dr_b", MODELS[2]), "n"] == 4
    matrix = ratings.pivot(index="rater", columns="item_key", values="score").to_numpy(float)
    alpha = out["agreement"]["krippendorff_alpha_interval"]
    assert alpha == krippendorff.alpha(reliability_data=matrix, level_of_measurement="interval") and 0.7 < alpha < 1


def test_agreement_needs_two_raters(packet, tmp_path):
    key = read_key(packet["key"])
    _fill(packet["form"], tmp_path / "a.csv", "A", _scores(key, "A"))
    ratings, _ = import_ratings([tmp_path / "a.csv"], key)
    agreement = summarise_ratings(ratings, seed=1)["agreement"]
    assert agreement["krippendorff_alpha_interval"] is None and "two raters" in agreement["note"]


def test_problems_are_reported_by_row(packet, tmp_path):
    key = read_key(packet["key"])
    scores = _scores(key, "A")
    form = pd.read_csv(packet["form"], dtype=str, keep_default_na=False, encoding="utf-8-sig")
    form["rater"], form["score"] = "A", [str(scores[k]) for k in form["item_key"]]
    form.loc[0, "score"] = "11"                 # row 2: out of range
    form.loc[1, "score"] = ""                   # row 3: missing
    form.loc[2, "score"] = "seven"              # row 4: not a number
    form.loc[3, "item_key"] = "C99-Z"           # row 5: unknown key
    form.loc[4, "case"] = "C99"                 # row 6: case does not match the key
    form.loc[5, "rater"] = ""                   # row 7: missing rater
    form = pd.concat([form, form.iloc[[6]]])    # row 14: duplicate of row 8
    form.to_csv(tmp_path / "bad.csv", index=False, encoding="utf-8-sig")
    with pytest.raises(RatingImportError) as err:
        import_ratings([tmp_path / "bad.csv"], key)
    found = {(i.row, i.column) for i in err.value.issues}
    assert {(2, "score"), (3, "score"), (4, "score"), (5, "item_key"), (6, "case"), (7, "rater"),
            (14, "item_key"), (None, "item_key")} == found
    assert "bad.csv, row 2, score: 11 outside 0-10" in str(err.value)
    ratings, issues = import_ratings([tmp_path / "bad.csv"], key, strict=False)
    assert len(ratings) == 12 - 6 and len(issues) == len(found)
    unrated = next(i for i in issues if i.row is None)
    assert "6 item(s) not rated" in unrated.problem


def test_a_form_without_the_score_column_is_refused(packet, tmp_path):
    pd.DataFrame({"item_key": ["C01-A"]}).to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(RatingImportError, match="column missing"):
        import_ratings([tmp_path / "x.csv"], packet["key"])


NO_CHROMIUM = pytest.mark.skipif(shutil.which("chromium") is None,
                                 reason="missing system tool: chromium (apt-get install chromium fonts-noto-cjk)")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]


@pytest.mark.slow
@pytest.mark.timeout(240)
@NO_CHROMIUM
def test_packet_renders_and_its_form_round_trips_in_headless_chromium(packet, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--screenshot={shot}", "--window-size=1200,1600",
                    packet["html"].as_uri()], check=True, capture_output=True, timeout=60)
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (1600, 1200) and pixels.std() > 10   # not a blank page
    # the page's own export: fill two fields as a rater would, read the CSV it builds back in
    harness = tmp_path / "harness.html"
    harness.write_text(packet["html"].read_text(encoding="utf-8").replace("</body>", (
        "<script>document.getElementById('rater').value='dr_x';const it=document.querySelector('.item');"
        "it.querySelector('input').value='7';it.querySelector('textarea').value='ok, \\\"good\\\"';"
        "const o=document.createElement('pre');o.id='out';o.textContent=formCsv();document.body.appendChild(o)"
        "</script></body>")), encoding="utf-8")
    dom = subprocess.run(["chromium", *CHROMIUM_FLAGS, "--dump-dom", harness.as_uri()], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    import html as html_lib

    exported = tmp_path / "exported.csv"
    exported.write_text(html_lib.unescape(re.search(r"<pre id=\"out\">(.*?)</pre>", dom, re.S).group(1)),
                        encoding="utf-8")
    ratings, issues = import_ratings([exported], packet["key"], strict=False)
    assert len(ratings) == 1 and ratings.loc[0, "rater"] == "dr_x" and ratings.loc[0, "score"] == 7.0
    assert ratings.loc[0, "comment"] == 'ok, "good"'
    assert sum(i.column == "score" and i.problem == "missing" for i in issues) == 11


def test_screenshot_says_none_without_chromium(packet, tmp_path, monkeypatch):
    import cag_utils.evaluation.rating as rating

    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert rating.screenshot(packet["html"], tmp_path / "shot.png") is None
    assert not (tmp_path / "shot.png").exists()


@pytest.mark.slow
@pytest.mark.timeout(240)
@NO_CHROMIUM
def test_screenshot_writes_the_page_as_drawn(packet, tmp_path):
    from PIL import Image

    from cag_utils.evaluation.rating import screenshot

    shot = screenshot(packet["html"], tmp_path / "sub" / "shot.png", width=800, height=600)
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (600, 800) and pixels.std() > 10
