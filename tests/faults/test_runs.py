"""Fault matrix, run folders and resources: a garbled metrics log, a run folder that is a file, a
memory limit above the machine's memory, and SIGKILL at random points of training."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from dualtrack.cli import main

TRAIN = ["runtime.tensorboard=false", "stage.phases.0.epochs=2", "stage.phases.1.epochs=1",
         "runtime.checkpoint_every=1", "data.num_workers=0", "runtime.device=cpu"]


def _rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [{k: v for k, v in r.items() if k != "items_per_s"} for r in csv.DictReader(fh)]


def test_garbled_metrics_log_on_resume_names_the_file(tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "tiny_local", f"data.root={tiny_dataset}", *TRAIN, "runtime.stop_after_steps=2",
                 "--run-dir", str(run)]) == 0
    before = (run / "last.pt").read_bytes()
    (run / "metrics.csv").write_text("step,epoch\nnot-a-number,0\n")
    capsys.readouterr()
    assert main(["train", "--resume", "--run-dir", str(run)]) == 1
    err = capsys.readouterr().err
    assert "metrics.csv: line 2 is garbled" in err and "Traceback" not in err
    assert (run / "last.pt").read_bytes() == before


def test_a_run_dir_that_is_a_file_is_a_usage_error(tiny_dataset, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert main(["train", "tiny_local", f"data.root={tiny_dataset}", *TRAIN, "--run-dir", str(target)]) == 2
    assert "is an existing file" in capsys.readouterr().err
    assert target.read_text() == "mine"


def test_a_memory_limit_above_the_machine_still_stops_before_allocating(tiny_dataset, tmp_path, capsys):
    scan = tiny_dataset / "frames_transfs" / "000" / "LH_Par_C_DtP.h5"
    argv = ["reconstruct", str(scan), "--ground-truth", "-o", str(tmp_path / "v.nrrd"), "--spacing", "0.002",
            "--max-gb", "100000"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "memory this machine has available" in err and "--spacing" in err and "Traceback" not in err


@pytest.mark.parametrize("delay", [2.0, 3.0, 4.5])
def test_sigkill_during_training_resumes_to_the_uninterrupted_run(delay, tiny_dataset, tmp_path):
    """Killed at a random point (subprocess, SIGKILL), resumed: metrics.csv and the final weights equal
    those of an uninterrupted run."""
    full, part = tmp_path / "full", tmp_path / "part"
    base = ["train", "tiny_local", f"data.root={tiny_dataset}", *TRAIN]
    assert main([*base, "--run-dir", str(full)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the same arithmetic as here
    proc = subprocess.Popen([sys.executable, "-m", "dualtrack.cli", *base, "--run-dir", str(part)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if (part / "last.pt").is_file():
        assert main(["train", "--resume", "--run-dir", str(part)]) == 0
    else:  # killed before the first checkpoint: start again
        for leftover in part.glob("*") if part.exists() else ():
            leftover.unlink()
        assert main([*base, "--run-dir", str(part)]) == 0
    assert _rows(part) == _rows(full)
    a = torch.load(full / "last.pt", weights_only=True)["model"]
    b = torch.load(part / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_a_finished_run_with_another_config_is_refused(tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    base = ["train", "tiny_local", f"data.root={tiny_dataset}", *TRAIN]
    assert main([*base, "--run-dir", str(run)]) == 0
    before = (run / "metrics.csv").read_text()
    for argv, needle in (
        ([*base, "--run-dir", str(run)], "already holds a run"),
        (["train", "--resume", "--run-dir", str(run), "optim.lr=0.5"], "cannot change optim.lr"),
        (["train", "tiny_coupled", "--resume", "--run-dir", str(run)], "differs from"),
    ):
        capsys.readouterr()
        assert main(argv) == 2
        assert needle in capsys.readouterr().err
    assert (run / "metrics.csv").read_text() == before
