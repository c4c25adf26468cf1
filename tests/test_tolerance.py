"""The re-execution check fails on a perturbed results file and passes on the same one."""
from __future__ import annotations

import copy
import json

from cag_utils.run.tolerance import (
    K_SD, check_reexecution, load_spread, spread_recipe_differences, tolerance_table, without_timings,
)

COMMITTED = {"results": {
    "exact": {"n_test": 600, "training_status": "completed"},
    "headline": {"test.laterality_f1": {"estimate": 0.85, "ci_low": 0.80, "ci_high": 0.90, "n_patients": 18},
                 "test.key_frame_f1": {"estimate": 0.60, "ci_low": 0.55, "ci_high": 0.66, "n_patients": 18}},
}}
SPREAD = {"test.laterality_f1": {"sd": 0.01}, "test.key_frame_f1": {"sd": 0.0}}


def _rerun(**changes):
    out = copy.deepcopy(COMMITTED)
    for name, value in changes.items():
        out["results"]["headline"][name]["estimate"] = value
    return out


def test_identical_rerun_passes():
    assert check_reexecution(COMMITTED, copy.deepcopy(COMMITTED), SPREAD) == []


def test_small_drift_inside_tolerance_passes():
    assert check_reexecution(COMMITTED, _rerun(**{"test.laterality_f1": 0.85 + 2 * 0.01}), SPREAD) == []


def test_perturbed_headline_fails():
    problems = check_reexecution(COMMITTED, _rerun(**{"test.laterality_f1": 0.85 + (K_SD + 0.5) * 0.01}), SPREAD)
    assert len(problems) == 1 and "seed sd" in problems[0]
    outside = check_reexecution(COMMITTED, _rerun(**{"test.laterality_f1": 0.95}), {})
    assert len(outside) == 1 and "outside the committed interval" in outside[0]
    zero_sd = check_reexecution(COMMITTED, _rerun(**{"test.key_frame_f1": 0.6001}), SPREAD)
    assert len(zero_sd) == 1 and "test.key_frame_f1" in zero_sd[0]


def test_changed_count_or_missing_metric_fails():
    rerun = copy.deepcopy(COMMITTED)
    rerun["results"]["exact"]["n_test"] = 601
    rerun["results"]["exact"]["training_status"] = "truncated"
    del rerun["results"]["headline"]["test.key_frame_f1"]
    problems = check_reexecution(COMMITTED, rerun, SPREAD)
    assert len(problems) == 3 and any("missing" in p for p in problems)


def test_tolerance_table():
    rows = {r["metric"]: r for r in tolerance_table(COMMITTED, SPREAD)}
    assert rows["test.laterality_f1"]["tolerance"] == K_SD * 0.01
    assert tolerance_table(COMMITTED)[0]["tolerance"] is None


def test_without_timings_drops_timings_only():
    record = {"results": {"series": {"history": [{"epoch": 1, "seconds": 4.2}]}, "timing": {"tokens_per_s": 9}},
              "provenance": {"timing": {"wall_time_s": 3.0}, "git_sha": "abc"}}
    assert without_timings(record) == {"results": {"series": {"history": [{"epoch": 1}]}},
                                       "provenance": {"git_sha": "abc"}}


def test_a_seed_spread_counts_only_for_the_recipe_it_was_measured_with(tmp_path):
    """variance_02_cnn.json measured with other settings than the committed 02_cnn.json (the seed aside) is not
    used as a tolerance: its spread belongs to another recipe."""
    config = {"seed": 1, "cnn_epochs": 15, "cnn_lr": 0.002}
    (tmp_path / "02_cnn.json").write_text(json.dumps({"config": config, **COMMITTED}))

    def spread_run(**changes):
        record = {"config": {**config, "seed": 7, "n_seeds": 5, **changes}, "results": {"metrics": SPREAD}}
        (tmp_path / "variance_02_cnn.json").write_text(json.dumps(record))

    spread_run()
    assert spread_recipe_differences(tmp_path, "02_cnn") == [] and load_spread(tmp_path, "02_cnn") == SPREAD
    spread_run(cnn_epochs=30)
    assert spread_recipe_differences(tmp_path, "02_cnn") == ["cnn_epochs: 30, committed 15"]
    assert load_spread(tmp_path, "02_cnn") == {}
    (tmp_path / "variance_02_cnn.json").unlink()
    assert load_spread(tmp_path, "02_cnn") == {} and spread_recipe_differences(tmp_path, "02_cnn") == []
