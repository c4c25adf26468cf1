"""How visible the generator's lesions are in a frame: the same frame rendered with and without a lesion.

Answers "does 128 px hide the lesions?" (issue 22) without training anything. A lesion's signal is
Delta = the noise-free frame with the lesion minus the same frame without it: same tree geometry, view,
heart phase, bolus, catheter and display window (``anatomy.build_tree`` applies lesions after every random
draw, so removing one changes nothing else). Two measures, per frame size:

- **d'** of a matched filter that knows the signal (non-prewhitening observer; Barrett & Myers,
  *Foundations of Image Science*, 2004, ch. 13): t = <Delta, x> on noisy frames x of the same exposure,
  d' = ||Delta||^2 / sd(t). It is how far the lesion stands out of the frame's own quantum and detector
  noise when its place and shape are known: an upper bound for any reader, who must also find it among
  the anatomy. d' >= DPRIME_SEEN (5, the Rose criterion) counts as visible.
- **contrast deficit**: the share of the vessel's local contrast (frame without contrast minus frame
  without the lesion) that the lesion removes at the pixel where it changes the frame most; 1 = the vessel
  vanishes there. Noise-free; it shows what pixel size alone does to the narrowing.

Frames are those of the committed cohort: ``replay_exam`` redraws an exam exactly as
``cohort._generate_exam`` does (same streams, every run rendered at the cohort's size, nothing
written), so a run's random state at its start is known and its frames are the cohort's own.

    cases = lesion_cases(replay_exam(task), rng)
    rows = measure_case(case, sizes=(512, 128), bits_stored=10, n_noise=32, rng=rng)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from cag_utils.synth import anatomy, imaging
from cag_utils.synth.cohort import ExamTask, _draw_exam, exam_catheters, exam_views
from cag_utils.synth.reports import Lesion

DPRIME_SEEN = 5.0        # Rose criterion: a known signal this far above the noise is seen reliably
CONTROL_SEGMENT = {"LCA": "6", "RCA": "1"}   # positive control: 100 % occlusion of the proximal LAD / RCA
DEFINITIONS = {
    "dprime": "matched-filter (non-prewhitening) d' = ||Delta||^2 / sd(<Delta, x>); Delta = noise-free frame with "
              "the lesion minus without it, x = noisy frames of the same exposure (stored values, read as uint8)",
    "deficit": "Delta / (frame without contrast - frame without the lesion) at the pixel of largest Delta",
    "null": "(t_0 - t_1) / (sqrt(2) sd(t)) for two noise draws of one frame, t = <Delta, x>",
}


@dataclass
class ReplayedExam:
    """An exam of the cohort as `_generate_exam` draws it: trees, and per run its spec, random state at the
    start of `render_run` and ground truth (fill, key-frame category per frame)."""

    task: ExamTask
    dominance: str
    lesions: tuple[Lesion, ...]
    female: bool
    geometry: dict
    trees: dict[str, anatomy.Tree]
    runs: list[dict[str, Any]]


def replay_exam(task: ExamTask) -> ReplayedExam:
    """Redraw one exam in `cohort._generate_exam`'s order (tests check its frames against the files)."""
    s, p = task.settings, task.patient
    draw, rng = _draw_exam(task)
    facts, female = draw.facts, p["PatientSex"] == "F"
    heart_rate = float(rng.uniform(0.95, 1.45))
    trees = {lat: anatomy.build_tree(lat, facts.dominance, facts.lesions, rng, spacing=0.25, female=female,
                                     geometry=draw.geometry) for lat in ("LCA", "RCA")}
    views = exam_views(rng)
    catheters, access = exam_catheters(rng)
    artefacts = {"ecg": bool(rng.random() < 0.3), "pacing_lead": bool(rng.random() < 0.03),
                 "sternal_wires": "prior_cabg" in facts.history}
    runs = []
    for r, (lat, view) in enumerate(views):
        spec = imaging.sample_run_spec(rng, lat, tuple(view), s["frame_rate"], tuple(s["run_seconds"]),
                                       s["low_dose_fraction"], heart_rate, catheter=catheters[lat], access=access,
                                       artefacts=artefacts)
        state = rng.bit_generator.state
        frames, truth = imaging.render_run(trees[lat], spec, s["image_size"], s["bits_stored"], rng)
        noisy = rng.random(spec.n_frames) < s["annotator_noise"]       # the annotator-noise draws of the cohort
        for _ in range(int(noisy.sum())):
            rng.choice(["better", "bad", "others"])
        runs.append({"index": r, "laterality": lat, "spec": spec, "state": state, "truth": truth, "frames": frames})
    return ReplayedExam(task, facts.dominance, facts.lesions, female, draw.geometry, trees, runs)


def tree_with(exam: ReplayedExam, laterality: str, lesions: tuple[Lesion, ...]) -> anatomy.Tree:
    """The exam's tree of `laterality` with other lesions (geometry given: no random draw depends on them)."""
    return anatomy.build_tree(laterality, exam.dominance, lesions, np.random.default_rng(0), spacing=0.25,
                              female=exam.female, geometry=exam.geometry)


def lesion_cases(exam: ReplayedExam, rng: np.random.Generator) -> list[dict[str, Any]]:
    """One frame per artery with a lesion: a run of that artery and a frame with contrast in it (category
    not "others"), drawn with `rng`. Lesions whose segment the tree lacks are skipped."""
    cases = []
    for lat in ("LCA", "RCA"):
        segments = set(exam.trees[lat].segment)
        lesions = [les for les in exam.lesions if les.segment in segments]
        runs = [run for run in exam.runs if run["laterality"] == lat]
        if not lesions or not runs:
            continue
        run = runs[int(rng.integers(len(runs)))]
        contrast = np.flatnonzero(run["truth"]["key_frame_category"] != "others")
        if len(contrast) == 0:
            continue
        cases.append({"exam": exam, "laterality": lat, "lesions": lesions, "run": run,
                      "frame": int(contrast[int(rng.integers(len(contrast)))])})
    return cases


def dprime(delta: np.ndarray, noisy: np.ndarray) -> float:
    """Matched-filter d' = ||delta||^2 / sd(<delta, x>) over noisy frames x (N, H, W); 0 for delta = 0."""
    energy = float(np.sum(np.square(delta, dtype=np.float64)))
    if energy == 0.0:
        return 0.0
    t = np.tensordot(noisy.astype(np.float64), delta.astype(np.float64), axes=2)
    return energy / float(np.std(t, ddof=1))


def null_dprime(delta: np.ndarray, noisy: np.ndarray) -> float:
    """The same statistic when no lesion differs: two noisy draws of one frame, (t_0 - t_1) / (sqrt 2 sd(t))."""
    if not np.any(delta):
        return 0.0
    t = np.tensordot(noisy.astype(np.float64), delta.astype(np.float64), axes=2)
    return float((t[0] - t[1]) / (np.sqrt(2.0) * np.std(t[2:], ddof=1)))


def contrast_deficit(delta: np.ndarray, vessel_contrast: np.ndarray) -> tuple[float, tuple[int, int]]:
    """delta / vessel contrast at delta's largest pixel (0 when the lesion changes nothing) and that pixel."""
    peak = np.unravel_index(int(np.argmax(delta)), delta.shape)
    if delta[peak] <= 0:
        return 0.0, (int(peak[0]), int(peak[1]))
    return float(delta[peak] / max(float(vessel_contrast[peak]), float(delta[peak]))), (int(peak[0]), int(peak[1]))


def _resize(frames: np.ndarray, size: int) -> np.ndarray:
    """Stage 3's resize (bilinear, antialiased: `vlm.standins.pixel_tensor`), in grey levels 0-255."""
    from cag_utils.vlm.standins import pixel_tensor

    x = pixel_tensor(np.asarray(frames, np.float32), size)[:, 0].double().numpy()
    return (x + 1.0) * 127.5


def _grey(display: np.ndarray, bits_stored: int) -> np.ndarray:
    """Displayed [0, 1] -> stored value (bits_stored) -> uint8 by the reader's fixed rule (`dicom._fixed_lut`)."""
    top = 2**bits_stored - 1
    stored = np.round(display * top)
    return np.rint(stored * 255.0 / top).astype(np.uint8)


def render_frame(trees: dict[str, anatomy.Tree], case: dict[str, Any], size: int, bits_stored: int, n_noise: int,
                 rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Noise-free frames (grey levels 0-255, float) of each tree in `trees` and `n_noise` noisy uint8 frames of
    ``trees["shown"]`` (the cohort's frame), all at `size` px with one window. The swing and the window come
    from the run's random state, as in `render_run` (at the cohort's size: the cohort's own window)."""
    run, k = case["run"], case["frame"]
    spec, shown = run["spec"], trees["shown"]
    run_rng = np.random.default_rng()
    run_rng.bit_generator.state = run["state"]
    geo = imaging.run_geometry(shown, spec, size)       # lesions do not move the tree: one geometry for all
    swing = run_rng.normal(0, 2.5, 3)
    t, contraction, blur = imaging.run_motion(shown, spec, swing)
    first, _, _ = imaging.frame_exposure(shown, spec, geo, swing, t[0], contraction[0], blur[0])
    window = imaging.run_window(imaging.detect(first, geo.px_mm, geo.photons_px, run_rng), geo.shutter, spec)
    clean, noisy = {}, None
    for name, tree in trees.items():
        expected, _, _ = imaging.frame_exposure(tree, spec, geo, swing, t[k], contraction[k], blur[k])
        clean[name] = 255.0 * imaging.display(imaging.detect(expected, geo.px_mm, geo.photons_px, None),
                                              window, geo.shutter)
        if name == "shown":
            noisy = np.stack([_grey(imaging.display(imaging.detect(expected, geo.px_mm, geo.photons_px, rng),
                                                    window, geo.shutter), bits_stored) for _ in range(n_noise)])
    return clean, noisy


def case_trees(case: dict[str, Any]) -> dict[str, anatomy.Tree]:
    """The shown tree (all lesions), one without each lesion, one without contrast, and the control pair
    (no lesion; a 100 % occlusion of the proximal segment)."""
    exam, lat = case["exam"], case["laterality"]
    shown = exam.trees[lat]
    trees = {"shown": shown, "no_contrast": dataclasses.replace(shown, flow=np.zeros_like(shown.flow))}
    for i, les in enumerate(case["lesions"]):
        trees[f"without_{i}"] = tree_with(exam, lat, tuple(x for x in exam.lesions if x != les))
    trees["control_none"] = tree_with(exam, lat, ())
    trees["control_occluded"] = tree_with(exam, lat, (Lesion(CONTROL_SEGMENT[lat], 100),))
    return trees


def signals(clean: dict[str, np.ndarray], noisy: np.ndarray, n_lesions: int) -> list[dict[str, Any]]:
    """Per lesion i, then the control: d', null d', contrast deficit, peak contrast-to-noise and peak pixel."""
    sd_px = noisy.std(axis=0, ddof=1)
    pairs = [(clean["shown"], clean[f"without_{i}"]) for i in range(n_lesions)]
    pairs.append((clean["control_occluded"], clean["control_none"]))
    out = []
    for with_, without in pairs:
        delta = with_ - without           # the lesion removes iodine: the frame gets brighter there
        deficit, peak = contrast_deficit(delta, clean["no_contrast"] - without)
        out.append({"dprime": dprime(delta, noisy), "null_dprime": null_dprime(delta, noisy), "deficit": deficit,
                    "peak_cnr": float(delta[peak] / max(float(sd_px[peak]), 1e-9)), "peak": peak})
    return out


def measure_case(case: dict[str, Any], sizes: tuple[int, int], bits_stored: int, n_noise: int,
                 rng: np.random.Generator, keep_images: bool = False) -> list[dict[str, Any]]:
    """Rows (one per lesion, then the control) with every measure at the large size, natively at the small
    size, and at the large size resized to the small one with stage 3's resize (keys ``<measure>_<mode>``)."""
    big, small = sizes
    trees = case_trees(case)
    n = len(case["lesions"])
    clean_big, noisy_big = render_frame(trees, case, big, bits_stored, n_noise, rng)
    clean_small, noisy_small = render_frame(trees, case, small, bits_stored, n_noise, rng)
    down_clean = dict(zip(clean_big, _resize(np.stack(list(clean_big.values())), small)))
    images = {str(big): (clean_big, noisy_big), str(small): (clean_small, noisy_small),
              f"{big}to{small}": (down_clean, _resize(noisy_big, small))}
    modes = {mode: signals(clean, noisy, n) for mode, (clean, noisy) in images.items()}
    exam, run = case["exam"], case["run"]
    truth = run["truth"]
    base = {"patient": exam.task.patient["PatientID"], "exam_index": exam.task.index, "laterality": case["laterality"],
            "run": run["index"], "frame": case["frame"], "category": str(truth["key_frame_category"][case["frame"]]),
            "fill": float(truth["fill"][case["frame"]])}
    rows = []
    for i in range(n + 1):
        les = case["lesions"][i] if i < n else Lesion(CONTROL_SEGMENT[case["laterality"]], 100)
        row = {**base, "kind": "lesion" if i < n else "control", "segment": les.segment, "percent": les.percent}
        for mode, values in modes.items():
            row.update({f"{key}_{mode}": v for key, v in values[i].items()})
        if keep_images:    # per size: the first noisy draw (grey levels) and the lesion's noise-free signal
            with_, without = ("shown", f"without_{i}") if i < n else ("control_occluded", "control_none")
            row["images"] = {mode: (noisy[0].astype(np.float64), clean[with_] - clean[without])
                             for mode, (clean, noisy) in images.items()}
        rows.append(row)
    return rows
