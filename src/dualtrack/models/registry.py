"""Model registry (timm-style): ``register_model``, ``create_model(name, **cfg)``, ``list_models()``.

Every trajectory model is a :class:`TrajectoryModel`. The shared contract:

* ``forward(frames, *, index=None, global_frames=None, global_index=None) -> (B, T-1, 6)``

  - ``frames``: ``(B, T, H, W)`` float in ``[0, 1]`` (uint8 / 255), consecutive or sub-sampled
    frames of one sweep each, at the model's local resolution.
  - ``index``: ``(B, T)`` long, the true frame index of each frame in its sweep (used for
    position encodings; default ``arange(T)``).
  - ``global_frames`` / ``global_index``: optional ``(B, Tg, Hg, Wg)`` / ``(B, Tg)`` input of a
    global branch; models with a global branch derive it from ``frames`` when omitted.
  - output: per frame ``i = 1..T-1`` the *normalised* 6-DoF of ``T_{i-1<-i}`` (frame i to the
    previous input frame) in centre-origin image mm, see :mod:`dualtrack.geometry`. Multiply
    by ``target_std`` and add ``target_mean`` (:meth:`TrajectoryModel.denormalise`) to get
    ``(tx, ty, tz [mm], rx, ry, rz [deg])``.

* ``loss(pred, target) -> scalar``: training objective on normalised values (MSE by default;
  baselines add their correlation terms).
* ``temporal_receptive_field``: number of neighbouring frames on each side that influence one
  frame's local features (halo needed for exact chunked inference; ``None`` = whole sequence).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dualtrack.models.resnet import half_resolution_activation_bytes

__all__ = ["TrajectoryModel", "register_model", "create_model", "list_models", "model_entry"]

_REGISTRY: dict[str, Callable[..., TrajectoryModel]] = {}


class TrajectoryModel(nn.Module):
    """Base class of all registered models: target normalisation buffers, the loss, input checks."""

    temporal_receptive_field: int | None = None
    input_crop: tuple[int, int] | None = None
    """Centre crop ``(h, w)`` of the local input the model was trained with (set when weights are
    loaded with :func:`dualtrack.training.load_model`); the default of ``predict_trajectory``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("target_mean", torch.zeros(6))
        self.register_buffer("target_std", torch.ones(6))
        self.model_name: str = type(self).__name__
        self.model_config: dict[str, Any] = {}

    def set_target_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Record the per-component target statistics ``(6,)`` used for normalisation."""
        self.target_mean.copy_(torch.as_tensor(mean, dtype=self.target_mean.dtype))
        self.target_std.copy_(torch.as_tensor(std, dtype=self.target_std.dtype).clamp_min(1e-8))

    def normalise(self, params: torch.Tensor) -> torch.Tensor:
        """``(..., 6)`` mm/deg -> normalised targets."""
        return (params - self.target_mean) / self.target_std

    def denormalise(self, output: torch.Tensor) -> torch.Tensor:
        """``(..., 6)`` normalised network output -> ``(tx, ty, tz [mm], rx, ry, rz [deg])``."""
        return output.float() * self.target_std + self.target_mean

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """MSE between normalised predictions and targets, both ``(B, T-1, 6)``."""
        return torch.nn.functional.mse_loss(pred.float(), target.float())

    def frame_memory_bytes(self, height: int, width: int, itemsize: int) -> int:
        """Estimated peak activation memory per input frame of ``height x width`` pixels when the
        per-frame encoder runs at ``itemsize`` bytes per value (4 = fp32, 2 = bf16/fp16); sizes the
        automatic chunk plan of :func:`dualtrack.inference.predict_trajectory`. This default
        assumes a 64-channel ResNet stem."""
        return half_resolution_activation_bytes(64, height, width, itemsize)

    def check_frames(self, frames: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``frames`` is ``(B, T, H, W)`` with ``T >= 2``."""
        name = self.model_name
        if frames.ndim != 4:
            raise ValueError(f"{name}: frames must be (B, T, H, W), got shape {tuple(frames.shape)}")
        if frames.shape[1] < 2:
            raise ValueError(f"{name}: need at least 2 frames per sequence, got T={frames.shape[1]}")

    def check_index(self, index: torch.Tensor | None, frames: torch.Tensor) -> torch.Tensor:
        """``index`` ``(B, T)`` as long on the frames' device (default ``arange(T)``), shape checked
        against ``frames (B, T, H, W)``."""
        b, t = frames.shape[:2]
        if index is None:
            return torch.arange(t, device=frames.device).expand(b, t)
        if index.shape != (b, t):
            raise ValueError(f"{self.model_name}: index must have shape {(b, t)}, got {tuple(index.shape)}")
        return index.to(device=frames.device, dtype=torch.long)


def register_model(name: str) -> Callable:
    """Decorator registering a factory ``fn(**cfg) -> TrajectoryModel`` under ``name``."""

    def deco(fn: Callable[..., TrajectoryModel]) -> Callable[..., TrajectoryModel]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def _ensure_loaded() -> None:
    # Importing the package registers every built-in architecture.
    import dualtrack.models  # noqa: F401


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered model names, optionally filtered by a substring."""
    _ensure_loaded()
    names = sorted(_REGISTRY)
    return [n for n in names if pattern is None or pattern in n]


def model_entry(name: str) -> Callable[..., TrajectoryModel]:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_model(name: str, **cfg: Any) -> TrajectoryModel:
    """Build a registered model. Unknown config keys raise ``TypeError`` naming the valid ones."""
    fn = model_entry(name)
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(cfg) - set(params))
        if unknown:
            raise TypeError(
                f"model {name!r} got unknown config keys {unknown}; valid keys: {sorted(params)}"
            )
    model = fn(**cfg)
    model.model_name = name
    model.model_config = dict(cfg)
    return model
