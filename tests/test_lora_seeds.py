"""The five-draw test of stage 3 (benchmarks/lora_seeds.py): its pooled numbers follow from the per-item rows it
saved, with the same function (evaluation.pool_draws + image_effects) and the recorded seed."""
from __future__ import annotations

import importlib.util
import json

import pandas as pd
import pytest

from cag_utils.run.report import RESULTS_ROOT
from cag_utils.run.config import REPO_ROOT


def _benchmark():
    spec = importlib.util.spec_from_file_location("lora_seeds", REPO_ROOT / "benchmarks" / "lora_seeds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(300)
def test_the_pooled_differences_are_recomputed_from_the_saved_items():
    record = json.loads((RESULTS_ROOT / "lora_seeds.json").read_text(encoding="utf-8"))
    items = pd.read_csv(RESULTS_ROOT / "lora_seeds_items.csv", keep_default_na=False, dtype={"draw": str})
    bench = _benchmark()
    arms = record["results"]["arms"]
    assert set(items["arm"]) == set(arms)
    for arm, saved in arms.items():
        rows = items[items["arm"] == arm]
        draws = {name: d.drop(columns=["arm", "draw"]) for name, d in rows.groupby("draw", sort=False)}
        assert sorted(draws) == sorted(saved["draws"]) and saved["complete"] == (len(draws) == len(record["results"]["seeds"]))
        pooled = bench.pooled_effects(draws, record["config"]["seed"])
        for key, value in saved["pooled"].items():
            for bound in ("estimate", "ci_low", "ci_high"):
                assert pooled[key][bound] == pytest.approx(value[bound], abs=1e-12), (arm, key, bound)
        goal = record["results"]["goal_key"]
        assert record["results"]["goal_met"][arm] == (saved["complete"] and pooled[goal]["ci_low"] > 0)
