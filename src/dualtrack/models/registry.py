"""Model registry (timm-style): ``register_model``, ``create_model(name, **cfg)``, ``list_models()``,
and the contract every registered model keeps (:class:`TrajectoryModel`).

The contract, the same small set of members on every model (no caller probes a model for optional
attributes):

* ``input_spec`` (:class:`~dualtrack.models.spec.InputSpec`): what the model needs from its input
  (local crop, global branch stride and size, sparse frame count, halo, minimum frames, pixel
  spacing, intensity normalisation), set at creation, completed by training
  (:meth:`TrajectoryModel.configure_input`), saved with the weights and restored on loading.
* ``encode(frames (B, T, H, W)) -> (B, T, D)``: per-frame features, exact when a sweep is encoded
  in chunks extended by ``input_spec.halo`` frames on each side (:mod:`dualtrack.inference`).
* ``decode(features (B, T, D), *, index, global_frames=None, global_index=None) -> (B, T-1, 6)``:
  the sequence part, run once over the whole sweep.
* ``forward(frames, *, index=None, global_frames=None, global_index=None) -> (B, T-1, 6)``
  ``= decode(encode(frames))`` (or ``forward(features=...)`` with precomputed ``encode`` output,
  allowed when every group of ``encode_groups()`` is frozen):

  - ``frames``: ``(B, T, H, W)`` uint8, or float already divided by
    ``input_spec.intensity_divisor``, consecutive or sub-sampled frames of one sweep each, cropped
    to ``input_spec.local_crop``.
  - ``index``: ``(B, T)`` long, the true frame index of each frame in its sweep (used for
    position encodings; default ``arange(T)``).
  - ``global_frames`` / ``global_index``: ``(B, Tg, Hg, Wg)`` / ``(B, Tg)``, the **uncropped**
    frames ``0, s, 2s, ...`` (``s = input_spec.global_stride``); required exactly when the model
    has a global branch.
  - output: per frame ``i = 1..T-1`` the *normalised* 6-DoF of ``T_{i-1<-i}`` (frame i to the
    previous input frame) in centre-origin image mm, see :mod:`dualtrack.geometry`. Multiply
    by ``target_std`` and add ``target_mean`` (:meth:`TrajectoryModel.denormalise`) to get
    ``(tx, ty, tz [mm], rx, ry, rz [deg])``.

* ``loss(pred, target) -> scalar``: training objective on normalised values (MSE by default;
  baselines add their correlation terms).
* Staging: ``parameter_groups()`` (group name -> parameters; :meth:`TrajectoryModel.freeze` /
  :meth:`TrajectoryModel.unfreeze` by group), ``stage_sources()`` (which sub-modules an earlier
  stage's run provides and which groups stay frozen after loading them),
  :meth:`TrajectoryModel.init_from`.
* ``frame_memory_bytes(h, w, itemsize)``: per-frame activation memory of ``encode`` (sizes chunks).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from dualtrack.models.resnet import half_resolution_activation_bytes
from dualtrack.models.spec import InputSpec, StageSource

__all__ = ["TrajectoryModel", "register_model", "create_model", "list_models", "model_entry"]

_REGISTRY: dict[str, Callable[..., TrajectoryModel]] = {}

_TRAINING_FIELDS = ("local_crop", "pixel_spacing", "sparse_frames")
"""Input-spec fields that training decides; the others belong to the architecture."""


class TrajectoryModel(nn.Module):
    """Base class of all registered models: the contract of the module docstring, target
    normalisation buffers, the loss, input checks, parameter groups and freezing.

    Subclasses pass their :class:`InputSpec` to ``__init__``, set ``self.groups`` (group name ->
    sub-module path) when they can be partly frozen, and implement :meth:`decode` (and
    :meth:`encode` when their per-frame part is not the identity).
    """

    def __init__(self, input_spec: InputSpec | None = None) -> None:
        super().__init__()
        self.register_buffer("target_mean", torch.zeros(6))
        self.register_buffer("target_std", torch.ones(6))
        self.model_name: str = type(self).__name__
        self.model_config: dict[str, Any] = {}
        self.input_spec: InputSpec = input_spec or InputSpec()
        self.groups: dict[str, str] = {}
        self.frozen: set[str] = set()

    # -- input spec ------------------------------------------------------------------------------
    def configure_input(self, **changes: Any) -> None:
        """Set the training-decided fields of :attr:`input_spec` (``local_crop``, ``pixel_spacing``
        and, for a model that sees sparse frames, ``sparse_frames``: the training subset size); the
        architecture's fields cannot change (``ValueError``)."""
        fixed = sorted(set(changes) - set(_TRAINING_FIELDS))
        if fixed:
            raise ValueError(
                f"{self.model_name}: input spec fields {fixed} belong to the architecture; "
                f"only {list(_TRAINING_FIELDS)} are set by training"
            )
        if changes.get("sparse_frames") is not None and self.input_spec.sparse_frames is None:
            raise ValueError(f"{self.model_name}: sees every frame of a sweep; it has no sparse frame count")
        self.input_spec = self.input_spec.replace(**changes)

    def restore_input(self, spec: InputSpec, where: str) -> None:
        """Restore a saved :attr:`input_spec`; its architecture fields must equal this model's."""
        mine = self.input_spec.replace(**{k: getattr(spec, k) for k in _TRAINING_FIELDS})
        if mine != spec:
            diff = {k: (v, getattr(mine, k)) for k, v in spec.to_dict().items() if mine.to_dict()[k] != v}
            raise ValueError(f"{where}: the saved input spec does not fit model {self.model_name!r} "
                             f"(saved, built): {diff}")
        self.input_spec = spec

    # -- targets ---------------------------------------------------------------------------------
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
        """Estimated peak activation memory per input frame of ``height x width`` pixels when
        :meth:`encode` runs at ``itemsize`` bytes per value (4 = fp32, 2 = bf16/fp16); sizes the
        automatic chunk plan of :class:`dualtrack.inference.Predictor`. This default assumes a
        64-channel ResNet stem."""
        return half_resolution_activation_bytes(64, height, width, itemsize)

    # -- forward ---------------------------------------------------------------------------------
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

    def to_input(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames -> float ``frames / input_spec.intensity_divisor``; float passes through."""
        if frames.is_floating_point():
            return frames
        return frames.float().div_(self.input_spec.intensity_divisor)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T, H, W)`` float frames -> ``(B, T, D)`` per-frame features, exact under chunking
        with a halo of ``input_spec.halo`` frames. Default: the frames themselves (flattened)."""
        return frames.flatten(2)

    def decode(
        self,
        features: torch.Tensor,
        *,
        index: torch.Tensor,
        global_frames: torch.Tensor | None = None,
        global_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, T, D)`` features of :meth:`encode`, ``(B, T)`` index -> ``(B, T-1, 6)``."""
        raise NotImplementedError

    def forward(
        self,
        frames: torch.Tensor | None = None,
        *,
        features: torch.Tensor | None = None,
        index: torch.Tensor | None = None,
        global_frames: torch.Tensor | None = None,
        global_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, T, H, W)`` frames (see the module docstring) -> ``(B, T-1, 6)``; or, instead of the
        frames, ``features`` ``(B, T, D)``: precomputed :meth:`encode` output (the training loop's
        feature cache when every group of :meth:`encode_groups` is frozen)."""
        if (frames is None) == (features is None):
            raise ValueError(f"{self.model_name}: pass either frames or features")
        if frames is not None:
            self.check_frames(frames)
            frames = self.to_input(frames)
            ref = frames
        else:
            if features.ndim != 3 or features.shape[1] < 2:
                raise ValueError(
                    f"{self.model_name}: features must be (B, T >= 2, D), got {tuple(features.shape)}"
                )
            ref = features
        index = self.check_index(index, ref)
        if self.input_spec.has_global_branch:
            if global_frames is None or global_index is None:
                raise ValueError(
                    f"{self.model_name}: the global branch needs global_frames (B, Tg, H, W), the uncropped "
                    f"frames 0, {self.input_spec.global_stride}, ... of the sweep, and global_index (B, Tg)"
                )
            if global_frames.ndim != 4 or tuple(global_index.shape) != tuple(global_frames.shape[:2]):
                raise ValueError(
                    f"{self.model_name}: global_frames (B, Tg, H, W) {tuple(global_frames.shape)} and "
                    f"global_index (B, Tg) {tuple(global_index.shape)} do not match"
                )
            global_frames = self.to_input(global_frames)
            global_index = global_index.to(device=ref.device, dtype=torch.long)
        elif global_frames is not None:
            raise ValueError(f"{self.model_name}: has no global branch; do not pass global_frames")
        if features is None:
            features = self.encode(frames)
        return self.decode(features, index=index, global_frames=global_frames, global_index=global_index)

    def encode_groups(self) -> tuple[str, ...] | None:
        """The parameter groups whose parameters :meth:`encode` uses; ``None`` when ``encode`` is
        not separable into groups. When every one of them is frozen (eval mode, no gradients),
        ``encode`` is a fixed function of the frames and its output may be cached."""
        return None

    # -- parameter groups, freezing, stages ------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Group name -> parameters; the groups partition ``self.parameters()`` (empty when the
        model cannot be partly frozen)."""
        return {name: list(self.get_submodule(path).parameters()) for name, path in self.groups.items()}

    def stage_sources(self) -> dict[str, StageSource]:
        """Stage key (``"local_from"``, ``"global_from"``) -> what that earlier run provides.
        Default: nothing (a single-stage model)."""
        return {}

    def _check_groups(self, groups: Iterable[str]) -> list[str]:
        groups = [groups] if isinstance(groups, str) else list(groups)
        unknown = sorted(set(groups) - set(self.groups))
        if unknown:
            raise KeyError(
                f"{self.model_name}: unknown parameter groups {unknown}; valid: {sorted(self.groups)}"
            )
        return groups

    def freeze(self, groups: Iterable[str]) -> None:
        """Stop gradients of the named groups and keep them in eval mode (BatchNorm, dropout)."""
        for name in self._check_groups(groups):
            module = self.get_submodule(self.groups[name])
            module.requires_grad_(False)
            module.eval()
            self.frozen.add(name)

    def unfreeze(self, groups: Iterable[str]) -> None:
        """Undo :meth:`freeze` for the named groups (their mode follows the model's again)."""
        for name in self._check_groups(groups):
            module = self.get_submodule(self.groups[name])
            module.requires_grad_(True)
            module.train(self.training)
            self.frozen.discard(name)

    def train(self, mode: bool = True) -> TrajectoryModel:
        super().train(mode)
        for name in self.frozen:
            self.get_submodule(self.groups[name]).eval()
        return self

    def init_from(self, state: Mapping[str, torch.Tensor], parts: Sequence[str]) -> None:
        """Strictly copy whole sub-modules (e.g. ``"local_encoder"``) from another model's
        ``state_dict`` whose keys use the same sub-module names.

        Raises:
            KeyError: ``state`` has no entry under a part.
            RuntimeError: missing/unexpected keys or shape mismatches (strict loading).
        """
        for part in parts:
            src = part.rstrip(".") + "."
            sub = {k[len(src) :]: v for k, v in state.items() if k.startswith(src)}
            if not sub:
                raise KeyError(f"{self.model_name}: the state has no entries under {src!r}")
            self.get_submodule(part).load_state_dict(sub, strict=True)


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
    model.model_config = {
        k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in cfg.items()
    }
    return model
