"""Predict the probe trajectory of one sweep with trained weights (``dualtrack predict``).

:func:`predict_file` reads one scan, runs the whole sweep through a trained model
(:class:`dualtrack.inference.Predictor`) and writes into a fresh output folder:

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

Scans accepted: see :func:`dualtrack.data.scan.load_scan` (a TUS-REC ``.h5`` of either layout, a
frame folder or a ``.npy`` stack).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dualtrack.data.scan import load_scan
from dualtrack.data.sweep import Sweep
from dualtrack.data.trajectory import write_trajectory
from dualtrack.inference import Predictor
from dualtrack.metrics import identity_errors, normalised_score, paper_metrics, tusrec_metrics
from dualtrack.utils import DEFAULT_DEVICE, atomic_dir, check_output_dir

__all__ = ["PredictResult", "OUTPUT_FILES", "sweep_metrics", "write_prediction", "predict_file"]

log = logging.getLogger(__name__)

OUTPUT_FILES = ("trajectory.h5", "trajectory.csv", "metrics.json")
"""Files :func:`predict_file` may write into its output folder."""

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


def write_prediction(
    out: Path,
    scan: Path,
    sweep: Sweep,
    local: np.ndarray,
    global_: np.ndarray,
    *,
    model_name: str,
    weights: str,
    ground_truth: bool,
    tusrec_metrics: bool = False,
    device: str = "cpu",
    overwrite: bool = False,
) -> tuple[dict[str, Path], dict[str, Any] | None]:
    """Write one sweep's predicted trajectory into ``out`` (see the module docstring for the files).

    Args:
        out: the output folder (checked with :func:`dualtrack.utils.check_output_dir` by the caller).
        scan: the scan the poses belong to (recorded in the files). sweep: its :class:`Sweep`.
        local, global_: ``(N-1, 4, 4)`` / ``(N, 4, 4)`` predicted poses, corner-origin image mm.
        model_name, weights: recorded in the files.
        ground_truth: the sweep has true poses: also write ``metrics.json``.
        tusrec_metrics, device: the official all-pixel metrics too, computed on ``device``.
        overwrite: replace earlier outputs in ``out``.

    Returns:
        ``(files, metrics)``: the written paths and the content of ``metrics.json`` (``None``
        without ground truth). Everything is written into a temporary folder that replaces the old
        outputs only when complete.
    """
    attrs = {
        "spacing": np.asarray(sweep.spacing, dtype=np.float64),
        "shape": np.asarray(sweep.shape, dtype=np.int64),
        "scan": str(scan),
        "model": model_name,
        "weights": weights,
    }
    metrics = None
    if ground_truth:
        errors = sweep_metrics(
            sweep.global_transforms(), global_, sweep.shape, sweep.calibration.scale,
            landmarks=sweep.landmarks, tusrec=tusrec_metrics, device=device,
        )
        metrics = _finite_or_none({
            "scan": str(scan),
            "model": model_name,
            "weights": weights,
            "num_frames": sweep.num_frames,
            "units": "mm (FDR in %, normalised scores unitless)",
            **errors,
        })
    with atomic_dir(out, overwrite, managed=OUTPUT_FILES) as tmp:
        write_trajectory(tmp / "trajectory.h5", local, global_, attrs=attrs)
        write_trajectory(tmp / "trajectory.csv", local, global_, attrs=attrs)
        if metrics is not None:
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    files = {"trajectory_h5": out / "trajectory.h5", "trajectory_csv": out / "trajectory.csv"}
    if metrics is not None:
        files["metrics_json"] = out / "metrics.json"
    return files, metrics


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
    resample: bool = False,
) -> PredictResult:
    """Predict one scan's trajectory and write it (see the module docstring for the files).

    Args:
        scan: TUS-REC ``.h5``, frame folder or ``.npy`` stack (:func:`dualtrack.data.scan.load_scan`).
        weights: run directory, ``.pt`` checkpoint or exported folder
            (``model.safetensors`` + ``config.json``).
        out_dir: output folder; must be new or empty unless ``overwrite``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
        spacing: ``(sx, sy)`` mm per pixel (needed for frame folders without ``calib``).
        calib: ``calib_matrix.csv``.
        overwrite: replace the outputs of an earlier run in ``out_dir``.
        chunk_size: frames per chunk of the local CNN (``None`` = the automatic plan of
            :class:`dualtrack.inference.Predictor`; same result up to round-off).
        tusrec_metrics: also compute the official all-pixel TUS-REC metrics (slower).
        precision: ``auto`` (bf16 where the hardware has it), ``fp32``, ``bf16`` or ``fp16`` (CUDA).
        resample: resample frames of another pixel spacing than the model's training spacing
            (otherwise they are refused).

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
    predictor = Predictor.from_path(weights, device=device, chunk_size=chunk_size, precision=precision,
                                    resample=resample)
    model = predictor.model
    crop = predictor.spec.local_crop
    if crop is not None and (crop[0] > sweep.shape[0] or crop[1] > sweep.shape[1]):
        raise ValueError(
            f"{scan}: frames of {sweep.shape[0]}x{sweep.shape[1]} pixels are smaller than the "
            f"{crop[0]}x{crop[1]} input crop of model {model.model_name!r} ({predictor.source})"
        )
    log.info("predicting %s (%d frames %dx%d) with %s from %s",
             scan, sweep.num_frames, *sweep.shape, model.model_name, predictor.source)
    t0 = time.perf_counter()
    pred = predictor.predict(sweep)
    seconds = time.perf_counter() - t0
    log.info("predicted %d poses in %.2f s", sweep.num_frames, seconds)

    files, metrics = write_prediction(
        out, scan, sweep, pred.local, pred.global_, model_name=model.model_name, weights=predictor.source,
        ground_truth=has_gt, tusrec_metrics=tusrec_metrics, device=str(predictor.device), overwrite=overwrite,
    )
    return PredictResult(
        out_dir=out, scan=scan, weights=Path(predictor.source), model_name=model.model_name,
        num_frames=sweep.num_frames, shape=sweep.shape, spacing=tuple(sweep.spacing),
        local=pred.local, global_=pred.global_, files=files, metrics=metrics, seconds=seconds,
    )
