"""Trajectory error metrics for freehand ultrasound: TUS-REC official and DualTrack-paper variants.

Pure functions; no files, no models. See ``docs/metrics.md`` for the formulas and how they relate
to the challenge's and the paper's published numbers.

Conventions
-----------
* Inputs are **global poses** ``G`` of shape ``(N, 4, 4)`` in TUS-REC corner-origin image mm with
  ``G[0] = I`` and ``G[i] = T_{0<-i}`` (frame ``i`` -> frame 0), as produced by
  :func:`dualtrack.geometry.global_from_tforms` (ground truth) or
  :func:`dualtrack.geometry.chain_local` (predictions). numpy arrays or torch tensors (any device,
  any float dtype) are accepted; the small 4x4 algebra is done in float64 on the CPU.
* Local poses are derived from the global ones with :func:`dualtrack.geometry.local_from_global`:
  ``L[i-1] = G[i-1]^-1 G[i] = T_{i-1<-i}``. For a method that chains local predictions this gives
  back its local predictions up to round-off.
* ``scale`` is the ``(4, 4)`` pixel -> image-mm matrix ``S`` of ``calib_matrix.csv``; ``shape`` is
  the frame shape ``(H, W)``. A pixel is ``p = (u, v, 0, 1)`` with 1-based column ``u`` and row ``v``.
* Every mean is over frames ``1..N-1`` (frame 0 carries no information: both poses are ``I``).
* Distances are in mm, FDR in percent. Scalars in the returned dicts are Python floats.
* Per-frame arrays (:func:`point_errors`, :func:`drift_curve`, :func:`all_pixel_errors`) are float64,
  numpy when ``g_gt`` is numpy and a CPU torch tensor otherwise.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy import stats

from dualtrack.geometry import image_points, local_from_global, transform_points

__all__ = [
    "UndefinedMetricWarning",
    "DEFAULT_MAX_BYTES",
    "as_global_poses",
    "as_landmarks",
    "check_frame_shape",
    "check_scale",
    "frames_per_chunk",
    "landmark_points",
    "point_errors",
    "paper_metrics",
    "drift_curve",
    "all_pixel_errors",
    "landmark_errors",
    "tusrec_metrics",
    "identity_errors",
    "normalised_score",
    "wilcoxon_table",
    "TUSREC_METRICS",
]

class UndefinedMetricWarning(RuntimeWarning):
    """A metric is undefined for this sweep and reported as NaN (the FDR of a sweep that ends where
    it started, a normalised score against a zero identity error). Callers that expect it filter
    this category only, never every ``RuntimeWarning``."""


logger = logging.getLogger(__name__)

#: Target for the extra memory of one chunk of the all-pixel computation (bytes).
DEFAULT_MAX_BYTES = 256 * 2**20

#: The four official TUS-REC per-scan errors, in the leaderboard order.
TUSREC_METRICS = ("GPE", "GLE", "LPE", "LLE")

_IDENTITY_ATOL = 1e-4


# ----------------------------------------------------------------------------- input checks


def _as_cpu64(x, name: str) -> torch.Tensor:
    """Any array-like to a float64 CPU tensor (no gradient)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def as_global_poses(x, name: str = "poses") -> torch.Tensor:
    """Validate global poses and return them as a float64 CPU tensor ``(N, 4, 4)``.

    Raises:
        ValueError: (naming ``name``) wrong shape, fewer than 2 frames, NaN/inf, or ``G[0] != I``.
    """
    g = _as_cpu64(x, name)
    if g.ndim != 3 or g.shape[-2:] != (4, 4):
        raise ValueError(f"{name}: expected global poses of shape (N, 4, 4), got {tuple(g.shape)}")
    if g.shape[0] < 2:
        raise ValueError(f"{name}: need at least 2 frames, got {g.shape[0]}")
    if not torch.isfinite(g).all():
        bad = (~torch.isfinite(g)).flatten(1).any(1).nonzero()[:5, 0].tolist()
        raise ValueError(f"{name}: poses contain NaN/inf (first frames: {bad})")
    dev = (g[0] - torch.eye(4, dtype=g.dtype)).abs().max().item()
    if dev > _IDENTITY_ATOL:
        raise ValueError(
            f"{name}: G[0] must be the identity (global poses relative to frame 0, "
            f"see dualtrack.geometry), but differs from I by {dev:.3g}"
        )
    return g


def _check_transform_pair(x_gt, x_pred, caller: str, n: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``x_gt``, ``x_pred`` as float64 CPU tensors of one ``(n, 4, 4)`` shape (``caller`` in errors)."""
    gt = _as_cpu64(x_gt, "x_gt")
    pred = _as_cpu64(x_pred, "x_pred")
    if gt.shape != pred.shape or gt.ndim != 3 or gt.shape[-2:] != (4, 4):
        raise ValueError(
            f"{caller}: need equal ({n}, 4, 4) shapes, got {tuple(gt.shape)}, {tuple(pred.shape)}"
        )
    return gt, pred


def _check_pair(g_gt, g_pred) -> tuple[torch.Tensor, torch.Tensor]:
    gt = as_global_poses(g_gt, "g_gt")
    pred = as_global_poses(g_pred, "g_pred")
    if gt.shape != pred.shape:
        raise ValueError(f"g_gt and g_pred differ in shape: {tuple(gt.shape)} vs {tuple(pred.shape)}")
    return gt, pred


def check_scale(scale) -> torch.Tensor:
    """The ``(4, 4)`` pixel -> mm matrix ``S`` (numpy or torch) as a float64 CPU tensor.

    Raises:
        ValueError: not ``(4, 4)``.
    """
    s = _as_cpu64(scale, "scale")
    if s.shape != (4, 4):
        raise ValueError(f"scale: expected the (4, 4) pixel->mm matrix S, got shape {tuple(s.shape)}")
    return s


def check_frame_shape(shape) -> tuple[int, int]:
    """The frame shape ``(H, W)`` as two ints.

    Raises:
        ValueError: not two values, or one below 1.
    """
    if len(shape) != 2 or int(shape[0]) < 1 or int(shape[1]) < 1:
        raise ValueError(f"shape: expected the frame shape (H, W) with H, W >= 1, got {tuple(shape)}")
    return int(shape[0]), int(shape[1])


def _out(x: torch.Tensor, like):
    return x.numpy() if not isinstance(like, torch.Tensor) else x


def _default_device(device, like) -> torch.device:
    if device is not None:
        return torch.device(device)
    if isinstance(like, torch.Tensor):
        return like.device
    return torch.device("cpu")


# ----------------------------------------------------------------------------- paper metrics


def point_errors(g_gt, g_pred, points):
    """Mean distance between points placed by two sets of transforms.

    Args:
        g_gt: ``(..., 4, 4)`` reference transforms (e.g. ground-truth global poses).
        g_pred: ``(..., 4, 4)`` predicted transforms, same batch shape.
        points: ``(P, 3)`` points in mm in the source frame of the transforms.

    Returns:
        ``(...,)`` float64: ``mean_p ||g_gt p - g_pred p||`` per transform (mm).
    """
    gt = _as_cpu64(g_gt, "g_gt")
    pred = _as_cpu64(g_pred, "g_pred")
    if gt.shape != pred.shape or gt.shape[-2:] != (4, 4):
        raise ValueError(
            f"point_errors: need equal (..., 4, 4) shapes, got {tuple(gt.shape)}, {tuple(pred.shape)}"
        )
    pts = _as_cpu64(points, "points")
    if pts.ndim != 2 or pts.shape[-1] != 3:
        raise ValueError(f"point_errors: points must be (P, 3), got {tuple(pts.shape)}")
    diff = transform_points(gt, pts) - transform_points(pred, pts)
    return _out(torch.linalg.vector_norm(diff, dim=-1).mean(-1), g_gt)


def _centre(shape: tuple[int, int], s: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(image_points(shape, s.numpy(), "five")[4])


def drift_curve(g_gt, g_pred, shape: tuple[int, int], scale):
    """Drift of the image centre along the sweep.

    ``drift_i = ||G_gt[i] c - G_pred[i] c||`` with ``c = S ((W+1)/2, (H+1)/2, 0, 1)`` the image
    centre, i.e. the distance between the true and the predicted position of the centre of frame
    ``i`` in frame-0 mm. This equals the translation error of centre-origin poses (the paper's
    definition).

    Args:
        g_gt, g_pred: ``(N, 4, 4)`` global poses (corner-origin image mm, ``G[0] = I``).
        shape: ``(H, W)``.
        scale: ``(4, 4)`` pixel -> mm matrix ``S``.

    Returns:
        ``(N,)`` float64 drift in mm (``drift_0 = 0``).
    """
    gt, pred = _check_pair(g_gt, g_pred)
    c = _centre(check_frame_shape(shape), check_scale(scale))
    return _out(point_errors(gt, pred, c[None]), g_gt)


def paper_metrics(g_gt, g_pred, shape: tuple[int, int], scale) -> dict[str, float]:
    """The DualTrack paper's metrics of one sweep: 5-point GPE/LPE, FDR and maximum drift.

    * ``GPE`` (mm): mean over frames ``1..N-1`` and 5 points (the 4 corner pixels ``(1,1), (W,1),
      (1,H), (W,H)`` and the centre ``((W+1)/2, (H+1)/2)``) of ``||G_gt[i] q - G_pred[i] q||``.
      The paper's reference implementation uses slightly different points (corners at pixel
      ``0`` and ``W``/``H`` in its own pixel frame and the centre ``(W//2, H//2)``), and the
      official TUS-REC GPE averages over all pixels (:func:`tusrec_metrics`). The three are not
      identical; the 5-point values run ~10 % higher than the all-pixel ones, as corners lie far
      from the centre.
    * ``LPE`` (mm): the same with local poses ``L = local_from_global(G)``, mean over ``N-1``.
    * ``final_drift``, ``max_drift`` (mm): last and largest value of :func:`drift_curve`.
    * ``final_distance`` (mm): straight-line distance ``||G_gt[N-1] c - c||`` of the last frame's
      centre from the first frame's centre (not the path length).
    * ``FDR`` (%): ``100 * final_drift / final_distance`` (NaN, with a warning, when the distance
      is 0). Not comparable with the path-length FDR of MoNet/RecON.

    Args:
        g_gt, g_pred: ``(N, 4, 4)`` global poses (corner-origin image mm, ``G[0] = I``).
        shape: ``(H, W)``.
        scale: ``(4, 4)`` pixel -> mm matrix ``S``.

    Returns:
        ``{"GPE", "LPE", "FDR", "max_drift", "final_drift", "final_distance"}``.
    """
    gt, pred = _check_pair(g_gt, g_pred)
    hw = check_frame_shape(shape)
    s = check_scale(scale)
    five = torch.as_tensor(image_points(hw, s.numpy(), "five"))
    gpe = point_errors(gt[1:], pred[1:], five).mean().item()
    lpe = point_errors(local_from_global(gt), local_from_global(pred), five).mean().item()
    drift = point_errors(gt, pred, five[4:5])
    c = five[4]
    distance = torch.linalg.vector_norm(transform_points(gt[-1], c[None])[0] - c).item()
    final = drift[-1].item()
    if distance > 0:
        fdr = 100.0 * final / distance
    else:
        warnings.warn(
            "paper_metrics: the last frame's centre coincides with the first one; FDR is NaN",
            UndefinedMetricWarning,
            stacklevel=2,
        )
        fdr = math.nan
    return {
        "GPE": gpe,
        "LPE": lpe,
        "FDR": fdr,
        "max_drift": drift.max().item(),
        "final_drift": final,
        "final_distance": distance,
    }


# ----------------------------------------------------------------------------- official metrics


def frames_per_chunk(
    num: int, pixels: int, chunk_frames: int | None, max_bytes: int, bytes_per_pixel: int = 8
) -> int:
    """Frames (transforms) per chunk of a per-pixel computation over ``num`` of them.

    ``chunk_frames`` when given (at most ``num``), else as many as fit ``max_bytes`` at
    ``bytes_per_pixel`` for each of the ``pixels`` pixels of a frame (at least 1).

    Raises:
        ValueError: ``chunk_frames < 1``, or ``max_bytes < 1`` when it is used.
    """
    if chunk_frames is not None:
        if int(chunk_frames) < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        return min(int(chunk_frames), num)
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    return max(1, min(num, int(max_bytes) // (pixels * bytes_per_pixel)))


def all_pixel_errors(
    x_gt,
    x_pred,
    shape: tuple[int, int],
    scale,
    device: str | torch.device | None = None,
    chunk_frames: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
):
    """Per-transform mean over all ``H*W`` pixels of ``||(X_gt - X_pred) S p||`` (mm).

    This is the official TUS-REC pixel error before averaging over frames: the organisers'
    ``cal_dist`` of the displacement fields ``X S p - S p`` reduces to it because ``S p`` cancels.

    Computation: with ``M = ((X_gt - X_pred) S)[:3, (0, 1, 3)]`` (float64) and ``w = (u, v, 1)``,
    ``||M w||^2 = w^T (M^T M) w`` is a quadratic in ``(u, v)`` with six coefficients per transform.
    It is evaluated on the pixel grid of ``chunk`` transforms at a time, as one float64
    ``(chunk, H, W)`` tensor on ``device`` (about ``chunk * H * W * 8`` bytes of extra memory),
    then square-rooted and summed in float64. The float64 evaluation keeps the cancellation error
    of the quadratic form below ~1e-8 of the error scale, also where the error field crosses zero.

    Args:
        x_gt, x_pred: ``(M, 4, 4)`` transforms (global or local poses), corner-origin image mm.
        shape: ``(H, W)``.
        scale: ``(4, 4)`` pixel -> mm matrix ``S``.
        device: where to evaluate the pixel grids (default: ``x_gt``'s device, else CPU).
        chunk_frames: transforms per chunk; default from ``max_bytes``.
        max_bytes: target size of the per-chunk tensor when ``chunk_frames`` is None.

    Returns:
        ``(M,)`` float64 mean pixel error per transform, in mm.
    """
    gt, pred = _check_transform_pair(x_gt, x_pred, "all_pixel_errors", "M")
    h, w = check_frame_shape(shape)
    s = check_scale(scale)
    dev = _default_device(device, x_gt)
    m = ((gt - pred) @ s)[:, :3][:, :, [0, 1, 3]]
    gram = m.transpose(1, 2) @ m
    # ||M w||^2 = a u^2 + b u + c v^2 + d v + e + f uv, coefficients (a, b, c, d, e, f) per transform
    a, c, e = gram[:, 0, 0], gram[:, 1, 1], gram[:, 2, 2]
    b, d, f = 2 * gram[:, 0, 2], 2 * gram[:, 1, 2], 2 * gram[:, 0, 1]
    coef = torch.stack([a, b, c, d, e, f], 1).to(dev)
    u = torch.arange(1, w + 1, dtype=torch.float64, device=dev)
    v = torch.arange(1, h + 1, dtype=torch.float64, device=dev)
    uv = v[:, None] * u[None, :]
    num = gt.shape[0]
    chunk = frames_per_chunk(num, h * w, chunk_frames, max_bytes)
    logger.debug("all_pixel_errors: %d transforms, %dx%d pixels, chunk %d on %s", num, h, w, chunk, dev)
    sums = []
    for start in range(0, num, chunk):
        c = coef[start : start + chunk]
        row = c[:, 0:1] * u**2 + c[:, 1:2] * u
        col = c[:, 2:3] * v**2 + c[:, 3:4] * v + c[:, 4:5]
        q = uv * c[:, 5, None, None]
        q += row[:, None, :]
        q += col[:, :, None]
        sums.append(q.clamp_(min=0).sqrt_().sum((1, 2)))
        del q
    return _out(torch.cat(sums).cpu() / (h * w), x_gt)


def as_landmarks(landmarks, num_frames: int, shape: tuple[int, int] | None = None) -> torch.Tensor:
    """Validate TUS-REC landmarks and return them as a CPU int64 tensor ``(K, 3)``.

    Args:
        landmarks: ``(K, 3)`` integers ``(f, u, v)``: 0-based frame ``f``, 1-based column ``u``
            and row ``v``.
        num_frames: ``N``, frames of the sweep; ``f`` must lie in ``1..N-1`` (the organisers'
            code indexes ``[f-1]`` into frames ``1..N-1``; frame 0 would wrap around).
        shape: ``(H, W)``; when given, ``u`` must lie in ``1..W`` and ``v`` in ``1..H``.

    Raises:
        ValueError: wrong shape, non-integer values, or indices out of range.
    """
    arr = np.asarray(landmarks.detach().cpu() if isinstance(landmarks, torch.Tensor) else landmarks)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"landmarks: expected (K, 3) integers (frame, u, v), got shape {arr.shape}")
    if len(arr) and not np.array_equal(arr, np.round(arr)):
        raise ValueError("landmarks: frame indices and pixel coordinates must be integers")
    lm = torch.as_tensor(arr.astype(np.int64))
    if len(lm):
        f, u, v = lm.T
        if f.min() < 1 or f.max() > num_frames - 1:
            raise ValueError(
                f"landmarks: frame indices must lie in 1..{num_frames - 1} (0-based; frame 0 has no "
                f"pose error), got {f.min().item()}..{f.max().item()}"
            )
        if shape is not None:
            h, w = shape
            if u.min() < 1 or u.max() > w or v.min() < 1 or v.max() > h:
                raise ValueError(
                    f"landmarks: pixel coordinates must be 1-based, u in 1..{w}, v in 1..{h}; got u "
                    f"{u.min().item()}..{u.max().item()}, v {v.min().item()}..{v.max().item()}"
                )
    return lm


def landmark_points(landmarks: torch.Tensor, scale) -> torch.Tensor:
    """``(K, 4)`` float64 homogeneous image-mm points ``S (u, v, 0, 1)`` of validated landmarks."""
    f = landmarks[:, 0]
    hom = torch.stack([landmarks[:, 1], landmarks[:, 2], torch.zeros_like(f), torch.ones_like(f)], 1)
    return hom.double() @ check_scale(scale).T


def landmark_errors(x_gt, x_pred, landmarks, scale, local: bool = False):
    """Per-landmark distance ``||(X_gt[f] - X_pred[f]) S (u, v, 0, 1)||`` (mm).

    Args:
        x_gt, x_pred: ``(N, 4, 4)`` global poses, or with ``local=True`` ``(N-1, 4, 4)`` local
            poses (row ``f-1`` is ``T_{f-1<-f}``).
        landmarks: ``(K, 3)`` integers ``(f, u, v)``: 0-based frame ``f`` in ``1..N-1``, 1-based
            column ``u`` and row ``v`` (TUS-REC landmark files).
        scale: ``(4, 4)`` pixel -> mm matrix ``S``.
        local: whether the transforms are local poses.

    Returns:
        ``(K,)`` float64 distances in mm (numpy if ``x_gt`` is numpy).
    """
    gt, pred = _check_transform_pair(x_gt, x_pred, "landmark_errors", "N")
    lm = as_landmarks(landmarks, gt.shape[0] + (1 if local else 0))
    idx = lm[:, 0] - 1 if local else lm[:, 0]
    q = landmark_points(lm, scale)
    d = ((gt[idx] - pred[idx]) @ q[:, :, None])[:, :3, 0]
    return _out(torch.linalg.vector_norm(d, dim=-1), x_gt)


def tusrec_metrics(
    g_gt,
    g_pred,
    shape: tuple[int, int],
    scale,
    landmarks=None,
    device: str | torch.device | None = None,
    chunk_frames: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> dict[str, float]:
    """Official TUS-REC (2024 and 2025) per-scan errors.

    * ``GPE`` = mean over frames ``i = 1..N-1`` and all ``H*W`` pixels ``p`` of
      ``||(G_gt[i] - G_pred[i]) S p||``; ``LPE`` the same with local poses ``L[i-1]``.
    * ``GLE`` / ``LLE`` (only with ``landmarks``): mean over landmarks ``(f, u, v)`` of
      ``||(X_gt[f] - X_pred[f]) S (u, v, 0, 1)||`` with ``X = G`` or ``L`` (local row ``f-1``).

    Chunked over frames (see :func:`all_pixel_errors`): a 1500-frame 480x640 scan needs about
    ``max_bytes`` of extra memory instead of the 5.5 GB of one float32 displacement field.

    Args:
        g_gt, g_pred: ``(N, 4, 4)`` global poses (corner-origin image mm, ``G[0] = I``).
        shape: ``(H, W)``.
        scale: ``(4, 4)`` pixel -> mm matrix ``S``.
        landmarks: optional ``(K, 3)`` integers ``(frame 0-based, u 1-based, v 1-based)``.
        device: device of the pixel computation (default: ``g_gt``'s device, else CPU).
        chunk_frames: frames per chunk (default from ``max_bytes``).
        max_bytes: target extra memory of one chunk.

    Returns:
        ``{"GPE", "LPE"}`` plus ``{"GLE", "LLE"}`` when landmarks are given (mm).
    """
    gt, pred = _check_pair(g_gt, g_pred)
    hw = check_frame_shape(shape)
    dev = _default_device(device, g_gt)
    kw = {"device": dev, "chunk_frames": chunk_frames, "max_bytes": max_bytes}
    lgt, lpred = local_from_global(gt), local_from_global(pred)
    out = {
        "GPE": all_pixel_errors(gt[1:], pred[1:], hw, scale, **kw).mean().item(),
        "LPE": all_pixel_errors(lgt, lpred, hw, scale, **kw).mean().item(),
    }
    if landmarks is not None:
        as_landmarks(landmarks, gt.shape[0], hw)
        out["GLE"] = landmark_errors(gt, pred, landmarks, scale).mean().item()
        out["LLE"] = landmark_errors(lgt, lpred, landmarks, scale, local=True).mean().item()
    return out


def identity_errors(
    g_gt,
    shape: tuple[int, int],
    scale,
    landmarks=None,
    device: str | torch.device | None = None,
    chunk_frames: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> dict[str, float]:
    """:func:`tusrec_metrics` of the trivial prediction ``G_pred[i] = I`` for every frame.

    These are the TUS-REC 2025 normalisers ``X_identity`` (the mean ground-truth displacement
    magnitude, e.g. mean ``||G_gt[i] S p - S p||`` for GPE). Same arguments as
    :func:`tusrec_metrics`.
    """
    gt = as_global_poses(g_gt, "g_gt")
    eye = torch.eye(4, dtype=torch.float64).expand_as(gt).clone()
    dev = _default_device(device, g_gt)
    return tusrec_metrics(gt, eye, shape, scale, landmarks, dev, chunk_frames, max_bytes)


def normalised_score(errors: Mapping[str, float], identity: Mapping[str, float]) -> dict[str, float]:
    """TUS-REC 2025 normalised scores ``X* = 1 - X / X_identity`` (1 = perfect, 0 = identity).

    Args:
        errors: per-scan errors from :func:`tusrec_metrics` (keys among GPE, GLE, LPE, LLE).
        identity: the same keys from :func:`identity_errors` of the same scan.

    Returns:
        ``{"GPE_norm", ...}`` for every official metric present in both, and ``final_score``, the
        mean of them (the official final score when all four are present). A zero identity error
        gives NaN with a warning.
    """
    out: dict[str, float] = {}
    for key in TUSREC_METRICS:
        if key in errors and key in identity:
            ref = float(identity[key])
            if ref == 0.0:
                warnings.warn(
                    f"normalised_score: identity {key} is 0; score is NaN", UndefinedMetricWarning,
                    stacklevel=2,
                )
                out[f"{key}_norm"] = math.nan
            else:
                out[f"{key}_norm"] = 1.0 - float(errors[key]) / ref
    if not out:
        raise ValueError(
            f"normalised_score: no common metric among {TUSREC_METRICS}; "
            f"got {sorted(errors)} and {sorted(identity)}"
        )
    out["final_score"] = float(np.mean(list(out.values())))
    return out


# ----------------------------------------------------------------------------- statistics


def wilcoxon_table(
    table_a: Mapping[str, Mapping[str, float]],
    table_b: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str],
    alternative: str = "two-sided",
) -> dict[str, dict[str, float | int]]:
    """Paired Wilcoxon signed-rank tests of two methods over the same scans.

    Args:
        table_a, table_b: ``{scan_key: {metric: value}}`` per method; the scan keys must match.
        metrics: metric names to test (each present for every scan of both tables).
        alternative: ``"two-sided"``, ``"less"`` (A lower than B) or ``"greater"``.

    Returns:
        ``{metric: {"n", "mean_a", "mean_b", "median_diff", "statistic", "p_value",
        "effect_size_r"}}`` where ``median_diff`` is the median of ``a - b``, ``statistic`` and
        ``p_value`` come from ``scipy.stats.wilcoxon`` (zero differences dropped, its default),
        and ``effect_size_r = z / sqrt(n_nonzero)`` from the normal approximation. When all
        differences are zero: statistic 0, p-value 1, effect size 0.

    Raises:
        ValueError: scan keys differ, a metric is missing, or a value is not finite.
    """
    keys_a, keys_b = set(table_a), set(table_b)
    if keys_a != keys_b:
        only_a, only_b = sorted(keys_a - keys_b), sorted(keys_b - keys_a)
        raise ValueError(
            f"wilcoxon_table: the two tables cover different scans: {len(only_a)} only in A "
            f"(e.g. {only_a[:3]}), {len(only_b)} only in B (e.g. {only_b[:3]})"
        )
    if not keys_a:
        raise ValueError("wilcoxon_table: the tables are empty")
    keys = sorted(keys_a)
    out: dict[str, dict[str, float | int]] = {}
    for metric in metrics:
        a = np.array([_value(table_a, k, metric, "A") for k in keys])
        b = np.array([_value(table_b, k, metric, "B") for k in keys])
        diff = a - b
        row = {
            "n": len(keys),
            "mean_a": float(a.mean()),
            "mean_b": float(b.mean()),
            "median_diff": float(np.median(diff)),
        }
        nonzero = int(np.count_nonzero(diff))
        if nonzero == 0:
            row.update(statistic=0.0, p_value=1.0, effect_size_r=0.0)
        else:
            res = stats.wilcoxon(a, b, alternative=alternative)
            z = stats.wilcoxon(a, b, alternative=alternative, method="approx").zstatistic
            row.update(
                statistic=float(res.statistic),
                p_value=float(res.pvalue),
                effect_size_r=float(z) / math.sqrt(nonzero),
            )
        out[metric] = row
    return out


def _value(table: Mapping[str, Mapping[str, float]], key: str, metric: str, which: str) -> float:
    try:
        value = float(table[key][metric])
    except KeyError:
        raise ValueError(f"wilcoxon_table: table {which} has no metric {metric!r} for scan {key!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"wilcoxon_table: table {which}, scan {key!r}, metric {metric!r} is {value}")
    return value
