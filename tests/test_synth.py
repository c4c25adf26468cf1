"""Image formation: anatomy, lesions, bolus and the ground-truth rule."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

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


def test_trees_carry_side_branch_families():
    lca, rca = _tree("LCA"), _tree("RCA")
    lca_names, rca_names = set(lca.branch), set(rca.branch)
    assert len(lca_names) >= 15 and len(rca_names) >= 8
    assert any(n.startswith("LAD.SEP") for n in lca_names) and any(n.startswith("RCA.AM") for n in rca_names)
    assert set(lca.segment[np.char.find(lca.branch, ".") >= 0]) == {""}  # side branches stay unnumbered


def test_murrays_law_at_each_take_off():
    t = np.linspace(0, 1, 2001)
    r, shrink = anatomy._murray_radius(t, 1.85, 0.95, [(0.3, 1.2), (0.6, 0.5)])
    assert shrink == 1.0 and np.isclose(r[0], 1.85) and np.isclose(r[-1], 0.95)
    cube = r**3
    smooth = (1.85**3 - 0.95**3 - 1.2**3 - 0.5**3) * (t[1] - t[0])   # sub-visible branches, per step
    step = lambda f: cube[np.searchsorted(t, f - 0.03)] - cube[np.searchsorted(t, f + 0.03)]  # noqa: E731
    assert np.isclose(step(0.3), 1.2**3 + smooth * 120, rtol=0.02)     # parent^3 = continuation^3 + child^3
    assert np.isclose(step(0.6), 0.5**3 + smooth * 120, rtol=0.05)
    # daughters that ask for more than the parent has are scaled down
    assert anatomy._murray_radius(t, 1.0, 0.8, [(0.5, 0.9)])[1] < 1.0


def test_tortuosity_wiggles_the_centrelines():
    geo = anatomy.sample_geometry(np.random.default_rng(5))
    straight = anatomy.build_tree("LCA", "right", (), None, geometry={**geo, "tortuosity": 0.0})
    wiggly = anatomy.build_tree("LCA", "right", (), None, geometry={**geo, "tortuosity": 1.0})
    def wiggle(tree):  # RMS distance (mm) of the LAD from its own 5 mm-smoothed course
        p = tree.points[tree.branch == "LAD"]
        return np.sqrt(((p - ndimage.gaussian_filter1d(p, 5 / tree.spacing, axis=0, mode="nearest")) ** 2).sum(1).mean())
    assert wiggle(wiggly) > 1.4 * wiggle(straight)


def test_catheter_tip_engages_its_own_ostium_from_one_aortic_root():
    geo = anatomy.sample_geometry(np.random.default_rng(6))
    lca = anatomy.build_tree("LCA", "right", (), None, geometry=geo)
    rca = anatomy.build_tree("RCA", "right", (), None, geometry=geo)
    assert lca.ostium[0] > rca.ostium[0] and lca.ostium[1] > rca.ostium[1]  # left-posterior vs right-anterior
    for kind in ("JL3.5", "JL5", "AL1", "TIG"):
        path = imaging.catheter_path("LCA", lca.ostium, kind, "femoral")
        assert np.allclose(path[0], lca.ostium) and path[-1][2] < lca.ostium[2] - 100   # down the descending aorta
    for kind in ("JR4", "AR1", "AL1", "TIG"):
        path = imaging.catheter_path("RCA", rca.ostium, kind, "radial")
        assert np.allclose(path[0], rca.ostium) and path[-1][0] < rca.ostium[0] - 50    # out to the right arm
    roots = [tree.ostium + imaging._ROOT_FROM_OSTIUM[lat] for lat, tree in (("LCA", lca), ("RCA", rca))]
    assert np.linalg.norm(roots[0] - roots[1]) < 15   # both catheters come up one ascending aorta


def test_views_overlap_between_arteries():
    rca_cranial = sum(w for (p, s), w in zip(imaging.RCA_VIEWS, imaging.RCA_VIEW_WEIGHTS) if s >= 20)
    lca_straight = sum(w for (p, s), w in zip(imaging.LCA_VIEWS, imaging.LCA_VIEW_WEIGHTS) if s == 0)
    assert 0.15 < rca_cranial / sum(imaging.RCA_VIEW_WEIGHTS) < 0.4 and lca_straight > 0.05


def test_vessel_mask_follows_the_contrast():
    rng = np.random.default_rng(7)
    tree = _tree("LCA", seed=7)
    spec = imaging.sample_run_spec(rng, "LCA", imaging.LCA_VIEWS[0], 7.5, (3.0, 3.0), 0.0, 1.0)
    spec.inject_start_s = 0.6
    frames, truth = imaging.render_run(tree, spec, 64, 10, rng, masks=True)
    mask = truth["vessel_mask"]
    assert mask.shape == frames.shape and not mask[0].any()          # before the bolus: nothing opacified
    k = int(np.argmax(truth["fill"]))
    assert 0.005 < mask[k].mean() < 0.15
    assert frames[k][mask[k]].mean() < frames[k][~mask[k] & (frames[k] > 0)].mean()  # vessels are dark


def test_background_artefacts_add_dense_lines():
    rot = imaging.carm_rotation(30, 20)
    centre = (rot @ anatomy.HEART_CENTRE)[:2] - 70
    plain = imaging.background(96, 1.5, rot, centre, np.random.default_rng(1))
    wired = imaging.background(96, 1.5, rot, centre, np.random.default_rng(1),
                               {"sternal_wires": True, "pacing_lead": True, "ecg": True})
    assert np.isfinite(plain).all() and (wired - plain).max() > 0.3
