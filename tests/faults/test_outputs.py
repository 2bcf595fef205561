"""Fault matrix, outputs: nothing already written is lost or half-replaced. Every command refuses
to replace earlier outputs without --overwrite, and with it the old outputs stay complete until the
new ones are (a failure or a SIGKILL at any point leaves one complete set)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dualtrack.cli import main
from dualtrack.data.trajectory import read_trajectory


def _digest(folder: Path) -> dict[str, str]:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def run(tiny_dataset, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("outputs") / "run"
    assert main(["train", "tiny_local", f"data.root={tiny_dataset}", "stage.phases.0.epochs=1",
                 "stage.phases.1.epochs=0", "runtime.tensorboard=false", "runtime.val_every=0",
                 "data.local_crop=[32, 48]", "--run-dir", str(root)]) == 0
    return root


def _scan(tiny_dataset: Path) -> Path:
    return tiny_dataset / "frames_transfs" / "000" / "LH_Par_C_DtP.h5"


@pytest.mark.parametrize("command", ["predict", "export", "evaluate", "reconstruct"])
def test_existing_outputs_need_overwrite_and_stay_untouched(command, run, tiny_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    scan = _scan(tiny_dataset)
    argv = {
        "predict": ["predict", str(scan), "--weights", str(run), "-o", str(out)],
        "export": ["export", str(run), "-o", str(out)],
        "evaluate": ["evaluate", str(run), "--data", str(tiny_dataset), "--split", "all", "-o", str(out)],
        "reconstruct": ["reconstruct", str(scan), "--ground-truth", "-o", str(out / "vol.nrrd")],
    }[command]
    assert main(argv) == 0
    before = _digest(out)
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "--overwrite" in err and "Traceback" not in err
    assert _digest(out) == before
    assert main([*argv, "--overwrite"]) == 0
    assert set(_digest(out)) == set(before)


def test_a_failed_predict_overwrite_keeps_the_old_outputs(run, tiny_dataset, tmp_path, monkeypatch, capsys):
    out = tmp_path / "pred"
    argv = ["predict", str(_scan(tiny_dataset)), "--weights", str(run), "-o", str(out)]
    assert main(argv) == 0
    before = _digest(out)
    import dualtrack.predict

    calls = []

    def failing(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(f"{path}: No space left on device")
        return write(path, *args, **kwargs)

    write = dualtrack.predict.write_trajectory
    monkeypatch.setattr(dualtrack.predict, "write_trajectory", failing)
    assert main([*argv, "--overwrite"]) == 1
    assert "No space left" in capsys.readouterr().err
    assert _digest(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pred.")]  # no temporary left


def test_a_failed_export_keeps_both_old_files(run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "export"
    assert main(["export", str(run), "-o", str(out)]) == 0
    before = _digest(out)
    import dualtrack.models.weights as export

    def failing_save(state, path, metadata=None):
        Path(path).write_bytes(b"partial")
        raise OSError(f"{path}: disk full")

    monkeypatch.setattr(export, "save_file", failing_save)
    assert main(["export", str(run), "-o", str(out), "--overwrite"]) == 1
    assert _digest(out) == before


def test_sigkill_during_predict_overwrite_leaves_one_complete_set(run, tiny_dataset, tmp_path):
    """Killed at several points of `predict --overwrite`: the folder (or, in the instant between
    the two renames, its `.old-` twin) always holds a complete, readable trajectory."""
    out = tmp_path / "pred"
    argv = ["predict", str(_scan(tiny_dataset)), "--weights", str(run), "-o", str(out), "--device", "cpu",
            "--precision", "fp32"]
    assert main(argv) == 0
    old = read_trajectory(out / "trajectory.h5").global_
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the same arithmetic as here
    for delay in (0.5, 1.5, 2.5, 3.5):
        proc = subprocess.Popen([sys.executable, "-m", "dualtrack.cli", *argv, "--overwrite"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        folder = out if out.is_dir() else next(tmp_path.glob(".pred.old-*"))
        poses = read_trajectory(folder / "trajectory.h5").global_
        np.testing.assert_allclose(poses, old, atol=1e-6)  # same model, same scan: same trajectory
        assert (folder / "trajectory.csv").is_file() and (folder / "metrics.json").is_file()


def test_simulate_refuses_to_extend_a_dataset_with_another_recipe(tmp_path, capsys):
    root = tmp_path / "sim"

    def simulate(subjects: int = 1, seed: int = 0, frames: int = 8) -> int:
        return main(["simulate", str(root), "--subjects", str(subjects), "--preset", "tiny", "--scans",
                     "LH_Per_L_DtP", "--frames", str(frames), "--seed", str(seed), "--no-progress"])

    assert simulate() == 0
    landmarks = _digest(root / "landmarks")
    for other in ({"seed": 3}, {"frames": 12}):
        capsys.readouterr()
        assert simulate(**other) == 1
        err = capsys.readouterr().err
        assert "simulated with" in err and "Traceback" not in err
        assert _digest(root / "landmarks") == landmarks
    assert simulate(subjects=2) == 0  # the same recipe still resumes and extends


def test_simulate_on_a_full_disk_stops_cleanly_and_resumes(tmp_path, monkeypatch, capsys):
    """ENOSPC (mocked) in the middle of `dualtrack simulate`: one error line, exit 1, no
    half-written scan that looks complete, and the same command afterwards finishes the dataset."""
    import errno

    import dualtrack.simulate.dataset as sim

    root = tmp_path / "sim"
    argv = ["simulate", str(root), "--subjects", "2", "--preset", "tiny", "--scans", "LH_Per_L_DtP",
            "--frames", "8", "--no-progress"]
    write = sim.write_scan
    calls = []

    def full_disk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(root))
        return write(*args, **kwargs)

    monkeypatch.setattr(sim, "write_scan", full_disk)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    monkeypatch.undo()
    scans = sorted(root.glob("frames_transfs/*/*.h5"))
    assert [p.parent.name for p in scans] == ["000"]  # the scan that was written, nothing half-made
    assert main(argv) == 0
    assert main(["verify-data", str(root)]) == 0
