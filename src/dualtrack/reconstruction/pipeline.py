"""File-level reconstruction: a TUS-REC scan file + poses -> NRRD volume (+ Slicer sequence).

This is the library function behind ``dualtrack reconstruct``. Poses come either from the
scan's tracker transforms (ground truth, needs the calibration ``C``) or from a trajectory file
written by :func:`dualtrack.data.trajectory.write_trajectory` (e.g. ``dualtrack predict``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dualtrack.data import Calibration, read_calibration
from dualtrack.data.calibration import CALIBRATION_FILENAME
from dualtrack.data.trajectory import read_trajectory
from dualtrack.data.tusrec import find_calibration, open_scan_file
from dualtrack.reconstruction.compounding import Volume, reconstruct_volume
from dualtrack.reconstruction.export import write_nrrd, write_sequence_metafile
from dualtrack.utils import DEFAULT_DEVICE, resolve_device

log = logging.getLogger(__name__)

__all__ = ["ReconstructionOptions", "reconstruct_file"]

@dataclass
class ReconstructionOptions:
    """Options forwarded to :func:`~dualtrack.reconstruction.compounding.reconstruct_volume`."""

    spacing_mm: float = 0.5
    method: str = "nearest"
    compound: str = "mean"
    fill_holes: bool = True
    frame: str = "first"
    device: str = DEFAULT_DEVICE
    memory_limit_gb: float | None = 4.0
    pixel_step: int = 1
    out_dtype: str = "float32"


def _spacing_attr(value: object, path: object) -> tuple[float, float] | None:
    """``(sx, sy)`` from a trajectory ``spacing`` attribute (array, or text from a CSV)."""
    if value is None:
        return None
    try:
        nums = value.split() if isinstance(value, str) else np.asarray(value, dtype=float).ravel()
        sx, sy = (float(x) for x in nums)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: attribute 'spacing' must be two numbers (sx, sy), got {value!r}") from None
    return sx, sy


def reconstruct_file(
    scan_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    poses_path: str | os.PathLike | None = None,
    ground_truth: bool = False,
    calib_path: str | os.PathLike | None = None,
    options: ReconstructionOptions | None = None,
    space: str = "RAS",
    sequence_output: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Volume:
    """Reconstruct one scan file into a NRRD volume (and optionally a Slicer sequence metafile).

    Args:
        scan_path: TUS-REC scan ``.h5`` with ``frames`` ``(N, H, W)`` uint8.
        output: the ``.nrrd`` to write.
        poses_path: trajectory ``.h5``/``.csv`` from :func:`write_trajectory` (its global poses).
        ground_truth: use the scan's tracker transforms instead (``G_i = C^-1 T_0^-1 T_i C``).
        calib_path: ``calib_matrix.csv``; default: found next to or above the scan. Required for
            ground truth; with ``poses_path`` a ``spacing`` attribute of the trajectory suffices.
        options: compounding options.
        space: NRRD space, ``"RAS"`` or ``"LPS"``.
        sequence_output: also write the frames with their poses as a ``.seq.mha``.
        overwrite: replace existing outputs.
        progress: show a progress bar.

    Returns:
        The reconstructed :class:`Volume`.

    Raises:
        FileExistsError: an output exists and ``overwrite`` is False.
        FileNotFoundError, ValueError, KeyError, OSError: bad inputs (the message names the file).
        VolumeTooLargeError: the grid exceeds the memory limit.
    """
    options = options or ReconstructionOptions()
    if ground_truth == (poses_path is not None):
        raise ValueError("give exactly one pose source: a trajectory file or ground truth")
    outputs = [Path(output)] + ([Path(sequence_output)] if sequence_output is not None else [])
    for out in outputs:
        if out.exists() and not overwrite:
            raise FileExistsError(f"{out} exists; use --overwrite to replace it")
    scan_path = Path(scan_path)
    if not scan_path.is_file():
        raise FileNotFoundError(f"scan file not found: {scan_path}")
    traj = read_trajectory(poses_path) if poses_path is not None else None

    calib_file = Path(calib_path) if calib_path is not None else find_calibration(scan_path)
    traj_spacing = _spacing_attr(traj.attrs.get("spacing"), poses_path) if traj is not None else None
    if calib_file is not None:
        calibration = read_calibration(calib_file)
        if traj_spacing is not None and not np.allclose(traj_spacing, calibration.spacing, rtol=1e-4):
            log.warning(
                "%s was written for pixel spacing %s mm but %s gives %s mm; using the calibration",
                poses_path, traj_spacing, calib_file, calibration.spacing,
            )
    elif traj_spacing is not None:
        sx, sy = traj_spacing
        calibration = Calibration(scale=np.diag([sx, sy, 1.0, 1.0]), image_to_tool=np.eye(4))
    else:
        raise FileNotFoundError(
            f"no {CALIBRATION_FILENAME} found next to or above {scan_path}; pass --calib "
            f"(needed for the pixel size{' and the image-to-tool calibration' if ground_truth else ''})"
        )
    sweep = open_scan_file(scan_path, calibration)
    if ground_truth:
        if sweep.tforms is None:
            raise ValueError(f"{scan_path}: no 'tforms' (tracker transforms) for --ground-truth")
        if calib_file is None:
            raise FileNotFoundError(f"--ground-truth needs {CALIBRATION_FILENAME} (pass --calib)")
        poses = sweep.global_transforms()
        source = "tracker transforms (ground truth)"
    else:
        poses = traj.global_
        source = Path(poses_path).name
        if len(poses) != sweep.num_frames:
            raise ValueError(
                f"{poses_path} has poses for {len(poses)} frames but {scan_path} has "
                f"{sweep.num_frames} frames; was the trajectory predicted from another scan?"
            )
    log.info("reconstructing %s (%d frames) with poses from %s", scan_path, sweep.num_frames, source)
    volume = reconstruct_volume(
        sweep.frames,
        poses,
        calibration.scale,
        spacing_mm=options.spacing_mm,
        method=options.method,
        compound=options.compound,
        fill_holes=options.fill_holes,
        frame=options.frame,
        device=resolve_device(options.device),
        memory_limit_gb=options.memory_limit_gb,
        pixel_step=options.pixel_step,
        out_dtype=options.out_dtype,
        progress=progress,
    )
    write_nrrd(
        output,
        volume,
        space=space,
        custom_fields={"dualtrack_scan": scan_path.name, "dualtrack_poses": source},
    )
    if sequence_output is not None:
        write_sequence_metafile(sequence_output, sweep.frames, poses, calibration.scale)
    return volume
