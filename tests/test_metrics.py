"""Golden and cross-check tests of dualtrack.metrics (values computed by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from dualtrack import metrics as M

EYE = np.eye(4)


def translations(offsets) -> np.ndarray:
    out = np.tile(np.eye(4), (len(offsets), 1, 1))
    out[:, :3, 3] = offsets
    return out


def rotation_about(axis_point, rot3: np.ndarray) -> np.ndarray:
    """Rotation ``rot3`` about an axis through ``axis_point``: ``p -> R (p - a) + a``."""
    out = np.eye(4)
    out[:3, :3] = rot3
    out[:3, 3] = np.asarray(axis_point) - rot3 @ np.asarray(axis_point)
    return out


def random_global(rng: np.random.Generator, n: int, step: float = 1.0) -> np.ndarray:
    """A random smooth-ish trajectory with G[0] = I (built without dualtrack.geometry)."""
    g = [np.eye(4)]
    for _ in range(n - 1):
        local = np.eye(4)
        local[:3, :3] = Rotation.from_rotvec(rng.normal(0, 0.03, 3)).as_matrix()
        local[:3, 3] = rng.normal(0, step, 3)
        g.append(g[-1] @ local)
    return np.stack(g)


def naive_pixel_error(g_gt, g_pred, shape, scale) -> float:
    """Official definition, no chunking: mean over frames 1.. and all pixels of ||(Xgt - Xpred) S p||."""
    h, w = shape
    pix = np.array([[u, v, 0.0, 1.0] for v in range(1, h + 1) for u in range(1, w + 1)]).T  # (4, P)
    errs = [
        np.linalg.norm(((g_gt[i] - g_pred[i]) @ scale @ pix)[:3], axis=0).mean() for i in range(1, len(g_gt))
    ]
    return float(np.mean(errs))


def naive_local(g: np.ndarray) -> np.ndarray:
    """Local poses with a leading identity so that index i is T_{i-1<-i} (naive inverse)."""
    return np.concatenate([EYE[None], [np.linalg.inv(g[i - 1]) @ g[i] for i in range(1, len(g))]])


# ----------------------------------------------------------------------------- golden values


def test_pure_translation_identity_prediction():
    # GT moves by d = (3, 4, 12) mm per frame (|d| = 13); the prediction stays at I.
    n, d = 5, np.array([3.0, 4.0, 12.0])
    g_gt = translations(np.arange(n)[:, None] * d)
    g_pred = translations(np.zeros((n, 3)))
    s = np.diag([0.3, 0.2, 1.0, 1.0])
    expected_gpe = 13.0 * (1 + 2 + 3 + 4) / 4  # frame i is off by 13 i mm, mean over i = 1..4
    for res in (M.tusrec_metrics(g_gt, g_pred, (6, 8), s), M.paper_metrics(g_gt, g_pred, (6, 8), s)):
        assert res["GPE"] == pytest.approx(expected_gpe, rel=1e-12)
        assert res["LPE"] == pytest.approx(13.0, rel=1e-12)
    paper = M.paper_metrics(g_gt, g_pred, (6, 8), s)
    assert paper["final_drift"] == pytest.approx(52.0)
    assert paper["max_drift"] == pytest.approx(52.0)
    assert paper["final_distance"] == pytest.approx(52.0)
    assert paper["FDR"] == pytest.approx(100.0)
    np.testing.assert_allclose(M.drift_curve(g_gt, g_pred, (6, 8), s), 13.0 * np.arange(n))


def test_rotation_about_z_axis_through_pixel_on_2x3_image():
    # S = I, 2x3 image: pixels (u, v) = (1..3, 1..2) at mm (u, v, 0). Rotate 90 deg about the
    # z axis through pixel (2, 1). A point at distance r from the axis moves 2 r sin(45) = r sqrt 2.
    rz90 = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    g_gt = np.stack([EYE, rotation_about([2.0, 1.0, 0.0], rz90)])
    g_pred = np.stack([EYE, EYE])
    # distances: (1,1) 1, (2,1) 0, (3,1) 1, (1,2) sqrt2, (2,2) 1, (3,2) sqrt2
    expected_all = math.sqrt(2) * (3 + 2 * math.sqrt(2)) / 6
    res = M.tusrec_metrics(g_gt, g_pred, (2, 3), EYE)
    assert res["GPE"] == pytest.approx(expected_all, rel=1e-12)
    assert res["LPE"] == pytest.approx(expected_all, rel=1e-12)  # N = 2: local = global
    # five points: corners (1,1) 1, (3,1) 1, (1,2) sqrt2, (3,2) sqrt2 and centre (2, 1.5) 0.5
    expected_five = math.sqrt(2) * (2 + 2 * math.sqrt(2) + 0.5) / 5
    assert M.paper_metrics(g_gt, g_pred, (2, 3), EYE)["GPE"] == pytest.approx(expected_five, rel=1e-12)
    # the centre moves by 0.5 sqrt2; it ends 0.5 sqrt2 from where it started, so FDR = 100 %
    paper = M.paper_metrics(g_gt, g_pred, (2, 3), EYE)
    assert paper["max_drift"] == pytest.approx(0.5 * math.sqrt(2))
    assert paper["FDR"] == pytest.approx(100.0)


def test_rotation_about_in_plane_axis_with_anisotropic_scale():
    # S = diag(0.5, 0.25): rows sit at y = 0.25 v mm. Rotate 60 deg about the x axis through row 1
    # (y = 0.25): row 1 does not move, row 2 (r = 0.25 mm) moves 2 * 0.25 * sin(30) = 0.25 mm.
    s = np.diag([0.5, 0.25, 1.0, 1.0])
    rx60 = Rotation.from_euler("x", 60, degrees=True).as_matrix()
    g_gt = np.stack([EYE, rotation_about([0.0, 0.25, 0.0], rx60)])
    res = M.tusrec_metrics(g_gt, np.stack([EYE, EYE]), (2, 3), s)
    assert res["GPE"] == pytest.approx(0.125, rel=1e-12)
    # the prediction error is symmetric: predicting the rotation when GT stays still
    assert M.tusrec_metrics(np.stack([EYE, EYE]), g_gt, (2, 3), s)["GPE"] == pytest.approx(0.125, rel=1e-12)


def test_fdr_and_max_drift_on_hand_made_trajectory():
    # GT centre path: (0,0,0) -> (10,0,0) -> (10,10,0) -> (0,10,0): path length 30 mm, but the
    # last centre is 10 mm from the first one (straight line).
    shape, s = (5, 7), np.diag([2.0, 1.0, 1.0, 1.0])
    centre = np.array([8.0, 3.0, 0.0])  # S ((W+1)/2, (H+1)/2) = (2 * 4, 1 * 3)
    g_gt = translations([[0, 0, 0], [10, 0, 0], [10, 10, 0], [0, 10, 0]])
    # predicted centre positions drift by 3, 4 and 2 mm; frame 2 also spins about the centre,
    # which must not change its drift.
    g_pred = translations([[0, 0, 0], [10, 3, 0], [10, 10, 4], [0, 8, 0]])
    g_pred[2] = g_pred[2] @ rotation_about(centre, Rotation.from_euler("z", 40, degrees=True).as_matrix())
    paper = M.paper_metrics(g_gt, g_pred, shape, s)
    np.testing.assert_allclose(M.drift_curve(g_gt, g_pred, shape, s), [0, 3, 4, 2], atol=1e-12)
    assert paper["max_drift"] == pytest.approx(4.0)
    assert paper["final_drift"] == pytest.approx(2.0)
    assert paper["final_distance"] == pytest.approx(10.0)
    assert paper["FDR"] == pytest.approx(20.0)  # 100 * 2 / 10, not 100 * 2 / 30


def test_fdr_nan_when_scan_returns_to_start():
    g_gt = translations([[0, 0, 0], [5, 0, 0], [0, 0, 0]])
    g_pred = translations([[0, 0, 0], [5, 0, 0], [1, 0, 0]])
    with pytest.warns(RuntimeWarning, match="FDR"):
        res = M.paper_metrics(g_gt, g_pred, (4, 4), EYE)
    assert math.isnan(res["FDR"])
    assert res["final_drift"] == pytest.approx(1.0)


def test_normalised_score_identity_zero_and_perfect_one():
    rng = np.random.default_rng(1)
    g_gt = random_global(rng, 6)
    lm = np.array([[1, 1, 1], [3, 5, 2], [5, 4, 4]])
    shape, s = (4, 5), np.diag([0.4, 0.3, 1.0, 1.0])
    ident = M.identity_errors(g_gt, shape, s, lm)
    assert set(ident) == {"GPE", "LPE", "GLE", "LLE"}
    eye = np.tile(EYE, (6, 1, 1))
    zero = M.normalised_score(M.tusrec_metrics(g_gt, eye, shape, s, lm), ident)
    one = M.normalised_score(M.tusrec_metrics(g_gt, g_gt, shape, s, lm), ident)
    for key in ("GPE_norm", "GLE_norm", "LPE_norm", "LLE_norm", "final_score"):
        assert zero[key] == pytest.approx(0.0, abs=1e-12)
        assert one[key] == pytest.approx(1.0, abs=1e-12)
    half = M.normalised_score(
        {"GPE": 1.0, "GLE": 2.0, "LPE": 0.5, "LLE": 3.0}, {k: 4.0 for k in M.TUSREC_METRICS}
    )
    assert half == pytest.approx(
        {"GPE_norm": 0.75, "GLE_norm": 0.5, "LPE_norm": 0.875, "LLE_norm": 0.25, "final_score": 0.59375}
    )


def test_normalised_score_errors():
    with pytest.raises(ValueError, match="no common metric"):
        M.normalised_score({"FDR": 1.0}, {"GPE": 1.0})
    with pytest.warns(RuntimeWarning, match="identity GPE is 0"):
        out = M.normalised_score({"GPE": 1.0}, {"GPE": 0.0})
    assert math.isnan(out["GPE_norm"])


# ----------------------------------------------------------------------------- cross-checks


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 50])
def test_all_pixel_metric_equals_naive_for_chunk_sizes(chunk):
    rng = np.random.default_rng(chunk)
    g_gt, g_pred = random_global(rng, 8), random_global(rng, 8)
    shape, s = (5, 7), np.diag([0.23, 0.22, 1.0, 1.0])
    res = M.tusrec_metrics(g_gt, g_pred, shape, s, chunk_frames=chunk)
    assert res["GPE"] == pytest.approx(naive_pixel_error(g_gt, g_pred, shape, s), rel=1e-10)
    assert res["LPE"] == pytest.approx(
        naive_pixel_error(naive_local(g_gt), naive_local(g_pred), shape, s), rel=1e-10
    )


def test_all_pixel_metric_small_max_bytes_and_general_scale():
    rng = np.random.default_rng(7)
    g_gt, g_pred = random_global(rng, 6), random_global(rng, 6)
    s = np.array([[0.2, 0.01, 0, 1.5], [0.0, 0.3, 0, -2.0], [0, 0, 1, 0], [0, 0, 0, 1]])  # not diagonal
    res = M.tusrec_metrics(g_gt, g_pred, (4, 6), s, max_bytes=4 * 6 * 8 * 2)  # two frames per chunk
    assert res["GPE"] == pytest.approx(naive_pixel_error(g_gt, g_pred, (4, 6), s), rel=1e-10)


def test_all_pixel_near_zero_error_is_accurate():
    # tiny errors: cancellation in the quadratic form must not dominate
    g_gt = translations([[0, 0, 0], [0, 0, 0]])
    g_pred = g_gt.copy()
    g_pred[1, :3, :3] = Rotation.from_euler("z", 1e-4, degrees=True).as_matrix()
    shape, s = (6, 9), np.diag([0.23, 0.22, 1.0, 1.0])
    res = M.tusrec_metrics(g_gt, g_pred, shape, s)
    assert res["GPE"] == pytest.approx(naive_pixel_error(g_gt, g_pred, shape, s), rel=1e-6)


def test_landmark_errors_match_naive():
    rng = np.random.default_rng(3)
    g_gt, g_pred = random_global(rng, 7), random_global(rng, 7)
    s = np.diag([0.5, 0.25, 1.0, 1.0])
    lm = np.array([[1, 1, 1], [6, 10, 8], [3, 4, 2], [3, 7, 5]])
    q = np.stack([lm[:, 1], lm[:, 2], np.zeros(4), np.ones(4)], 1) @ s.T
    lgt, lpred = naive_local(g_gt), naive_local(g_pred)
    gle = np.mean([np.linalg.norm(((g_gt[f] - g_pred[f]) @ q[j])[:3]) for j, f in enumerate(lm[:, 0])])
    lle = np.mean([np.linalg.norm(((lgt[f] - lpred[f]) @ q[j])[:3]) for j, f in enumerate(lm[:, 0])])
    res = M.tusrec_metrics(g_gt, g_pred, (8, 10), s, landmarks=lm)
    assert res["GLE"] == pytest.approx(gle, rel=1e-12)
    assert res["LLE"] == pytest.approx(lle, rel=1e-12)


def test_paper_and_tusrec_agree_roughly_on_smooth_motion():
    rng = np.random.default_rng(5)
    g_gt, g_pred = random_global(rng, 10), random_global(rng, 10)
    shape, s = (12, 16), np.diag([0.23, 0.22, 1.0, 1.0])
    paper = M.paper_metrics(g_gt, g_pred, shape, s)
    official = M.tusrec_metrics(g_gt, g_pred, shape, s)
    assert paper["GPE"] != official["GPE"]
    assert paper["GPE"] == pytest.approx(official["GPE"], rel=0.5)


def test_torch_inputs_and_return_types():
    rng = np.random.default_rng(2)
    g_gt, g_pred = random_global(rng, 5), random_global(rng, 5)
    s = np.diag([0.3, 0.2, 1.0, 1.0])
    ref = M.tusrec_metrics(g_gt, g_pred, (4, 5), s)
    got = M.tusrec_metrics(torch.from_numpy(g_gt).float(), torch.from_numpy(g_pred).float(), (4, 5), s)
    assert got["GPE"] == pytest.approx(ref["GPE"], rel=1e-5)
    assert isinstance(M.drift_curve(g_gt, g_pred, (4, 5), s), np.ndarray)
    curve = M.drift_curve(torch.from_numpy(g_gt), torch.from_numpy(g_pred), (4, 5), s)
    assert isinstance(curve, torch.Tensor) and curve.shape == (5,)
    pts = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 0.0]])
    per_frame = M.point_errors(g_gt, g_pred, pts)
    assert per_frame.shape == (5,) and per_frame[0] == 0.0
    expected = np.mean(
        np.linalg.norm((g_gt[3, :3, :3] - g_pred[3, :3, :3]) @ pts.T + (g_gt - g_pred)[3, :3, 3:], axis=0)
    )
    assert per_frame[3] == pytest.approx(expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(4)
    g_gt, g_pred = random_global(rng, 30), random_global(rng, 30)
    lm = np.array([[1, 1, 1], [29, 64, 48]])
    s = np.diag([0.23, 0.22, 1.0, 1.0])
    cpu = M.tusrec_metrics(g_gt, g_pred, (48, 64), s, lm, device="cpu")
    gpu = M.tusrec_metrics(torch.from_numpy(g_gt).cuda(), g_pred, (48, 64), s, lm, chunk_frames=4)
    assert gpu == pytest.approx(cpu, rel=1e-9)


# ----------------------------------------------------------------------------- input errors


def test_input_validation():
    g = translations(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="G\\[0\\] must be the identity"):
        M.tusrec_metrics(g, translations([[1, 0, 0], [0, 0, 0], [0, 0, 0]]), (2, 2), EYE)
    with pytest.raises(ValueError, match="differ in shape"):
        M.paper_metrics(g, g[:2], (2, 2), EYE)
    with pytest.raises(ValueError, match="NaN"):
        bad = g.copy()
        bad[2, 0, 3] = np.nan
        M.paper_metrics(g, bad, (2, 2), EYE)
    with pytest.raises(ValueError, match="at least 2 frames"):
        M.paper_metrics(g[:1], g[:1], (2, 2), EYE)
    with pytest.raises(ValueError, match="frame indices must lie in 1..2"):
        M.tusrec_metrics(g, g, (2, 2), EYE, landmarks=[[0, 1, 1]])
    with pytest.raises(ValueError, match="u in 1..2"):
        M.tusrec_metrics(g, g, (2, 2), EYE, landmarks=[[1, 3, 1]])
    with pytest.raises(ValueError, match="scale"):
        M.tusrec_metrics(g, g, (2, 2), np.eye(3))
    with pytest.raises(ValueError, match="chunk_frames"):
        M.tusrec_metrics(g, g, (2, 2), EYE, chunk_frames=0)


# ----------------------------------------------------------------------------- Wilcoxon


def test_wilcoxon_clear_winner_exact_p_value():
    keys = [f"sub{i:03d}__scan" for i in range(10)]
    a = {k: {"GPE": 1.0 + i, "LPE": 0.1} for i, k in enumerate(keys)}
    b = {k: {"GPE": 1.5 + 2 * i, "LPE": 0.1} for i, k in enumerate(keys)}
    table = M.wilcoxon_table(a, b, ["GPE", "LPE"])
    gpe = table["GPE"]
    # all 10 differences negative: W+ = 0, exact two-sided p = 2 / 2^10
    assert gpe["statistic"] == 0.0
    assert gpe["p_value"] == pytest.approx(2 / 2**10)
    assert gpe["n"] == 10
    assert gpe["mean_a"] == pytest.approx(5.5) and gpe["mean_b"] == pytest.approx(10.5)
    assert gpe["median_diff"] == pytest.approx(-5.0)  # differences -0.5 - i, i = 0..9
    assert gpe["effect_size_r"] < -0.8
    # identical values: every difference is zero
    assert table["LPE"]["p_value"] == 1.0 and table["LPE"]["statistic"] == 0.0
    one_sided = M.wilcoxon_table(a, b, ["GPE"], alternative="less")["GPE"]["p_value"]
    assert one_sided == pytest.approx(1 / 2**10)


def test_wilcoxon_errors():
    a = {"s1": {"GPE": 1.0}, "s2": {"GPE": 2.0}}
    with pytest.raises(ValueError, match="only in A .*'s2'.* only in B .*'s3'"):
        M.wilcoxon_table(a, {"s1": {"GPE": 1.0}, "s3": {"GPE": 2.0}}, ["GPE"])
    with pytest.raises(ValueError, match="no metric 'LPE' for scan 's1'"):
        M.wilcoxon_table(a, a, ["LPE"])
    with pytest.raises(ValueError, match="nan"):
        M.wilcoxon_table(a, {"s1": {"GPE": float("nan")}, "s2": {"GPE": 2.0}}, ["GPE"])
    with pytest.raises(ValueError, match="empty"):
        M.wilcoxon_table({}, {}, ["GPE"])
