"""benchmarks/paper_estimate.py: the paper profile's time and memory per step, an estimate until measured."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import paper_estimate  # noqa: E402

COMMITTED = "results/paper_estimate.json"


@pytest.fixture(scope="module")
def fresh():
    return paper_estimate.estimate("paper")


def test_committed_estimate_is_what_the_profile_and_benchmarks_give(fresh, require):
    """A changed profile key, benchmark or model builder makes the committed table stale: recompute it."""
    committed = json.loads(require(COMMITTED).read_text())["results"]
    assert committed["estimate"] is True
    assert [r["step"] for r in committed["tables"]["steps"]] == [r["step"] for r in fresh["rows"]]
    assert committed["total_s"] == fresh["total_s"]
    for row, got in zip(committed["tables"]["steps"], fresh["rows"]):
        assert row["time (estimate)"] == paper_estimate.duration(got["time_s"]) and row["memory (estimate)"] == got[
            "memory"], f"{row['step']}: run python benchmarks/paper_estimate.py"


@pytest.mark.parametrize("notebook", ["04_corpus", "06_evaluation"])
def test_the_cpu_steps_stay_under_their_ceiling_in_the_smoke_run(notebook, require):
    wall = json.loads(require(f"results/{notebook}.json").read_text())["provenance"]["timing"]["wall_time_s"]
    assert wall < paper_estimate.SMOKE_CPU_STEP_CEILING_S, f"{notebook}: raise SMOKE_CPU_STEP_CEILING_S"


def test_every_step_of_the_paper_run_is_estimated(fresh):
    steps = [r["step"].split(":")[0] for r in fresh["rows"]]
    assert sorted(set(steps)) == ["01_data", "02_cnn", "03_extraction", "04_corpus", "05_finetune", "06_evaluation"]
    families = [r["step"].split(": ")[1] for r in fresh["rows"] if r["step"].startswith("05")]
    assert families == ["paligemma", "gemma3", "conceptclip_gemma3", "gemma3_text"]
    assert all(r["time_s"] >= 0 and r["basis"] for r in fresh["rows"])


def test_vlm_steps_match_the_gpu_check_arithmetic(fresh):
    """The per-step FLOPs are gpu_vlm.analytic_flops at batch x full length; at the 35 % MFU target they give the
    step times docs/gpu-and-paper-profile.md names as the targets (0.59, 0.95, 0.84 s)."""
    assert [round(fresh["vlm"][k]["step_s"], 2) for k in ("paligemma", "gemma3", "conceptclip_gemma3")] == \
        [0.59, 0.95, 0.84]
    cnn = fresh["cnn"]
    assert 2_600 < cnn["train_frames_per_s"] < 2_800   # 48 ms per step of 128 at 25 % MFU


def test_memory_terms_add_up_and_logits_dominate(fresh):
    for kind, v in fresh["vlm"].items():
        terms = v["memory_terms_gib"]
        assert sum(terms.values()) == pytest.approx(v["memory_gib"])
        assert max(terms, key=terms.get) == "logits_and_loss", kind   # batch 8 x 2,048 tokens x ~260k vocabulary
        assert v["bytes_per_logit"] > paper_estimate.LOGIT_GRAD_BYTES


def test_logit_bytes_are_measured_through_the_model():
    """Saved bytes per logit from the model's own forward with labels: at least the fp32 log-softmax output;
    PaliGemma2's final soft-capping keeps more than Gemma3."""
    gemma3 = paper_estimate.logit_bytes("gemma3", 8192)
    paligemma = paper_estimate.logit_bytes("paligemma", 8192)
    assert 3.5 < gemma3 < 9 and gemma3 < paligemma < 12


def test_paper_run_and_durations(tmp_path):
    (tmp_path / "02_cnn.json").write_text(json.dumps({"provenance": {"timing": {"wall_time_s": 1234.5},
                                                                     "device": "cuda: NVIDIA H100 80GB HBM3"}}))
    (tmp_path / "bench_cnn.json").write_text("{}")
    assert paper_estimate.paper_run(tmp_path) == {"02_cnn": {"wall_time_s": 1234.5,
                                                             "device": "cuda: NVIDIA H100 80GB HBM3"}}
    assert paper_estimate.paper_run(tmp_path / "none") is None
    assert paper_estimate.measured(tmp_path / "none.json") is None
    assert [paper_estimate.duration(s) for s in (5, 600, 5400, 9000)] == ["under 1 min", "10 min", "1.5 h", "2.5 h"]
