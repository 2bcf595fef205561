"""TUS-REC data layer: calibration csv, scan names, reader/writers for both layouts, Sweep."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch

from dualtrack import geometry
from dualtrack.data import (
    SCAN_NAMES_2024,
    SCAN_NAMES_2025,
    TUSREC2024_CALIBRATION,
    Calibration,
    LazyFrames,
    Sweep,
    TusRecDataset,
    format_dataset_key,
    parse_dataset_key,
    parse_scan_name,
    read_calibration,
    tusrec,
    write_calibration,
    write_dataset_keys,
    write_landmarks,
    write_scan,
)

N, H, W = 12, 16, 20

PUBLISHED_CSV = (
    "scaling_from_pixel_to_mm\r\n"
    "0.229389190673828,0,0,0\r\n"
    "0,0.220979690551758,0,0\r\n"
    "0,0,1,0\r\n"
    "0,0,0,1\r\n"
    "spatial_calibration_from_image_coordinate_system_to_tracking_tool_coordinate_system\r\n"
    "0.231065,-0.218052,0.948189,-70.741329\r\n"
    "-0.190847,-0.965787,-0.175591,-80.650566\r\n"
    "0.954037,-0.140386,-0.264774,-46.176622\r\n"
    "0,0,0,1\r\n"
    "time_difference_between_frame_and_tracker,0.2s\r\n"
)


def random_tforms(rng: np.random.Generator, n: int = N) -> np.ndarray:
    """``(n, 4, 4)`` float32 rigid tool->camera transforms along a wiggly path."""
    params = np.cumsum(rng.normal(size=(n, 6)) * [2, 2, 2, 3, 3, 3], axis=0) + [100, -50, 300, 10, 20, 30]
    return geometry.params_to_matrix(params).astype(np.float32)


def random_frames(rng: np.random.Generator, n: int = N) -> np.ndarray:
    return rng.integers(0, 256, size=(n, H, W), dtype=np.uint8)


# ---------------------------------------------------------------------------------- calibration


def test_calibration_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(1)
    calib = Calibration(
        np.diag([*rng.uniform(0.1, 0.5, 2), 1, 1]), random_tforms(rng, 1)[0].astype(np.float64)
    )
    path = write_calibration(tmp_path, calib)
    assert path == tmp_path / "calib_matrix.csv"
    back = read_calibration(path)
    np.testing.assert_array_equal(back.scale, calib.scale)
    np.testing.assert_array_equal(back.image_to_tool, calib.image_to_tool)
    lines = path.read_text().splitlines()
    assert len(lines) == 10 and not lines[0][0].isdigit() and not lines[5][0].isdigit()
    assert all(len(line.split(",")) == 4 for line in lines[1:5] + lines[6:10])


def test_parse_published_tusrec_csv(tmp_path):
    path = tmp_path / "calib_matrix.csv"
    path.write_bytes(PUBLISHED_CSV.encode())
    calib = read_calibration(path)
    assert calib.spacing == pytest.approx((0.229389190673828, 0.220979690551758), abs=1e-15)
    assert calib.image_to_tool[1, 3] == pytest.approx(-80.650566)
    assert calib.image_to_tool[2, 0] == pytest.approx(0.954037)
    np.testing.assert_array_equal(calib.image_to_tool[3], [0, 0, 0, 1])
    assert calib == TUSREC2024_CALIBRATION
    assert bool(geometry.is_rigid(calib.image_to_tool, atol=1e-5))
    np.testing.assert_allclose(calib.pixel_to_tool, calib.image_to_tool @ calib.scale)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("scaling\n1,0,0,0\n0,1,0,0\n", "line 4"),
        ("scaling\n1,0,0,0\n0,1,0,0\n0,0,1,0\n0,0,0,1\nhdr\n1,0,0\n", "line 7"),
        (
            "scaling\n1,0,0,0\n0,abc,0,0\n0,0,1,0\n0,0,0,1\nhdr\n1,0,0,0\n0,1,0,0\n0,0,1,0\n0,0,0,1\n",
            "line 3",
        ),
        ("1,0,0,0\n0,1,0,0\n0,0,1,0\n0,0,0,1\n1,0,0,0\n0,1,0,0\n0,0,1,0\n0,0,0,1\n", "header"),
    ],
)
def test_bad_calibration_text_names_file_and_line(tmp_path, text, needle):
    path = tmp_path / "calib_matrix.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=needle) as err:
        read_calibration(path)
    assert str(path) in str(err.value)


def test_missing_calibration_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="calib_matrix.csv"):
        read_calibration(tmp_path / "calib_matrix.csv")


# ---------------------------------------------------------------------------------- scan names


def test_scan_name_lists():
    assert len(SCAN_NAMES_2024) == 24 == len(set(SCAN_NAMES_2024))
    assert list(SCAN_NAMES_2024) == sorted(SCAN_NAMES_2024)
    assert SCAN_NAMES_2024[0] == "LH_Par_C_DtP" and "RH_Per_S_PtD" in SCAN_NAMES_2024
    assert set(SCAN_NAMES_2025) == {"LH_rotation", "RH_rotation"}
    infos = [parse_scan_name(n) for n in SCAN_NAMES_2024]
    assert {(i.arm, i.orientation, i.shape, i.direction) for i in infos}.__len__() == 24
    assert all(i.protocol == "non-rotation" and i.year == 2024 for i in infos)


def test_parse_scan_name_fields():
    info = parse_scan_name("RH_Per_S_PtD")
    assert (info.arm, info.orientation, info.shape, info.direction) == ("RH", "Per", "S", "PtD")
    assert "right arm" in info.describe() and "S-shaped" in info.describe()
    rot = parse_scan_name("LH_rotation.h5")
    assert (rot.name, rot.arm, rot.protocol, rot.year, rot.shape) == (
        "LH_rotation",
        "LH",
        "rotation",
        2025,
        None,
    )


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("RH_Ver_L_DtP", "Per"),
        ("LH_rotating", "rotation"),
        ("XH_Par_C_DtP", "LH or RH"),
        ("LH_Par_C", "parts"),
        ("LH_Par_Z_DtP", "shape"),
        ("LH_Par_C_DtD", "direction"),
    ],
)
def test_parse_scan_name_errors(name, needle):
    with pytest.raises(ValueError, match=needle):
        parse_scan_name(name)


def test_dataset_keys_parse_and_format():
    assert format_dataset_key("050", "LH_Par_C_DtP") == "sub050__LH_Par_C_DtP"
    assert format_dataset_key(7, "LH_rotation") == "sub007__LH_rotation"
    assert parse_dataset_key("sub050__LH_Par_C_DtP") == ("050", "LH_Par_C_DtP")
    for bad in ("050__LH_Par_C_DtP", "sub050_LH_Par_C_DtP", "subA__LH_rotation", "sub050__a__b"):
        with pytest.raises(ValueError, match="dataset key"):
            parse_dataset_key(bad)
    with pytest.raises(ValueError, match="subject"):
        format_dataset_key("abc", "LH_rotation")


# ---------------------------------------------------------------------------------- layouts


def _write_train(root, rng):
    content = {}
    for sid in ("001", "000"):
        lms = {}
        for name in ("RH_Per_L_DtP", "LH_Par_C_DtP"):
            frames, tforms = random_frames(rng), random_tforms(rng)
            write_scan(root, sid, name, frames, tforms)
            lms[name] = np.stack(
                [rng.integers(1, N, 5), rng.integers(1, W + 1, 5), rng.integers(1, H + 1, 5)], 1
            )
            content[sid, name] = (frames, tforms, lms[name])
        write_landmarks(root, sid, lms)
    write_calibration(root / "calib_matrix.csv", TUSREC2024_CALIBRATION)
    return content


def test_train_layout_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    content = _write_train(tmp_path, rng)
    assert (tmp_path / "frames_transfs" / "000" / "LH_Par_C_DtP.h5").is_file()
    assert (tmp_path / "landmarks" / "landmark_001.h5").is_file()
    ds = TusRecDataset(tmp_path)
    assert ds.layout == "train" and ds.subjects == ["000", "001"] and len(ds) == 4
    assert ds.scans == sorted(content)
    assert ds.calibration == TUSREC2024_CALIBRATION
    for sweep in ds.sweeps():
        frames, tforms, lms = content[sweep.subject, sweep.name]
        assert isinstance(sweep.frames, LazyFrames)
        assert sweep.num_frames == N and sweep.shape == (H, W)
        np.testing.assert_array_equal(np.asarray(sweep.frames), frames)
        assert sweep.tforms.dtype == np.float32
        np.testing.assert_array_equal(sweep.tforms, tforms)
        np.testing.assert_array_equal(sweep.landmarks, lms)
    assert [s.subject for s in ds.sweeps(subjects=[1])] == ["001", "001"]
    with h5py.File(tmp_path / "frames_transfs" / "000" / "LH_Par_C_DtP.h5") as f:
        assert (
            f["frames"].chunks == (1, H, W)
            and f["frames"].dtype == np.uint8
            and f["frames"].compression is None
        )
        assert f["tforms"].dtype == np.float32
    with pytest.raises(KeyError, match="no scan"):
        ds.load("000", "RH_rotation")


def test_dataset_found_in_data_subfolder(tmp_path):
    rng = np.random.default_rng(3)
    write_scan(tmp_path / "data", 0, "LH_rotation", random_frames(rng), random_tforms(rng), compression="lzf")
    ds = TusRecDataset(tmp_path)
    assert ds.root == tmp_path / "data" and ds.scans == [("000", "LH_rotation")]
    with pytest.raises(FileNotFoundError, match="calib_matrix.csv"):
        ds.load("000", "LH_rotation")
    with pytest.raises(ValueError, match="not a TUS-REC dataset"):
        TusRecDataset(tmp_path / "data" / "frames_transfs")


def test_test_layout_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    frames, tforms = random_frames(rng), random_tforms(rng)
    write_scan(tmp_path, "050", "LH_Par_C_DtP", frames, tforms, layout="test")
    write_scan(tmp_path, "050", "RH_Par_C_DtP", frames[:5], None, layout="test")
    lm = np.array([[1, 1, 1], [N - 1, W, H]])
    path = write_landmarks(tmp_path, "050", {"LH_Par_C_DtP": lm}, layout="test")
    assert path == tmp_path / "landmark" / "landmark_050.h5"
    write_dataset_keys(tmp_path, ["sub050__LH_Par_C_DtP", ("050", "RH_Par_C_DtP")])
    write_calibration(tmp_path, TUSREC2024_CALIBRATION)
    with h5py.File(tmp_path / "dataset_keys.h5") as f:
        assert sorted(f.keys()) == ["sub050__LH_Par_C_DtP", "sub050__RH_Par_C_DtP"]
    with h5py.File(tmp_path / "frames" / "050" / "LH_Par_C_DtP.h5") as f:
        assert list(f.keys()) == ["frames"]
    with h5py.File(tmp_path / "transfs" / "050" / "LH_Par_C_DtP.h5") as f:
        assert list(f.keys()) == ["tforms"]

    ds = TusRecDataset(tmp_path)
    assert ds.layout == "test" and ds.scans == [("050", "LH_Par_C_DtP"), ("050", "RH_Par_C_DtP")]
    sweep = ds.load(50, "LH_Par_C_DtP")
    np.testing.assert_array_equal(sweep.frames[:], frames)
    np.testing.assert_array_equal(sweep.tforms, tforms)
    np.testing.assert_array_equal(sweep.landmarks, lm)
    untracked = ds.load("050", "RH_Par_C_DtP")
    assert untracked.tforms is None and untracked.landmarks is None and untracked.num_frames == 5
    with pytest.raises(ValueError, match="no tracker transforms"):
        untracked.global_transforms()
    with pytest.raises(ValueError, match="other layout"):
        write_scan(tmp_path, "000", "LH_rotation", frames, tforms, layout="train")


def test_rotation_landmarks_go_to_landmarks_folder(tmp_path):
    path = write_landmarks(tmp_path, 51, {"LH_rotation": [[3, 4, 5]]}, layout="test")
    assert path == tmp_path / "landmarks" / "landmark_051.h5"


def test_rewriting_landmarks_replaces_the_existing_file_in_place(tmp_path):
    """A later write (e.g. 2024 scans added to a 2025 test folder) must not leave a stale copy in
    the other landmark folder, which readers would find first."""
    write_landmarks(tmp_path, 51, {"LH_rotation": [[3, 4, 5]]}, layout="test")
    merged = {"LH_rotation": [[3, 4, 5]], "LH_Par_C_DtP": [[2, 6, 7]]}
    path = write_landmarks(tmp_path, 51, merged, layout="test")
    assert path == tmp_path / "landmarks" / "landmark_051.h5"
    assert not (tmp_path / "landmark").exists()
    with h5py.File(path, "r") as f:
        assert sorted(f.keys()) == ["LH_Par_C_DtP", "LH_rotation"]


# ---------------------------------------------------------------------------------- writers


class _FailingFrames:
    """Array-like that fails after its first block: emulates a writer killed mid-file."""

    shape = (N, H, W)
    dtype = np.dtype(np.uint8)

    def __getitem__(self, key):
        if key.start:
            raise RuntimeError("killed")
        return np.zeros((key.stop - key.start, H, W), np.uint8)


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(tusrec, "WRITE_BLOCK_BYTES", 4 * H * W)
    rng = np.random.default_rng(0)
    with pytest.raises(RuntimeError, match="killed"):
        write_scan(tmp_path, 0, "LH_rotation", _FailingFrames(), random_tforms(rng))
    folder = tmp_path / "frames_transfs" / "000"
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"frames": np.zeros((N, H, W), np.float32)}, "uint8"),
        ({"frames": np.zeros((N, H), np.uint8)}, r"\(N, H, W\)"),
        ({"tforms": np.tile(np.eye(4), (N - 1, 1, 1))}, r"\(12, 4, 4\)"),
        ({"tforms": np.full((N, 4, 4), np.nan)}, "NaN"),
        ({"tforms": np.tile(np.diag([2.0, 1, 1, 1]), (N, 1, 1))}, "rigid"),
        ({"tforms": None}, "needs tforms"),
        ({"name": "a__b"}, "scan name"),
        ({"subject": "x1"}, "subject"),
        ({"layout": "val"}, "layout"),
    ],
)
def test_write_scan_rejects_bad_input(tmp_path, kwargs, needle):
    args = {
        "subject": "000",
        "name": "LH_rotation",
        "frames": np.zeros((N, H, W), np.uint8),
        "tforms": np.tile(np.eye(4), (N, 1, 1)),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=needle):
        write_scan(tmp_path, **args)
    assert not list(tmp_path.rglob("*.h5"))


def test_write_landmarks_rejects_frame_zero_and_bad_shape(tmp_path):
    with pytest.raises(ValueError, match=">= 1"):
        write_landmarks(tmp_path, 0, {"LH_rotation": [[0, 3, 3]]})
    with pytest.raises(ValueError, match=r"\(K, 3\)"):
        write_landmarks(tmp_path, 0, {"LH_rotation": [[1, 3]]})


# ---------------------------------------------------------------------------------- Sweep


def test_ground_truth_matches_independent_formula():
    rng = np.random.default_rng(7)
    tforms = random_tforms(rng)
    c = TUSREC2024_CALIBRATION.image_to_tool
    sweep = Sweep.from_arrays(
        random_frames(rng), tforms, TUSREC2024_CALIBRATION, subject="003", name="LH_rotation"
    )
    t = tforms.astype(np.float64)
    inv = np.linalg.inv
    expected_global = np.stack([inv(c) @ inv(t[0]) @ t[i] @ c for i in range(N)])
    expected_local = np.stack([inv(c) @ inv(t[i - 1]) @ t[i] @ c for i in range(1, N)])
    g, loc = sweep.global_transforms(), sweep.local_transforms()
    assert g.dtype == np.float64 and g.shape == (N, 4, 4) and loc.shape == (N - 1, 4, 4)
    np.testing.assert_allclose(g, expected_global, atol=1e-9)
    np.testing.assert_allclose(loc, expected_local, atol=1e-9)
    np.testing.assert_allclose(g[0], np.eye(4), atol=1e-12)
    chained = [np.eye(4)]
    for i in range(N - 1):
        chained.append(chained[-1] @ loc[i])
    np.testing.assert_allclose(np.stack(chained), g, atol=1e-6)
    # Labels are relative motions: they do not depend on where the camera is.
    moved = geometry.params_to_matrix(np.array([10.0, -20, 30, 40, -50, 60])) @ t
    np.testing.assert_allclose(Sweep.from_arrays(sweep.frames, moved).global_transforms(), g, atol=1e-6)
    assert sweep.key == "sub003__LH_rotation" and sweep.spacing == TUSREC2024_CALIBRATION.spacing


def test_sweep_rejects_mismatched_tforms():
    with pytest.raises(ValueError, match=r"\(12, 4, 4\)"):
        Sweep.from_arrays(np.zeros((N, H, W), np.uint8), np.tile(np.eye(4), (N + 1, 1, 1)))


def test_lazy_frames_indexing_and_pickling(tmp_path):
    rng = np.random.default_rng(11)
    frames = random_frames(rng)
    write_scan(tmp_path, 0, "LH_rotation", frames, random_tforms(rng))
    write_calibration(tmp_path, TUSREC2024_CALIBRATION)
    sweep = TusRecDataset(tmp_path).load("000", "LH_rotation")
    lazy = sweep.frames
    assert len(lazy) == N and lazy.shape == (N, H, W) and lazy.dtype == np.uint8 and lazy.ndim == 3
    np.testing.assert_array_equal(lazy[3], frames[3])
    np.testing.assert_array_equal(lazy[-1], frames[-1])
    np.testing.assert_array_equal(lazy[2:9], frames[2:9])
    np.testing.assert_array_equal(lazy[::-3], frames[::-3])
    np.testing.assert_array_equal(lazy[[7, 1, 7]], frames[[7, 1, 7]])
    np.testing.assert_array_equal(lazy[1:4, 2:5, ::2], frames[1:4, 2:5, ::2])
    np.testing.assert_array_equal(np.asarray(lazy, dtype=np.float32), frames.astype(np.float32))
    with pytest.raises(IndexError):
        lazy[N]
    blob = pickle.dumps(sweep)
    assert len(blob) < 4000  # paths and small arrays only, no pixel data
    clone = pickle.loads(blob)
    np.testing.assert_array_equal(clone.frames[5], frames[5])
    np.testing.assert_array_equal(clone.tforms, sweep.tforms)


class _FrameDataset(torch.utils.data.Dataset):
    def __init__(self, sweep: Sweep) -> None:
        self.sweep = sweep

    def __len__(self) -> int:
        return self.sweep.num_frames

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.sweep.frames[i])


def test_lazy_sweep_in_dataloader_worker(tmp_path):
    rng = np.random.default_rng(12)
    frames = random_frames(rng)
    write_scan(tmp_path, 0, "LH_rotation", frames, random_tforms(rng))
    write_calibration(tmp_path, TUSREC2024_CALIBRATION)
    sweep = TusRecDataset(tmp_path).load(0, "LH_rotation")
    loader = torch.utils.data.DataLoader(
        _FrameDataset(sweep), batch_size=5, num_workers=1, multiprocessing_context="spawn"
    )
    out = torch.cat(list(loader)).numpy()
    np.testing.assert_array_equal(out, frames)
