"""B-mode freehand-sweep simulator with exact ground truth (see ``docs/simulator.md``).

Public entry points: :func:`simulate_sweep` (one scan), :func:`simulate_dataset` (a TUS-REC
layout dataset, resumable), the preset registry (:data:`PRESETS`, :func:`get_preset`), and the
building blocks :class:`ForearmPhantom`, :class:`HomogeneousPhantom`, :class:`BModeRenderer`,
:func:`make_trajectory`.
"""

from dualtrack.simulate.bmode import BModeRenderer, RenderOutput
from dualtrack.simulate.dataset import (
    SimulatedSweep,
    make_phantom,
    preset_calibration,
    scan_names,
    simulate_dataset,
    simulate_sweep,
    sweep_poses,
)
from dualtrack.simulate.phantom import ForearmPhantom, HomogeneousPhantom, ScatterSpec
from dualtrack.simulate.presets import PRESETS, ImagingSpec, ProbeSpec, SimPreset, get_preset, list_presets
from dualtrack.simulate.trajectory import make_trajectory, parse_scan

__all__ = [
    "simulate_sweep",
    "simulate_dataset",
    "SimulatedSweep",
    "scan_names",
    "preset_calibration",
    "make_phantom",
    "sweep_poses",
    "BModeRenderer",
    "RenderOutput",
    "ForearmPhantom",
    "HomogeneousPhantom",
    "ScatterSpec",
    "PRESETS",
    "SimPreset",
    "ProbeSpec",
    "ImagingSpec",
    "get_preset",
    "list_presets",
    "make_trajectory",
    "parse_scan",
]
