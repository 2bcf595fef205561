"""What a model needs from its input (:class:`InputSpec`) and what a staged run provides
(:class:`StageSource`): the model contract's data, after timm's ``resolve_model_data_config``.

Every registered model carries an :class:`InputSpec` from the moment it is created
(``model.input_spec``). The architecture fills in what it knows (the temporal halo of its per-frame
encoder, the size and frame stride of its global branch, the sparse frame count of a model trained
on frame subsets); training adds what the data decided (the local crop, the pixel spacing, the
subset size of a sparse model) with
:meth:`~dualtrack.models.registry.TrajectoryModel.configure_input` before the first step. The spec is
saved in every checkpoint and export and restored when the weights are loaded, so the one predictor
(:class:`dualtrack.inference.Predictor`) feeds a loaded model exactly as it was trained.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["InputSpec", "StageSource"]


def _pair(value: Any, what: str, kind: type) -> tuple | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"input spec: {what} must be null or a pair, got {value!r}")
    if kind is int:
        if not all(isinstance(v, int) and not isinstance(v, bool) and 2 <= v <= 65536 for v in value):
            raise ValueError(f"input spec: {what} must be two integers in 2..65536, got {value!r}")
        return int(value[0]), int(value[1])
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value) or not all(
        math.isfinite(v) and v > 0 for v in value
    ):
        raise ValueError(f"input spec: {what} must be two positive finite numbers, got {value!r}")
    return float(value[0]), float(value[1])


def _count(value: Any, what: str, minimum: int, optional: bool = True) -> int | None:
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        allowed = f"{'null or ' if optional else ''}an integer >= {minimum}"
        raise ValueError(f"input spec: {what} must be {allowed}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class InputSpec:
    """The input a model needs, stored on the model, in its checkpoints and in its exports.

    Attributes:
        local_crop: ``(h, w)`` centre crop of the frames at native resolution that the per-frame
            (local) encoder sees, rows ``(H - h) // 2 ..``, columns ``(W - w) // 2 ..``; ``None``
            = the whole frame.
        global_stride: the global branch sees frames ``0, s, 2s, ...`` of the sweep; ``None`` =
            the model has no separate global branch.
        global_size: ``(h, w)`` the model resizes the **uncropped** frames of its global branch
            to (the training data pre-resizes them to it); ``None`` without a global branch.
        sparse_frames: the model was trained on random frame subsets and sees a sweep as this many
            evenly spaced frames (``global_only``; training sets it to its subset size, so the
            frame spacing at inference matches training's); ``None`` = every frame.
        halo: frames on each side that influence one frame's per-frame features
            (:meth:`~dualtrack.models.registry.TrajectoryModel.encode`); chunked encoding with this
            halo is exact. ``None`` = features depend on the whole sequence (no chunking).
        min_frames: the shortest sweep the model accepts.
        max_frames: the longest sweep the model accepts (the size of its learned or relative
            position tables; ``None`` = no limit).
        pixel_spacing: ``(sx, sy)`` mm per pixel of the training frames (``None`` = unknown); the
            predictor refuses frames of another spacing unless told to resample them.
        intensity_divisor: frames are uint8 and enter the network as ``frames / intensity_divisor``.
    """

    local_crop: tuple[int, int] | None = None
    global_stride: int | None = None
    global_size: tuple[int, int] | None = None
    sparse_frames: int | None = None
    halo: int | None = None
    min_frames: int = 2
    max_frames: int | None = None
    pixel_spacing: tuple[float, float] | None = None
    intensity_divisor: float = 255.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "local_crop", _pair(self.local_crop, "local_crop", int))
        set_(self, "global_size", _pair(self.global_size, "global_size", int))
        set_(self, "pixel_spacing", _pair(self.pixel_spacing, "pixel_spacing", float))
        set_(self, "global_stride", _count(self.global_stride, "global_stride", 1))
        set_(self, "sparse_frames", _count(self.sparse_frames, "sparse_frames", 2))
        set_(self, "halo", _count(self.halo, "halo", 0))
        set_(self, "min_frames", _count(self.min_frames, "min_frames", 2, optional=False))
        set_(self, "max_frames", _count(self.max_frames, "max_frames", self.min_frames))
        d = self.intensity_divisor
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not (math.isfinite(d) and d > 0):
            raise ValueError(f"input spec: intensity_divisor must be a positive number, got {d!r}")
        set_(self, "intensity_divisor", float(d))
        if (self.global_stride is None) != (self.global_size is None):
            raise ValueError(
                "input spec: global_stride and global_size are set together (a global branch) or not at "
                f"all, got {self.global_stride!r} and {self.global_size!r}"
            )

    @property
    def has_global_branch(self) -> bool:
        """Whether the model takes a separate global input (every ``global_stride``-th frame)."""
        return self.global_stride is not None

    def replace(self, **changes: Any) -> InputSpec:
        """A copy with ``changes`` applied (checked like a new spec)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (pairs as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Any, where: str = "input spec") -> InputSpec:
        """The spec written by :meth:`to_dict`; unknown keys and bad values are a ``ValueError``
        naming ``where``."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: the input spec must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown input spec keys {unknown}; valid: {sorted(known)}")
        try:
            return cls(**data)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class StageSource:
    """What an earlier stage's run provides to a model (``stage.local_from``/``stage.global_from``).

    Attributes:
        modules: sub-modules copied from the source run (same names in both models).
        freeze: parameter groups kept frozen after loading (unless ``stage.finetune``).
    """

    modules: tuple[str, ...]
    freeze: tuple[str, ...] = ()
