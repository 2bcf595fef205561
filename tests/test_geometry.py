"""Property tests of the SE(3) pose math in dualtrack.geometry (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from dualtrack import geometry as geo

prop = settings(max_examples=50, deadline=None)

translation = st.floats(-200.0, 200.0, allow_nan=False)
angle = st.floats(-179.0, 179.0, allow_nan=False)
# |ry| <= 80 deg keeps the Euler decomposition away from gimbal lock (ry = +-90).
pitch = st.floats(-80.0, 80.0, allow_nan=False)


@st.composite
def params(draw) -> np.ndarray:
    """One 6-DoF vector (tx, ty, tz mm, rx, ry, rz deg) away from gimbal lock."""
    return np.array(
        [draw(translation), draw(translation), draw(translation), draw(angle), draw(pitch), draw(angle)]
    )


@st.composite
def rigid(draw) -> np.ndarray:
    """A random rigid (4, 4) matrix built independently of dualtrack (scipy rotation)."""
    rotvec = np.array([draw(st.floats(-1.0, 1.0)) for _ in range(3)]) * draw(st.floats(0.0, 3.1))
    out = np.eye(4)
    out[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    out[:3, 3] = [draw(translation) for _ in range(3)]
    return out


@st.composite
def rigid_stack(draw, n_min: int = 2, n_max: int = 6) -> np.ndarray:
    n = draw(st.integers(n_min, n_max))
    return np.stack([draw(rigid()) for _ in range(n)])


def close(actual, desired, atol: float = 1e-9) -> None:
    np.testing.assert_allclose(actual, desired, atol=atol)


def angle_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a - b + 180.0) % 360.0 - 180.0


def homogeneous(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points, np.ones((*points.shape[:-1], 1))], -1)


@prop
@given(params())
def test_params_matrix_round_trip(p):
    back = geo.matrix_to_params(geo.params_to_matrix(p))
    close(back[:3], p[:3], atol=1e-9)
    close(angle_diff(back[3:], p[3:]), 0.0, atol=1e-7)


@prop
@given(rigid())
def test_matrix_params_round_trip(m):
    close(geo.params_to_matrix(geo.matrix_to_params(m)), m, atol=1e-9)


@prop
@given(params())
def test_euler_convention_matches_scipy_xyz_degrees(p):
    expected = Rotation.from_euler("xyz", p[3:], degrees=True).as_matrix()
    m = geo.params_to_matrix(p)
    close(m[:3, :3], expected, atol=1e-12)
    close(m[:3, 3], p[:3])
    close(m[3], [0, 0, 0, 1])
    scipy_angles = Rotation.from_matrix(m[:3, :3]).as_euler("xyz", degrees=True)
    close(angle_diff(geo.matrix_to_params(m)[3:], scipy_angles), 0.0, atol=1e-7)


def test_euler_convention_by_hand():
    # rz = 90 deg maps x to y; rx = 90 maps y to z; extrinsic xyz applies rx first.
    m = geo.params_to_matrix(np.array([0, 0, 0, 90.0, 0, 90.0]))
    close(m[:3, :3] @ [0, 1, 0], [0, 0, 1], atol=1e-12)  # Rz leaves z alone
    close(m[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_matrix_to_params_at_gimbal_lock_still_reconstructs():
    m = geo.params_to_matrix(np.array([1.0, 2.0, 3.0, 30.0, 90.0, 10.0]))
    p = geo.matrix_to_params(m)
    assert p[3] == 0.0
    close(geo.params_to_matrix(p), m, atol=1e-7)


@prop
@given(rigid(), rigid(), rigid())
def test_compose_invert(a, b, c):
    close(geo.compose(a, geo.invert(a)), np.eye(4), atol=1e-9)
    close(geo.invert(a), np.linalg.inv(a), atol=1e-9)
    close(geo.invert(geo.invert(a)), a, atol=1e-9)
    close(geo.compose(geo.compose(a, b), c), geo.compose(a, geo.compose(b, c)), atol=1e-8)
    close(geo.invert(geo.compose(a, b)), geo.compose(geo.invert(b), geo.invert(a)), atol=1e-9)
    pts = np.array([[1.0, 2.0, 3.0], [-50.0, 20.0, 0.0]])
    close(
        geo.transform_points(geo.compose(a, b), pts),
        geo.transform_points(a, geo.transform_points(b, pts)),
        atol=1e-8,
    )


@prop
@given(rigid_stack())
def test_chain_local_inverts_local_from_global(stack):
    g = geo.compose(geo.invert(stack[:1]), stack)  # G[0] = I
    close(geo.chain_local(geo.local_from_global(g)), g, atol=1e-8)
    local = stack[1:]
    close(geo.local_from_global(geo.chain_local(local)), local, atol=1e-8)


@prop
@given(rigid_stack(), rigid())
def test_global_from_tforms_equals_chained_local(tforms, calib):
    g = geo.global_from_tforms(tforms, calib)
    close(g[0], np.eye(4), atol=1e-12)
    close(geo.chain_local(geo.local_from_tforms(tforms, calib)), g, atol=1e-8)
    for i in range(len(tforms)):
        expected = np.linalg.inv(calib) @ np.linalg.inv(tforms[0]) @ tforms[i] @ calib
        close(g[i], expected, atol=1e-8)
        close(geo.relative(tforms, calib, 0, i), expected, atol=1e-8)


@prop
@given(rigid_stack(), rigid(), rigid())
def test_relative_poses_invariant_to_tracker_frame(tforms, calib, world):
    moved = world @ tforms  # the same motion seen from another camera position
    close(geo.global_from_tforms(moved, calib), geo.global_from_tforms(tforms, calib), atol=1e-8)
    close(geo.local_from_tforms(moved, calib), geo.local_from_tforms(tforms, calib), atol=1e-8)


@prop
@given(rigid(), st.floats(10.0, 100.0), st.floats(10.0, 100.0))
def test_corner_centre_round_trip_and_same_motion(m, cx, cy):
    centre = np.array([cx, cy, 0.0])
    mc = geo.corner_to_centre(m, centre)
    close(geo.centre_to_corner(mc, centre), m, atol=1e-9)
    # The image centre is `centre` in corner coordinates and the origin in centre coordinates:
    # both transforms must move it to the same physical place.
    close(mc[:3, 3] + centre, geo.transform_points(m, centre[None])[0], atol=1e-9)
    p = np.array([[5.0, -3.0, 2.0], [cx * 2, 0.0, 0.0]])
    close(geo.transform_points(mc, p - centre) + centre, geo.transform_points(m, p), atol=1e-9)
    close(mc[:3, :3], m[:3, :3], atol=1e-12)


@prop
@given(rigid(), st.integers(1, 5))
def test_transform_points_matches_homogeneous_matmul(m, n):
    pts = np.linspace(-30.0, 40.0, 3 * n).reshape(n, 3)
    expected = (homogeneous(pts) @ m.T)[:, :3]
    close(geo.transform_points(m, pts), expected, atol=1e-9)


@prop
@given(rigid_stack(3, 5), rigid(), params())
def test_numpy_and_torch_agree(tforms, calib, p):
    t = torch.from_numpy(tforms)
    c = torch.from_numpy(calib)
    pairs = [
        (geo.params_to_matrix(p), geo.params_to_matrix(torch.from_numpy(p))),
        (geo.matrix_to_params(tforms), geo.matrix_to_params(t)),
        (geo.invert(tforms), geo.invert(t)),
        (geo.compose(tforms, tforms), geo.compose(t, t)),
        (geo.global_from_tforms(tforms, calib), geo.global_from_tforms(t, c)),
        (geo.local_from_tforms(tforms, calib), geo.local_from_tforms(t, c)),
        (geo.chain_local(tforms), geo.chain_local(t)),
        (geo.local_from_global(tforms), geo.local_from_global(t)),
        (geo.transform_points(tforms, calib[:2, :3]), geo.transform_points(t, c[:2, :3])),
        (geo.corner_to_centre(tforms, [3.0, 4.0, 0.0]), geo.corner_to_centre(t, [3.0, 4.0, 0.0])),
        (geo.rotation_angle_deg(tforms), geo.rotation_angle_deg(t)),
        (geo.is_rigid(tforms), geo.is_rigid(t)),
    ]
    for np_out, torch_out in pairs:
        assert isinstance(np_out, np.ndarray)
        assert isinstance(torch_out, torch.Tensor)
        close(np_out, torch_out.numpy(), atol=1e-9)


def test_float32_torch_keeps_dtype():
    m = torch.eye(4, dtype=torch.float32).expand(3, 4, 4)
    assert geo.invert(m).dtype == torch.float32
    assert geo.global_from_tforms(m, torch.eye(4)).dtype == torch.float32
    assert geo.chain_local(m).dtype == torch.float32


@prop
@given(rigid_stack(4, 4), rigid_stack(4, 4))
def test_batching_matches_loop(a, b):
    batch = np.stack([a, b])  # (2, 4, 4, 4)
    chained = geo.chain_local(batch)
    assert chained.shape == (2, 5, 4, 4)
    for k, item in enumerate((a, b)):
        close(chained[k], geo.chain_local(item), atol=1e-9)
        close(geo.local_from_global(batch)[k], geo.local_from_global(item), atol=1e-9)
        close(geo.matrix_to_params(batch)[k], geo.matrix_to_params(item), atol=1e-9)
        close(geo.params_to_matrix(geo.matrix_to_params(batch))[k], item, atol=1e-9)
    pts = np.array([[1.0, 2.0, 3.0]])
    close(geo.transform_points(batch, pts)[1, 2], geo.transform_points(b[2], pts), atol=1e-9)


@prop
@given(rigid())
def test_rotation_angle_matches_scipy(m):
    expected = np.degrees(Rotation.from_matrix(m[:3, :3]).magnitude())
    assert geo.rotation_angle_deg(m) == pytest.approx(expected, abs=1e-5)


@prop
@given(rigid(), st.floats(0.02, 0.5))
def test_is_rigid_accepts_rigid_rejects_others(m, eps):
    assert bool(geo.is_rigid(m))
    scaled = m.copy()
    scaled[:3, :3] *= 1 + eps
    assert not bool(geo.is_rigid(scaled))
    reflected = m.copy()
    reflected[:3, 0] *= -1
    assert not bool(geo.is_rigid(reflected))
    bad_row = m.copy()
    bad_row[3, 0] = eps
    assert not bool(geo.is_rigid(bad_row))
    nan = m.copy()
    nan[1, 3] = np.nan
    assert not bool(geo.is_rigid(nan))
    assert geo.is_rigid(np.stack([m, scaled, nan])).tolist() == [True, False, False]


def test_image_points_order_and_centre():
    s = np.diag([0.5, 0.25, 1.0, 1.0])
    five = geo.image_points((3, 4), s, "five")
    close(five, [[0.5, 0.25, 0], [2.0, 0.25, 0], [0.5, 0.75, 0], [2.0, 0.75, 0], [1.25, 0.5, 0]])
    close(five[4], geo.image_centre_mm((0.5, 0.25), (3, 4)))
    allp = geo.image_points((3, 4), s, "all")
    assert allp.shape == (12, 3)
    close(allp[5], [2 * 0.5, 2 * 0.25, 0])  # k = (v-1) W + (u-1) = 5 -> u=2, v=2


@settings(max_examples=30, deadline=None)
@given(motion=rigid(), steps=st.integers(1, 12))
def test_interpolate_steps_multiply_back_to_the_motion(motion, steps) -> None:
    parts = geo.interpolate_steps(motion, steps)
    assert parts.shape == (steps, 4, 4)
    assert geo.is_rigid(parts).all()
    product = np.linalg.multi_dot([np.eye(4), *parts]) if steps > 1 else parts[0]
    np.testing.assert_allclose(product, motion, atol=1e-8)
