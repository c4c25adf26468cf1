"""3D coronary centreline trees (LCA, RCA) with AHA segments, calibres and lesions.

Coordinates are patient LPS in mm (+x left, +y posterior, +z head), origin near the
aortic root. Control points follow the grooves of a canonical heart (LAD in the anterior
interventricular groove, LCx and RCA in the atrioventricular grooves, PDA in the
posterior interventricular groove); each patient gets a perturbed, rotated and scaled
copy. Segments: AHA numbering (Austen et al., Circulation 1975, doi:10.1161/01.CIR.51.4.5).
Calibres: Dodge et al., "Lumen diameter of normal human coronary arteries", Circulation 1992;86:232-246,
doi:10.1161/01.CIR.86.1.232 (left main 4.5 mm, proximal LAD 3.7, distal LAD 1.9; proximal LCx 3.4, or
4.2 if left-dominant; proximal RCA 3.9, or 2.8 if left-dominant; women about 9 % smaller).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.interpolate import CubicSpline
from scipy.spatial.transform import Rotation

from cag_utils.synth.reports import GRADES, Lesion

# Branch -> (parent branch, fraction along parent where it starts, control points (mm),
#            proximal and distal diameter (mm), [(fraction along branch, AHA segment), ...]).
# Segment lists give the segment that starts at each fraction.
_LCA = {
    "LM": (None, 0.0, [(4, 4, 10), (7.5, 2.5, 9.3), (11, 1, 8.5)], (4.5, 4.5), [(0.0, "5")]),   # 8 mm (x scale)
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
# Unnumbered side branches: (name, parent, count range, fraction range along the parent,
# diameter range mm, length range mm, direction in the canonical heart (None: any), probability).
_FAMILIES = {
    "LCA": [
        ("SEP", "LAD", (3, 6), (0.06, 0.7), (0.8, 1.5), (12, 30), (-0.4, 0.8, -0.3), 1.0),   # septal perforators
        ("DG", "LAD", (1, 2), (0.72, 0.9), (1.1, 1.7), (15, 30), (0.8, 0.3, -0.5), 0.8),    # further diagonals
        ("AP", "LAD", (1, 3), (0.82, 0.98), (0.6, 1.0), (8, 16), (0.2, 0.2, -0.9), 1.0),    # apical twigs
        ("OM", "LCX", (1, 2), (0.5, 0.82), (1.3, 2.0), (18, 35), (0.3, -0.1, -0.95), 1.0),  # further marginals
        ("AT", "LCX", (1, 1), (0.05, 0.3), (0.8, 1.2), (10, 22), (0.0, 0.6, 0.8), 0.6),     # atrial / sinus node
        ("T", "D1", (1, 3), (0.3, 0.9), (0.6, 1.0), (6, 14), None, 1.0),
        ("T", "D2", (1, 2), (0.3, 0.9), (0.6, 0.9), (6, 12), None, 1.0),
        ("T", "OM", (1, 3), (0.3, 0.9), (0.6, 1.0), (6, 14), None, 1.0),
        ("T", "PL", (1, 2), (0.3, 0.9), (0.6, 0.9), (6, 12), None, 1.0),
        ("SEP", "PD15", (1, 3), (0.2, 0.85), (0.6, 0.9), (8, 16), (0.0, -0.7, 0.7), 1.0),
    ],
    "RCA": [
        ("CB", "RCA", (1, 1), (0.01, 0.06), (1.0, 1.6), (18, 32), (0.7, -0.7, 0.2), 0.9),    # conus branch
        ("SN", "RCA", (1, 1), (0.02, 0.1), (0.9, 1.3), (18, 30), (-0.3, 0.5, 0.8), 0.6),     # sinus-node branch
        ("AM", "RCA", (2, 4), (0.3, 0.8), (1.0, 1.7), (18, 40), (0.6, -0.5, -0.6), 1.0),    # acute marginals
        ("T", "RCA", (1, 3), (0.05, 0.95), (0.5, 0.8), (5, 12), None, 1.0),                 # atrial twigs
        ("T", "RV", (1, 2), (0.3, 0.9), (0.5, 0.8), (6, 12), None, 1.0),
        ("SEP", "PD", (2, 4), (0.2, 0.85), (0.6, 0.9), (8, 16), (0.0, -0.7, 0.7), 1.0),     # inferior septals
        ("PL", "AV", (1, 2), (0.3, 0.9), (0.8, 1.2), (10, 22), (0.3, 0.3, -0.9), 1.0),     # posterolaterals
    ],
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
    branch: np.ndarray | None = None  # (M,) branch name ("LAD", "LAD.SEP2", ...)


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


def _side_branches(laterality: str, names: set[str], rng: np.random.Generator) -> dict[str, list[tuple]]:
    """Unnumbered side branches per parent: (name, fraction, diameter mm, length mm, direction)."""
    out: dict[str, list[tuple]] = {}
    for prefix, parent, (lo, hi), (f0, f1), (d0, d1), (l0, l1), direction, p in _FAMILIES[laterality]:
        if parent not in names or rng.random() >= p:
            continue
        n = int(rng.integers(lo, hi + 1))
        fracs = np.sort(rng.uniform(f0, f1, n))
        for k, f in enumerate(fracs):
            out.setdefault(parent, []).append(
                (f"{parent}.{prefix}{k + 1}", float(f), float(rng.uniform(d0, d1)), float(rng.uniform(l0, l1)),
                 None if direction is None else np.asarray(direction, float)))
    return out


def _murray_radius(t: np.ndarray, r0: float, r1: float, daughters: list[tuple[float, float]]) -> tuple[np.ndarray, float]:
    """Radius along a branch (t = 0..1) that loses each daughter's r^3 at its origin (Murray's law).

    What the drawn daughters do not take of r0^3 - r1^3 goes to sub-visible branches spread
    evenly along the branch (a smooth taper). Returns the profile and the factor by which the
    daughters had to shrink when they asked for more than the budget (1 = none).
    """
    budget = max(r0**3 - r1**3, 0.0)
    asked = sum(r**3 for _, r in daughters)
    shrink = min(1.0, (budget / asked) ** (1 / 3)) if asked > 0 else 1.0
    rest = budget - asked * shrink**3
    cube = r0**3 - rest * t
    for f, r in daughters:
        cube = cube - (r * shrink) ** 3 * np.clip((t - f) / 0.03 + 0.5, 0, 1)  # a short (3 %) step
    return np.cbrt(np.maximum(cube, r1**3 * 0.5)), shrink


def _tortuous(pts: np.ndarray, amplitude: float, wavelength: float, spacing: float,
              rng: np.random.Generator) -> np.ndarray:
    """Band-limited random displacement (mm) perpendicular to the centreline, zero at the origin."""
    if len(pts) < 8 or amplitude <= 0:
        return pts
    noise = ndimage.gaussian_filter1d(rng.normal(0, 1, (len(pts), 3)), wavelength / 4 / spacing, axis=0, mode="reflect")
    noise /= noise.std(axis=0).mean() + 1e-9
    tangent = np.gradient(pts, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-9
    noise -= (noise * tangent).sum(axis=1, keepdims=True) * tangent
    ramp = np.clip(np.arange(len(pts)) * spacing / 6.0, 0, 1)[:, None]   # attached at the take-off
    return pts + amplitude * ramp * noise


def _side_ctrl(p0: np.ndarray, tangent: np.ndarray, length: float, direction: np.ndarray | None,
               rng: np.random.Generator) -> np.ndarray:
    """Control points of a side branch leaving the parent at p0 (mm, canonical heart)."""
    if direction is None:  # twig: any direction off the parent's axis, leaning distally
        direction = rng.normal(0, 1, 3)
        direction -= direction.dot(tangent) * tangent
    direction = direction / np.linalg.norm(direction)
    d_start = 0.45 * tangent + direction + rng.normal(0, 0.25, 3)
    d_start /= np.linalg.norm(d_start)
    d_end = direction + 0.3 * tangent + rng.normal(0, 0.3, 3)
    d_end /= np.linalg.norm(d_end)
    p1 = p0 + 0.35 * length * d_start
    p2 = p1 + 0.35 * length * (d_start + d_end) / np.linalg.norm(d_start + d_end)
    return np.vstack([p0, p1, p2, p2 + 0.3 * length * d_end])


def build_tree(
    laterality: str, dominance: str, lesions: tuple[Lesion, ...], rng: np.random.Generator,
    spacing: float = 0.25, female: bool = False, geometry: dict | None = None, side_branches: bool = True,
) -> Tree:
    """Sample one patient's tree; `geometry` (rotation, scale, jitter seed) is shared by LCA and RCA.

    Numbered branches follow the grooves (table above); unnumbered side branches (septal
    perforators, further diagonals and marginals, conus and sinus-node branches, acute
    marginals, twigs) are drawn per patient and take their calibre from the parent by
    Murray's law; every centreline gets a band-limited tortuosity.
    """
    geometry = geometry or sample_geometry(rng, female)
    jitter_rng = np.random.default_rng(geometry["jitter_seed"] + (0 if laterality == "LCA" else 1))
    side_rng = np.random.default_rng(geometry["jitter_seed"] + (2 if laterality == "LCA" else 3))
    tort = geometry.get("tortuosity", 0.0)
    branches = _branches(laterality, dominance)
    sides = _side_branches(laterality, set(branches), side_rng) if side_branches else {}
    step = spacing / geometry["scale"]
    # Proximal/distal radius of each numbered branch; terminal bifurcations obey Murray's law.
    radii = {n: 0.5 * _calibre_scale(n, laterality, dominance) * geometry["calibre"] * np.array(b[3], float)
             for n, b in branches.items()}
    for name in branches:
        ends = [c for c, b in branches.items() if b[0] == name and b[1] >= 1.0]
        if len(ends) >= 2:
            f = (radii[name][1] ** 3 / sum(radii[c][0] ** 3 for c in ends)) ** (1 / 3)
            for c in ends:
                radii[c] = radii[c] * f
    pts_all, rad_all, seg_all, path_all, names = [], [], [], [], []
    parents: dict[str, str | None] = {}
    starts: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # branch -> (sampled points, path)

    def add(name, parent, pts, radius, segment, path0):
        path = path0 + np.arange(len(pts)) * step
        starts[name], parents[name] = (pts, path), parent
        pts_all.append(pts), rad_all.append(radius), seg_all.append(segment), path_all.append(path)
        names.extend([name] * len(pts))

    for name, (parent, frac, ctrl, _, segs) in branches.items():
        ctrl = np.asarray(ctrl, float) + jitter_rng.normal(0, 1.0 if name == "LM" else 3.0, (len(ctrl), 3))
        path0 = 0.0
        if parent is not None:
            ppts, ppath = starts[parent]
            i = min(int(frac * (len(ppts) - 1)), len(ppts) - 1)
            ctrl = np.vstack([ppts[i], ctrl]) if not np.allclose(ctrl[0], ppts[i], atol=6) else ctrl
            ctrl[0] = ppts[i]
            path0 = ppath[i]
        pts = _tortuous(_resample(ctrl, step), tort * side_rng.uniform(0.6, 1.3), 10.0, step, side_rng)
        t = np.linspace(0.0, 1.0, len(pts))
        kids = [(b[1], radii[c][0]) for c, b in branches.items() if b[0] == name and b[1] < 1.0]
        kids += [(f, d / 2) for _, f, d, _, _ in sides.get(name, [])]
        radius, _ = _murray_radius(t, *radii[name], kids)
        segment = np.full(len(pts), "", dtype=object)
        for f, s in segs:
            segment[t >= f] = s
        add(name, parent, pts, radius, segment, path0)
        shrink = _murray_radius(t, *radii[name], kids)[1]
        for sname, f, d, length, direction in sides.get(name, []):
            i = min(int(f * (len(pts) - 1)), len(pts) - 2)
            tangent = pts[min(i + 4, len(pts) - 1)] - pts[max(i - 4, 0)]
            tangent /= np.linalg.norm(tangent) + 1e-9
            spts = _resample(_side_ctrl(pts[i], tangent, length, direction, side_rng), step)
            spts = _tortuous(spts, tort * side_rng.uniform(0.5, 1.0), 6.0, step, side_rng)
            r0 = d / 2 * shrink
            srad = r0 * np.linspace(1.0, 0.55, len(spts))
            add(sname, name, spts, srad, np.full(len(spts), "", dtype=object), starts[name][1][i])
    points = np.vstack(pts_all)
    points = (points - HEART_CENTRE) @ geometry["rotation"].T * geometry["scale"] + HEART_CENTRE
    radius, segment, path = np.concatenate(rad_all), np.concatenate(seg_all), np.concatenate(path_all)
    flow, delay = np.ones(len(points)), np.zeros(len(points))
    branch = np.array(names, dtype=object)
    for lesion in lesions:
        _apply_lesion(lesion, points, radius, segment, path, branch, flow, delay, parents)
    return Tree(laterality, points, radius, segment.astype(str), path * geometry["scale"], flow,
                delay, spacing, points[0].copy(), branch.astype(str))


def sample_geometry(rng: np.random.Generator, female: bool = False) -> dict:
    """Patient-level heart orientation, size and calibre."""
    angles = rng.normal(0, [8.0, 8.0, 10.0])
    return {
        "rotation": Rotation.from_euler("xyz", angles, degrees=True).as_matrix(),
        "scale": float(rng.uniform(1.05, 1.35) * (0.95 if female else 1.0)),
        "calibre": float(rng.uniform(0.9, 1.1) * (0.91 if female else 1.0)),
        "jitter_seed": int(rng.integers(2**31)),
        # RMS off-axis wiggle (mm); women more tortuous (Chiha et al. 2016)
        "tortuosity": float(np.clip(rng.lognormal(np.log(0.45 if female else 0.32), 0.4), 0.1, 1.0)),
    }


def _resample(ctrl: np.ndarray, spacing: float) -> np.ndarray:
    """Points every `spacing` mm along a cubic spline through the control points."""
    chord = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(ctrl, axis=0), axis=1))]
    spline = CubicSpline(chord, ctrl, bc_type="natural")
    dense = spline(np.linspace(0, chord[-1], max(int(chord[-1] / spacing) * 4, 8)))
    arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))]
    s = np.arange(0.0, arc[-1], spacing)
    return np.stack([np.interp(s, arc, dense[:, k]) for k in range(3)], axis=1)


def _apply_lesion(lesion: Lesion, points, radius, segment, path, branch, flow, delay, parents) -> None:
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
    downstream &= _descends_from(branch, branch[centre], path, path[centre], parents)
    if lesion.percent >= 100:
        flow[downstream] = np.minimum(flow[downstream], 0.12)  # faint collateral filling only
    elif lesion.percent >= 90:
        delay[downstream] += 0.25 if lesion.percent == 90 else 0.6


def _descends_from(branch: np.ndarray, name: str, path: np.ndarray, path0: float,
                   parents: dict[str, str | None]) -> np.ndarray:
    """Points of `name` beyond path0 and of branches whose line of descent leaves `name` beyond it."""
    mask = branch == name
    for child in parents:
        c = child
        while c is not None and parents.get(c) != name:
            c = parents.get(c)
        if c is None or child == name:
            continue
        first = np.flatnonzero(branch == c)
        if len(first) and path[first[0]] > path0:
            mask |= branch == child
    return mask
