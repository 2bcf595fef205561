"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_SCANS = ("LH_Par_C_DtP", "RH_Per_S_PtD")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A simulated TUS-REC train-layout dataset (preset ``tiny``: 48x64 frames), generated once per
    session: 3 subjects x 2 scans x 28 frames, with calibration and landmarks."""
    from dualtrack.simulate.dataset import simulate_dataset

    root = tmp_path_factory.mktemp("tiny_sim")
    return simulate_dataset(
        root, 3, preset="tiny", scans=list(TINY_SCANS), num_frames=28, seed=0, progress=False
    )


@pytest.fixture(scope="session")
def demo_output(tmp_path_factory) -> Path:
    """``demo_output/`` of one ``dualtrack demo --quick`` run, shared by the tests (the docs' paths
    point to it)."""
    from dualtrack.demo import run_demo

    return run_demo(tmp_path_factory.mktemp("docs_demo") / "demo_output", quick=True).out_dir


def model_inputs(model, frames, index=None) -> dict:
    """The keyword arguments a model's forward needs beside ``frames (B, T, H, W)``: the global
    branch's frames ``0, s, 2s, ...`` and their indices when its input spec has one."""
    import torch

    spec = model.input_spec
    if not spec.has_global_branch:
        return {} if index is None else {"index": index}
    b, t = frames.shape[:2]
    index = torch.arange(t).expand(b, t) if index is None else index
    s = spec.global_stride
    return {"index": index, "global_frames": frames[:, ::s], "global_index": index[:, ::s]}


def predict(model, frames, *, spacing=None, crop="model", **options):
    """``Predictor.from_model(model, **options).predict(frames, spacing=spacing)``; ``crop`` other
    than ``"model"`` first sets the model's local crop (as training would)."""
    from dualtrack.inference import Predictor

    if crop != "model":
        model.configure_input(local_crop=crop)
    return Predictor.from_model(model, **options).predict(frames, spacing=spacing)
