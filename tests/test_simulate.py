"""Simulator tests (CPU, tiny preset, few frames)."""

from __future__ import annotations

import dataclasses
import os

import h5py
import numpy as np
import pytest
import torch

from dualtrack import geometry
from dualtrack.cli import main as cli_main
from dualtrack.data import TusRecDataset
from dualtrack.data.verify import verify_dataset
from dualtrack.simulate import (
    BModeRenderer,
    HomogeneousPhantom,
    ScatterSpec,
    get_preset,
    make_phantom,
    simulate_dataset,
    simulate_sweep,
    sweep_poses,
)
from dualtrack.simulate.rng import hash_uniform

torch.set_num_threads(1)
N = 6


@pytest.fixture(scope="module")
def sweep():
    return simulate_sweep(3, 0, "RH_Per_C_DtP", "tiny", num_frames=N)


def test_sweep_shapes_and_reproducibility(sweep):
    pr = get_preset("tiny")
    assert sweep.frames.shape == (N, pr.height, pr.width) and sweep.frames.dtype == np.uint8
    assert sweep.tforms.shape == (N, 4, 4) and sweep.tforms.dtype == np.float32
    assert 20 < sweep.frames.mean() < 200 and sweep.frames.std() > 10
    again = simulate_sweep(3, 0, "RH_Per_C_DtP", "tiny", num_frames=N)
    np.testing.assert_array_equal(again.frames, sweep.frames)
    np.testing.assert_array_equal(again.tforms, sweep.tforms)
    np.testing.assert_array_equal(again.landmarks, sweep.landmarks)
    other = simulate_sweep(3, 1, "RH_Per_C_DtP", "tiny", num_frames=N)
    assert not np.array_equal(other.frames, sweep.frames)
    assert not np.allclose(other.poses, sweep.poses)


def test_ground_truth_equals_render_poses(sweep):
    c = sweep.calibration.image_to_tool
    local = geometry.local_from_tforms(sweep.tforms.astype(np.float64), c)
    truth = np.linalg.inv(sweep.poses[:-1]) @ sweep.poses[1:]
    np.testing.assert_allclose(local, truth, atol=2e-3)
    glob = geometry.global_from_tforms(sweep.tforms.astype(np.float64), c)
    np.testing.assert_allclose(glob, np.linalg.inv(sweep.poses[0]) @ sweep.poses, atol=2e-3)
    # the probe really moves: ~0.3 mm/frame, sub-degree rotations between frames
    step = np.linalg.norm(truth[:, :3, 3], axis=1)
    assert 0.02 < step.mean() < 1.0


def test_landmarks_on_valid_pixels(sweep):
    pr = get_preset("tiny")
    lm = sweep.landmarks
    assert lm.shape == (pr.landmarks_2024, 3)
    assert (lm[:, 0] >= 1).all() and (lm[:, 0] <= N - 1).all()
    assert (lm[:, 1] >= 1).all() and (lm[:, 1] <= pr.width).all()
    assert (lm[:, 2] >= 1).all() and (lm[:, 2] <= pr.height).all()


def test_bricks_do_not_depend_on_request_order():
    a = make_phantom(0, 0, "LH", "tiny")
    b = make_phantom(0, 0, "LH", "tiny")
    x0 = int(a.length * 0.5 / 4)
    ijk = torch.tensor([[x0, 0, 3], [x0 + 1, -1, 4], [x0, 1, 2]])
    first = a.bricks(ijk)
    second = b.bricks(ijk[[2, 0]])
    for (pa, aa), (pb, ab) in zip([first[2], first[0]], second, strict=True):
        assert pa.shape[0] > 100
        assert torch.equal(pa, pb) and torch.equal(aa, ab)
    # Poisson positions: no two scatterers share a coordinate, and they fill the brick
    p = first[0][0]
    assert torch.unique(p[:, 0]).numel() == p.shape[0]
    u = hash_uniform(torch.tensor(1), torch.tensor(2), torch.arange(100000))
    assert 0 < float(u.min()) and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.01


def test_trajectory_statistics():
    ph = make_phantom(1, 2, "RH", "tiny")
    for scan, axis in (("RH_Per_L_PtD", 2), ("RH_Par_S_DtP", 0)):
        poses = sweep_poses(1, 2, scan, "tiny", num_frames=200, phantom=ph)
        rel = np.linalg.inv(poses[:-1]) @ poses[1:]
        t = np.abs(rel[:, :3, 3])
        assert 0.15 < np.linalg.norm(rel[:, :3, 3], axis=1).mean() < 0.5
        assert t[:, axis].mean() > 1.5 * np.delete(t, axis, 1).mean(0).max()
        ang = geometry.rotation_angle_deg(rel)
        assert 0.005 < ang.mean() < 1.0
    rot = sweep_poses(1, 2, "RH_rotation", "tiny", num_frames=300, phantom=ph)
    total = geometry.rotation_angle_deg(np.linalg.inv(rot[0]) @ rot)
    assert total.max() > 45
    contact = rot[:, :3, 3]
    assert np.ptp(contact, axis=0).max() < 80  # pivots about a contact point, no long travel


def test_speckle_statistics_homogeneous():
    pr = get_preset("tiny")
    imaging = dataclasses.replace(pr.imaging, noise_db=None, tgc_factor=0.0)
    density = 20.0 / (
        imaging.fwhm_axial_mm * np.mean(imaging.fwhm_lateral_mm) * imaging.fwhm_elevation_focus_mm
    )
    phantom = HomogeneousPhantom(5, ScatterSpec(density, brick_mm=3.0))
    renderer = BModeRenderer(pr, imaging, density_per_mm3=density)
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, 0, 3] = [0.0, 7.0, 14.0]
    env = renderer.render(phantom, poses, return_envelope=True).envelope
    g = renderer.geom
    rows = slice(int(2.0 / g.dr), int(12.0 / g.dr))
    cols = slice(int((g.fov_lateral[0] - g.l0) / g.dl), int((g.fov_lateral[1] - g.l0) / g.dl))
    a = env[:, rows, cols].double()
    snr = float(a.mean() / a.std())
    log_std = float((20 * torch.log10(a)).std())
    assert 1.6 < snr < 2.2, snr
    assert 4.8 < log_std < 6.5, log_std


def test_dataset_round_trip_and_resume(tmp_path):
    out = tmp_path / "sim"
    scans = ["LH_Par_L_PtD", "RH_Per_S_DtP"]
    simulate_dataset(out, 1, "tiny", scans=scans[:1], num_frames=N, progress=False)
    first = out / "frames_transfs" / "000" / f"{scans[0]}.h5"
    stamp = first.stat().st_mtime_ns
    # an interrupted write of the second scan leaves only a temporary file
    tmp = first.parent / f".{scans[1]}.h5.tmp-99999"
    tmp.write_bytes(b"partial")
    simulate_dataset(out, 1, "tiny", scans=scans, num_frames=N, progress=False)
    assert first.stat().st_mtime_ns == stamp  # skipped, not rewritten
    tmp.unlink()
    report = verify_dataset(out)
    assert report.ok, report.format()
    ds = TusRecDataset(out)
    assert sorted(ds.scans) == [("000", s) for s in sorted(scans)]
    ref = simulate_sweep(0, 0, scans[1], "tiny", num_frames=N)
    loaded = ds.load("000", scans[1])
    np.testing.assert_array_equal(np.asarray(loaded.frames), ref.frames)
    np.testing.assert_array_equal(loaded.tforms, ref.tforms)
    np.testing.assert_array_equal(loaded.landmarks, ref.landmarks)
    np.testing.assert_allclose(loaded.calibration.scale, ref.calibration.scale)
    with h5py.File(out / "landmarks" / "landmark_000.h5") as f:
        assert sorted(f.keys()) == sorted(scans)


def test_test_layout_and_cli(tmp_path):
    out = tmp_path / "val"
    rc = cli_main(
        [
            "simulate",
            str(out),
            "--subjects",
            "1",
            "--first-subject",
            "50",
            "--preset",
            "tiny",
            "--protocol",
            "2025",
            "--scans",
            "LH_rotation",
            "--frames",
            "5",
            "--layout",
            "test",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert os.path.isfile(out / "frames" / "050" / "LH_rotation.h5")
    assert os.path.isfile(out / "transfs" / "050" / "LH_rotation.h5")
    report = verify_dataset(out)
    assert report.ok, report.format()
    assert TusRecDataset(out).scans == [("050", "LH_rotation")]
    assert cli_main(["simulate", str(out), "--preset", "tiny", "--scans", "bogus", "--no-progress"]) == 1


@pytest.mark.parametrize("preset", ["small", "tusrec"])
def test_elevational_curvature_keeps_the_decorrelation_length_at_the_focal_width(preset):
    """kappa(r) of a widening beam: zero at the focus, opposite signs either side, and the
    decorrelation width 1/sqrt(1/s^2 + 4 k0^2 kappa^2 s^2) equal to the focal sigma at every depth
    (numpy and torch give the same)."""
    from dualtrack.simulate import get_preset

    im = get_preset(preset).imaging
    r = np.linspace(0.5, 3 * im.elevation_focus_mm, 50)
    s, kappa = im.sigma_elevation(r), im.elevation_curvature(r)
    assert s.max() > 1.2 * im.sigma_elevation_focus  # the beam really widens
    s_eff = (1 / s**2 + 4 * im.k0**2 * kappa**2 * s**2) ** -0.5
    np.testing.assert_allclose(s_eff, im.sigma_elevation_focus, rtol=1e-9)
    assert im.elevation_curvature(np.array(im.elevation_focus_mm)) == 0.0
    f = im.elevation_focus_mm
    assert np.all(kappa[r < f - 0.1] < 0) and np.all(kappa[r > f + 0.1] > 0)
    np.testing.assert_allclose(im.elevation_curvature(torch.from_numpy(r)).numpy(), kappa, rtol=1e-12)
    flat = dataclasses.replace(im, fwhm_elevation_max_mm=im.fwhm_elevation_focus_mm)
    assert np.all(flat.elevation_curvature(r) == 0.0)
