"""The VLScore embedder stand-in of the smoke profile (`cag_utils.vlm.embedder_standin`): its training texts say
what their exam says, it trains deterministically, it embeds every text whole, and notebook 06 refuses a stale
one. The committed embedder's record must show that it ranks a reworded summary above another exam's on held-out
patients."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
from transformers import AutoTokenizer

from cag_utils.evaluation.metrics.findings import parse_summary
from cag_utils.evaluation.metrics.vlscore import SiglipEmbedder
from cag_utils.run.config import REPO_ROOT, load_config
from cag_utils.synth.cohort import draw_exams
from cag_utils.vlm import embedder_standin as es

FT, EV = es.configs("smoke")
TOKENIZER = REPO_ROOT / FT["vlm_standins_dir"] / "siglip"   # the encoders' text tokenizer (es.make reads it there)


@pytest.fixture(scope="module")
def drawn():
    cfg = load_config("smoke", "data", {"n_annotation_exams": 12, "n_independent_exams": 0})
    return draw_exams(cfg)


def test_every_wording_states_the_exams_findings(drawn):
    texts = es.exam_summaries(drawn, [f"EX-{i}" for i in range(len(drawn))], 3, seed=7)
    assert len(texts) == len(drawn) * 3 * 2
    for exam, g in texts.groupby("exam_id"):
        parsed = {(f.dominance, f.lesions, f.plan) for f in map(parse_summary, g["text"])}
        assert len(parsed) == 1, f"{exam}: wordings state different findings {parsed}"
        assert g["key"].nunique() == 1 and "\n" not in "".join(g["text"])
        own = drawn[int(exam[3:])].reports["treatment_summary_en"]
        first = g[(g["wording"] == 0) & (g["language"] == "en")]["text"].iloc[0]
        assert sorted(own.split()) == sorted(first.split())   # wording 0: the exam's own sentences, reordered
    assert texts.groupby(["exam_id", "language"])["text"].nunique().gt(1).mean() > 0.8   # wordings differ
    assert texts["key"].nunique() > 3   # exams differ


def test_text_tower_must_outlast_generation():
    with pytest.raises(ValueError, match="vlm_max_new_tokens"):
        es.params(FT, {**EV, "eval_embedder_text_length": FT["vlm_max_new_tokens"]})


def _tiny(drawn):
    rng = np.random.default_rng(0)
    texts = es.exam_summaries(drawn[:8], [f"EX-{i}" for i in range(8)], 2, seed=1)
    table = pd.DataFrame({"exam_id": [f"EX-{i % 8}" for i in range(32)], "patient_id": [f"PT-{i % 8}" for i in range(32)],
                          "split": ["train" if i % 8 < 6 else "val" for i in range(32)]})
    frames = rng.integers(0, 255, (32, 32, 32), dtype=np.uint8)
    p = es.params(FT, EV)
    p["vision"] = {**p["vision"], "hidden": 32, "heads": 2, "layers": 1, "image_size": 32, "patch_size": 16,
                   "batch_size": 4, "max_steps": 6, "warmup_steps": 1, "eval_every": 3}
    return frames, table, texts, p


def test_training_is_deterministic_and_the_folder_embeds_every_text_whole(drawn, tmp_path):
    frames, table, texts, p = _tiny(drawn)
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    runs = [es.train(tmp_path / f"run{k}", tok, frames, table, texts, p) for k in (0, 1)]
    assert runs[0]["losses"] == runs[1]["losses"] and len(runs[0]["losses"]) == 6
    assert runs[0]["val"] == runs[1]["val"] and runs[0]["longest_text_tokens"] < p["vision"]["caption_length"]
    assert set(runs[0]["heldout_checks"]) == {"ja", "en"}
    emb = SiglipEmbedder.from_pretrained(tmp_path / "run0")
    assert emb.max_length == p["vision"]["caption_length"]
    emb.embed_texts(texts["text"].tolist() + ["#6 90% " * 20])
    assert emb.n_truncated == 0
    with pytest.raises(ValueError, match="longer than caption_length"):
        es.train(tmp_path / "long", tok, frames, table, texts.assign(text=texts["text"] * 8), p)


def test_committed_embedder_is_current_and_ranks_held_out_summaries(require):
    rec = json.loads(require(f"{FT['vlm_standins_dir']}/embedder/standin.json").read_text())
    assert rec["settings"] == json.loads(json.dumps(es.params(FT, EV)))
    assert rec["git_sha"] != "unknown" and not rec["git_sha"].endswith("-dirty")
    assert subprocess.run(["git", "cat-file", "-e", rec["git_sha"] + "^{commit}"], cwd=REPO_ROOT).returncode == 0
    assert rec["steps"] == len(rec["losses"]) and rec["stopped"] in ("plateau", "max_steps")
    assert rec["longest_text_tokens"] < rec["settings"]["vision"]["caption_length"]
    val = np.asarray(rec["val"])[:, 1]
    assert val[-1] < 0.8 * val[0]
    for lang in ("ja", "en"):   # held-out patients: the reworded summary above another exam's, VLScore and cosine
        assert rec["heldout_checks"][lang]["vlscore_reworded_above_other_exam"] >= 0.95
        assert rec["heldout_checks"][lang]["n_frames"] > 500


def test_notebook_06_refuses_a_stale_or_missing_embedder_and_shared_patients(require):
    require(f"{FT['vlm_standins_dir']}/embedder/standin.json")
    assert es.load_folder(FT, EV, set()).name == "embedder"
    with pytest.raises(es.EmbedderOutOfDate, match="wordings"):
        es.load_folder(FT, {**EV, "eval_embedder_wordings": 9}, set())
    with pytest.raises(es.EmbedderOutOfDate, match="--only embedder"):
        es.load_folder({**FT, "vlm_standins_dir": "models/standins/none"}, EV, set())
    patient = json.loads((REPO_ROOT / FT["vlm_standins_dir"] / "embedder" / "standin.json").read_text())["patients"][0]
    with pytest.raises(ValueError, match="auxiliary cohort"):
        es.load_folder(FT, EV, {patient})
