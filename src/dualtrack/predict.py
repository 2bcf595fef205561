"""Predict the probe trajectory of one sweep with trained weights (``dualtrack predict``).

:func:`predict_file` reads one scan, runs the whole sweep through a trained model
(:func:`dualtrack.inference.predict_trajectory`) and writes into a fresh output folder:

* ``trajectory.h5`` and ``trajectory.csv`` (:func:`dualtrack.reconstruction.write_trajectory`):
  ``global[i] = T_{0<-i}`` ``(N, 4, 4)`` with ``global[0] = I`` and ``local[i-1] = T_{i-1<-i}``
  ``(N-1, 4, 4)``: rigid 4x4 maps of homogeneous column points from image mm of frame ``i`` to
  image mm of frame 0 (global) or of frame ``i-1`` (local), TUS-REC corner-origin image mm
  (pixel ``(u, v)`` 1-based column/row, point ``S @ (u, v, 0, 1)``), translations in mm. The
  files carry the pixel spacing, frame shape, scan and model as attributes, so
  ``dualtrack reconstruct SCAN --poses OUT/trajectory.h5`` builds the volume from them.
* ``metrics.json`` when the scan has ground truth (tracker transforms and a calibration): the
  DualTrack paper's metrics (5-point GPE/LPE, FDR, drift; :func:`~dualtrack.evaluation.paper_metrics`)
  and, with ``tusrec_metrics=True``, the official all-pixel TUS-REC errors (GPE, LPE, and GLE /
  LLE when the dataset's landmark file has the scan), the errors of the identity prediction and
  the TUS-REC 2025 normalised scores.

Scans accepted (:func:`load_scan`):

* a TUS-REC ``.h5`` from either layout (``frames`` + ``tforms`` in one file, or
  ``frames/<sid>/<scan>.h5`` with its ``transfs/`` twin); the calibration is ``calib``, else the
  ``calib_matrix.csv`` next to or up to three folders above the file;
* a folder of frames, one image per frame in natural name order (``frame_2`` before
  ``frame_10``): ``.png`` (read with :func:`matplotlib.image.imread`, colour averaged to grey) or
  ``.npy`` ``(H, W)`` arrays, or a folder with one ``.npy`` stack ``(N, H, W)``, or such a
  ``.npy`` file itself. These need ``spacing`` (or a ``calib`` CSV) and have no ground truth.

``spacing = (sx, sy)`` (mm per pixel along columns and rows) replaces the calibration's pixel
scaling when both are given (a warning is logged when they differ).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dualtrack.data import Calibration, Sweep, read_calibration
from dualtrack.evaluation.metrics import identity_errors, normalised_score, paper_metrics, tusrec_metrics
from dualtrack.inference import predict_trajectory
from dualtrack.reconstruction.export import write_trajectory
from dualtrack.reconstruction.pipeline import find_calibration, open_scan_file
from dualtrack.training.export import load_bundle
from dualtrack.utils import DEFAULT_DEVICE, atomic_dir, check_output_dir, resolve_device

__all__ = [
    "PredictResult",
    "OUTPUT_FILES",
    "load_frames",
    "load_scan",
    "min_frames",
    "sweep_metrics",
    "predict_file",
]

log = logging.getLogger(__name__)

OUTPUT_FILES = ("trajectory.h5", "trajectory.csv", "metrics.json")
"""Files :func:`predict_file` may write into its output folder."""

H5_SUFFIXES = (".h5", ".hdf5")
FRAME_SUFFIXES = (".png", ".npy")


@dataclass
class PredictResult:
    """What :func:`predict_file` did.

    Attributes:
        out_dir: the output folder.
        scan: the scan file or frame folder read.
        weights: the weights file or folder the model came from.
        model_name: registry name of the model.
        num_frames: ``N``.
        shape: frame size ``(H, W)`` in pixels.
        spacing: ``(sx, sy)`` mm per pixel.
        local: ``(N-1, 4, 4)`` predicted ``T_{i-1<-i}``, corner-origin image mm.
        global_: ``(N, 4, 4)`` predicted ``T_{0<-i}``, corner-origin image mm.
        files: ``{"trajectory_h5", "trajectory_csv", "metrics_json"}`` -> written paths.
        metrics: the content of ``metrics.json`` (``None`` without ground truth).
        seconds: wall time of the model's prediction (excluding loading and writing).
    """

    out_dir: Path
    scan: Path
    weights: Path
    model_name: str
    num_frames: int
    shape: tuple[int, int]
    spacing: tuple[float, float]
    local: np.ndarray
    global_: np.ndarray
    files: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    seconds: float = 0.0


# ------------------------------------------------------------------------------------ reading


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


# ------------------------------------------------------------------------------------ model


def min_frames(model: Any) -> int:
    """Shortest sweep a model can predict: 2, or its clip length for window models (DCL-Net)."""
    return max(2, int(getattr(model, "clip_length", 2) or 2))


# ------------------------------------------------------------------------------------ outputs


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def sweep_metrics(
    g_gt: np.ndarray,
    g_pred: np.ndarray,
    shape: tuple[int, int],
    scale: np.ndarray,
    *,
    landmarks: np.ndarray | None = None,
    tusrec: bool = False,
    device: str | None = None,
) -> dict[str, dict[str, float]]:
    """Errors of one predicted trajectory against the ground truth.

    Args:
        g_gt, g_pred: ``(N, 4, 4)`` true / predicted global poses (corner-origin image mm).
        shape: ``(H, W)``. scale: ``(4, 4)`` pixel -> mm ``S``.
        landmarks: optional ``(K, 3)`` TUS-REC landmarks (for GLE / LLE).
        tusrec: also compute the official all-pixel metrics, the identity errors and the
            normalised scores.
        device: device of the all-pixel computation.

    Returns:
        ``{"paper": {GPE, LPE, FDR, max_drift, final_drift, final_distance}}`` plus, with
        ``tusrec``, ``"tusrec"``, ``"identity"`` (same keys) and ``"normalised"``
        (``GPE_norm``, ..., ``final_score``). mm, FDR in %.
    """
    out = {"paper": paper_metrics(g_gt, g_pred, shape, scale)}
    if tusrec:
        out["tusrec"] = tusrec_metrics(g_gt, g_pred, shape, scale, landmarks, device=device)
        out["identity"] = identity_errors(g_gt, shape, scale, landmarks, device=device)
        out["normalised"] = normalised_score(out["tusrec"], out["identity"])
    return out


def predict_file(
    scan: str | os.PathLike,
    weights: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    device: str = DEFAULT_DEVICE,
    spacing: tuple[float, float] | None = None,
    calib: str | os.PathLike | None = None,
    overwrite: bool = False,
    chunk_size: int | None = None,
    tusrec_metrics: bool = False,
    precision: str = "auto",
) -> PredictResult:
    """Predict one scan's trajectory and write it (see the module docstring for the files).

    Args:
        scan: TUS-REC ``.h5``, frame folder or ``.npy`` stack (:func:`load_scan`).
        weights: run directory, ``.pt`` checkpoint or exported folder
            (``model.safetensors`` + ``config.json``).
        out_dir: output folder; must be new or empty unless ``overwrite``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
        spacing: ``(sx, sy)`` mm per pixel (needed for frame folders without ``calib``).
        calib: ``calib_matrix.csv``.
        overwrite: replace the outputs of an earlier run in ``out_dir``.
        chunk_size: frames per chunk of the local CNN (``None`` = the automatic plan of
            :func:`dualtrack.inference.predict_trajectory`; same result up to round-off).
        tusrec_metrics: also compute the official all-pixel TUS-REC metrics (slower).
        precision: ``auto`` (bf16 where the hardware has it), ``fp32``, ``bf16`` or ``fp16`` (CUDA).

    Returns:
        :class:`PredictResult`.

    Raises:
        FileExistsError: ``out_dir`` is not empty and ``overwrite`` is False.
        FileNotFoundError / ValueError / KeyError / OSError: bad scan, calibration or weights
            (too few frames for the model, frames/tforms count mismatch, weights of another
            architecture, unreadable files); the message names the file and the problem.
    """
    scan = Path(scan)
    # Check everything that can fail before the output folder is touched.
    out = check_output_dir(out_dir, overwrite)
    sweep, has_gt = load_scan(scan, calib=calib, spacing=spacing)
    dev = resolve_device(device)
    bundle = load_bundle(weights, dev)
    need = min_frames(bundle.model)
    if sweep.num_frames < need:
        raise ValueError(
            f"{scan}: the sweep has {sweep.num_frames} frame(s); model {bundle.name!r} needs at least {need}"
        )
    crop = bundle.crop
    if crop is not None and (crop[0] > sweep.shape[0] or crop[1] > sweep.shape[1]):
        raise ValueError(
            f"{scan}: frames of {sweep.shape[0]}x{sweep.shape[1]} pixels are smaller than the "
            f"{crop[0]}x{crop[1]} input crop of model {bundle.name!r} ({bundle.source})"
        )
    log.info("predicting %s (%d frames %dx%d) with %s from %s",
             scan, sweep.num_frames, *sweep.shape, bundle.name, bundle.source)
    frames = np.asarray(sweep.frames)
    t0 = time.perf_counter()
    pred = predict_trajectory(bundle.model, frames, spacing=sweep.spacing, device=dev,
                              chunk_size=chunk_size, crop=crop, precision=precision)
    seconds = time.perf_counter() - t0
    log.info("predicted %d poses in %.2f s", sweep.num_frames, seconds)

    attrs = {
        "spacing": np.asarray(sweep.spacing, dtype=np.float64),
        "shape": np.asarray(sweep.shape, dtype=np.int64),
        "scan": str(scan),
        "model": bundle.name,
        "weights": str(bundle.source),
    }
    metrics = None
    if has_gt:
        errors = sweep_metrics(
            sweep.global_transforms(), pred.global_, sweep.shape, sweep.calibration.scale,
            landmarks=sweep.landmarks, tusrec=tusrec_metrics, device=str(dev),
        )
        metrics = _finite_or_none({
            "scan": str(scan),
            "model": bundle.name,
            "weights": str(bundle.source),
            "num_frames": sweep.num_frames,
            "units": "mm (FDR in %, normalised scores unitless)",
            **errors,
        })
    # Every output is written into a temporary folder that replaces the old outputs only when complete.
    with atomic_dir(out, overwrite, managed=OUTPUT_FILES) as tmp:
        write_trajectory(tmp / "trajectory.h5", pred.local, pred.global_, attrs=attrs)
        write_trajectory(tmp / "trajectory.csv", pred.local, pred.global_, attrs=attrs)
        if metrics is not None:
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    files = {"trajectory_h5": out / "trajectory.h5", "trajectory_csv": out / "trajectory.csv"}
    if metrics is not None:
        files["metrics_json"] = out / "metrics.json"
    return PredictResult(
        out_dir=out, scan=scan, weights=Path(bundle.source), model_name=bundle.name,
        num_frames=sweep.num_frames, shape=sweep.shape, spacing=tuple(sweep.spacing),
        local=pred.local, global_=pred.global_, files=files, metrics=metrics, seconds=seconds,
    )
