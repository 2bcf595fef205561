"""Fault matrix, configuration values: every out-of-range setting stops `dualtrack train` with exit
code 2 and one message naming the key, before a run folder exists."""

from __future__ import annotations

import pytest

from dualtrack.cli import main

CASES = [
    ("sampling.batch_size=0", "sampling.batch_size"),
    ("sampling.clip_length=0", "sampling.clip_length"),
    ("sampling.subset_size=0", "sampling.subset_size"),
    ("sampling.flip=1.5", "sampling.flip"),
    ("sampling.strides=[0]", "sampling.strides"),
    ("runtime.log_every=0", "runtime.log_every"),
    ("runtime.val_max_sweeps=0", "runtime.val_max_sweeps"),
    ("runtime.device=gpu0", "runtime.device"),
    ("data.local_crop=[32]", "data.local_crop"),
    ("data.global_size=[0, 0]", "data.global_size"),
    ("data.val_fraction=1.5", "data.val_fraction"),
    ("optim.lr=nan", "optim.lr"),
    ("optim.lr=inf", "optim.lr"),
    ("optim.lr=-1e-3", "optim.lr"),
    ("optim.min_lr_ratio=-1", "optim.min_lr_ratio"),
    ("optim.betas=[0.9]", "optim.betas"),
    ("optim.betas=[0.9, 1.5]", "optim.betas"),
    ("optim.weight_decay=nan", "optim.weight_decay"),
    ("optim.grad_clip=-1", "optim.grad_clip"),
    ("stage.phases.0.lr=0", "stage.phases.0.lr"),
    ("stage.phases.1.batch_size=0", "stage.phases.1.batch_size"),
]


@pytest.mark.parametrize(("override", "key"), CASES, ids=[c[0] for c in CASES])
def test_out_of_range_value_is_a_usage_error_before_the_run_folder(override, key, tiny_dataset, tmp_path,
                                                                  capsys):
    run = tmp_path / "run"
    argv = ["train", "tiny_local", f"data.root={tiny_dataset}", "runtime.tensorboard=false", override,
            "--run-dir", str(run)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert key in err and "out of range" in err and "Traceback" not in err
    assert not run.exists()
