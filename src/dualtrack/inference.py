"""Full-sweep inference: frames of one sweep -> local and global poses in TUS-REC image mm.

:class:`Predictor` is the one inference path: the CLI ``predict`` and ``evaluate``, the global-branch
check, the TUS-REC ``predict_ddfs`` adapter, the demo, the benchmarks and validation during training
all call :meth:`Predictor.predict`. It runs the *whole* sweep through a registered model in one pass
(no sliding windows, no averaging of overlapping predictions), fed as the model's
:class:`~dualtrack.models.spec.InputSpec` says, while bounding memory:

* The frames go to the device once, as uint8 (4x fewer bytes than float32), and are divided by
  ``input_spec.intensity_divisor`` there, chunk by chunk.
* The model's per-frame part (``model.encode``: the local 3D CNN + pooling for DualTrack, the pair
  CNN of the baselines) runs on chunks of frames, each extended by ``r = input_spec.halo`` frames on
  both sides (clipped at the sweep ends); only the chunk's own frames are kept. Because the encoders'
  temporal stride is 1 and their padding is zero padding, the result equals the unchunked one up to
  float round-off. The sequence part (``model.decode``: transformers, fusion, RNN) then sees all
  ``N`` frames at once.
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
* Models with a global branch (``input_spec.global_stride = s``) get the **uncropped** frames
  ``0, s, 2s, ...`` as global input (the model resizes them to ``input_spec.global_size``).
* Models trained on sparse frame subsets (``input_spec.sparse_frames = m``, i.e. ``global_only``)
  see the sweep as ``m`` evenly spaced frames, as in training; the motion between two selected
  frames ``g`` apart is split into ``g`` equal screw-motion steps
  (:func:`dualtrack.geometry.interpolate_steps`) to give one local pose per frame.
* Pixel spacing: a model that knows its training spacing (``input_spec.pixel_spacing``, recorded by
  training) refuses frames more than :data:`SPACING_TOLERANCE` off it, unless the predictor was made
  with ``resample=True``; then the frames are resampled to the model's spacing first.

Local input crop rule (``input_spec.local_crop = (h, w)``): a centre crop at full resolution, rows
``y0 = (H - h) // 2 .. y0 + h``, columns ``x0 = (W - w) // 2 .. x0 + w``; no resizing. When ``H - h``
and ``W - w`` are even (e.g. 256 x 256 out of 480 x 640) the crop's centre is the frame's centre, so
the model's centre-origin poses need no correction. ``None`` uses the whole frame.

Outputs (:class:`TrajectoryPrediction`): the model's normalised outputs are denormalised
(``target_mean``/``target_std``) to 6-DoF ``T_{i-1<-i}`` in centre-origin image mm, converted to
corner-origin matrices with :func:`dualtrack.geometry.centre_to_corner` (centre of the full
``H x W`` frame, the sweep's pixel spacing), and chained with :func:`dualtrack.geometry.chain_local`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dualtrack import geometry
from dualtrack.data.sweep import Sweep, resize_frames
from dualtrack.models import InputSpec, TrajectoryModel
from dualtrack.models.weights import load_bundle
from dualtrack.utils import autocast, available_memory_bytes, resolve_device, resolve_precision

__all__ = [
    "Predictor",
    "SPACING_TOLERANCE",
    "TrajectoryPrediction",
    "centre_crop_box",
    "Chunk",
    "plan_chunks",
    "auto_chunk_size",
    "default_chunk_size",
    "recompute_share",
    "memory_budget_bytes",
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
    model: TrajectoryModel,
    num_frames: int,
    frame_shape: tuple[int, int],
    device: torch.device,
    dtype: torch.dtype | None,
    memory_budget_gb: float | None = None,
) -> int:
    """The automatic chunk size :class:`Predictor` uses for ``num_frames`` local inputs of
    ``frame_shape = (h, w)`` at autocast ``dtype`` (``None`` = fp32) on ``device`` (see
    :func:`auto_chunk_size`; use it with ``balance=True``)."""
    budget = memory_budget_bytes(device) if memory_budget_gb is None else int(memory_budget_gb * 1e9)
    itemsize = 4 if dtype is None else 2
    return auto_chunk_size(num_frames, model.input_spec.halo,
                           model.frame_memory_bytes(*frame_shape, itemsize), budget)


def sparse_frame_indices(num_frames: int, count: int) -> np.ndarray:
    """``min(count, N)`` evenly spaced, strictly increasing frame indices from 0 to ``N-1``."""
    idx = np.unique(np.round(np.linspace(0, num_frames - 1, min(count, num_frames))).astype(np.int64))
    return idx


SPACING_TOLERANCE = 0.02
"""Largest relative difference between a sweep's pixel spacing and the model's training spacing
that :class:`Predictor` accepts without resampling."""

GlobalReplacer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``replace(global_frames (1, Tg, H, W) float, global_index (1, Tg)) -> (1, Tg, H, W)``."""


class Predictor:
    """The one way to run a trained model on a sweep (after nnU-Net's ``nnUNetPredictor``).

    Every caller (``dualtrack predict``, ``evaluate``, the global-branch check, the TUS-REC
    ``predict_ddfs`` adapter, the demo, the benchmarks, validation during training) builds one and
    calls :meth:`predict`. The model's :class:`~dualtrack.models.spec.InputSpec` decides the input:
    the local crop, the global branch's frames, the sparse frame count, the chunk halo and the pixel
    spacing it was trained at; nothing is passed around beside it.

    Build it with :meth:`from_model` (a model in memory), :meth:`from_run` (a training run folder),
    :meth:`from_export` (``dualtrack export`` output) or :meth:`from_path` (any of these).

    Args:
        model: a registered :class:`~dualtrack.models.registry.TrajectoryModel`; moved to
            ``device``, run in eval mode (its train/eval mode is restored after each call).
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ...
        precision: ``"auto"`` (default), ``"fp32"``, ``"bf16"`` or ``"fp16"`` (CUDA); see the module
            docstring.
        chunk_size: frames per chunk of the per-frame encoder; ``None`` = the automatic plan.
        memory_budget_gb: memory the automatic chunk plan may fill (default:
            :func:`memory_budget_bytes`).
        resample: frames whose pixel spacing differs from the model's training spacing by more than
            :data:`SPACING_TOLERANCE` are resampled to it (bilinear, antialiased) instead of refused.
        source: where the weights came from (for messages).
    """

    def __init__(
        self,
        model: TrajectoryModel,
        *,
        device: str | torch.device | None = "auto",
        precision: str = "auto",
        chunk_size: int | None = None,
        memory_budget_gb: float | None = None,
        resample: bool = False,
        source: str | None = None,
    ) -> None:
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.model = model
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.chunk_size = chunk_size
        self.memory_budget_gb = memory_budget_gb
        self.resample = resample
        self.source = source or model.model_name

    @classmethod
    def from_model(cls, model: TrajectoryModel, **options: Any) -> Predictor:
        """A predictor for a model in memory (options as in the constructor)."""
        return cls(model, **options)

    @classmethod
    def from_path(cls, path: str | os.PathLike, **options: Any) -> Predictor:
        """A predictor for a run folder, checkpoint file or export folder (strict loading, the
        saved input spec restored; see :func:`dualtrack.models.weights.load_bundle`)."""
        bundle = load_bundle(path)
        return cls(bundle.model, source=str(bundle.source), **options)

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, **options: Any) -> Predictor:
        """A predictor for a training run folder (``best.pt``, else ``last.pt``)."""
        if not Path(run_dir).is_dir():
            raise FileNotFoundError(f"run folder not found: {run_dir}")
        return cls.from_path(run_dir, **options)

    @classmethod
    def from_export(cls, folder: str | os.PathLike, **options: Any) -> Predictor:
        """A predictor for a ``dualtrack export`` folder (``model.safetensors`` + ``config.json``)."""
        if not (Path(folder) / "model.safetensors").is_file():
            raise FileNotFoundError(f"{folder}: not an export folder (no model.safetensors)")
        return cls.from_path(folder, **options)

    @property
    def spec(self) -> InputSpec:
        """The model's input spec."""
        return self.model.input_spec

    def _check_spacing(self, frames: torch.Tensor, spacing: tuple[float, float], where: str):
        trained = self.spec.pixel_spacing
        if trained is None:
            return frames, spacing
        off = max(abs(s / t - 1.0) for s, t in zip(spacing, trained, strict=True))
        if off <= SPACING_TOLERANCE:
            return frames, spacing
        if not self.resample:
            raise ValueError(
                f"{where}: pixel spacing {tuple(round(s, 4) for s in spacing)} mm differs from the "
                f"{tuple(round(t, 4) for t in trained)} mm that {self.source} was trained at by "
                f"{100 * off:.0f} % (more than {100 * SPACING_TOLERANCE:.0f} %); resample the frames "
                "(resample=True, dualtrack predict --resample) or use a model trained at this spacing"
            )
        n, height, width = frames.shape
        new_h = max(2, round(height * spacing[1] / trained[1]))
        new_w = max(2, round(width * spacing[0] / trained[0]))
        log.info("%s: resampling frames %dx%d -> %dx%d to the model's pixel spacing", where, height, width,
                 new_h, new_w)
        host = frames.cpu().numpy()
        out = np.concatenate([resize_frames(host[a : a + 64], (new_h, new_w)) for a in range(0, n, 64)])
        return torch.from_numpy(out), (spacing[0] * width / new_w, spacing[1] * height / new_h)

    def predict(
        self,
        sweep_or_frames: Sweep | np.ndarray | torch.Tensor,
        *,
        spacing: tuple[float, float] | None = None,
        replace_global: GlobalReplacer | None = None,
    ) -> TrajectoryPrediction:
        """Predict the trajectory of a whole sweep (see the module docstring for the method).

        Args:
            sweep_or_frames: a :class:`~dualtrack.data.sweep.Sweep`, or uint8 frames ``(N, H, W)``
                (numpy or torch) together with ``spacing``.
            spacing: ``(sx, sy)`` mm per pixel (overrides the sweep's own when given).
            replace_global: optional hook that rewrites the global branch's input (the
                global-branch check); the shape must stay the same.

        Returns:
            :class:`TrajectoryPrediction` with ``local (N-1, 4, 4)``, ``global_ (N, 4, 4)``,
            ``params (N-1, 6)``.

        Raises:
            ValueError: frames that are not uint8 ``(N, H, W)``, fewer or more frames than the model
                accepts (``input_spec.min_frames`` / ``max_frames``),
                a crop that does not fit, or a pixel spacing the model was not trained at.
        """
        if isinstance(sweep_or_frames, Sweep):
            where = sweep_or_frames.key
            frames, spacing = sweep_or_frames.frames, tuple(spacing or sweep_or_frames.spacing)
        else:
            where = "frames"
            frames = sweep_or_frames
            if spacing is None:
                raise ValueError("Predictor.predict: pass spacing=(sx, sy) in mm per pixel with a raw frame "
                                 "array (a Sweep carries its own calibration)")
        if not isinstance(frames, torch.Tensor):
            frames = torch.from_numpy(np.ascontiguousarray(np.asarray(frames)))
        spec, model = self.spec, self.model
        if frames.dtype != torch.uint8:
            raise ValueError(f"{where}: frames must be uint8 B-mode images, got {frames.dtype}")
        if frames.ndim != 3 or frames.shape[0] < spec.min_frames:
            raise ValueError(
                f"{where}: {model.model_name} needs frames (N >= {spec.min_frames}, H, W), "
                f"got {tuple(frames.shape)}"
            )
        if spec.max_frames is not None and frames.shape[0] > spec.max_frames:
            raise ValueError(
                f"{where}: {frames.shape[0]} frames, more than the {spec.max_frames} that {self.source} "
                "accepts (the size of its position tables); split the sweep or use a model with larger "
                "tables"
            )
        if replace_global is not None and not spec.has_global_branch:
            raise ValueError(f"{self.source}: model {model.model_name!r} has no separate global branch")
        frames, spacing = self._check_spacing(frames, (float(spacing[0]), float(spacing[1])), where)
        n, height, width = frames.shape
        y0, x0, h, w = centre_crop_box((height, width), spec.local_crop)

        device = self.device
        raw = frames.to(device)  # uint8 stays uint8 until here
        selected = sparse_frame_indices(n, spec.sparse_frames) if spec.sparse_frames else np.arange(n)
        if spec.sparse_frames:
            raw = raw[torch.from_numpy(selected).to(device)]
        local = raw[:, y0 : y0 + h, x0 : x0 + w]
        index = torch.from_numpy(selected).to(device)[None]
        was_training = model.training
        model.to(device).eval()
        try:
            with torch.inference_mode(), autocast(device, self.dtype):
                features = self._encode(local)
                extra = {}
                if spec.has_global_branch:
                    s = spec.global_stride
                    gframes, gindex = model.to_input(raw[::s])[None], index[:, ::s]
                    if replace_global is not None:
                        new = replace_global(gframes, gindex)
                        if new.shape != gframes.shape:
                            raise RuntimeError(f"global input replacement changed the shape "
                                               f"{tuple(gframes.shape)} -> {tuple(new.shape)}")
                        gframes = new.to(gframes)
                    extra = {"global_frames": gframes, "global_index": gindex}
                out = model.decode(features, index=index, **extra)
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
        if spec.sparse_frames:
            gaps = np.diff(selected)
            local_poses = np.concatenate(
                [geometry.interpolate_steps(m, int(g)) for m, g in zip(local_poses, gaps, strict=True)]
            )
            params_np = geometry.matrix_to_params(geometry.corner_to_centre(local_poses, centre))
        return TrajectoryPrediction(local=local_poses, global_=geometry.chain_local(local_poses),
                                    params=params_np)

    def encode(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``model.encode`` of a whole sweep whose frames are already the model's local input
        (uint8 ``(N, h, w)``, cropped): ``(N, D)`` float32 on the predictor's device, computed as
        :meth:`predict` computes it (chunks with the spec's halo, eval mode, no gradients, the
        predictor's precision). The training loop caches these for frozen per-frame encoders."""
        local = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray) else frames)
        if local.dtype != torch.uint8 or local.ndim != 3:
            raise ValueError(f"Predictor.encode: frames must be uint8 (N, h, w), got {local.dtype} "
                             f"{tuple(local.shape)}")
        model, device = self.model, self.device
        local = local.to(device)
        was_training = model.training
        model.to(device).eval()
        try:
            with torch.inference_mode(), autocast(device, self.dtype):
                features = self._encode(local)[0].float()
        finally:
            model.train(was_training)
        return features.clone()  # a normal tensor (inference-mode tensors cannot enter autograd)

    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``model.encode`` of a whole sweep of local inputs ``(N, h, w)`` (on the device) in
        chunks with the spec's halo (``chunk_size``, else the automatic plan): ``(1, N, D)``, equal
        to the unchunked result up to round-off (eval mode)."""
        model = self.model
        n = frames.shape[0]
        size, balance = self.chunk_size, False
        if size is None:
            size, balance = default_chunk_size(model, n, tuple(frames.shape[1:]), self.device, self.dtype,
                                               self.memory_budget_gb), True
        outs = []
        for c in plan_chunks(n, model.input_spec.halo, size, balance):
            feats = model.encode(model.to_input(frames[c.lo : c.hi])[None])
            outs.append(feats[:, c.start - c.lo : c.stop - c.lo])
        return outs[0] if len(outs) == 1 else torch.cat(outs, 1)
