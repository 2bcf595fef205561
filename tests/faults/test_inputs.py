"""Fault matrix, broken inputs: each damaged dataset file makes every command that reads it exit
with code 1 and a message naming the file, with no Python traceback, and leaves nothing behind."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from dualtrack.cli import main

SCAN = "LH_Per_L_DtP"
TRAIN = ["stage.phases.0.epochs=1", "stage.phases.1.epochs=0", "runtime.tensorboard=false",
         "data.local_crop=[32, 48]"]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    from dualtrack.simulate.dataset import simulate_dataset

    root = tmp_path_factory.mktemp("faults") / "good"
    return simulate_dataset(root, 3, preset="tiny", scans=[SCAN], num_frames=16, seed=1, progress=False)


@pytest.fixture(scope="module")
def weights(good, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("faults_run") / "local"
    assert main(["train", "tiny_local", f"data.root={good}", *TRAIN, "runtime.val_every=0",
                 "--run-dir", str(run)]) == 0
    return run


def _scan(root: Path) -> Path:
    return root / "frames_transfs" / "000" / f"{SCAN}.h5"


def _rewrite(root: Path, **datasets: np.ndarray | None) -> None:
    path = _scan(root)
    with h5py.File(path, "r") as f:
        data = {k: f[k][()] for k in f}
    data.update(datasets)
    path.unlink()
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            if v is not None:
                f.create_dataset(k, data=v)


def truncated(root: Path) -> Path:
    path = _scan(root)
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    return path


def nan_tforms(root: Path) -> Path:
    with h5py.File(_scan(root), "r") as f:
        t = f["tforms"][()]
    t[3, 0, 3] = np.nan
    _rewrite(root, tforms=t)
    return _scan(root)


def no_frames(root: Path) -> Path:
    _rewrite(root, frames=None)
    return _scan(root)


def float_frames(root: Path) -> Path:
    with h5py.File(_scan(root), "r") as f:
        fr = f["frames"][()]
    _rewrite(root, frames=fr.astype(np.float32) / 255.0)
    return _scan(root)


def huge_header(root: Path) -> Path:
    path = _scan(root)
    with h5py.File(path, "r") as f:
        t = f["tforms"][()]
        h, w = f["frames"].shape[1:]
    path.unlink()
    with h5py.File(path, "w") as f:  # declares 10^9 frames; nothing is written, so the file is tiny
        f.create_dataset("frames", shape=(10**9, h, w), dtype=np.uint8, chunks=(1, h, w))
        f.create_dataset("tforms", data=t)
    return path


def huge_consistent_header(root: Path) -> Path:
    path = _scan(root)
    with h5py.File(path, "r") as f:
        h, w = f["frames"].shape[1:]
    path.unlink()
    with h5py.File(path, "w") as f:  # frames and tforms agree on 10^9 frames; nothing is stored
        f.create_dataset("frames", shape=(10**9, h, w), dtype=np.uint8, chunks=(1, h, w))
        f.create_dataset("tforms", shape=(10**9, 4, 4), dtype=np.float32, chunks=(1, 4, 4))
    return path


def _calibration(root: Path, edit: Callable[[list[str]], None]) -> Path:
    path = root / "calib_matrix.csv"
    lines = path.read_text().splitlines()
    edit(lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def zero_spacing(root: Path) -> Path:
    return _calibration(root, lambda lines: lines.__setitem__(1, "0,0,0,0"))


def singular_calibration(root: Path) -> Path:
    def edit(lines: list[str]) -> None:
        lines[6:9] = ["0,0,0,1", "0,0,0,2", "0,0,0,3"]

    return _calibration(root, edit)


def zero_frames(root: Path) -> Path:
    _rewrite(root, frames=np.zeros((0, 48, 64), np.uint8), tforms=np.zeros((0, 4, 4), np.float32))
    return _scan(root)


def symlink_loop(root: Path) -> Path:
    path = _scan(root)
    path.unlink()
    path.symlink_to(path.name)  # points at itself
    return path


MUTATIONS = {
    "zero_frames": zero_frames,
    "self_looping_symlink": symlink_loop,
    "truncated_h5": truncated,
    "nan_tforms": nan_tforms,
    "frames_missing": no_frames,
    "float_frames": float_frames,
    "header_claims_1e9_frames": huge_header,
    "frames_and_tforms_claim_1e9": huge_consistent_header,
    "zero_pixel_spacing": zero_spacing,
    "singular_calibration": singular_calibration,
}

COMMANDS = ("verify-data", "train", "evaluate", "predict", "reconstruct")


def _argv(command: str, root: Path, weights: Path, out: Path) -> list[str]:
    scan = str(_scan(root))
    return {
        "verify-data": ["verify-data", str(root)],
        "train": ["train", "tiny_local", f"data.root={root}", *TRAIN, "--run-dir", str(out)],
        "evaluate": ["evaluate", str(weights), "--data", str(root), "--split", "all", "-o", str(out)],
        "predict": ["predict", scan, "--weights", str(weights), "-o", str(out)],
        "reconstruct": ["reconstruct", scan, "--ground-truth", "-o", str(out / "vol.nrrd")],
    }[command]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_broken_input_is_named_without_a_traceback(mutation, command, good, weights, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(good, root)
    broken = MUTATIONS[mutation](root)
    out = tmp_path / "out"
    capsys.readouterr()
    code = main(_argv(command, root, weights, out))
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code == 1, text
    assert "Traceback" not in text
    assert broken.name in text, text
    assert not out.exists() or not any(out.iterdir()), sorted(os.listdir(out))


def test_tforms_header_claiming_a_huge_count_is_refused_before_reading(good, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(good, root)
    path = _scan(root)
    with h5py.File(path, "r") as f:
        frames = f["frames"][()]
    path.unlink()
    with h5py.File(path, "w") as f:
        f.create_dataset("frames", data=frames)
        f.create_dataset("tforms", shape=(10**10, 4, 4), dtype=np.float32, chunks=(1, 4, 4))
    assert main(["reconstruct", str(path), "--ground-truth", "-o", str(tmp_path / "v.nrrd")]) == 1
    err = capsys.readouterr().err
    assert path.name in err and "header is damaged" in err and "Traceback" not in err
