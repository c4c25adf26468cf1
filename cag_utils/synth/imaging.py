"""Image formation of one cine run: C-arm projection, bolus, motion, Beer-Lambert, noise.

Per frame: the 3D tree moves with the heart cycle, contrast concentration follows a bolus
that travels down the tree (slower past tight stenoses, absent past occlusions), each
vessel sample deposits its iodine cross-section (pi r^2 c) into the detector plane and a
Gaussian of the vessel's projected radius turns that into path length. Intensity is
I0 exp(-mu L) over a static anatomical background, with Poisson quantum noise, scatter and
Gaussian detector noise, log-displayed with a per-run window (MONOCHROME2, contrast dark).
The simulated state gives each frame's ground truth (laterality, key-frame category).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from cag_utils.synth.anatomy import HEART_CENTRE, Tree

# Standard projections (primary: + LAO / - RAO, secondary: + cranial / - caudal).
LCA_VIEWS = [(-30, -30), (0, 40), (40, 30), (45, -30), (-30, 30), (0, -30)]
RCA_VIEWS = [(50, 0), (-30, 0), (40, 20), (60, 0)]
# Key-frame rule thresholds (documented in the README data card).
FILL_OTHERS = 0.15      # below: no contrast in the tree -> "others"
FILL_BETTER = 0.80      # at or above, sharp and with enough contrast-to-noise -> "better"
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
    extra: dict = field(default_factory=dict)


def sample_run_spec(rng: np.random.Generator, laterality: str, view: tuple[float, float],
                    frame_rate: float, run_seconds: tuple[float, float], low_dose_fraction: float,
                    heart_rate_hz: float) -> RunSpec:
    low_dose = bool(rng.random() < low_dose_fraction)
    return RunSpec(
        laterality=laterality,
        primary_angle=float(view[0] + rng.normal(0, 4)),
        secondary_angle=float(view[1] + rng.normal(0, 4)),
        n_frames=int(round(rng.uniform(*run_seconds) * frame_rate)),
        frame_rate=frame_rate,
        fov_mm=float(rng.uniform(125, 165)),
        heart_rate_hz=heart_rate_hz,
        cardiac_phase=float(rng.uniform(0, 2 * np.pi)),
        inject_start_s=float(rng.uniform(0.0, 1.1)),
        inject_duration_s=float(rng.uniform(0.9, 2.4)),
        bolus_speed_mm_s=float(rng.uniform(110, 260)),
        washout_s=float(rng.uniform(0.35, 0.9)),
        mu_per_mm=float(rng.uniform(0.14, 0.24) * (rng.uniform(0.3, 0.7) if low_dose else 1.0)),
        photons_per_mm2=float(rng.uniform(2500, 9000) * (rng.uniform(0.08, 0.3) if low_dose else 1.0)),
        scatter=float(rng.uniform(0.1, 0.6)),
        pulse_ms=float(rng.choice([4.0, 6.0, 8.0, 12.0, 20.0], p=[0.25, 0.3, 0.2, 0.15, 0.1])),
        low_dose=low_dose,
        window_jitter=(float(rng.normal(0, 0.06)), float(rng.normal(0, 0.08))),
        centre_offset_mm=(float(rng.normal(0, 8)), float(rng.normal(0, 8))),
        shutter=float(rng.uniform(0.82, 1.0)),
        background_seed=int(rng.integers(2**31)),
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


def catheter_path(laterality: str, ostium: np.ndarray) -> np.ndarray:
    """Judkins-like catheter: tip in the ostium, shaft up the ascending aorta (mm, LPS)."""
    if laterality == "LCA":  # JL: primary curve and a secondary bend on the opposite wall
        rel = [(0, 0, 0), (-8, 2, 6), (-16, 0, 18), (-14, -2, 36), (-6, 0, 60), (-2, 4, 110)]
    else:  # JR: short tip turned toward the right sinus
        rel = [(0, 0, 0), (6, 4, 8), (10, 6, 22), (8, 6, 45), (4, 6, 110)]
    ctrl = ostium + np.asarray(rel, float)
    t = np.linspace(0, 1, len(ctrl))
    s = np.linspace(0, 1, 400)
    return np.stack([np.interp(s, t, ctrl[:, k]) for k in range(3)], axis=1)


def background(size: int, px_mm: float, rot: np.ndarray, centre_uv: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    """Static log-attenuation of the thorax: spine, diaphragm, ribs, heart shadow, lung texture."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u, v = xx * px_mm - centre_uv[0], yy * px_mm - centre_uv[1]   # mm, detector plane
    spine_uv = (rot @ np.array([5.0, 70.0, 0.0]))[:2]             # vertebral column, posterior
    spine = np.exp(-(((u - spine_uv[0]) / rng.uniform(16, 22)) ** 6))
    vert = 0.15 * np.cos(2 * np.pi * v / rng.uniform(26, 32) + rng.uniform(0, 6)) ** 8
    dia_level = rng.uniform(35, 95)
    diaphragm = 1 / (1 + np.exp(-(v - dia_level - 0.004 * (u - rng.normal(0, 30)) ** 2) / 3.0))
    heart = np.exp(-((u - rng.normal(0, 10)) ** 2 + (v - rng.normal(5, 10)) ** 2) / (2 * 55.0**2))
    ribs = np.zeros_like(u)
    for _ in range(int(rng.integers(3, 7))):
        y0, tilt, curve = rng.uniform(-90, 90), rng.uniform(-0.6, 0.2), rng.uniform(-0.004, 0.004)
        ribs += np.exp(-(((v - y0 - tilt * u - curve * u**2) / rng.uniform(4, 7)) ** 2))
    lung = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)).astype(np.float32), 3.0 / px_mm)
    lung /= lung.std() + 1e-6
    return (rng.uniform(0.6, 0.9) * spine * (1 + vert) + rng.uniform(0.35, 0.8) * diaphragm
            + rng.uniform(0.2, 0.45) * heart + rng.uniform(0.06, 0.14) * ribs
            + 0.05 * lung * (1 - diaphragm)).astype(np.float32)


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


def render_run(tree: Tree, spec: RunSpec, size: int, bits_stored: int,
               rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Frames (F, size, size) uint16 within bits_stored, and per-frame ground-truth state."""
    px_mm = spec.fov_mm / size
    rot = carm_rotation(spec.primary_angle, spec.secondary_angle)
    # The operator pans the table to centre the tree (plus a random offset).
    centre_uv = (tree.points @ rot.T)[:, :2].mean(axis=0) + np.array(spec.centre_offset_mm) - spec.fov_mm / 2
    bg = background(size, px_mm, rot, centre_uv, np.random.default_rng(spec.background_seed))
    cath = catheter_path(spec.laterality, tree.ostium)
    swing = rng.normal(0, 2.5, 3)
    area = np.pi * tree.radius**2
    t = np.arange(spec.n_frames) / spec.frame_rate
    phase = 2 * np.pi * spec.heart_rate_hz * t + spec.cardiac_phase
    contraction = 0.5 - 0.5 * np.cos(phase)                       # 0 diastole .. 1 systole
    speed = np.abs(0.5 * np.sin(phase)) * 2 * np.pi * spec.heart_rate_hz  # d(contraction)/dt
    reach = float(np.linalg.norm(tree.points - HEART_CENTRE, axis=1).mean())
    blur_mm = speed * (0.07 * reach + np.linalg.norm(swing)) * spec.pulse_ms / 1000
    photons_px = spec.photons_per_mm2 * px_mm**2
    yy, xx = np.mgrid[0:size, 0:size]
    open_r = spec.shutter * size / 2
    shutter = (np.abs(xx - size / 2) < open_r) & (np.abs(yy - size / 2) < open_r)
    frames = np.zeros((spec.n_frames, size, size), np.uint16)
    fill = np.zeros(spec.n_frames)
    window = None
    for k in range(spec.n_frames):
        moved = HEART_CENTRE + (tree.points - HEART_CENTRE) * (1 - 0.07 * contraction[k]) + swing * contraction[k]
        uv = (moved @ rot.T)[:, :2] - centre_uv
        tau = t[k] - spec.inject_start_s - tree.path_mm / spec.bolus_speed_mm_s - tree.delay_s
        conc = tree.flow * bolus(tau, spec.inject_duration_s, spec.washout_s)
        fill[k] = float((area * conc).sum() / (area * tree.flow).sum())
        iodine = _path_length(uv / px_mm, tree.radius, area * conc * tree.spacing / px_mm**2, size,
                              px_mm, blur_mm[k] / px_mm)
        cuv = ((cath + (moved[0] - tree.points[0])) @ rot.T)[:, :2] - centre_uv
        step = float(np.linalg.norm(np.diff(cath, axis=0), axis=1).mean())
        wire = _path_length(cuv / px_mm, np.full(len(cath), 0.9), np.full(len(cath), np.pi * 0.81 * step / px_mm**2),
                            size, px_mm, blur_mm[k] / px_mm)
        transmission = np.exp(-bg - spec.mu_per_mm * iodine - 0.35 * wire)
        expected = photons_px * (transmission + spec.scatter * float(np.exp(-bg).mean()))
        counts = rng.poisson(expected).astype(np.float32)
        if DETECTOR_BLUR_MM / px_mm > 0.3:  # scintillator light spread correlates the quantum noise
            counts = ndimage.gaussian_filter(counts, DETECTOR_BLUR_MM / px_mm)
        counts += rng.normal(0, 0.02 * photons_px ** 0.5 + 1.0, expected.shape)
        logimg = np.log(np.maximum(counts, 1.0))
        if window is None:  # per-run window from the first frame (auto exposure), then fixed
            lo, hi = np.percentile(logimg[shutter], [0.5, 99.8])
            span = (hi - lo) * (1.15 + spec.window_jitter[1])
            lo = lo - span * (0.08 + spec.window_jitter[0])
            window = (lo, span)
        disp = np.clip((logimg - window[0]) / window[1], 0, 1) * shutter
        frames[k] = np.round(disp * (2**bits_stored - 1)).astype(np.uint16)
    ref_signal = 1 - np.exp(-spec.mu_per_mm * 3.0 * fill)   # a 3 mm vessel at the current fill
    bg_tx = float(np.exp(-np.median(bg)))
    noise = np.sqrt((1 + spec.scatter) / (spec.photons_per_mm2 * bg_tx))
    cnr = ref_signal / (noise * (1 + spec.scatter))
    category = np.where(fill < FILL_OTHERS, "others",
                        np.where((fill >= FILL_BETTER) & (blur_mm < BLUR_BETTER_MM) & (cnr >= CNR_BETTER),
                                 "better", "bad"))
    truth = {"fill": fill, "blur_mm": blur_mm, "cnr": cnr, "key_frame_category": category}
    return frames, truth
