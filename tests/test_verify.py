"""verify-data: a good dataset passes; each kind of breakage is reported with its file, no traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from dualtrack import geometry
from dualtrack.cli import main
from dualtrack.data import (
    TUSREC2024_CALIBRATION,
    write_calibration,
    write_dataset_keys,
    write_landmarks,
    write_scan,
)
from dualtrack.data.verify import verify_dataset

N, H, W = 12, 16, 20
SCAN = "frames_transfs/000/LH_Par_C_DtP.h5"


def _scan(rng: np.random.Generator, n: int = N) -> tuple[np.ndarray, np.ndarray]:
    params = np.cumsum(rng.normal(size=(n, 6)), axis=0)
    return rng.integers(0, 256, (n, H, W), dtype=np.uint8), geometry.params_to_matrix(params).astype(
        np.float32
    )


def _landmarks(rng: np.random.Generator) -> np.ndarray:
    return np.stack([rng.integers(1, N, 4), rng.integers(1, W + 1, 4), rng.integers(1, H + 1, 4)], 1)


@pytest.fixture(scope="module")
def good_train(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("good_train")
    rng = np.random.default_rng(0)
    for sid in ("000", "001"):
        names = ("LH_Par_C_DtP", "RH_Per_L_PtD")
        for name in names:
            write_scan(root, sid, name, *_scan(rng))
        write_landmarks(root, sid, {name: _landmarks(rng) for name in names})
    write_calibration(root, TUSREC2024_CALIBRATION)
    return root


@pytest.fixture(scope="module")
def good_test(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("good_test")
    rng = np.random.default_rng(1)
    for name in ("LH_rotation", "RH_rotation"):
        write_scan(root, "050", name, *_scan(rng), layout="test")
    write_landmarks(root, "050", {n: _landmarks(rng) for n in ("LH_rotation", "RH_rotation")}, layout="test")
    write_dataset_keys(root, [("050", "LH_rotation"), ("050", "RH_rotation")])
    write_calibration(root, TUSREC2024_CALIBRATION)
    return root


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def _cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(["verify-data", *argv])
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    return code, text


def test_good_train_dataset_passes(good_train, capsys, tmp_path):
    report = verify_dataset(good_train)
    assert report.ok and report.layout == "train", report.format()
    assert (report.num_subjects, report.num_scans, report.num_frames) == (2, 4, 4 * N)
    assert report.num_landmark_scans == 4 and report.frame_shapes == {f"{H}x{W}": 4}
    assert report.spacing == TUSREC2024_CALIBRATION.spacing
    # Only 2 of the 24 TUS-REC 2024 scans per subject: a warning per subject, not an error.
    assert len(report.warnings) == 2 and all(
        "expected the 24 TUS-REC 2024 scans" in w.message for w in report.warnings
    )
    out_json = tmp_path / "report.json"
    code, text = _cli(capsys, str(good_train), "--json", str(out_json))
    assert code == 0
    assert "Result: OK: 0 errors, 2 warnings" in text and "Frames: 48" in text and "Scans: 4" in text
    data = json.loads(out_json.read_text())
    assert data["ok"] and data["num_scans"] == 4 and data["num_warnings"] == 2 and len(data["issues"]) == 2


def test_good_test_layout_passes(good_test, capsys):
    report = verify_dataset(good_test)
    assert report.ok and not report.warnings and report.layout == "test", report.format()
    assert (report.num_scans, report.num_frames, report.num_landmark_scans) == (2, 2 * N, 2)
    assert _cli(capsys, str(good_test))[0] == 0


def _truncate(root: Path) -> str:
    path = root / SCAN
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return "truncated or corrupt"


def _drop_tforms(root: Path) -> str:
    with h5py.File(root / SCAN, "r+") as f:
        del f["tforms"]
    return "missing dataset 'tforms'"


def _nan_tform(root: Path) -> str:
    with h5py.File(root / SCAN, "r+") as f:
        f["tforms"][5, 0, 3] = np.nan
    return "NaN/Inf at frames [5]"


def _nonrigid_tform(root: Path) -> str:
    with h5py.File(root / SCAN, "r+") as f:
        t = f["tforms"][()]
        t[7, :3, :3] *= 1.5
        f["tforms"][...] = t
    return "non-rigid or singular matrices at frames [7]"


def _wrong_count(root: Path) -> str:
    with h5py.File(root / SCAN, "r+") as f:
        t = f["tforms"][:-1]
        del f["tforms"]
        f["tforms"] = t
    return f"expected {N} transforms (one per frame), found {N - 1}"


def _bad_frames_dtype(root: Path) -> str:
    with h5py.File(root / SCAN, "r+") as f:
        fr = f["frames"][()].astype(np.float32)
        del f["frames"]
        f["frames"] = fr
    return "expected dtype uint8, found float32"


def _bad_csv(root: Path) -> str:
    (root / "calib_matrix.csv").write_text("scaling\n0.2,0,0,0\n0,x,0,0\n")
    return "line 3 should hold 4"


def _nonrigid_calibration(root: Path) -> str:
    c = TUSREC2024_CALIBRATION.image_to_tool.copy()
    c[:3, :3] *= 2
    write_calibration(root, type(TUSREC2024_CALIBRATION)(TUSREC2024_CALIBRATION.scale, c))
    return "C (lines 7-10) must be rigid"


def _landmark_out_of_range(root: Path) -> str:
    with h5py.File(root / "landmarks" / "landmark_000.h5", "r+") as f:
        lm = f["LH_Par_C_DtP"][()]
        lm[1] = [0, 5, 5]
        lm[2] = [3, W + 1, 5]
        f["LH_Par_C_DtP"][...] = lm
    return f"expected frame index in 1..{N - 1}"


CASES = {
    "truncated h5": (_truncate, SCAN),
    "missing tforms": (_drop_tforms, SCAN),
    "NaN transform": (_nan_tform, SCAN),
    "non-rigid transform": (_nonrigid_tform, SCAN),
    "wrong frame count": (_wrong_count, SCAN),
    "float frames": (_bad_frames_dtype, SCAN),
    "bad csv": (_bad_csv, "calib_matrix.csv"),
    "non-rigid calibration": (_nonrigid_calibration, "calib_matrix.csv"),
    "landmark out of range": (_landmark_out_of_range, "landmarks/landmark_000.h5"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_broken_copies_are_reported(good_train, tmp_path, capsys, case):
    breaker, file = CASES[case]
    root = _copy(good_train, tmp_path)
    needle = breaker(root)
    report = verify_dataset(root)
    assert not report.ok
    assert any(e.file == file and needle in e.message for e in report.errors), report.format()
    code, text = _cli(capsys, str(root))
    assert code == 1
    assert f"{file}: " in text and needle in text and "Result: FAILED" in text
    # The other scans were still checked.
    assert "Scans: 4" in text


def test_landmark_errors_name_both_bad_rows(good_train, tmp_path):
    root = _copy(good_train, tmp_path)
    _landmark_out_of_range(root)
    messages = [e.message for e in verify_dataset(root).errors]
    assert any("row 1: [0, 5, 5]" in m for m in messages)
    assert any(f"x (1-based column) in 1..{W}" in m and f"row 2: [3, {W + 1}, 5]" in m for m in messages)


def test_test_layout_problems(good_test, tmp_path, capsys):
    root = _copy(good_test, tmp_path)
    write_dataset_keys(root, ["sub050__LH_rotation", "sub051__RH_rotation"])
    (root / "transfs" / "050" / "RH_rotation.h5").unlink()
    report = verify_dataset(root)
    errors = {(e.file, e.message) for e in report.errors}
    assert (
        "dataset_keys.h5",
        "key 'sub051__RH_rotation' points to frames/051/RH_rotation.h5, which is missing",
    ) in errors
    assert (
        "transfs/050/RH_rotation.h5",
        "missing file",
    ) not in errors  # RH_rotation of 050 is no longer listed
    assert any(w.file == "frames/050/RH_rotation.h5" and "not listed" in w.message for w in report.warnings)
    code, text = _cli(capsys, str(root))
    assert code == 1 and "sub051__RH_rotation" in text


def test_test_layout_without_keys_or_transfs(good_test, tmp_path):
    root = _copy(good_test, tmp_path)
    (root / "dataset_keys.h5").unlink()
    shutil.rmtree(root / "transfs")
    report = verify_dataset(root)
    assert [(e.file, "missing" in e.message) for e in report.errors] == [("dataset_keys.h5", True)]
    assert any(w.file == "transfs" and "ground-truth" in w.message for w in report.warnings)
    assert report.num_scans == 2


def test_not_a_dataset(tmp_path, capsys):
    code, text = _cli(capsys, str(tmp_path))
    assert code == 1 and "not a TUS-REC dataset folder" in text
    code, text = _cli(capsys, str(tmp_path / "nope"))
    assert code == 1 and "not found" in text
