"""Fault matrix, damaged or hostile weight files: every command that loads weights exits with
code 1 and a message naming the file, without a traceback and without allocating what a damaged
config claims."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from dualtrack.cli import main


@pytest.fixture(scope="module")
def export(tiny_dataset, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("weights")
    assert main(["train", "tiny_local", f"data.root={tiny_dataset}", "stage.phases.0.epochs=1",
                 "stage.phases.1.epochs=0", "runtime.tensorboard=false", "runtime.val_every=0",
                 "data.local_crop=[32, 48]", "--run-dir", str(root / "run")]) == 0
    assert main(["export", str(root / "run"), "-o", str(root / "export")]) == 0
    return root / "export"


def _config(edit: Callable[[dict], None]) -> Callable[[Path], Path]:
    def apply(folder: Path) -> Path:
        meta = json.loads((folder / "config.json").read_text())
        edit(meta)
        (folder / "config.json").write_text(json.dumps(meta))
        return folder

    return apply


def _weights(data: Callable[[], bytes]) -> Callable[[Path], Path]:
    def apply(folder: Path) -> Path:
        (folder / "model.safetensors").write_bytes(data())
        return folder

    return apply


def _truncate(folder: Path) -> Path:
    with open(folder / "model.safetensors", "r+b") as fh:
        fh.truncate(100)
    return folder


def _checkpoint(content: object) -> Callable[[Path], Path]:
    def apply(folder: Path) -> Path:
        path = folder / "weights.pt"
        torch.save(content, path)
        return path

    return apply


def _pt_bytes(folder: Path) -> Path:
    path = folder / "weights.pt"
    path.write_bytes(np.random.default_rng(2).bytes(4000))
    return path


CASES = {
    "truncated_safetensors": _truncate,
    "random_safetensors": _weights(lambda: np.random.default_rng(1).bytes(5000)),
    "header_of_huge_size": _weights(lambda: (2**60).to_bytes(8, "little") + b"{}"),
    "negative_width": _config(lambda m: m["model_config"].__setitem__("cnn_width", -4)),
    "zero_width": _config(lambda m: m["model_config"].__setitem__("cnn_width", 0)),
    "huge_width": _config(lambda m: m["model_config"].__setitem__("cnn_width", 10**6)),
    "list_for_config": _config(lambda m: m.__setitem__("model_config", [1, 2])),
    "negative_crop": _config(lambda m: m["input"].__setitem__("crop", [-5, 10**9])),
    "one_element_crop": _config(lambda m: m["input"].__setitem__("crop", [32])),
    "unknown_model": _config(lambda m: m.__setitem__("model_name", "no_such_model")),
    "checkpoint_without_model": _checkpoint(
        {"format": "dualtrack-checkpoint-1", "model_name": "local_only_tiny", "model_config": {}}
    ),
    "checkpoint_of_random_bytes": _pt_bytes,
}


CONFIG_ONLY = ("negative_width", "zero_width", "huge_width", "unknown_model")
"""Damage to config.json alone: stage.init_from takes only the (intact) tensors into the run's own
architecture, strictly, so those files are usable there and are not part of its matrix."""

MATRIX = [
    (case, command)
    for case in CASES
    for command in ("predict", "evaluate", "export", "train-init-from")
    if not (command == "train-init-from" and case in CONFIG_ONLY)
]


@pytest.mark.parametrize(("case", "command"), MATRIX, ids=[f"{c}-{m}" for c, m in MATRIX])
def test_bad_weights_are_named_without_a_traceback(case, command, export, tiny_dataset, tmp_path, capsys):
    folder = tmp_path / "weights"
    shutil.copytree(export, folder)
    target = CASES[case](folder)
    out = tmp_path / "out"
    scan = tiny_dataset / "frames_transfs" / "000" / "LH_Par_C_DtP.h5"
    argv = {
        "predict": ["predict", str(scan), "--weights", str(target), "-o", str(out)],
        "evaluate": ["evaluate", str(target), "--data", str(tiny_dataset), "--split", "all", "-o", str(out)],
        "export": ["export", str(target), "-o", str(out)],
        "train-init-from": ["train", "tiny_local", f"data.root={tiny_dataset}", f"stage.init_from={target}",
                            "runtime.tensorboard=false", "--run-dir", str(out)],
    }[command]
    code = main(argv)
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code == (2 if command == "train-init-from" else 1), text  # a config that names bad weights
    assert "Traceback" not in text
    assert target.name in text, text
    assert not out.exists()
