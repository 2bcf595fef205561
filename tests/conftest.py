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
