"""Export formats (NRRD, PLUS sequence metafile, trajectory files) and `dualtrack reconstruct`."""

from __future__ import annotations

import gzip
import re

import numpy as np
import pytest

from dualtrack.cli import main
from dualtrack.data import TUSREC2024_CALIBRATION, write_calibration, write_scan
from dualtrack.data.trajectory import TRAJECTORY_CONVENTION, read_trajectory, write_trajectory
from dualtrack.geometry import params_to_matrix
from dualtrack.reconstruction.compounding import Volume, reconstruct_volume
from dualtrack.reconstruction.export import (
    IMAGE_MM_TO_RAS,
    poses_from_image_to_reference,
    read_nrrd,
    read_nrrd_header,
    read_sequence_metafile,
    write_nrrd,
    write_sequence_metafile,
)

RNG = np.random.default_rng(7)
SP = (0.31, 0.27)


def random_poses(n: int) -> np.ndarray:
    p = np.cumsum(RNG.normal(0, [0.3, 0.3, 0.5, 1.0, 1.0, 1.0], (n, 6)), 0)
    g = params_to_matrix(p)
    return np.linalg.inv(g[0])[None] @ g


def small_volume(dtype=np.float32) -> Volume:
    rot = params_to_matrix(np.array([0.0, 0, 0, 10.0, -20.0, 30.0]))[:3, :3]
    data = (RNG.random((4, 5, 6)) * 200).astype(dtype)
    spacing, origin = np.array([0.5, 0.6, 0.7]), np.array([1.0, -2.0, 3.5])
    return Volume(data=data, spacing=spacing, origin=origin, direction=rot)


def parse_directions(text: str) -> np.ndarray:
    """``(3, 3)``: row ``a`` = the NRRD ``space directions`` vector of axis ``a``."""
    return np.array([[float(x) for x in t.split(",")] for t in re.findall(r"\(([^)]*)\)", text)])


def test_image_mm_to_ras_is_the_documented_rotation():
    m = IMAGE_MM_TO_RAS
    np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3))
    assert np.linalg.det(m[:3, :3]) == pytest.approx(1.0)
    # R = -x, A = -z, S = -y
    np.testing.assert_allclose(m @ [1.0, 2.0, 3.0, 1.0], [-1.0, -3.0, -2.0, 1.0])


@pytest.mark.parametrize("space", ["RAS", "LPS"])
@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_nrrd_round_trip_every_field(tmp_path, space, compress, dtype):
    vol = small_volume(dtype)
    path = write_nrrd(tmp_path / "v.nrrd", vol, space=space, compress=compress, custom_fields={"note": "a b"})
    raw = path.read_bytes()
    assert raw.startswith(b"NRRD0004\n")
    hdr = read_nrrd_header(path)
    flip = np.diag([-1.0, -1.0, 1.0]) if space == "LPS" else np.eye(3)
    world = flip @ IMAGE_MM_TO_RAS[:3, :3]
    assert hdr["type"] == ("float" if dtype == np.float32 else "uint8")
    assert hdr["dimension"] == "3"
    assert hdr["space"] == {"RAS": "right-anterior-superior", "LPS": "left-posterior-superior"}[space]
    assert hdr["sizes"] == "6 5 4"  # (ni, nj, nk): fastest axis first
    assert hdr["kinds"] == "domain domain domain"
    assert hdr["endian"] == "little"
    assert hdr["encoding"] == ("gzip" if compress else "raw")
    assert hdr["space units"] == '"mm" "mm" "mm"'
    assert hdr["note"] == "a b"
    dirs = parse_directions(hdr["space directions"])
    for a in range(3):
        np.testing.assert_allclose(dirs[a], world @ vol.direction[:, a] * vol.spacing[a], atol=1e-12)
    origin = np.array([float(x) for x in hdr["space origin"].strip("()").split(",")])
    np.testing.assert_allclose(origin, world @ vol.origin, atol=1e-12)
    # the data block: C order (k, j, i) of the array = NRRD order with i fastest
    payload = raw[raw.index(b"\n\n") + 2:]
    if compress:
        payload = gzip.decompress(payload)
    assert payload == vol.data.astype(vol.data.dtype.newbyteorder("<")).tobytes()

    back = read_nrrd(path)
    assert back.data.dtype == vol.data.dtype
    np.testing.assert_array_equal(back.data, vol.data)
    np.testing.assert_allclose(back.spacing, vol.spacing, atol=1e-12)
    np.testing.assert_allclose(back.origin, vol.origin, atol=1e-12)
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-12)


def test_nrrd_places_voxels_in_ras_as_documented(tmp_path):
    vol = small_volume()
    hdr = read_nrrd_header(write_nrrd(tmp_path / "v.nrrd", vol))
    dirs = parse_directions(hdr["space directions"])
    origin = np.array([float(x) for x in hdr["space origin"].strip("()").split(",")])
    ijk = np.array([2, 3, 1])
    ras = origin + dirs.T @ ijk  # NRRD: position = origin + sum_a index_a * direction_a
    x, y, z = vol.index_to_reference(ijk[None])[0]
    np.testing.assert_allclose(ras, [-x, -z, -y], atol=1e-12)


def test_nrrd_errors(tmp_path):
    path = write_nrrd(tmp_path / "v.nrrd", small_volume(), compress=False)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="bytes"):
        read_nrrd(path)
    (tmp_path / "x.nrrd").write_text("hello\n\n")
    with pytest.raises(ValueError, match="not a NRRD"):
        read_nrrd(tmp_path / "x.nrrd")
    with pytest.raises(ValueError, match="space"):
        write_nrrd(tmp_path / "y.nrrd", small_volume(), space="XYZ")
    with pytest.raises(ValueError, match="rigid"):
        write_nrrd(tmp_path / "y.nrrd", small_volume(), reference_to_ras=np.diag([2.0, 1, 1, 1]))
    with pytest.raises(ValueError, match="rigid"):  # a mirror would silently flip the volume
        write_nrrd(tmp_path / "y.nrrd", small_volume(), reference_to_ras=np.diag([-1.0, 1, 1, 1]))
    assert not (tmp_path / "y.nrrd").exists()


def _expected_image_to_ref(g: np.ndarray, sp) -> np.ndarray:
    """Independent construction: pixel (i, j) 0-based -> image mm ((i+1) sx, (j+1) sy) -> frame 0 -> RAS."""
    out = []
    for gi in g:
        cols = []
        for vec in ([1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]):
            i, j, k, h = vec
            p_mm = np.array([(i + h) * sp[0], (j + h) * sp[1], k, h], float)
            cols.append(IMAGE_MM_TO_RAS @ gi @ p_mm)
        out.append(np.stack(cols, 1))
    return np.array(out)


@pytest.mark.parametrize("compress", [True, False])
def test_sequence_metafile_round_trip(tmp_path, compress):
    n, h, w = 5, 7, 9
    frames = RNG.integers(0, 256, (n, h, w), dtype=np.uint8)
    g = random_poses(n)
    gt = random_poses(n)
    pred = g.copy()
    pred[3, 0, 0] = np.nan
    path = write_sequence_metafile(
        tmp_path / "s.seq.mha", frames, pred, SP, extra_poses={"TrueImage": gt}, compress=compress,
        frame_rate_hz=10.0,
    )
    text = path.read_bytes()
    header = text[: text.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")].decode()
    lines = header.strip().split("\n")
    assert lines[0] == "ObjectType = Image" and lines[-1] == "ElementDataFile = LOCAL"
    seq = read_sequence_metafile(path)
    f = seq.fields
    assert f["NDims"] == "3"
    assert f["DimSize"] == f"{w} {h} {n}"
    assert f["ElementSpacing"] == "1 1 1"
    assert f["ElementType"] == "MET_UCHAR"
    assert f["ElementDataFile"] == "LOCAL"
    assert f["BinaryData"] == "True" and f["BinaryDataByteOrderMSB"] == "False"
    assert f["CompressedData"] == str(compress)
    assert ("CompressedDataSize" in f) == compress
    assert f["UltrasoundImageOrientation"] == "MF"
    assert f["UltrasoundImageType"] == "BRIGHTNESS"
    assert f["Kinds"] == "domain domain list"
    np.testing.assert_array_equal(seq.frames, frames)
    np.testing.assert_allclose(seq.timestamps, np.arange(n) / 10.0)
    expected = _expected_image_to_ref(g, SP)
    expected_gt = _expected_image_to_ref(gt, SP)
    for i, ff in enumerate(seq.frame_fields):
        assert ff["FrameNumber"] == str(i)
        assert ff["ImageStatus"] == "OK"
        assert float(ff["UnfilteredTimestamp"]) == pytest.approx(i / 10.0)
        assert ff["TrueImageToReferenceTransformStatus"] == "OK"
        nums = np.array([float(x) for x in ff["TrueImageToReferenceTransform"].split()])
        np.testing.assert_allclose(nums.reshape(4, 4), expected_gt[i], atol=1e-12)
        if i == 3:
            assert ff["ImageToReferenceTransformStatus"] == "INVALID"
            assert np.isnan(seq.transforms["ImageToReference"][i]).all()
        else:
            assert ff["ImageToReferenceTransformStatus"] == "OK"
            np.testing.assert_allclose(seq.transforms["ImageToReference"][i], expected[i], atol=1e-12)
    assert seq.statuses["ImageToReference"] == ["OK", "OK", "OK", "INVALID", "OK"]
    poses, spacing = poses_from_image_to_reference(seq.transforms["TrueImageToReference"])
    np.testing.assert_allclose(poses, gt, atol=1e-9)
    assert spacing == pytest.approx(SP)


def test_sequence_metafile_errors(tmp_path):
    frames = np.zeros((3, 4, 5), np.uint8)
    with pytest.raises(ValueError, match=r"\(3, 4, 4\)"):
        write_sequence_metafile(tmp_path / "a.seq.mha", frames, random_poses(2), SP)
    with pytest.raises(ValueError, match=".mha"):
        write_sequence_metafile(tmp_path / "a.nrrd", frames, random_poses(3), SP)
    path = write_sequence_metafile(tmp_path / "a.seq.mha", frames, random_poses(3), SP, compress=False)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="expected W\\*H\\*N"):
        read_sequence_metafile(path)


@pytest.mark.parametrize("suffix", [".h5", ".csv"])
def test_trajectory_round_trip(tmp_path, suffix):
    g = random_poses(6)
    loc = np.linalg.inv(g[:-1]) @ g[1:]
    path = write_trajectory(tmp_path / f"t{suffix}", loc, g, attrs={"spacing": SP, "scan": "sub000__x"})
    back = read_trajectory(path)
    np.testing.assert_array_equal(back.global_, g)
    np.testing.assert_array_equal(back.local, loc)
    if suffix == ".h5":
        assert back.attrs["convention"] == TRAJECTORY_CONVENTION
        np.testing.assert_allclose(back.attrs["spacing"], SP)
        assert back.attrs["num_frames"] == 6
    else:
        text = path.read_text()
        assert text.startswith("# dualtrack trajectory v1")
        assert "T_{0<-i}" in text
        assert back.attrs["spacing"] == f"{SP[0]} {SP[1]}"
    assert back.attrs["scan"] == "sub000__x"


def test_trajectory_errors(tmp_path):
    g = random_poses(4)
    with pytest.raises(ValueError, match=r"\(3, 4, 4\)"):
        write_trajectory(tmp_path / "t.h5", g[:2], g)
    with pytest.raises(ValueError, match="must end in"):
        write_trajectory(tmp_path / "t.txt", g[1:], g)
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="columns"):
        read_trajectory(tmp_path / "bad.csv")


# ------------------------------------------------------------------------------------------ CLI


@pytest.fixture()
def scan(tmp_path):
    n, h, w = 12, 24, 32
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.stack([((xx * 7 + yy * 3 + 5 * i) % 200 + 20).astype(np.uint8) for i in range(n)])
    p = np.zeros((n, 6))
    p[:, 2] = np.arange(n) * 0.4
    p[:, 3] = np.linspace(0, 5, n)
    c = TUSREC2024_CALIBRATION.image_to_tool
    tforms = (params_to_matrix(p) @ np.linalg.inv(c)).astype(np.float32)  # G_i = C^-1 T_i C ~ params
    root = tmp_path / "data"
    write_scan(root, "000", "LH_Par_C_DtP", frames, tforms)
    write_calibration(root / "calib_matrix.csv", TUSREC2024_CALIBRATION)
    return root / "frames_transfs" / "000" / "LH_Par_C_DtP.h5", frames, tforms


def test_cli_reconstruct_ground_truth_and_refuses_overwrite(scan, tmp_path, capsys):
    path, frames, tforms = scan
    out = tmp_path / "gt.nrrd"
    assert main(["reconstruct", str(path), "--ground-truth", "-o", str(out), "--spacing", "0.6"]) == 0
    vol = read_nrrd(out)
    g = np.linalg.inv(TUSREC2024_CALIBRATION.image_to_tool) @ np.linalg.inv(tforms[0].astype(float)) @ \
        tforms.astype(float) @ TUSREC2024_CALIBRATION.image_to_tool
    direct = reconstruct_volume(frames, g, TUSREC2024_CALIBRATION.scale, spacing_mm=0.6)
    np.testing.assert_allclose(vol.data, direct.data, atol=1e-3)
    np.testing.assert_allclose(vol.origin, direct.origin, atol=1e-9)
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["reconstruct", str(path), "--ground-truth", "-o", str(out), "--spacing", "1.0"]) == 1
    err = capsys.readouterr().err
    assert "exists" in err and "--overwrite" in err
    assert out.read_bytes() == before  # untouched
    args = ["reconstruct", str(path), "--ground-truth", "-o", str(out), "--spacing", "1.0"]
    assert main([*args, "--overwrite"]) == 0
    assert out.read_bytes() != before


def test_cli_reconstruct_from_trajectory_and_errors(scan, tmp_path, capsys):
    path, frames, tforms = scan
    c = TUSREC2024_CALIBRATION.image_to_tool
    t = tforms.astype(float)
    g = np.linalg.inv(c) @ np.linalg.inv(t[0]) @ t @ c
    traj = write_trajectory(tmp_path / "pred.csv", np.linalg.inv(g[:-1]) @ g[1:], g)
    out, seq = tmp_path / "pred.nrrd", tmp_path / "pred.seq.mha"
    args = ["reconstruct", str(path), "--poses", str(traj), "-o", str(out), "--spacing", "0.6"]
    assert main([*args, "--sequence", str(seq), "--uint8"]) == 0
    vol = read_nrrd(out)
    direct = reconstruct_volume(frames, g, TUSREC2024_CALIBRATION.scale, spacing_mm=0.6, out_dtype="uint8")
    np.testing.assert_array_equal(vol.data, direct.data)
    np.testing.assert_array_equal(read_sequence_metafile(seq).frames, frames)

    short = write_trajectory(tmp_path / "short.h5", np.linalg.inv(g[:-2]) @ g[1:-1], g[:-1])
    capsys.readouterr()
    assert main(["reconstruct", str(path), "--poses", str(short), "-o", str(tmp_path / "x.nrrd")]) == 1
    err = capsys.readouterr().err
    assert "11 frames" in err and "12 frames" in err
    assert not (tmp_path / "x.nrrd").exists()
    missing = tmp_path / "missing.h5"
    assert main(["reconstruct", str(missing), "--ground-truth", "-o", str(tmp_path / "y.nrrd")]) == 1
    assert "not found" in capsys.readouterr().err
    args = ["reconstruct", str(path), "--ground-truth", "-o", str(tmp_path / "z.nrrd"), "--spacing", "0.05",
            "--max-gb", "0.001"]
    assert main(args) == 1
    err = capsys.readouterr().err
    # the advice is in the command's own flags, not the Python API's argument names
    assert "use --spacing 0.2" in err and "--max-gb" in err and "--frame obb" in err
    assert "spacing_mm" not in err and "frame=" not in err
