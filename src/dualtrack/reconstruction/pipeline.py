"""File-level reconstruction: a TUS-REC scan file + poses -> NRRD volume (+ Slicer sequence).

This is the library function behind ``dualtrack reconstruct``. Poses come either from the
scan's tracker transforms (ground truth, needs the calibration ``C``) or from a trajectory file
written by :func:`dualtrack.reconstruction.export.write_trajectory` (e.g. ``dualtrack predict``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dualtrack.data import Calibration, LazyFrames, Sweep, read_calibration
from dualtrack.data.calibration import CALIBRATION_FILENAME
from dualtrack.data.sweep import open_h5, read_tforms
from dualtrack.data.tusrec import FRAMES_DIR, TRAIN_DIR, TRANSFS_DIR, find_landmark_file
from dualtrack.reconstruction.compounding import Volume, reconstruct_volume
from dualtrack.reconstruction.export import read_trajectory, write_nrrd, write_sequence_metafile
from dualtrack.utils import DEFAULT_DEVICE, resolve_device

log = logging.getLogger(__name__)

__all__ = ["ReconstructionOptions", "find_calibration", "open_scan_file", "reconstruct_file"]

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


def find_calibration(scan_path: str | os.PathLike) -> Path | None:
    """``calib_matrix.csv`` next to the scan or up to three folders above it (the TUS-REC root)."""
    scan_path = Path(scan_path).resolve()
    for folder in list(scan_path.parents)[:4]:
        candidate = folder / CALIBRATION_FILENAME
        if candidate.is_file():
            return candidate
    return None


def _sibling_tforms(scan_path: Path) -> Path | None:
    """For the val/test layout ``<root>/frames/<sid>/<scan>.h5``, the ``transfs`` twin if present."""
    parts = scan_path.resolve().parts
    if len(parts) >= 3 and parts[-3] == FRAMES_DIR:
        twin = Path(*parts[:-3], TRANSFS_DIR, *parts[-2:])
        if twin.is_file():
            return twin
    return None


def open_scan_file(scan_path: str | os.PathLike, calibration: Calibration) -> Sweep:
    """Open one TUS-REC scan ``.h5`` (``frames`` and, if present, ``tforms``) as a lazy Sweep.

    ``tforms`` are read from the same file (train layout) or from the ``transfs/`` twin of a
    ``frames/<sid>/<scan>.h5`` file (val/test layout). Landmarks come from the dataset's
    ``landmarks/`` or ``landmark/`` folder (``landmark_<sid>.h5``, the scan's entry) when the file
    sits in a TUS-REC layout and has one.

    Raises:
        FileNotFoundError / OSError: missing or unreadable file.
        KeyError: no ``frames`` dataset.
    """
    path = Path(scan_path)
    with open_h5(path) as f:
        if "frames" not in f:
            raise KeyError(f"{path}: no 'frames' dataset (found {sorted(f.keys())}); is this a TUS-REC scan?")
        ds = f["frames"]
        frames = LazyFrames(path, "frames", shape=ds.shape, dtype=ds.dtype)
        tforms = read_tforms(f)
    if tforms is None:
        twin = _sibling_tforms(path)
        if twin is not None:
            with open_h5(twin) as f:
                tforms = read_tforms(f)
    if frames.ndim != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{path}: 'frames' must be (N, H, W) uint8, got {frames.shape} {frames.dtype}")
    if frames.shape[0] < 1:
        raise ValueError(f"{path}: the scan has no frames")
    if tforms is not None and tforms.shape != (frames.shape[0], 4, 4):
        raise ValueError(
            f"{path}: 'tforms' has shape {tforms.shape}, expected ({frames.shape[0]}, 4, 4) for "
            f"{frames.shape[0]} frames"
        )
    return Sweep(
        subject=path.parent.name,
        name=path.stem,
        frames=frames,
        tforms=tforms,
        calibration=calibration,
        landmarks=_scan_landmarks(path),
    )


def _scan_landmarks(scan_path: Path) -> np.ndarray | None:
    """``(K, 3)`` landmarks of ``<root>/{frames_transfs|frames}/<sid>/<scan>.h5``, or ``None``."""
    if scan_path.parent.parent.name not in (TRAIN_DIR, FRAMES_DIR):
        return None
    path = find_landmark_file(scan_path.parent.parent.parent, scan_path.parent.name)
    if path is None:
        return None
    with open_h5(path) as f:
        return np.asarray(f[scan_path.stem][()], dtype=np.int64) if scan_path.stem in f else None


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
