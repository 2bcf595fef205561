"""Full-sweep inference: frames of one sweep -> local and global poses in TUS-REC image mm.

:func:`predict_trajectory` runs the *whole* sweep through a registered model in one pass (no sliding
windows, no averaging of overlapping predictions) while bounding memory:

* The frames go to the device once, as uint8 (4x fewer bytes than float32), and are converted to
  float ``[0, 1]`` there, chunk by chunk.
* Models of the DualTrack family (methods ``encode_frames`` / ``forward_encoded`` and the attribute
  ``temporal_receptive_field = r``) run their per-frame encoder (the local 3D CNN + pooling) on
  chunks of frames, each extended by ``r`` frames on both sides (the *halo*, clipped at the sweep
  ends); only the chunk's own frames are kept. Because the encoder's temporal stride is 1 and its
  padding is zero padding, the result equals the unchunked one up to float round-off. The sequence
  models (transformers, fusion) then see all ``N`` frames at once.
* Chunk plan (:func:`plan_chunks`, :func:`auto_chunk_size`): by default the whole sweep is encoded
  in one pass when the encoder's estimated activation memory
  (``model.frame_memory_bytes(h, w, itemsize)`` per frame) fits the memory budget (40 % of the
  available RAM, or half the free GPU memory); otherwise chunks are as large as the budget allows
  but never shorter than ``20 r + 1`` frames, so re-encoded halo frames stay under 10 % of the CNN
  work at every sweep length. An explicit ``chunk_size`` gives fixed chunks (for tests and tight
  memory).
* Precision (:func:`dualtrack.utils.resolve_precision`): ``"auto"`` (default) runs under bf16
  autocast on CPUs with native bf16 (AMX / AVX-512 BF16) and on GPUs that support it (fp16 on other
  GPUs), else fp32; ``"fp32"``, ``"bf16"`` and ``"fp16"`` force one. On a trained model bf16 changes
  the trajectory by well under 2 % of the model's GPE (tested; measured on the demo model in
  docs/models.md). The 3D CNN runs in ``channels_last_3d`` memory format with its BatchNorms
  folded into the convolutions (:mod:`dualtrack.models.resnet`), under ``torch.inference_mode``.
* Models with a global branch (attribute ``global_stride = s``) get the **uncropped** frames
  ``0, s, 2s, ...`` as global input (the model resizes them itself).
* Models trained on sparse frame subsets (attribute ``sparse_inference_frames = m``, i.e.
  ``global_only``) see the sweep as ``m`` evenly spaced frames, as in training; the motion between
  two selected frames ``g`` apart is split into ``g`` equal screw-motion steps
  (:func:`dualtrack.geometry.interpolate_steps`) to give one local pose per frame.
* Other models: ``model.predict_sweep(frames (1, N, H, W), index (1, N), chunk_size=...)`` when
  defined, otherwise one plain ``forward`` over the whole sweep.

Local input crop rule (``crop=(h, w)``): a centre crop at full resolution, rows
``y0 = (H - h) // 2 .. y0 + h``, columns ``x0 = (W - w) // 2 .. x0 + w``; no resizing. When ``H - h``
and ``W - w`` are even (e.g. 256 x 256 out of 480 x 640) the crop's centre is the frame's centre, so
the model's centre-origin poses need no correction. ``crop=None`` uses the whole frame. For
``global_only`` models the frames *are* the global input: leave ``crop=None``.

Outputs (:class:`TrajectoryPrediction`): the model's normalised outputs are denormalised
(``target_mean``/``target_std``) to 6-DoF ``T_{i-1<-i}`` in centre-origin image mm, converted to
corner-origin matrices with :func:`dualtrack.geometry.centre_to_corner` (centre of the full
``H x W`` frame, the sweep's pixel spacing), and chained with :func:`dualtrack.geometry.chain_local`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dualtrack import geometry
from dualtrack.utils import autocast, available_memory_bytes, resolve_device, resolve_precision

__all__ = [
    "TrajectoryPrediction",
    "predict_trajectory",
    "centre_crop_box",
    "Chunk",
    "plan_chunks",
    "auto_chunk_size",
    "default_chunk_size",
    "recompute_share",
    "memory_budget_bytes",
    "encode_chunked",
    "sparse_frame_indices",
]

MAX_RECOMPUTE = 0.1
"""Largest share of re-encoded halo frames the automatic chunk plan allows."""

log = logging.getLogger(__name__)


@dataclass
class TrajectoryPrediction:
    """Predicted trajectory of one sweep of ``N`` frames (float64 numpy arrays).

    Attributes:
        local: ``(N-1, 4, 4)``, row ``i-1`` = ``T_{i-1<-i}``, corner-origin image mm.
        global_: ``(N, 4, 4)``, ``G[0] = I``, ``G[i] = T_{0<-i}``, corner-origin image mm
            (``global`` is a Python keyword, hence the underscore).
        params: ``(N-1, 6)`` denormalised network output ``(tx, ty, tz [mm], rx, ry, rz [deg])`` of
            ``T_{i-1<-i}`` in **centre-origin** image mm (the network's own convention).
    """

    local: np.ndarray
    global_: np.ndarray
    params: np.ndarray


def centre_crop_box(shape: tuple[int, int], crop: tuple[int, int] | None) -> tuple[int, int, int, int]:
    """``(y0, x0, h, w)`` of the centre crop of size ``crop = (h, w)`` in a frame of ``shape = (H, W)``.

    ``crop=None`` returns the whole frame. Raises ``ValueError`` if the crop is larger than the frame.
    """
    height, width = shape
    if crop is None:
        return 0, 0, height, width
    h, w = (int(c) for c in crop)
    if not (0 < h <= height and 0 < w <= width):
        raise ValueError(f"crop {(h, w)} does not fit in frames of shape {(height, width)}")
    return (height - h) // 2, (width - w) // 2, h, w


def _to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 ``/ 255`` (on the tensor's device); float input is returned as float32."""
    if frames.dtype == torch.uint8:
        return frames.float().div_(255.0)
    return frames.float()


@dataclass(frozen=True)
class Chunk:
    """Frames ``start..stop-1`` are kept from an encoder pass over ``lo..hi-1`` (the halo around)."""

    start: int
    stop: int
    lo: int
    hi: int


def plan_chunks(num_frames: int, halo: int | None, chunk_size: int, balance: bool = False) -> list[Chunk]:
    """Chunks of at most ``chunk_size`` kept frames covering ``0..num_frames-1``, each encoded with
    ``halo`` extra frames per side (clipped at the ends). Fixed-size chunks (the last one shorter),
    or with ``balance`` the same number of chunks, ``ceil(N / chunk_size)``, of equal size.
    ``halo=None`` (outputs depend on the whole sequence) is one chunk."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if halo is None or chunk_size >= num_frames:
        return [Chunk(0, num_frames, 0, num_frames)]
    if balance:
        count = -(-num_frames // chunk_size)
        bounds = [round(k * num_frames / count) for k in range(count + 1)]
    else:
        bounds = [*range(0, num_frames, chunk_size), num_frames]
    pairs = zip(bounds, bounds[1:], strict=False)
    return [Chunk(a, b, max(0, a - halo), min(num_frames, b + halo)) for a, b in pairs]


def recompute_share(plan: list[Chunk]) -> float:
    """Frames encoded more than once, as a share of the sweep's frames."""
    n = plan[-1].stop
    return (sum(c.hi - c.lo for c in plan) - n) / n


def memory_budget_bytes(device: torch.device) -> int:
    """Memory the chunk plan may fill: half the free GPU memory, or 40 % of the available RAM
    (``MemAvailable``; 8 GB assumed where it cannot be read)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.5 * free)
    return int(0.4 * available_memory_bytes())


def auto_chunk_size(num_frames: int, halo: int | None, frame_bytes: int, budget_bytes: int) -> int:
    """Chunk size of the automatic plan (used with ``plan_chunks(..., balance=True)``): the whole
    sweep when ``num_frames * frame_bytes`` fits ``budget_bytes``; else the largest chunk that fits
    with its halo, but at least ``20 * halo + 1`` frames. ``ceil(N / size)`` balanced chunks have
    fewer than ``N / size`` inner boundaries, each re-encoding ``2 * halo`` frames, so re-encoded
    frames stay below ``2 * halo / size <`` :data:`MAX_RECOMPUTE` of the sweep."""
    if halo is None or num_frames * frame_bytes <= budget_bytes:
        return num_frames
    c_min = int(2 * halo / MAX_RECOMPUTE) + 1
    fit = max(1, budget_bytes // max(1, frame_bytes))
    if fit - 2 * halo < c_min:
        log.warning(
            "the local encoder needs about %.1f GB for %d-frame chunks, more than the %.1f GB budget; "
            "running them anyway (smaller chunks would re-encode over %.0f %% of the frames)",
            (c_min + 2 * halo) * frame_bytes / 1e9, c_min, budget_bytes / 1e9, 100 * MAX_RECOMPUTE,
        )
    return max(c_min, fit - 2 * halo)


def default_chunk_size(
    model: Any,
    num_frames: int,
    frame_shape: tuple[int, int],
    device: torch.device,
    dtype: torch.dtype | None,
    memory_budget_gb: float | None = None,
) -> int:
    """The automatic chunk size :func:`predict_trajectory` uses for ``num_frames`` local inputs of
    ``frame_shape = (h, w)`` at autocast ``dtype`` (``None`` = fp32) on ``device`` (see
    :func:`auto_chunk_size`; use it with ``balance=True``)."""
    budget = memory_budget_bytes(device) if memory_budget_gb is None else int(memory_budget_gb * 1e9)
    itemsize = 4 if dtype is None else 2
    return auto_chunk_size(num_frames, model.temporal_receptive_field,
                           model.frame_memory_bytes(*frame_shape, itemsize), budget)


def encode_chunked(
    model: Any, frames: torch.Tensor, chunk_size: int | None = None, *, balance: bool = False
) -> torch.Tensor:
    """Per-frame features ``model.encode_frames`` of a whole sweep, in chunks with a halo.

    Args:
        model: has ``encode_frames((1, T, H, W)) -> (1, T, D)`` and ``temporal_receptive_field``
            (``r``, frames each side; ``None`` = the whole sweep in one chunk).
        frames: ``(N, H, W)`` uint8 or float in ``[0, 1]``, already on the model's device.
        chunk_size: frames kept per chunk (each encoded with ``r`` extra frames per side); ``None``
            = the whole sweep in one pass.
        balance: equal-size chunks (see :func:`plan_chunks`).

    Returns:
        ``(1, N, D)``, equal to ``model.encode_frames(frames[None])`` up to round-off (eval mode).
    """
    n = frames.shape[0]
    plan = plan_chunks(n, model.temporal_receptive_field, n if chunk_size is None else chunk_size, balance)
    outs = []
    for c in plan:
        feats = model.encode_frames(_to_float(frames[c.lo : c.hi])[None])
        outs.append(feats[:, c.start - c.lo : c.stop - c.lo])
    return outs[0] if len(outs) == 1 else torch.cat(outs, 1)


def sparse_frame_indices(num_frames: int, count: int) -> np.ndarray:
    """``min(count, N)`` evenly spaced, strictly increasing frame indices from 0 to ``N-1``."""
    idx = np.unique(np.round(np.linspace(0, num_frames - 1, min(count, num_frames))).astype(np.int64))
    return idx


def _frames_and_spacing(sweep_or_frames: Any, spacing: tuple[float, float] | None) -> tuple[Any, tuple]:
    if hasattr(sweep_or_frames, "frames") and hasattr(sweep_or_frames, "spacing"):
        return sweep_or_frames.frames, tuple(spacing or sweep_or_frames.spacing)
    if spacing is None:
        raise ValueError(
            "predict_trajectory: pass spacing=(sx, sy) in mm per pixel with a raw frame array "
            "(a Sweep carries its own calibration)"
        )
    return sweep_or_frames, tuple(spacing)


def predict_trajectory(
    model: torch.nn.Module,
    sweep_or_frames: Any,
    *,
    spacing: tuple[float, float] | None = None,
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
    crop: tuple[int, int] | None | str = "model",
    precision: str = "auto",
    memory_budget_gb: float | None = None,
) -> TrajectoryPrediction:
    """Predict the trajectory of a whole sweep (see the module docstring for the method).

    Args:
        model: a registered :class:`~dualtrack.models.registry.TrajectoryModel`; it is moved to
            ``device`` and run in eval mode (its previous train/eval mode is restored afterwards).
        sweep_or_frames: a :class:`~dualtrack.data.sweep.Sweep`, or frames ``(N, H, W)`` (numpy or
            torch; uint8, or float in ``[0, 1]``) together with ``spacing``.
        spacing: ``(sx, sy)`` mm per pixel (overrides the sweep's own when given).
        device: e.g. ``"cuda"``; default (``None`` or ``"auto"``): CUDA when available, else CPU.
        chunk_size: frames per chunk of the local CNN; ``None`` (default) = the automatic plan
            (see the module docstring: one pass when it fits, re-encoded halo frames < 10 %).
        crop: centre crop ``(h, w)`` of the local input at full resolution, ``None`` for the whole
            frame, or ``"model"`` (default): the crop the model was trained with
            (``model.input_crop``, set by :func:`dualtrack.training.load_model`; ``None`` when unset).
        precision: ``"auto"`` (default), ``"fp32"``, ``"bf16"`` or ``"fp16"`` (CUDA); see the module
            docstring.
        memory_budget_gb: memory the automatic chunk plan may fill (default: see
            :func:`memory_budget_bytes`).

    Returns:
        :class:`TrajectoryPrediction` with ``local (N-1, 4, 4)``, ``global_ (N, 4, 4)``,
        ``params (N-1, 6)``.
    """
    frames, spacing = _frames_and_spacing(sweep_or_frames, spacing)
    if not isinstance(frames, torch.Tensor):
        frames = torch.from_numpy(np.ascontiguousarray(np.asarray(frames)))
    if frames.ndim != 3 or frames.shape[0] < 2:
        raise ValueError(f"predict_trajectory: need frames (N >= 2, H, W), got {tuple(frames.shape)}")
    n, height, width = frames.shape
    device = resolve_device(device)
    dtype = resolve_precision(precision, device)
    if crop == "model":
        crop = getattr(model, "input_crop", None)
    elif isinstance(crop, str):
        raise ValueError(f"predict_trajectory: crop must be (h, w), None or 'model', got {crop!r}")
    y0, x0, h, w = centre_crop_box((height, width), crop)

    raw = frames.to(device)  # uint8 stays uint8 until here
    sparse = getattr(model, "sparse_inference_frames", None)
    selected = sparse_frame_indices(n, sparse) if sparse else np.arange(n)
    if sparse:
        raw = raw[torch.from_numpy(selected).to(device)]
    local = raw[:, y0 : y0 + h, x0 : x0 + w]
    index = torch.from_numpy(selected).to(device)[None]
    was_training = model.training
    model.to(device).eval()
    try:
        with torch.inference_mode(), autocast(device, dtype):
            if hasattr(model, "encode_frames") and hasattr(model, "forward_encoded"):
                size = chunk_size
                if size is None:
                    size = default_chunk_size(model, len(selected), (h, w), device, dtype, memory_budget_gb)
                feats = encode_chunked(model, local, size, balance=chunk_size is None)
                extra = {}
                stride = getattr(model, "global_stride", None)
                if stride:
                    extra = {
                        "global_frames": _to_float(raw[::stride])[None],
                        "global_index": index[:, ::stride],
                    }
                out = model.forward_encoded(feats, index=index, **extra)
            elif hasattr(model, "predict_sweep"):
                out = model.predict_sweep(_to_float(local)[None], index, chunk_size=chunk_size or 256)
            else:
                out = model(_to_float(local)[None], index=index)
            params = model.denormalise(out.float())[0]
    finally:
        model.train(was_training)
    if tuple(params.shape) != (len(selected) - 1, 6):
        raise RuntimeError(
            f"model returned {tuple(params.shape)} poses for {len(selected)} frames, "
            f"expected {(len(selected) - 1, 6)}"
        )
    params_np = params.double().cpu().numpy()
    centre = geometry.image_centre_mm(spacing, (height, width))
    local_poses = geometry.centre_to_corner(geometry.params_to_matrix(params_np), centre)
    if sparse:
        gaps = np.diff(selected)
        local_poses = np.concatenate(
            [geometry.interpolate_steps(m, int(g)) for m, g in zip(local_poses, gaps, strict=True)]
        )
        params_np = geometry.matrix_to_params(geometry.corner_to_centre(local_poses, centre))
    return TrajectoryPrediction(
        local=local_poses, global_=geometry.chain_local(local_poses), params=params_np
    )
