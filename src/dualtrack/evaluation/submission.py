"""TUS-REC challenge submission adapter: poses -> the four displacement fields of ``predict_ddfs``.

The challenge harness (``test.py`` of the organisers, 2024 and 2025) calls, per scan::

    GP, GL, LP, LL = predict_ddfs(frames, landmark, data_path_calib, device)

with ``frames`` uint8 ``(N, H, W)``, ``landmark`` int ``(K, 3)`` rows ``(frame 0-based, u, v
1-based)``, the path of ``calib_matrix.csv`` and (2025) a ``torch.device``. It expects float
numpy arrays without NaN:

* ``GP``: ``(N-1, 3, H*W)``, ``GP[i-1, :, k] = (G_i S p_k - S p_k)[:3]`` for frames ``i = 1..N-1``;
* ``LP``: the same with the local poses ``L_i = T_{i-1<-i}``;
* ``GL``, ``LL``: ``(3, K)``, the same displacement at each landmark ``q = (u, v, 0, 1)`` of frame
  ``f`` (equal to the pixel field at ``[f-1, :, (v-1) W + (u-1)]``, the 2025 rule);

where pixels ``p_k = (u, v, 0, 1)`` are in row-major order ``k = (v-1) W + (u-1)``, the order of
``frame.reshape(-1)``.

:func:`make_predict_ddfs` wraps any pose predictor into that function; :func:`ddfs_from_poses`
computes the fields from global poses (also for the ground-truth side).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import numpy as np
import torch

from dualtrack.data.calibration import Calibration, read_calibration
from dualtrack.geometry import local_from_global
from dualtrack.inference import Predictor
from dualtrack.metrics import (
    DEFAULT_MAX_BYTES,
    as_global_poses,
    as_landmarks,
    check_frame_shape,
    check_scale,
    frames_per_chunk,
    landmark_points,
)
from dualtrack.models import TrajectoryModel
from dualtrack.models.weights import load_model

__all__ = ["PoseFunction", "PredictDdfs", "ddfs_from_poses", "make_predict_ddfs", "model_predictor"]

logger = logging.getLogger(__name__)

#: ``predictor(frames uint8 (N, H, W), calibration, device) -> global poses (N, 4, 4)``
#: (corner-origin image mm, ``G[0] = I``; numpy or torch).
PoseFunction = Callable[[np.ndarray, Calibration, torch.device], "np.ndarray | torch.Tensor"]

#: ``predict_ddfs(frames, landmark, data_path_calib, device=None) -> (GP, GL, LP, LL)``.
PredictDdfs = Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


def _pixel_ddf(
    x: torch.Tensor,
    shape: tuple[int, int],
    s: torch.Tensor,
    device: torch.device,
    chunk: int,
) -> np.ndarray:
    """``(M, 3, H*W)`` float32 field ``(X S p - S p)[:3]`` over all pixels, chunk by chunk."""
    h, w = shape
    # p = (u, v, 0, 1): only columns 0, 1 and 3 of (X - I) S act; build them in float64 so that
    # small motions lose no precision, then evaluate the affine field in float32.
    m = ((x - torch.eye(4, dtype=x.dtype)) @ s)[:, :3][:, :, [0, 1, 3]]
    m = m.to(device=device, dtype=torch.float32)
    u = torch.arange(1, w + 1, dtype=torch.float32, device=device)
    v = torch.arange(1, h + 1, dtype=torch.float32, device=device)
    out = np.empty((x.shape[0], 3, h * w), dtype=np.float32)
    for start in range(0, x.shape[0], chunk):
        c = m[start : start + chunk]
        field = c[:, :, 0, None, None] * u + (c[:, :, 1, None] * v + c[:, :, 2, None])[..., None]
        out[start : start + len(c)] = field.reshape(len(c), 3, h * w).cpu().numpy()
    return out


def _landmark_ddf(x: torch.Tensor, landmarks: torch.Tensor, s: torch.Tensor, local: bool) -> np.ndarray:
    """``(3, K)`` float32 displacement ``(X[f] S q - S q)[:3]`` at each landmark."""
    q = landmark_points(landmarks, s)
    f = landmarks[:, 0]
    # Index as the organisers' harness does: into frames 1..N-1 at [f-1] (global) and into the
    # N-1 local poses at [f-1]; f = 0 then wraps to the last entry, exactly as their code does.
    xs = x[f - 1] if local else x[1:][f - 1]
    d = (xs @ q[:, :, None])[:, :3, 0] - q[:, :3]
    return d.T.contiguous().numpy().astype(np.float32)


def _landmarks_as_harness(landmarks, num_frames: int, shape: tuple[int, int]) -> torch.Tensor:
    """:func:`as_landmarks`, except that frame-0 landmarks pass with a warning (see
    :func:`ddfs_from_poses`)."""
    arr = np.asarray(landmarks.detach().cpu() if isinstance(landmarks, torch.Tensor) else landmarks)
    on_first = arr.ndim == 2 and arr.shape[1:] == (3,) and np.any(arr[:, 0] == 0)
    if not on_first:
        return as_landmarks(arr, num_frames, shape)
    zero = arr[:, 0] == 0
    logger.warning(
        "predict_ddfs: %d landmark(s) on frame 0, which has no pose error; scored as the organisers' "
        "harness does (its [f-1] index wraps to the last frame, %d)", int(zero.sum()), num_frames - 1,
    )
    lm = as_landmarks(np.where(zero[:, None], np.c_[np.ones(len(arr)), arr[:, 1:]], arr), num_frames, shape)
    lm[torch.as_tensor(zero), 0] = 0
    return lm


def ddfs_from_poses(
    global_poses,
    shape: tuple[int, int],
    scale,
    landmarks=None,
    device: str | torch.device | None = None,
    chunk_frames: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four TUS-REC displacement fields of a sweep from its global poses.

    Args:
        global_poses: ``(N, 4, 4)`` ``G[i] = T_{0<-i}`` in corner-origin image mm, ``G[0] = I``
            (numpy or torch); local poses are ``local_from_global(G)``.
        shape: frame shape ``(H, W)``.
        scale: ``(4, 4)`` pixel -> mm matrix ``S``.
        landmarks: ``(K, 3)`` integers ``(f, u, v)``, ``f`` in ``1..N-1`` (0-based frame), ``u``
            and ``v`` 1-based column and row; None gives ``(3, 0)`` landmark fields. A landmark on
            frame 0 is not an error here: it is scored as the organisers' harness scores it (their
            ``[f-1]`` index wraps to the last frame), with a warning, because inside their harness an
            exception scores the whole scan as zero.
        device: where the pixel fields are evaluated (default CUDA when available, else CPU).
        chunk_frames: frames per chunk; default from ``max_bytes``.
        max_bytes: target size of one chunk's float32 ``(chunk, 3, H*W)`` field on ``device``.

    Returns:
        ``(GP, GL, LP, LL)`` float32 numpy arrays of shapes ``(N-1, 3, H*W)``, ``(3, K)``,
        ``(N-1, 3, H*W)``, ``(3, K)`` in mm, pixels in ``frame.reshape(-1)`` order.
    """
    g = as_global_poses(global_poses, "global_poses")
    s = check_scale(scale)
    h, w = check_frame_shape(shape)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if landmarks is None:
        lm = torch.zeros((0, 3), dtype=torch.long)
    else:
        lm = _landmarks_as_harness(landmarks, len(g), (h, w))
    chunk = frames_per_chunk(len(g) - 1, h * w, chunk_frames, max_bytes, bytes_per_pixel=3 * 4)
    local = local_from_global(g)
    logger.debug("ddfs_from_poses: %d frames of %dx%d, chunk %d on %s", g.shape[0], h, w, chunk, device)
    gp = _pixel_ddf(g[1:], (h, w), s, device, chunk)
    lp = _pixel_ddf(local, (h, w), s, device, chunk)
    gl = _landmark_ddf(g, lm, s, local=False)
    ll = _landmark_ddf(local, lm, s, local=True)
    return gp, gl, lp, ll


def make_predict_ddfs(
    predictor: PoseFunction,
    chunk_frames: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> PredictDdfs:
    """Wrap a pose predictor into the challenge's ``predict_ddfs`` function.

    Args:
        predictor: ``predictor(frames, calibration, device) -> (N, 4, 4)`` global poses in
            corner-origin image mm with ``G[0] = I`` (numpy or torch), from uint8 frames
            ``(N, H, W)``, the scan's :class:`~dualtrack.data.calibration.Calibration` and the
            device to run on. It is called under ``torch.inference_mode()``.
        chunk_frames, max_bytes: chunking of the pixel fields (see :func:`ddfs_from_poses`).

    Returns:
        ``predict_ddfs(frames, landmark, data_path_calib, device=None) -> (GP, GL, LP, LL)``
        (float32 numpy, shapes as in :func:`ddfs_from_poses`); ``device`` defaults to CUDA when
        available (the 2024 harness does not pass one).

    Example::

        from dualtrack.evaluation.submission import make_predict_ddfs
        predict_ddfs = make_predict_ddfs(my_predictor)   # in the challenge's predict_ddfs.py
    """

    def predict_ddfs(
        frames: np.ndarray,
        landmark: np.ndarray,
        data_path_calib: str | os.PathLike,
        device: str | torch.device | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        frames = np.asarray(frames)
        if frames.ndim != 3 or frames.shape[0] < 2:
            raise ValueError(f"predict_ddfs: frames must be (N >= 2, H, W), got shape {frames.shape}")
        calib = read_calibration(data_path_calib)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(device)
        with torch.inference_mode():
            poses = predictor(frames, calib, device)
        shape = tuple(poses.shape)
        if shape != (frames.shape[0], 4, 4):
            raise ValueError(
                f"predict_ddfs: the predictor returned poses of shape {shape}, expected "
                f"({frames.shape[0]}, 4, 4) global poses for {frames.shape[0]} frames"
            )
        return ddfs_from_poses(
            poses, frames.shape[1:], calib.scale, landmark, device, chunk_frames, max_bytes
        )

    return predict_ddfs


def model_predictor(
    weights: str | os.PathLike | TrajectoryModel,
    *,
    chunk_size: int | None = None,
    precision: str = "auto",
) -> PoseFunction:
    """A :data:`PoseFunction` that runs a trained dualtrack model on the whole scan through the
    package's one :class:`~dualtrack.inference.Predictor`.

    Args:
        weights: a run folder, a checkpoint, an exported folder (``model.safetensors`` +
            ``config.json``; loaded strictly, input spec included, with
            :func:`dualtrack.models.weights.load_model`), or an already loaded model.
        chunk_size, precision: as in :class:`~dualtrack.inference.Predictor`.

    Returns:
        ``predictor(frames, calibration, device) -> (N, 4, 4)`` global poses (corner-origin
        image mm); the pixel spacing comes from the scan's calibration, the local-input crop and
        the global input from the model's input spec.

    Example (the challenge's ``predict_ddfs.py``, weights shipped in the docker image)::

        from dualtrack.evaluation.submission import make_predict_ddfs, model_predictor
        predict_ddfs = make_predict_ddfs(model_predictor("baseline_model/dualtrack_export"))
    """
    model = weights if isinstance(weights, TrajectoryModel) else load_model(weights)

    def predictor(frames: np.ndarray, calibration: Calibration, device: torch.device) -> np.ndarray:
        run = Predictor.from_model(model, device=device, chunk_size=chunk_size, precision=precision)
        return run.predict(frames, spacing=calibration.spacing).global_

    return predictor
