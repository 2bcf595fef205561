"""Open one scan for prediction: a TUS-REC ``.h5``, a folder of frames, or a ``.npy`` stack.

:func:`load_scan` accepts:

* a TUS-REC ``.h5`` from either layout (``frames`` + ``tforms`` in one file, or
  ``frames/<sid>/<scan>.h5`` with its ``transfs/`` twin; :func:`dualtrack.data.tusrec.open_scan_file`);
  the calibration is ``calib``, else the ``calib_matrix.csv`` next to or up to three folders above
  the file;
* a folder of frames, one image per frame in natural name order (``frame_2`` before
  ``frame_10``): ``.png`` (read with :func:`matplotlib.image.imread`, colour averaged to grey) or
  ``.npy`` ``(H, W)`` arrays, or a folder with one ``.npy`` stack ``(N, H, W)``, or such a
  ``.npy`` file itself (:func:`load_frames`). These need ``spacing`` (or a ``calib`` CSV) and have
  no ground truth.

``spacing = (sx, sy)`` (mm per pixel along columns and rows) replaces the calibration's pixel
scaling when both are given (a warning is logged when they differ).
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path

import numpy as np

from dualtrack.data.calibration import Calibration, read_calibration
from dualtrack.data.sweep import Sweep
from dualtrack.data.tusrec import find_calibration, open_scan_file

__all__ = ["H5_SUFFIXES", "FRAME_SUFFIXES", "load_frames", "load_scan"]

log = logging.getLogger(__name__)

H5_SUFFIXES = (".h5", ".hdf5")
FRAME_SUFFIXES = (".png", ".npy")


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _to_uint8(img: np.ndarray, path: Path) -> np.ndarray:
    """One frame as ``(H, W)`` uint8: floats are taken as ``[0, 1]``, colour is averaged."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        img = img[..., :3].astype(np.float64).mean(-1)
    if img.ndim != 2:
        raise ValueError(f"{path}: a frame must be a 2-D grey image (H, W), got shape {img.shape}")
    if img.dtype == np.uint8:
        return img
    if np.issubdtype(img.dtype, np.floating):
        if not np.all(np.isfinite(img)) or img.min() < 0 or img.max() > 1:
            raise ValueError(f"{path}: float frames must lie in [0, 1] (value = intensity / 255)")
        return np.rint(img * 255.0).astype(np.uint8)
    if np.issubdtype(img.dtype, np.integer) and img.min() >= 0 and img.max() <= 255:
        return img.astype(np.uint8)
    raise ValueError(f"{path}: frames must be uint8 (0..255) or float in [0, 1], got {img.dtype}")


def load_frames(path: str | os.PathLike) -> np.ndarray:
    """Frames of a folder of images or of a ``.npy`` stack (see the module docstring).

    Args:
        path: a folder of ``.png`` or ``.npy`` frames (all the same size), a folder holding one
            ``(N, H, W)`` ``.npy`` stack, or a ``.npy`` stack file.

    Returns:
        ``(N, H, W)`` uint8.

    Raises:
        FileNotFoundError: ``path`` does not exist or holds no frames.
        ValueError: mixed or unreadable files, frames of different sizes, bad value ranges.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() != ".npy":
            raise ValueError(f"{path}: expected a TUS-REC .h5 scan, a .npy frame stack or a folder of frames")
        stack = _load_npy(path)
        if stack.ndim != 3:
            raise ValueError(f"{path}: a .npy stack must have shape (N, H, W), got {stack.shape}")
        return np.stack([_to_uint8(f, path) for f in stack]) if stack.dtype != np.uint8 else stack
    if not path.is_dir():
        raise FileNotFoundError(f"scan not found: {path}")
    files = sorted((p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file()),
                   key=_natural_key)
    kinds = {p.suffix.lower() for p in files}
    if not files:
        raise FileNotFoundError(f"{path}: no frames found (expected *.png or *.npy files, one per frame)")
    if len(kinds) > 1:
        raise ValueError(f"{path}: holds both .png and .npy files; keep one kind of frame per folder")
    if kinds == {".npy"} and len(files) == 1:
        first = _load_npy(files[0])
        if first.ndim == 3:
            return load_frames(files[0])
    frames = [_read_frame(p) for p in files]
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        sizes = ", ".join(f"{p.name}: {f.shape}" for p, f in list(zip(files, frames, strict=True))[:4])
        raise ValueError(f"{path}: frames differ in size ({sizes}, ...)")
    return np.stack(frames)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read as a .npy array ({exc})") from None


def _read_frame(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        return _to_uint8(_load_npy(path), path)
    from matplotlib import image as mpimg

    try:
        img = mpimg.imread(path)
    except (OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"{path}: cannot read as a PNG image ({exc})") from None
    return _to_uint8(img, path)


def _check_spacing(spacing: tuple[float, float]) -> tuple[float, float]:
    sx, sy = (float(s) for s in spacing)
    if not (sx > 0 and sy > 0 and math.isfinite(sx) and math.isfinite(sy)):
        raise ValueError(f"spacing must be two positive numbers (mm per pixel), got {spacing}")
    return sx, sy


def _with_spacing(calib: Calibration, spacing: tuple[float, float], source: str) -> Calibration:
    sx, sy = _check_spacing(spacing)
    if not np.allclose(calib.spacing, (sx, sy), rtol=1e-6):
        log.warning("using pixel spacing (%g, %g) mm instead of %s from %s", sx, sy, calib.spacing, source)
    scale = calib.scale.copy()
    scale[0, 0], scale[1, 1] = sx, sy
    return Calibration(scale=scale, image_to_tool=calib.image_to_tool)


def _calibration(calib_file: Path | None, spacing: tuple[float, float] | None) -> Calibration | None:
    """The calibration read from ``calib_file`` (its pixel spacing replaced by ``spacing`` when
    given), else one from ``spacing`` alone; None when neither is given."""
    if calib_file is not None:
        calibration = read_calibration(calib_file)
        return _with_spacing(calibration, spacing, str(calib_file)) if spacing is not None else calibration
    return _spacing_calibration(spacing) if spacing is not None else None


def load_scan(
    scan: str | os.PathLike,
    *,
    calib: str | os.PathLike | None = None,
    spacing: tuple[float, float] | None = None,
) -> tuple[Sweep, bool]:
    """Open one scan for prediction (see the module docstring for what is accepted).

    Args:
        scan: TUS-REC ``.h5`` file, frame folder or ``.npy`` stack.
        calib: ``calib_matrix.csv`` (default for ``.h5`` scans: found next to or above the file).
        spacing: ``(sx, sy)`` mm per pixel; required when there is no calibration.

    Returns:
        ``(sweep, has_ground_truth)``: the :class:`Sweep` (frames lazy for ``.h5`` files) and
        whether its tracker transforms can be turned into true poses (tforms and a calibration
        file with the image-to-tool matrix ``C`` are both present).

    Raises:
        FileNotFoundError: missing scan or calibration.
        ValueError / KeyError / OSError: unreadable input or inconsistent shapes (e.g. a
            ``tforms`` count that differs from the frame count), naming the file.
    """
    scan = Path(scan)
    if not scan.exists():
        raise FileNotFoundError(f"scan not found: {scan}")
    calib_file = Path(calib) if calib is not None else None
    if calib_file is not None and not calib_file.is_file():
        raise FileNotFoundError(f"calibration file not found: {calib_file}")
    if scan.is_file() and scan.suffix.lower() in H5_SUFFIXES:
        calib_file = calib_file or find_calibration(scan)
        calibration = _calibration(calib_file, spacing)
        if calibration is None:
            raise FileNotFoundError(
                f"no calib_matrix.csv found next to or above {scan}; pass --calib CSV or --spacing SX SY"
            )
        sweep = open_scan_file(scan, calibration)
        has_gt = sweep.tforms is not None and calib_file is not None
        if sweep.tforms is not None and calib_file is None:
            log.warning("%s has tracker transforms but no calibration file: no metrics without C", scan)
        return sweep, has_gt
    frames = load_frames(scan)
    calibration = _calibration(calib_file, spacing)
    if calibration is None:
        raise ValueError(f"{scan}: frames without a calibration need --spacing SX SY (mm per pixel)")
    name = scan.stem if scan.is_file() else scan.name
    return Sweep.from_arrays(frames, None, calibration, subject="000", name=name or "sweep"), False


def _spacing_calibration(spacing: tuple[float, float]) -> Calibration:
    """Pixel scaling ``S = diag(sx, sy, 1, 1)`` and an identity image-to-tool ``C`` (unknown)."""
    sx, sy = _check_spacing(spacing)
    return Calibration(scale=np.diag([sx, sy, 1.0, 1.0]), image_to_tool=np.eye(4))
