"""3D coronary centreline trees (LCA, RCA) with AHA segments, calibres and lesions.

Coordinates are patient LPS in mm (+x left, +y posterior, +z head), origin near the
aortic root. Control points follow the grooves of a canonical heart (LAD in the anterior
interventricular groove, LCx and RCA in the atrioventricular grooves, PDA in the
posterior interventricular groove); each patient gets a perturbed, rotated and scaled
copy. Calibres: Dodge et al., Circulation 1992 (see shared/reference/angiography.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.spatial.transform import Rotation

from cag_utils.synth.reports import GRADES, Lesion

# Branch -> (parent branch, fraction along parent where it starts, control points (mm),
#            proximal and distal diameter (mm), [(fraction along branch, AHA segment), ...]).
# Segment lists give the segment that starts at each fraction.
_LCA = {
    "LM": (None, 0.0, [(4, 4, 10), (10, 2, 9), (15, 0, 8)], (4.5, 4.2), [(0.0, "5")]),
    "LAD": ("LM", 1.0, [(15, 0, 8), (22, -25, -5), (32, -40, -25), (45, -45, -45), (52, -40, -62)],
            (3.7, 1.9), [(0.0, "6"), (0.3, "7"), (0.62, "8")]),
    "D1": ("LAD", 0.3, [(40, -22, -18), (55, -15, -35)], (2.4, 1.3), [(0.0, "9")]),
    "D2": ("LAD", 0.62, [(52, -33, -40), (60, -22, -52)], (2.0, 1.1), [(0.0, "10")]),
    "LCX": ("LM", 1.0, [(15, 0, 8), (30, 10, 0), (42, 25, -8), (45, 40, -18), (38, 52, -28)],
            (3.4, 2.0), [(0.0, "11"), (0.4, "13")]),
    "OM": ("LCX", 0.4, [(52, 15, -20), (58, 12, -42)], (2.3, 1.2), [(0.0, "12")]),
    "PL": ("LCX", 0.85, [(55, 40, -32), (55, 35, -50)], (1.9, 1.1), [(0.0, "14")]),
}
_LEFT_PD = ("LCX", 1.0, [(25, 50, -42), (18, 35, -60), (25, 15, -70)], (1.9, 1.1), [(0.0, "15")])
_RCA = {
    "RCA": (None, 0.0, [(-3, -10, 8), (-15, -18, 4), (-30, -14, -10), (-38, -4, -30),
                        (-30, 15, -45), (-10, 35, -50)],
            (3.9, 2.6), [(0.0, "1"), (0.22, "2"), (0.55, "3")]),
    "RV": ("RCA", 0.22, [(-12, -34, -15), (4, -42, -30)], (1.6, 0.9), []),
    "PD": ("RCA", 1.0, [(5, 30, -60), (22, 15, -70)], (2.0, 1.1), [(0.0, "4PD")]),
    "AV": ("RCA", 1.0, [(10, 45, -46), (26, 50, -40)], (1.8, 1.0), [(0.0, "4AV")]),
}
# Segments where stenoses are drawn, with relative frequency (proximal segments dominate).
LESION_SITES = {"1": 3, "2": 3, "3": 2, "4PD": 1, "5": 0.7, "6": 5, "7": 4, "8": 1, "9": 2,
                "10": 1, "11": 3, "12": 2, "13": 2, "14": 1}
HEART_CENTRE = np.array([15.0, 5.0, -30.0])


@dataclass
class Tree:
    """Sampled centreline of one coronary tree."""

    laterality: str
    points: np.ndarray      # (M, 3) mm
    radius: np.ndarray      # (M,) mm, lesions applied
    segment: np.ndarray     # (M,) AHA segment label ("" for unnumbered branches)
    path_mm: np.ndarray     # (M,) distance from the ostium along the tree
    flow: np.ndarray        # (M,) max. attainable contrast fill (reduced past occlusions)
    delay_s: np.ndarray     # (M,) extra bolus delay from slow flow past tight lesions
    spacing: float          # mm between consecutive samples
    ostium: np.ndarray      # (3,) mm


def sample_dominance(rng: np.random.Generator) -> str:
    """About 85 % right-dominant (angiography.md), the rest left or balanced."""
    return str(rng.choice(["right", "left", "balanced"], p=[0.85, 0.08, 0.07]))


def sample_lesions(rng: np.random.Generator, dominance: str) -> tuple[Lesion, ...]:
    """0-4 stenoses at distinct AHA segments with report grades (25-100 %)."""
    sites = dict(LESION_SITES)
    if dominance == "left":
        sites.pop("4PD")
        sites["15"] = 1
    n = int(rng.choice([0, 1, 2, 3, 4], p=[0.22, 0.33, 0.25, 0.13, 0.07]))
    names = list(sites)
    weights = np.array([sites[s] for s in names], float)
    chosen = rng.choice(names, size=n, replace=False, p=weights / weights.sum())
    grades = rng.choice(GRADES, size=n, p=[0.2, 0.22, 0.2, 0.2, 0.1, 0.08])
    return tuple(Lesion(str(s), int(g)) for s, g in zip(chosen, grades))


def _branches(laterality: str, dominance: str) -> dict:
    if laterality == "LCA":
        branches = dict(_LCA)
        if dominance == "left":
            branches["PD15"] = _LEFT_PD
        return branches
    branches = dict(_RCA)
    if dominance == "left":  # small RCA that ends before the crux
        del branches["PD"], branches["AV"]
    elif dominance == "balanced":
        del branches["AV"]
    return branches


def _calibre_scale(name: str, laterality: str, dominance: str) -> float:
    if laterality == "RCA" and dominance == "left":
        return 2.8 / 3.9
    if name == "LCX" and dominance == "left":
        return 4.2 / 3.4
    return 1.0


def build_tree(
    laterality: str, dominance: str, lesions: tuple[Lesion, ...], rng: np.random.Generator,
    spacing: float = 0.25, female: bool = False, geometry: dict | None = None,
) -> Tree:
    """Sample one patient's tree; `geometry` (rotation, scale, jitter seed) is shared by LCA and RCA."""
    geometry = geometry or sample_geometry(rng, female)
    jitter_rng = np.random.default_rng(geometry["jitter_seed"] + (0 if laterality == "LCA" else 1))
    branches = _branches(laterality, dominance)
    pts_all, rad_all, seg_all, path_all, names = [], [], [], [], []
    starts: dict[str, tuple[np.ndarray, float]] = {}  # branch -> (sampled points, path at start)
    for name, (parent, frac, ctrl, (d0, d1), segs) in branches.items():
        ctrl = np.asarray(ctrl, float) + jitter_rng.normal(0, 3.0, (len(ctrl), 3))
        path0 = 0.0
        if parent is not None:
            ppts, ppath = starts[parent]
            i = min(int(frac * (len(ppts) - 1)), len(ppts) - 1)
            ctrl = np.vstack([ppts[i], ctrl]) if not np.allclose(ctrl[0], ppts[i], atol=6) else ctrl
            ctrl[0] = ppts[i]
            path0 = ppath[i]
        pts = _resample(ctrl, spacing / geometry["scale"])
        t = np.linspace(0.0, 1.0, len(pts))
        scale = _calibre_scale(name, laterality, dominance) * geometry["calibre"]
        radius = 0.5 * scale * (d0 + (d1 - d0) * t)
        segment = np.full(len(pts), "", dtype=object)
        for f, s in segs:
            segment[t >= f] = s
        path = path0 + np.arange(len(pts)) * spacing / geometry["scale"]
        starts[name] = (pts, path)
        pts_all.append(pts), rad_all.append(radius), seg_all.append(segment), path_all.append(path)
        names += [name] * len(pts)
    points = np.vstack(pts_all)
    points = (points - HEART_CENTRE) @ geometry["rotation"].T * geometry["scale"] + HEART_CENTRE
    radius, segment, path = np.concatenate(rad_all), np.concatenate(seg_all), np.concatenate(path_all)
    flow, delay = np.ones(len(points)), np.zeros(len(points))
    branch = np.array(names, dtype=object)
    for lesion in lesions:
        _apply_lesion(lesion, points, radius, segment, path, branch, flow, delay)
    return Tree(laterality, points, radius, segment.astype(str), path * geometry["scale"], flow,
                delay, spacing, points[0].copy())


def sample_geometry(rng: np.random.Generator, female: bool = False) -> dict:
    """Patient-level heart orientation, size and calibre."""
    angles = rng.normal(0, [8.0, 8.0, 10.0])
    return {
        "rotation": Rotation.from_euler("xyz", angles, degrees=True).as_matrix(),
        "scale": float(rng.uniform(1.05, 1.35) * (0.95 if female else 1.0)),
        "calibre": float(rng.uniform(0.9, 1.1) * (0.91 if female else 1.0)),
        "jitter_seed": int(rng.integers(2**31)),
    }


def _resample(ctrl: np.ndarray, spacing: float) -> np.ndarray:
    """Points every `spacing` mm along a cubic spline through the control points."""
    chord = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(ctrl, axis=0), axis=1))]
    spline = CubicSpline(chord, ctrl, bc_type="natural")
    dense = spline(np.linspace(0, chord[-1], max(int(chord[-1] / spacing) * 4, 8)))
    arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))]
    s = np.arange(0.0, arc[-1], spacing)
    return np.stack([np.interp(s, arc, dense[:, k]) for k in range(3)], axis=1)


def _apply_lesion(lesion: Lesion, points, radius, segment, path, branch, flow, delay) -> None:
    """Narrow the vessel over a few mm (percent diameter stenosis) and slow flow past it."""
    idx = np.flatnonzero(segment == lesion.segment)
    if len(idx) == 0:
        return
    centre = idx[len(idx) // 2]
    dist = np.linalg.norm(points - points[centre], axis=1)
    same_path = branch == branch[centre]
    half_len = 2.0 + 0.03 * lesion.percent  # mm: tighter lesions are usually longer
    profile = np.clip(1 - (dist / half_len) ** 2, 0, 1) * same_path
    radius *= 1 - min(lesion.percent, 97) / 100 * profile
    # Downstream = later along the tree from the lesion in its branch or any child branch.
    downstream = (path > path[centre]) & ((same_path & (np.arange(len(path)) > centre)) | ~same_path)
    downstream &= _descends_from(branch, branch[centre], path, path[centre])
    if lesion.percent >= 100:
        flow[downstream] = np.minimum(flow[downstream], 0.12)  # faint collateral filling only
    elif lesion.percent >= 90:
        delay[downstream] += 0.25 if lesion.percent == 90 else 0.6


def _descends_from(branch: np.ndarray, name: str, path: np.ndarray, path0: float) -> np.ndarray:
    """Points of `name` beyond path0 and of branches whose origin lies beyond it on `name`."""
    parents = {**{k: v[0] for k, v in _LCA.items()}, **{k: v[0] for k, v in _RCA.items()},
               "PD15": "LCX"}
    mask = branch == name
    for child in set(branch):
        if child == name:
            continue
        p, ok = child, False
        while p is not None:
            if parents.get(p) == name:
                first = np.flatnonzero(branch == child)[0]
                ok = path[first] > path0 or ok
                break
            p = parents.get(p)
        if ok:
            mask |= branch == child
    return mask
