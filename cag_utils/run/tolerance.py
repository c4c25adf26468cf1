"""Does a re-execution give the committed numbers? The check behind `make test`.

A results JSON carries two blocks that the check reads (``results.exact`` and
``results.headline``); a re-executed notebook passes when
- every value of ``exact`` (counts, statuses) is equal to the committed one, and
- every ``headline`` estimate lies inside the committed 95 % interval and, where the seed
  spread of that metric has been measured (``results/variance_<notebook>.json``, written
  by ``benchmarks/seed_spread.py``, with the committed run's settings but the seed), within ``K_SD`` seed standard deviations of the
  committed estimate. A metric whose seed spread is 0 must match exactly.

On the machine kind that made the committed results the re-execution is bit-identical
(``tests/test_reexecution.py`` also says whether it was); the tolerance is for platforms
whose floating-point kernels differ.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

K_SD = 3.0

__all__ = ["K_SD", "SPREAD_FREE_KEYS", "TIMING_KEYS", "check_reexecution", "load_spread", "spread_recipe_differences",
           "tolerance_table", "without_timings"]
# Keys whose values are wall-clock measurements, wherever they sit in a results file.
TIMING_KEYS = frozenset({"timing", "seconds", "wall_time_s"})


def without_timings(obj: Any) -> Any:
    """A copy of a results record without its timings (what two runs of one commit may differ in)."""
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [without_timings(v) for v in obj]
    return obj


# Config keys in which a seed-spread run may differ from the committed run it measures.
SPREAD_FREE_KEYS = frozenset({"seed", "n_seeds"})


def spread_recipe_differences(results_folder: Path, notebook: str) -> list[str]:
    """'key: spread value, committed value' for every setting in which `variance_<notebook>.json` was measured
    otherwise than the committed `<notebook>.json` (the seed aside); [] when they agree or either file is missing."""
    folder = Path(results_folder)
    spread, committed = folder / f"variance_{notebook}.json", folder / f"{notebook}.json"
    if not (spread.is_file() and committed.is_file()):
        return []
    a, b = (json.loads(p.read_text()).get("config", {}) for p in (spread, committed))
    return [f"{k}: {a.get(k)!r}, committed {b.get(k)!r}" for k in sorted((set(a) | set(b)) - SPREAD_FREE_KEYS)
            if a.get(k) != b.get(k)]


def load_spread(results_folder: Path, notebook: str) -> dict[str, dict[str, float]]:
    """Seed spread per headline metric: {} when the benchmark has not been run, or was run with another recipe
    than the committed results (`spread_recipe_differences`): a spread is a property of its recipe."""
    path = Path(results_folder) / f"variance_{notebook}.json"
    if not path.is_file() or spread_recipe_differences(results_folder, notebook):
        return {}
    return json.loads(path.read_text())["results"]["metrics"]


def _tolerance(sd: float | None) -> float | None:
    return None if sd is None else K_SD * sd


def check_reexecution(committed: dict[str, Any], rerun: dict[str, Any],
                      spread: dict[str, dict[str, float]] | None = None) -> list[str]:
    """Problems of a re-execution against the committed results file (empty list: it passes)."""
    spread = spread or {}
    c, r = committed["results"], rerun["results"]
    problems = []
    for key, value in c.get("exact", {}).items():
        if r.get("exact", {}).get(key) != value:
            problems.append(f"exact {key}: committed {value!r}, re-execution {r.get('exact', {}).get(key)!r}")
    for name, ref in c.get("headline", {}).items():
        got = r.get("headline", {}).get(name, {}).get("estimate")
        if got is None or (isinstance(got, float) and math.isnan(got)):
            problems.append(f"headline {name}: missing in the re-execution")
            continue
        low, high = ref["ci_low"], ref["ci_high"]
        if low is not None and high is not None and not (low - 1e-12 <= got <= high + 1e-12):
            problems.append(f"headline {name}: {got:.4f} outside the committed interval [{low:.4f}, {high:.4f}]")
        tol = _tolerance(spread.get(name, {}).get("sd"))
        if tol is not None and abs(got - ref["estimate"]) > tol + 1e-12:
            problems.append(f"headline {name}: {got:.4f} differs from the committed {ref['estimate']:.4f} "
                            f"by more than {K_SD:g} seed sd ({tol:.4f})")
    return problems


def tolerance_table(committed: dict[str, Any], spread: dict[str, dict[str, float]] | None = None) -> list[dict[str, Any]]:
    """One row per headline metric: committed estimate, interval, seed sd and the tolerance (docs/reexecution.md, paper)."""
    spread = spread or {}
    rows = []
    for name, ref in committed["results"].get("headline", {}).items():
        sd = spread.get(name, {}).get("sd")
        rows.append({"metric": name, "estimate": ref["estimate"], "ci_low": ref["ci_low"], "ci_high": ref["ci_high"],
                     "seed_sd": sd, "tolerance": _tolerance(sd)})
    return rows
