"""Image formation: anatomy, lesions, bolus and the ground-truth rule."""
from __future__ import annotations

import numpy as np

from cag_utils.synth import anatomy, imaging
from cag_utils.synth.reports import Lesion


def _tree(lat="LCA", lesions=(), seed=0, dominance="right"):
    rng = np.random.default_rng(seed)
    geo = anatomy.sample_geometry(np.random.default_rng(seed))
    return anatomy.build_tree(lat, dominance, tuple(lesions), rng, geometry=geo)


def test_trees_have_their_aha_segments():
    lca, rca = _tree("LCA"), _tree("RCA")
    assert {"5", "6", "7", "8", "9", "10", "11", "12", "13", "14"} <= set(lca.segment)
    assert {"1", "2", "3", "4PD", "4AV"} <= set(rca.segment)
    assert "15" in set(_tree("LCA", dominance="left").segment)
    assert "4PD" not in set(_tree("RCA", dominance="left").segment)


def test_calibres_follow_the_reference_and_taper():
    lca = _tree("LCA")
    lm = lca.radius[lca.segment == "5"].mean() * 2
    lad_distal = lca.radius[lca.segment == "8"].min() * 2
    assert 3.5 < lm < 5.5 and lad_distal < lm / 1.8


def test_stenosis_narrows_the_vessel_by_its_grade():
    ref = _tree("LCA", seed=1)
    sten = _tree("LCA", [Lesion("6", 75)], seed=1)
    seg = ref.segment == "6"
    ratio = (sten.radius[seg] / ref.radius[seg]).min()
    assert 0.2 < ratio < 0.3  # 75 % diameter stenosis at the throat


def test_occlusion_stops_filling_downstream_only():
    occ = _tree("LCA", [Lesion("7", 100)], seed=2)
    assert occ.flow[occ.segment == "8"].max() < 0.2      # distal LAD fills by collaterals only
    assert occ.flow[occ.segment == "6"].min() == 1.0      # proximal LAD still fills
    assert occ.flow[occ.segment == "13"].min() == 1.0     # LCx untouched


def test_bolus_washes_in_and_out():
    tau = np.array([-0.5, 0.0, 0.5, 1.0, 3.0])
    b = imaging.bolus(tau, duration=1.0, washout=0.5)
    assert b[0] == 0 and b[2] == 1 and b[-1] == 0


def _render(low_dose_fraction=0.0, seed=3, size=64):
    rng = np.random.default_rng(seed)
    tree = _tree("LCA", seed=seed)
    spec = imaging.sample_run_spec(rng, "LCA", imaging.LCA_VIEWS[0], 7.5, (3.0, 3.0), low_dose_fraction, 1.0)
    spec.inject_start_s = 0.6
    return spec, *imaging.render_run(tree, spec, size, 10, rng)


def test_contrast_darkens_the_vessels_and_truth_follows_filling():
    spec, frames, truth = _render()
    assert frames.dtype == np.uint16 and frames.max() < 2**10
    assert truth["key_frame_category"][0] == "others"  # before the bolus arrives
    filled = int(np.argmax(truth["fill"]))
    assert truth["fill"][filled] > 0.8
    dark = lambda f: np.percentile(f[f > 0], 1)  # noqa: E731 - darkest pixels = opacified vessels
    assert dark(frames[filled].astype(float)) < dark(frames[0].astype(float))


def test_low_dose_lowers_contrast_to_noise():
    cnr = [_render(low_dose_fraction=f, seed=4)[2]["cnr"].max() for f in (0.0, 1.0)]
    assert cnr[1] < cnr[0] / 2


def test_projection_is_a_rotation():
    r = imaging.carm_rotation(30, -20)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
