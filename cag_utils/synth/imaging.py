"""Image formation of one cine run: C-arm projection, bolus, motion, Beer-Lambert, noise.

Per frame: the 3D tree moves with the heart cycle, contrast concentration follows a bolus
that travels down the tree (slower past tight stenoses, absent past occlusions), each
vessel sample deposits its iodine cross-section (pi r^2 c) into the detector plane and a
Gaussian of the vessel's projected radius turns that into path length. Intensity is
I0 exp(-mu L) over a static anatomical background, with Poisson quantum noise, scatter and
Gaussian detector noise, log-displayed with a per-run window (MONOCHROME2, contrast dark).
The background is a projected thorax (lungs with vascular markings, heart, spine, ribs,
diaphragm; optional ECG leads, sternal wires, pacing lead); the catheter (Judkins, Amplatz
or a radial universal shape) is engaged in the ostium of the run's artery and its lumen
holds contrast. The simulated state gives each frame's ground truth (laterality, key-frame
category) and, on request, the vessel mask.

`render_run` is built from steps that `cag_utils.synth.visibility` calls one by one: the run's fixed
geometry (`run_geometry`), heart motion (`run_motion`), one frame's noise-free exposure
(`frame_exposure`), the detector's noise (`detect`; rng=None gives the noise-free signal) and the display
window (`run_window`, `display`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from cag_utils.synth.anatomy import HEART_CENTRE, Tree, _resample

# Standard projections (primary: + LAO / - RAO, secondary: + cranial / - caudal) and how often
# each is used. They overlap as in practice: RCA runs also use cranial views (LAO/AP/RAO
# cranial, about a quarter of RCA runs in a public set) and LCA runs also straight RAO/LAO.
LCA_VIEWS = [(-30, -30), (0, 40), (40, 30), (45, -30), (-30, 30), (0, -30), (-30, 0), (50, 0)]
LCA_VIEW_WEIGHTS = [0.2, 0.15, 0.18, 0.14, 0.12, 0.09, 0.07, 0.05]
RCA_VIEWS = [(45, 0), (-30, 0), (20, 20), (0, 25), (-20, 20), (60, 0)]
RCA_VIEW_WEIGHTS = [0.34, 0.32, 0.14, 0.07, 0.05, 0.08]
# Catheters (tip shape) by laterality and access; the radial universal shapes (Tiger, Ikari)
# engage both ostia. Values: probabilities within an exam's choice.
CATHETERS_FEMORAL = {"LCA": {"JL3.5": 0.25, "JL4": 0.45, "JL5": 0.1, "AL1": 0.1, "AL2": 0.1},
                     "RCA": {"JR4": 0.75, "AR1": 0.15, "AL1": 0.1}}
RADIAL_SHARE, UNIVERSAL_SHARE = 0.7, 0.5   # radial access (J-PCI: 74 %); universal catheter among radial exams
# Key-frame rule thresholds (documented in the data card, docs/real-data.md).
FILL_OTHERS = 0.15      # below: no contrast in the tree -> "others"
COVER_BETTER = 0.90     # share of the tree's length opacified (>= half its attainable fill) for "better"
BLUR_BETTER_MM = 0.45   # motion blur (mm) above which a filled frame is "bad"
CNR_BETTER = 4.0        # contrast-to-noise of a 3 mm vessel (per mm^2) below which it is "bad"
DETECTOR_BLUR_MM = 0.2  # flat-panel point spread (sigma)
_RADIUS_BINS_MM = np.array([0.15, 0.45, 0.8, 1.15, 1.55, 2.1])


@dataclass
class RunSpec:
    """Acquisition and physiology of one run (all drawn per run)."""

    laterality: str
    primary_angle: float
    secondary_angle: float
    n_frames: int
    frame_rate: float
    fov_mm: float
    heart_rate_hz: float
    cardiac_phase: float
    inject_start_s: float
    inject_duration_s: float
    bolus_speed_mm_s: float
    washout_s: float
    mu_per_mm: float          # iodine attenuation of fully opacified blood
    photons_per_mm2: float    # detector entrance photons (dose)
    scatter: float            # scatter-to-primary ratio (lowers contrast)
    pulse_ms: float           # exposure pulse width (sets motion blur)
    low_dose: bool
    window_jitter: tuple[float, float]
    centre_offset_mm: tuple[float, float]
    shutter: float            # fraction of the half-width kept open by the collimator
    background_seed: int
    catheter: str = ""        # tip shape (JL4, JR4, AL1, TIG, ...); "" = Judkins of the laterality
    access: str = "femoral"   # femoral | radial (route of the shaft above the aortic root)
    artefacts: dict = field(default_factory=dict)   # ecg, sternal_wires, pacing_lead (bools)
    extra: dict = field(default_factory=dict)


def sample_run_spec(rng: np.random.Generator, laterality: str, view: tuple[float, float],
                    frame_rate: float, run_seconds: tuple[float, float], low_dose_fraction: float,
                    heart_rate_hz: float, catheter: str = "", access: str = "femoral",
                    artefacts: dict | None = None) -> RunSpec:
    """Draw one run. Injection timing (pre-contrast delay, bolus duration, run length) is drawn
    independently, so that a frame's position in its run is a weak cue to its filling."""
    low_dose = bool(rng.random() < low_dose_fraction)
    return RunSpec(
        laterality=laterality,
        primary_angle=float(view[0] + rng.normal(0, 5)),
        secondary_angle=float(view[1] + rng.normal(0, 5)),
        n_frames=int(round(rng.uniform(*run_seconds) * frame_rate)),
        frame_rate=frame_rate,
        fov_mm=float(rng.uniform(125, 165)),
        heart_rate_hz=heart_rate_hz,
        cardiac_phase=float(rng.uniform(0, 2 * np.pi)),
        inject_start_s=float(rng.uniform(-0.6, 2.0)),   # < 0: cine started after the injection
        inject_duration_s=float(rng.uniform(0.8, 3.4)),
        # front speed: LAD about 130 mm in 1.2 s, RCA in 0.7 s (TIMI frame counts, Gibson 1996)
        bolus_speed_mm_s=float(rng.uniform(85, 150) if laterality == "LCA" else rng.uniform(160, 260)),
        washout_s=float(rng.uniform(0.35, 1.2)),
        mu_per_mm=float(rng.uniform(0.14, 0.24) * (rng.uniform(0.3, 0.7) if low_dose else 1.0)),
        photons_per_mm2=float(rng.uniform(2500, 9000) * (rng.uniform(0.08, 0.3) if low_dose else 1.0)),
        scatter=float(rng.uniform(0.1, 0.6)),
        pulse_ms=float(rng.choice([4.0, 6.0, 8.0, 12.0, 20.0], p=[0.25, 0.3, 0.2, 0.15, 0.1])),
        low_dose=low_dose,
        window_jitter=(float(rng.normal(0, 0.06)), float(rng.normal(0, 0.08))),
        centre_offset_mm=(float(rng.normal(0, 8)), float(rng.normal(0, 8))),
        shutter=float(rng.uniform(0.82, 1.0)),
        background_seed=int(rng.integers(2**31)),
        catheter=catheter, access=access, artefacts=dict(artefacts or {}),
    )


def carm_rotation(primary: float, secondary: float) -> np.ndarray:
    """Patient LPS -> detector frame (u right, v down on the monitor, w toward the source)."""
    to_ap = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], float)  # AP: u = left, v = feet
    return to_ap @ Rotation.from_euler("xz", [secondary, -primary], degrees=True).as_matrix()


def bolus(tau: np.ndarray, duration: float, washout: float, rise: float = 0.22) -> np.ndarray:
    """Opacification (0-1) at time tau after the contrast front reaches a point."""
    up = np.clip(tau / rise, 0, 1)
    down = np.clip((tau - duration) / washout, 0, 1)
    return (up * up * (3 - 2 * up)) * (1 - down * down * (3 - 2 * down))


# Tip curves (mm from the ostium, patient LPS: +x left, +y posterior, +z head) up to the
# aortic axis; the shaft then runs up the ascending aorta. JL: tip into the left ostium, the
# secondary curve on the opposite wall (its reach grows with the size, 3.5/4/5 cm); JR:
# short hook turned to the right sinus; Amplatz: hook with its curve down in the sinus;
# TIG (Tiger/Ikari, radial): one shape turned toward either ostium.
_TIPS = {
    ("LCA", "JL"): [(0, 0, 0), (-6, -1, 5), (-1.0, -0.35, -0.05), (-0.75, -0.2, 0.6)],
    ("LCA", "AL"): [(0, 0, 0), (-4, -2, -5), (-0.45, -0.15, -0.3), (-0.65, -0.2, 0.15), (-0.45, -0.1, 0.7)],
    ("LCA", "TIG"): [(0, 0, 0), (-6, -2, 6), (-0.5, -0.15, 0.2), (-0.35, -0.1, 0.7)],
    ("RCA", "JR"): [(0, 0, 0), (5, 3, 6), (0.3, 0.2, 0.5), (0.2, 0.2, 0.9)],
    ("RCA", "AR"): [(0, 0, 0), (4, 4, -4), (0.3, 0.25, -0.15), (0.4, 0.3, 0.3), (0.25, 0.2, 0.8)],
    ("RCA", "AL"): [(0, 0, 0), (5, 4, -5), (0.45, 0.3, -0.25), (0.55, 0.35, 0.2), (0.35, 0.2, 0.75)],
    ("RCA", "TIG"): [(0, 0, 0), (5, 4, 6), (0.4, 0.3, 0.15), (0.3, 0.25, 0.7)],
}
# Aortic-root centre relative to each ostium (mm): the left ostium is posterior-left on the
# root, the right one anterior-right.
_ROOT_FROM_OSTIUM = {"LCA": np.array([-8.0, -5.0, -2.0]), "RCA": np.array([3.0, 11.0, -1.0])}


def catheter_path(laterality: str, ostium: np.ndarray, kind: str = "", access: str = "femoral",
                  jitter: np.ndarray | None = None) -> np.ndarray:
    """Catheter centreline (mm, LPS): tip engaged in the ostium of `laterality`, tip curve of
    `kind`, shaft up the ascending aorta, then over the arch (femoral) or out to the right
    subclavian artery (radial)."""
    kind = kind or ("JL4" if laterality == "LCA" else "JR4")
    family = "TIG" if kind.startswith("TIG") else kind.rstrip("0123456789.")
    size = float(kind[len(family):] or 4.0) if family in ("JL", "AL", "AR") else 4.0
    reach = 10.0 * size * (0.5 if family in ("AL", "AR") else 1.0) + (0.0 if family == "JL" else 8.0)
    root = ostium + _ROOT_FROM_OSTIUM[laterality] + (np.zeros(3) if jitter is None else jitter)
    tip = np.asarray(_TIPS[(laterality, family)], float)
    ctrl = [ostium + tip[0], ostium + tip[1]] + [ostium + reach * r for r in tip[2:]]
    up = [root + (-6, -4, 45), root + (-9, -6, 70)]
    if access == "radial":
        up += [root + (-22, -6, 95), root + (-45, -4, 120), root + (-80, 0, 140)]
    else:
        up += [root + (2, 12, 92), root + (20, 35, 86), root + (26, 46, 40), root + (27, 50, -40),
               root + (27, 52, -160)]
    return _resample(np.vstack(ctrl + up), 0.5)


def _ellipsoid_thickness(u, v, rot, centre_uv, centre, radii) -> np.ndarray:
    """Projected chord length (mm) through an axis-aligned ellipsoid (patient LPS) at detector (u, v)."""
    a = rot @ np.diag(1.0 / np.asarray(radii, float) ** 2) @ rot.T       # quadric in detector axes
    c = (rot @ np.asarray(centre, float))[:2] - centre_uv
    du, dv = u - c[0], v - c[1]
    schur = a[:2, :2] - np.outer(a[:2, 2], a[2, :2]) / a[2, 2]
    q = schur[0, 0] * du * du + 2 * schur[0, 1] * du * dv + schur[1, 1] * dv * dv
    return 2 * np.sqrt(np.clip(1 - q, 0, None) / a[2, 2])


def _project(points: np.ndarray, rot: np.ndarray, centre_uv: np.ndarray, px_mm: float) -> np.ndarray:
    return ((points @ rot.T)[:, :2] - centre_uv) / px_mm


def _wire(points: np.ndarray, radius_mm: float, weight: float, size: int, px_mm: float, rot, centre_uv):
    """Log-attenuation of a thin dense wire along a 3D polyline."""
    pts = _resample(np.asarray(points, float), 0.5)
    w = np.full(len(pts), weight * 0.5 / px_mm)
    return _path_length(_project(pts, rot, centre_uv, px_mm), np.full(len(pts), radius_mm), w, size, px_mm, 0.0)


def background(size: int, px_mm: float, rot: np.ndarray, centre_uv: np.ndarray,
               rng: np.random.Generator, artefacts: dict | None = None) -> np.ndarray:
    """Static log-attenuation of the thorax, projected for this view.

    Lung fields (air: bright) with fine vascular markings, heart silhouette, liver under the
    diaphragm dome, vertebral bodies with end plates, posterior and anterior ribs with
    cortical edges; `artefacts` adds ECG electrodes and leads, sternal wires and a pacing lead.
    """
    artefacts = artefacts or {}
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u, v = xx * px_mm + centre_uv[0], yy * px_mm + centre_uv[1]        # mm, detector plane
    cu, cv = centre_uv
    world = lambda p: (rot @ np.asarray(p, float))[:2]                   # noqa: E731
    # Soft tissue + heart + lungs (chord lengths through ellipsoids, mm).
    heart = ndimage.gaussian_filter(_ellipsoid_thickness(u, v, rot, np.zeros(2), HEART_CENTRE + rng.normal(0, 5, 3),
                                 rng.uniform(48, 60, 3)), 4.0 / px_mm)
    lungs = sum(_ellipsoid_thickness(u, v, rot, np.zeros(2), c, r) for c, r in (
        ((-80 + rng.normal(0, 6), 25, 30), (58, 75, 120)), ((100 + rng.normal(0, 6), 25, 30), (55, 75, 120))))
    lungs = np.clip(lungs - 0.9 * heart, 0, None)
    # Fine vascular markings: thin streaks fanning out from the two hila, only in aerated lung
    # (zero crossings of noise that varies fast with the angle around the hilum, slowly with radius).
    markings = np.zeros_like(u)
    for hx in (-45.0, 55.0):
        h = world((hx + rng.normal(0, 5), 10.0, rng.uniform(10, 30)))
        r = np.hypot(u - h[0], v - h[1])
        theta = np.arctan2(v - h[1], u - h[0]) + 0.08 * np.sin(r / rng.uniform(12, 20) + rng.uniform(0, 6))
        wave = sum(rng.normal(0, 1) * np.sin(m * theta + rng.uniform(0, 6) + 0.01 * m * r * rng.normal(0, 0.3))
                   for m in rng.integers(20, 90, 6))
        markings += np.exp(-(wave / 0.35) ** 2) * np.exp(-r / 140.0) * np.clip(r / 25.0, 0, 1)
    markings *= np.clip(lungs / 120.0, 0, 1)
    # Vertebral column (posterior, behind the heart) with bodies and end plates.
    sp = world((5.0, 70.0, 0.0))
    axis = world((0.0, 0.0, 1.0))
    axis = axis / (np.linalg.norm(axis) + 1e-6)
    along = (u - sp[0]) * axis[0] + (v - sp[1]) * axis[1]
    across = (u - sp[0]) * axis[1] - (v - sp[1]) * axis[0]
    half = rng.uniform(18, 24)
    period, phase = rng.uniform(28, 33), rng.uniform(0, 30)
    disc = np.abs(((along + phase) % period) - period / 2) / (period / 2)   # 1 mid-body .. 0 disc
    spine = np.exp(-((across / half) ** 4)) * (0.8 + 0.2 * np.clip(disc * 4, 0, 1))
    spine += 0.2 * np.exp(-((np.abs(across) - half * 0.8) / 3.0) ** 2) * (disc > 0.2)  # pedicles / cortex
    # Diaphragm dome (liver below).
    dome = world((rng.normal(-20, 15), 0.0, rng.uniform(-95, -60)))
    dia = 1 / (1 + np.exp(-((v - dome[1]) - 0.006 * (u - dome[0]) ** 2) / 2.5))
    # Ribs: posterior (near horizontal, curving down laterally) and anterior (sloping), each a
    # band with brighter cortical edges.
    ribs = np.zeros_like(u)
    top = cv - 20
    for k in range(int(rng.integers(7, 11))):
        for anterior in (False, True):
            y0 = top + k * rng.uniform(24, 30) + (12 if anterior else 0) + rng.normal(0, 3)
            tilt = rng.uniform(0.15, 0.45) * (-1 if anterior else 1) * np.sign(rng.normal() + 0.3)
            bend = rng.uniform(0.001, 0.003) * (1 if not anterior else -0.5)
            d = v - y0 - tilt * (u - cu) - bend * (u - sp[0]) ** 2
            w = rng.uniform(5, 8) if not anterior else rng.uniform(7, 11)
            band = np.clip(1 - (d / w) ** 2, 0, 1)
            edge = np.exp(-((np.abs(d) - w * 0.85) / 1.2) ** 2)
            ribs += (0.35 if anterior else 1.0) * (0.6 * band ** 0.3 + 0.6 * edge)
    ribs *= 1 - 0.7 * dia
    bg = (0.55 + 0.0045 * heart + rng.uniform(0.3, 0.5) * spine + rng.uniform(0.45, 0.8) * dia
          - 0.0022 * lungs + 0.12 * markings * rng.uniform(0.7, 1.3) + rng.uniform(0.07, 0.12) * ribs)
    if artefacts.get("sternal_wires"):
        for z in np.linspace(40, -60, int(rng.integers(5, 8))) + rng.normal(0, 3, 1):
            x0 = rng.normal(3, 2)
            loop = [(x0 - 7, -95, z), (x0, -97, z + rng.normal(0, 1)), (x0 + 7, -95, z), (x0, -93, z - 1.5),
                    (x0 - 7, -95, z)]
            bg += _wire(loop, 0.5, 1.6, size, px_mm, rot, centre_uv)
    if artefacts.get("pacing_lead"):
        path = [(70, -30, 160), (20, -10, 100), (-22, 5, 60), (-35, 5, 5), (-10, -30, -40),
                (30 + rng.normal(0, 5), -45, -75)]
        bg += _wire(path, 0.9, 1.2, size, px_mm, rot, centre_uv)
        bg += _wire([path[-1], np.add(path[-1], (3, -1, -4))], 1.4, 2.0, size, px_mm, rot, centre_uv)
    if artefacts.get("ecg"):
        for _ in range(int(rng.integers(1, 4))):
            e = np.array([rng.uniform(-120, 140), -110.0, rng.uniform(-150, 60)])
            ring = [e + 5 * np.array([np.cos(a), 0, np.sin(a)]) for a in np.linspace(0, 2 * np.pi, 12)]
            bg += _wire(ring, 0.6, 0.6, size, px_mm, rot, centre_uv)          # electrode snap
            bg += _wire([e, e + (0, 0, 1.5)], 2.0, 2.0, size, px_mm, rot, centre_uv)
            lead = [e + np.r_[rng.normal(0, 30, 1), 0, 60 * t] * np.array([t, 0, 1]) for t in np.linspace(0, 3, 5)]
            bg += _wire(lead, 0.6, 0.8, size, px_mm, rot, centre_uv)
    return bg.astype(np.float32)


def vessel_mask(iodine_mm: np.ndarray, threshold_mm: float = 0.6) -> np.ndarray:
    """Pixels where the opacified lumen adds at least `threshold_mm` of contrast path (visible vessel)."""
    return iodine_mm >= threshold_mm


def _splat(uv: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """Bilinear deposit of point weights onto a size x size grid."""
    x0, y0 = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
    fx, fy = uv[:, 0] - x0, uv[:, 1] - y0
    img = np.zeros(size * size, np.float64)
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy),
                      (1, 1, fx * fy)):
        x, y = x0 + dx, y0 + dy
        ok = (x >= 0) & (x < size) & (y >= 0) & (y < size)
        img += np.bincount(y[ok] * size + x[ok], weights[ok] * w[ok], minlength=size * size)
    return img.reshape(size, size)


def _path_length(uv, radius_mm, weights, size, px_mm, blur_px) -> np.ndarray:
    """Projected path length (mm, scaled by weights) through tubes of the given radii."""
    out = np.zeros((size, size), np.float64)
    bins = np.abs(radius_mm[:, None] - _RADIUS_BINS_MM[None, :]).argmin(axis=1)
    for b in np.unique(bins):
        sel = bins == b
        layer = _splat(uv[sel], weights[sel], size)
        sigma = np.hypot(max(_RADIUS_BINS_MM[b] / px_mm / 1.6, 0.35), blur_px)
        out += ndimage.gaussian_filter(layer, sigma, truncate=3.0)
    return out


@dataclass
class RunGeometry:
    """What a run fixes before its first frame: pixel size, C-arm view, table position, thorax, catheter."""

    size: int
    px_mm: float
    rot: np.ndarray          # (3, 3) patient LPS -> detector
    centre_uv: np.ndarray    # (2,) detector-plane position (mm) of pixel (0, 0)
    bg: np.ndarray           # (size, size) log-attenuation of the thorax
    cath: np.ndarray         # (C, 3) catheter centreline (mm)
    shutter: np.ndarray      # (size, size) bool: inside the collimator
    photons_px: float        # entrance photons per pixel


def run_geometry(tree: Tree, spec: RunSpec, size: int) -> RunGeometry:
    """The run's fixed geometry at `size` px (draws only from the run's own background seed)."""
    px_mm = spec.fov_mm / size
    rot = carm_rotation(spec.primary_angle, spec.secondary_angle)
    # The operator pans the table to centre the tree (plus a random offset).
    centre_uv = (tree.points @ rot.T)[:, :2].mean(axis=0) + np.array(spec.centre_offset_mm) - spec.fov_mm / 2
    # ... and keeps the engaged catheter tip (the ostium) well inside the collimated field (inner 55 %).
    tip_uv = (tree.ostium @ rot.T)[:2] - centre_uv
    half_open = spec.shutter * spec.fov_mm / 2
    lo, hi = spec.fov_mm / 2 - 0.55 * half_open, spec.fov_mm / 2 + 0.55 * half_open
    centre_uv = centre_uv - (np.clip(tip_uv, lo, hi) - tip_uv)
    bg_rng = np.random.default_rng(spec.background_seed)
    bg = background(size, px_mm, rot, centre_uv, bg_rng, spec.artefacts)
    cath = catheter_path(spec.laterality, tree.ostium, spec.catheter, spec.access, bg_rng.normal(0, 2, 3))
    yy, xx = np.mgrid[0:size, 0:size]
    open_r = spec.shutter * size / 2
    shutter = (np.abs(xx - size / 2) < open_r) & (np.abs(yy - size / 2) < open_r)
    return RunGeometry(size, px_mm, rot, centre_uv, bg, cath, shutter, spec.photons_per_mm2 * px_mm**2)


def run_motion(tree: Tree, spec: RunSpec, swing: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame times (s), heart contraction (0 diastole .. 1 systole) and motion blur (mm) of every frame."""
    t = np.arange(spec.n_frames) / spec.frame_rate
    phase = 2 * np.pi * spec.heart_rate_hz * t + spec.cardiac_phase
    contraction = 0.5 - 0.5 * np.cos(phase)                       # 0 diastole .. 1 systole
    speed = np.abs(0.5 * np.sin(phase)) * 2 * np.pi * spec.heart_rate_hz  # d(contraction)/dt
    reach = float(np.linalg.norm(tree.points - HEART_CENTRE, axis=1).mean())
    blur_mm = speed * (0.07 * reach + np.linalg.norm(swing)) * spec.pulse_ms / 1000
    return t, contraction, blur_mm


def frame_exposure(tree: Tree, spec: RunSpec, geo: RunGeometry, swing: np.ndarray, time_s: float,
                   contraction: float, blur_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected detector counts of one frame (noise-free), its iodine path length (mm) and the contrast
    concentration along the tree (0-1 per centreline sample)."""
    px_mm = geo.px_mm
    moved = HEART_CENTRE + (tree.points - HEART_CENTRE) * (1 - 0.07 * contraction) + swing * contraction
    uv = (moved @ geo.rot.T)[:, :2] - geo.centre_uv
    tau = time_s - spec.inject_start_s - tree.path_mm / spec.bolus_speed_mm_s - tree.delay_s
    conc = tree.flow * bolus(tau, spec.inject_duration_s, spec.washout_s)
    area = np.pi * tree.radius**2
    iodine = _path_length(uv / px_mm, tree.radius, area * conc * tree.spacing / px_mm**2, geo.size,
                          px_mm, blur_mm / px_mm)
    cuv = ((geo.cath + (moved[0] - tree.points[0])) @ geo.rot.T)[:, :2] - geo.centre_uv
    step = float(np.linalg.norm(np.diff(geo.cath, axis=0), axis=1).mean())
    wire = _path_length(cuv / px_mm, np.full(len(geo.cath), 0.9), np.full(len(geo.cath), np.pi * 0.81 * step / px_mm**2),
                        geo.size, px_mm, blur_mm / px_mm)
    # Catheter: radio-opaque wall plus a contrast-filled lumen (flushed before the injection).
    transmission = np.exp(-geo.bg - spec.mu_per_mm * iodine - (0.2 + 0.44 * spec.mu_per_mm) * wire)
    expected = geo.photons_px * (transmission + spec.scatter * float(np.exp(-geo.bg).mean()))
    return expected, iodine, conc


def detect(expected: np.ndarray, px_mm: float, photons_px: float, rng: np.random.Generator | None) -> np.ndarray:
    """Log detector signal: Poisson quanta, scintillator blur, electronic noise. rng=None: the noise-free
    signal (the mean counts through the same blur, in float64)."""
    if rng is None:
        counts = np.asarray(expected, np.float64)
    else:
        counts = rng.poisson(expected).astype(np.float32)
    if DETECTOR_BLUR_MM / px_mm > 0.3:  # scintillator light spread correlates the quantum noise
        counts = ndimage.gaussian_filter(counts, DETECTOR_BLUR_MM / px_mm)
    if rng is not None:
        counts += rng.normal(0, 0.02 * photons_px ** 0.5 + 1.0, expected.shape)
    return np.log(np.maximum(counts, 1.0))


def run_window(logimg: np.ndarray, shutter: np.ndarray, spec: RunSpec) -> tuple[float, float]:
    """Display window (low end, span) of a run, set from its first frame (auto exposure), then fixed."""
    lo, hi = np.percentile(logimg[shutter], [0.5, 99.8])
    span = (hi - lo) * (1.15 + spec.window_jitter[1])
    lo = lo - span * (0.08 + spec.window_jitter[0])
    return lo, span


def display(logimg: np.ndarray, window: tuple[float, float], shutter: np.ndarray) -> np.ndarray:
    """Log signal -> displayed value in [0, 1] (MONOCHROME2, contrast dark; 0 outside the shutter)."""
    return np.clip((logimg - window[0]) / window[1], 0, 1) * shutter


def render_run(tree: Tree, spec: RunSpec, size: int, bits_stored: int,
               rng: np.random.Generator, masks: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Frames (F, size, size) uint16 within bits_stored, and per-frame ground-truth state.

    masks=True adds truth["vessel_mask"] (F, size, size) bool: the visible opacified lumen
    (`vessel_mask`) of each frame, the generator's free segmentation ground truth."""
    geo = run_geometry(tree, spec, size)
    swing = rng.normal(0, 2.5, 3)
    area = np.pi * tree.radius**2
    t, contraction, blur_mm = run_motion(tree, spec, swing)
    frames = np.zeros((spec.n_frames, size, size), np.uint16)
    fill = np.zeros(spec.n_frames)
    cover = np.zeros(spec.n_frames)
    reachable = tree.flow > 0
    mask_frames = np.zeros((spec.n_frames, size, size), bool) if masks else None
    window = None
    for k in range(spec.n_frames):
        expected, iodine, conc = frame_exposure(tree, spec, geo, swing, t[k], contraction[k], blur_mm[k])
        fill[k] = float((area * conc).sum() / (area * tree.flow).sum())
        cover[k] = float((conc[reachable] >= 0.5 * tree.flow[reachable]).mean())
        if masks:
            mask_frames[k] = vessel_mask(iodine)
        logimg = detect(expected, geo.px_mm, geo.photons_px, rng)
        if window is None:  # per-run window from the first frame (auto exposure), then fixed
            window = run_window(logimg, geo.shutter, spec)
        frames[k] = np.round(display(logimg, window, geo.shutter) * (2**bits_stored - 1)).astype(np.uint16)
    ref_signal = 1 - np.exp(-spec.mu_per_mm * 3.0 * fill)   # a 3 mm vessel at the current fill
    bg_tx = float(np.exp(-np.median(geo.bg)))
    noise = np.sqrt((1 + spec.scatter) / (spec.photons_per_mm2 * bg_tx))
    cnr = ref_signal / (noise * (1 + spec.scatter))
    category = np.where(fill < FILL_OTHERS, "others",
                        np.where((cover >= COVER_BETTER) & (blur_mm < BLUR_BETTER_MM) & (cnr >= CNR_BETTER),
                                 "better", "bad"))
    truth = {"fill": fill, "cover": cover, "blur_mm": blur_mm, "cnr": cnr, "key_frame_category": category}
    if masks:
        truth["vessel_mask"] = mask_frames
    return frames, truth
