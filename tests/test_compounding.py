"""Compounding: synthetic sweeps of an analytic object must reconstruct at the right place."""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest

from dualtrack.data import LazyFrames
from dualtrack.geometry import params_to_matrix
from dualtrack.reconstruction.compounding import (
    Volume,
    VolumeTooLargeError,
    plan_grid,
    reconstruct_volume,
)

H, W = 36, 48
SP = (0.37, 0.41)  # mm/pixel, deliberately not commensurate with the voxel grid
# ball centre in frame-0 image mm: 9 mm deep at 20 degrees elevation, inside both test sweeps
CENTRE = np.array([9.0, 9.0 * np.cos(np.radians(20)), 9.0 * np.sin(np.radians(20))])
RADIUS = 2.5
INSIDE, OUTSIDE = 200, 40


def pixel_mm() -> np.ndarray:
    v, u = np.meshgrid(np.arange(1, H + 1), np.arange(1, W + 1), indexing="ij")
    return np.stack([u * SP[0], v * SP[1], np.zeros_like(u, float)], -1).reshape(-1, 3)


def ball_sweep(params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frames sampled from an analytic ball volume along global poses given as 6-DoF rows."""
    g = params_to_matrix(params)
    g = np.linalg.inv(g[0])[None] @ g  # G[0] = I
    pts = np.einsum("nij,pj->npi", g[:, :3, :3], pixel_mm()) + g[:, None, :3, 3]
    inside = np.linalg.norm(pts - CENTRE, axis=-1) < RADIUS
    frames = np.where(inside, INSIDE, OUTSIDE).astype(np.uint8).reshape(len(g), H, W)
    return frames, g


def straight_params(n: int = 48, step: float = 0.3) -> np.ndarray:
    p = np.zeros((n, 6))
    p[:, 2] = np.arange(n) * step
    return p


def fan_params(n: int = 60) -> np.ndarray:
    """Rotation about the lateral axis through the transducer face plus a small drift."""
    p = np.zeros((n, 6))
    p[:, 3] = np.linspace(0.0, 40.0, n)
    p[:, 0] = np.linspace(0.0, 1.5, n)
    p[:, 5] = np.linspace(0.0, 6.0, n)
    return p


def ball_stats(vol: Volume) -> tuple[np.ndarray, float, float]:
    """(centroid of bright voxels in reference mm, mean deep inside, mean well outside hit voxels)."""
    k, j, i = np.nonzero(vol.data > (INSIDE + OUTSIDE) / 2)
    centroid = vol.index_to_reference(np.stack([i, j, k], 1).mean(0)[None])[0]
    kk, jj, ii = np.meshgrid(*(np.arange(n) for n in vol.data.shape), indexing="ij")
    ijk = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], 1)
    ref = vol.index_to_reference(ijk).reshape(*vol.data.shape, 3)
    dist = np.linalg.norm(ref - CENTRE, axis=-1)
    hit = vol.weight > 0
    deep = vol.data[(dist < RADIUS - 1.2) & hit].mean()
    outside = vol.data[(dist > RADIUS + 1.2) & hit].mean()
    return centroid, float(deep), float(outside)


@pytest.mark.parametrize("method", ["nearest", "trilinear"])
def test_ball_straight_sweep_lands_in_place(method):
    frames, g = ball_sweep(straight_params())
    vol = reconstruct_volume(frames, g, SP, spacing_mm=0.6, method=method)
    centroid, deep, outside = ball_stats(vol)
    assert np.linalg.norm(centroid - CENTRE) < 0.6  # within one voxel
    assert deep == pytest.approx(INSIDE, abs=3)
    assert outside == pytest.approx(OUTSIDE, abs=3)
    np.testing.assert_allclose(vol.direction, np.eye(3))
    # grid starts at the first pixel centre of frame 0 (u = v = 1) on the plane z = 0
    np.testing.assert_allclose(vol.origin, [SP[0], SP[1], 0.0], atol=1e-9)


@pytest.mark.parametrize("frame", ["first", "obb"])
def test_ball_rotated_sweep_lands_in_place(frame):
    frames, g = ball_sweep(fan_params())
    vol = reconstruct_volume(frames, g, SP, spacing_mm=0.6, method="nearest", frame=frame)
    centroid, deep, outside = ball_stats(vol)
    assert np.linalg.norm(centroid - CENTRE) < 0.6
    assert deep == pytest.approx(INSIDE, abs=6)
    assert outside == pytest.approx(OUTSIDE, abs=6)
    np.testing.assert_allclose(vol.direction.T @ vol.direction, np.eye(3), atol=1e-9)
    assert np.linalg.det(vol.direction) == pytest.approx(1.0)


def test_obb_grid_is_tighter_and_contains_every_pixel():
    p = straight_params(30, 1.0)
    p[:, 0] = np.arange(30) * 1.0  # a sweep diagonal to frame 0's axes
    _, g = ball_sweep(p)
    first = plan_grid(g, (H, W), SP, 0.5, "first")
    obb = plan_grid(g, (H, W), SP, 0.5, "obb")
    assert obb.num_voxels < first.num_voxels
    pts = np.einsum("nij,pj->npi", g[:, :3, :3], pixel_mm()) + g[:, None, :3, 3]
    idx = pts.reshape(-1, 3) @ obb.reference_to_index[:3, :3].T + obb.reference_to_index[:3, 3]
    assert idx.min() > -1e-6
    assert np.all(idx.max(0) < np.array(obb.size) - 1 + 1e-6)


def test_mean_versus_max_on_overlapping_frames():
    g = np.repeat(np.eye(4)[None], 3, 0)
    frames = np.stack([np.full((H, W), v, np.uint8) for v in (60, 90, 210)])
    for method in ("nearest", "trilinear"):
        kw = dict(spacing_mm=0.5, method=method, fill_holes=False)
        mean = reconstruct_volume(frames, g, SP, compound="mean", **kw)
        mx = reconstruct_volume(frames, g, SP, compound="max", **kw)
        hit = mean.weight > 0
        assert hit.sum() > 0.5 * H * W * SP[0] * SP[1] / 0.25
        np.testing.assert_allclose(mean.data[hit], 120.0, atol=1e-3)
        np.testing.assert_allclose(mx.data[hit], 210.0)
        assert np.all(mean.data[~hit] == 0) and np.all(mx.data[~hit] == 0)


def _slab_sweep(z_positions, x_offsets=None) -> tuple[np.ndarray, np.ndarray]:
    n = len(z_positions)
    p = np.zeros((n, 6))
    p[:, 2] = z_positions
    if x_offsets is not None:
        p[:, 0] = x_offsets
    return np.full((n, H, W), 100, np.uint8), params_to_matrix(p)


def test_hole_filling_fills_gaps_between_frames_only():
    # five frames 2 mm apart (3 empty voxel layers in between) and one far to the side
    z = [0.0, 2.0, 4.0, 6.0, 8.0, 0.0]
    x = [0, 0, 0, 0, 0, 40.0]
    frames, g = _slab_sweep(z, x)
    kw = dict(spacing_mm=0.5, fill_max_distance_mm=2.0)
    raw = reconstruct_volume(frames, g, SP, fill_holes=False, **kw)
    filled = reconstruct_volume(frames, g, SP, fill_holes=True, **kw)
    ni, nj, nk = raw.shape_ijk
    inside_w = int((W - 1) * SP[0] / 0.5)  # lateral extent of the main stack in voxels
    stack = (slice(0, 17), slice(0, nj), slice(0, inside_w))
    assert np.all(raw.data[1:4, :, :inside_w] == 0)  # gaps before filling
    np.testing.assert_allclose(filled.data[stack], 100.0, atol=1e-4)
    # the empty space between the stack and the far frame stays empty (far outside the data)
    far = slice(inside_w + 8, int(40.0 / 0.5) - 8)
    assert np.all(filled.data[:, :, far] == 0)
    np.testing.assert_array_equal(filled.weight, raw.weight)


def test_hole_filling_is_bounded_in_distance():
    frames, g = _slab_sweep([0.0, 8.0])  # 15 empty layers: wider than 2 x 4 voxels
    vol = reconstruct_volume(frames, g, SP, spacing_mm=0.5, fill_holes=True, fill_max_distance_mm=2.0)
    assert np.all(vol.data[1:16] == 0)
    frames, g = _slab_sweep([0.0, 4.5])  # 8 empty layers: closed from both sides in 4 steps
    vol = reconstruct_volume(frames, g, SP, spacing_mm=0.5, fill_holes=True, fill_max_distance_mm=2.0)
    assert np.all(vol.data[:, : int((H - 1) * SP[1] / 0.5), : int((W - 1) * SP[0] / 0.5)] > 99.9)


def test_memory_limit_error_names_size_and_a_spacing_that_fits():
    frames, g = ball_sweep(straight_params())
    limit = 2e-4  # GB
    with pytest.raises(VolumeTooLargeError) as info:
        reconstruct_volume(frames, g, SP, spacing_mm=0.25, memory_limit_gb=limit)
    msg = str(info.value)
    assert "Mvox" in msg and "0.25 mm" in msg and "GB" in msg
    suggested = float(re.search(r"spacing_mm >= ([0-9.]+)", msg).group(1))
    assert suggested == pytest.approx(info.value.suggested_spacing, abs=0.005) and suggested > 0.25
    vol = reconstruct_volume(frames, g, SP, spacing_mm=suggested, memory_limit_gb=limit)
    assert vol.data.size > 0
    with pytest.raises(VolumeTooLargeError, match="max_voxels=1000"):
        reconstruct_volume(frames, g, SP, spacing_mm=0.5, max_voxels=1000, memory_limit_gb=None)


@pytest.mark.parametrize("method", ["nearest", "trilinear"])
def test_chunk_size_does_not_change_the_result(method):
    frames, g = ball_sweep(fan_params(25))
    ref = reconstruct_volume(frames, g, SP, spacing_mm=0.7, method=method, chunk_frames=25)
    for chunk in (1, 4):
        out = reconstruct_volume(frames, g, SP, spacing_mm=0.7, method=method, chunk_frames=chunk)
        np.testing.assert_allclose(out.data, ref.data, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(out.weight, ref.weight, rtol=1e-5, atol=1e-5)


def test_lazy_frames_mask_and_subsampling(tmp_path):
    frames, g = ball_sweep(straight_params(20))
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("frames", data=frames)
    lazy = LazyFrames(path, "frames")
    a = reconstruct_volume(frames, g, SP, spacing_mm=0.7)
    b = reconstruct_volume(lazy, g, SP, spacing_mm=0.7)
    np.testing.assert_array_equal(a.data, b.data)

    mask = np.zeros((H, W), bool)
    mask[:, : W // 2] = True
    m = reconstruct_volume(frames, g, SP, spacing_mm=0.7, mask=mask, fill_holes=False)
    assert m.weight.sum() == pytest.approx(mask.sum() * len(frames))
    i_max = int(np.ceil((W // 2) * SP[0] / 0.7))  # last voxel column the left half can reach
    assert m.weight[:, :, i_max + 1:].sum() == 0
    s = reconstruct_volume(frames, g, SP, spacing_mm=0.7, pixel_step=3, fill_holes=False)
    assert s.weight.sum() == pytest.approx(len(range(0, H, 3)) * len(range(0, W, 3)) * len(frames))


def test_uint8_output_and_input_errors():
    frames, g = ball_sweep(straight_params(10))
    v8 = reconstruct_volume(frames, g, SP, spacing_mm=0.7, out_dtype="uint8")
    vf = reconstruct_volume(frames, g, SP, spacing_mm=0.7)
    assert v8.data.dtype == np.uint8
    np.testing.assert_array_equal(v8.data, np.clip(np.round(vf.data), 0, 255).astype(np.uint8))
    with pytest.raises(ValueError, match=r"\(10, 4, 4\).*got \(9, 4, 4\)"):
        reconstruct_volume(frames, g[:9], SP)
    with pytest.raises(ValueError, match="method"):
        reconstruct_volume(frames, g, SP, method="cubic")
    with pytest.raises(ValueError, match="mask"):
        reconstruct_volume(frames, g, SP, mask=np.ones((3, 3), bool))
    bad = g.copy()
    bad[3, 0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        reconstruct_volume(frames, bad, SP)


def test_volume_index_maps_are_inverse():
    _, g = ball_sweep(fan_params(10))
    vol = reconstruct_volume(np.zeros((10, H, W), np.uint8), g, SP, spacing_mm=0.9, frame="obb")
    ijk = np.array([[0, 0, 0], [3, 2, 1], [5.5, 1.25, 2.0]])
    np.testing.assert_allclose(vol.reference_to_index(vol.index_to_reference(ijk)), ijk, atol=1e-9)
    assert vol.shape_ijk == vol.data.shape[::-1]
