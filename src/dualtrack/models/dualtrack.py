"""DualTrack and its ablations as registered :class:`~dualtrack.models.registry.TrajectoryModel` s.

Registered names (each with a ``*_tiny`` variant of under 100 k parameters for tests):

* ``dualtrack``: :class:`DualTrack` = :class:`~dualtrack.models.local_encoder.LocalEncoder` on all
  frames + :class:`~dualtrack.models.global_encoder.GlobalEncoder` on every ``global_stride``-th frame
  + :class:`~dualtrack.models.fusion.FusionDecoder` (local tokens attend to global tokens)
  + :class:`~dualtrack.models.fusion.TransitionHead`.
* ``local_only``: :class:`LocalOnly` = local encoder + head.
* ``global_only``: :class:`GlobalOnly` = global encoder on the input frames + head.
* ``coupled``: :class:`Coupled` = local encoder + a wide temporal transformer
  (:class:`~dualtrack.models.fusion.CoupledContext`) + head; no separate global encoder.

Forward contract (see :mod:`dualtrack.models.registry`): ``frames (B, T, H, W)`` in ``[0, 1]`` ->
``(B, T-1, 6)`` normalised 6-DoF of ``T_{i-1<-i}`` in centre-origin image mm. The output for
transition ``i`` comes from the pair of final tokens of frames ``i-1`` and ``i``.

Two-step evaluation used by chunked inference (:mod:`dualtrack.inference`):
``forward(frames) == forward_encoded(encode_frames(frames))``. ``encode_frames`` is per frame up to
``temporal_receptive_field`` frames on each side (``(B, T, D)``); ``forward_encoded`` mixes the whole
sequence. ``DualTrack.forward_encoded`` needs the global frames explicitly.

Freezing and staged training: parameters are partitioned into named groups
(:meth:`DualTrackFamily.parameter_groups`): ``local_cnn`` (``local_encoder.cnn``), ``local_pool``
(``local_encoder.pool``), ``local_temporal`` (``local_encoder.temporal``), ``global``
(``global_encoder``), ``fusion`` (``fusion``: the decoder of DualTrack, the context transformer of
``coupled``) and ``head``. :meth:`DualTrackFamily.freeze` stops their gradients and keeps them in
eval mode (fixed BatchNorm statistics, no dropout) even under ``model.train()``.
State-dict prefixes are shared across the family, so ``local_only``'s ``local_encoder.*`` loads into
``dualtrack.local_encoder`` and ``global_only``'s ``global_encoder.*`` into
``dualtrack.global_encoder`` (:meth:`DualTrackFamily.init_from`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from dualtrack.models.fusion import CoupledContext, FusionDecoder, TransitionHead
from dualtrack.models.global_encoder import GlobalEncoder
from dualtrack.models.local_encoder import LocalEncoder
from dualtrack.models.registry import TrajectoryModel, register_model

__all__ = ["DualTrackFamily", "LocalOnly", "GlobalOnly", "Coupled", "DualTrack"]

_LOCAL_GROUPS = {
    "local_cnn": "local_encoder.cnn",
    "local_pool": "local_encoder.pool",
    "local_temporal": "local_encoder.temporal",
}


class DualTrackFamily(TrajectoryModel):
    """Shared machinery: input checks, two-step forward, parameter groups, freezing, weight loading.

    Subclasses set ``self.groups`` (group name -> sub-module path) and implement
    :meth:`encode_frames` and :meth:`forward_encoded`.
    """

    groups: dict[str, str]

    def __init__(self) -> None:
        super().__init__()
        self.frozen: set[str] = set()

    # -- forward ---------------------------------------------------------------------------------
    def _prepare(self, frames: torch.Tensor, index: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Checked ``frames (B, T, H, W)`` in ``[0, 1]`` (uint8 divided by 255) and ``index (B, T)``."""
        self.check_frames(frames)
        if not frames.is_floating_point():
            frames = frames.float() / 255.0
        return frames, self.check_index(index, frames)

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T, H, W)`` -> ``(B, T, D)`` per-frame features (exact under chunking with a halo of
        ``temporal_receptive_field`` frames)."""
        raise NotImplementedError

    def forward_encoded(
        self,
        features: torch.Tensor,
        *,
        index: torch.Tensor,
        global_frames: torch.Tensor | None = None,
        global_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, T, D)`` features from :meth:`encode_frames`, ``(B, T)`` index -> ``(B, T-1, 6)``."""
        raise NotImplementedError

    def forward(
        self,
        frames: torch.Tensor,
        *,
        index: torch.Tensor | None = None,
        global_frames: torch.Tensor | None = None,
        global_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, T, H, W)`` frames in ``[0, 1]`` (uint8 is divided by 255) -> ``(B, T-1, 6)``."""
        frames, index = self._prepare(frames, index)
        return self.forward_encoded(
            self.encode_frames(frames), index=index, global_frames=global_frames, global_index=global_index
        )

    # -- parameter groups and freezing -------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Group name -> parameters; the groups partition ``self.parameters()``."""
        return {name: list(self.get_submodule(path).parameters()) for name, path in self.groups.items()}

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

    def train(self, mode: bool = True) -> DualTrackFamily:
        super().train(mode)
        for name in self.frozen:
            self.get_submodule(self.groups[name]).eval()
        return self

    # -- loading weights of sub-modules ------------------------------------------------------------
    def load_submodule_state(
        self, state: Mapping[str, torch.Tensor], prefix: str, *, source_prefix: str | None = None
    ) -> None:
        """Strictly load the entries ``source_prefix.*`` of ``state`` into the sub-module ``prefix``.

        Args:
            state: a full model ``state_dict`` (e.g. of a ``local_only`` checkpoint).
            prefix: sub-module path in this model, e.g. ``"local_encoder"``.
            source_prefix: key prefix in ``state`` (default: ``prefix``).

        Raises:
            KeyError: ``state`` has no entry under ``source_prefix``.
            RuntimeError: missing/unexpected keys or shape mismatches (strict loading).
        """
        src = (source_prefix if source_prefix is not None else prefix).rstrip(".") + "."
        sub = {k[len(src) :]: v for k, v in state.items() if k.startswith(src)}
        if not sub:
            raise KeyError(f"{self.model_name}: the state has no entries under {src!r}")
        self.get_submodule(prefix).load_state_dict(sub, strict=True)

    def init_from(self, source: nn.Module | Mapping[str, torch.Tensor], parts: Sequence[str]) -> None:
        """Copy whole sub-modules (``"local_encoder"``, ``"global_encoder"``, ``"fusion"``, ``"head"``)
        from another family model or its ``state_dict``; keys must match exactly."""
        state = source.state_dict() if isinstance(source, nn.Module) else source
        for part in parts:
            self.load_submodule_state(state, part)


def _local_encoder(
    cnn_width: int,
    cnn_layers: Sequence[int],
    temporal_kernel: int,
    small_window: bool,
    local_dim: int,
    local_heads: int,
    local_ffn: int,
    pool_layers: int,
    local_layers: int,
    pool_patch: int,
    dropout: float,
) -> LocalEncoder:
    return LocalEncoder(
        cnn_width=cnn_width,
        cnn_layers=cnn_layers,
        temporal_kernel=temporal_kernel,
        small_window=small_window,
        local_dim=local_dim,
        local_heads=local_heads,
        local_ffn=local_ffn,
        pool_layers=pool_layers,
        local_layers=local_layers,
        pool_patch=pool_patch,
        dropout=dropout,
    )


class LocalOnly(DualTrackFamily):
    """``local_only``: local encoder + transition head. Parameters as in
    :class:`~dualtrack.models.local_encoder.LocalEncoder`."""

    def __init__(
        self,
        *,
        cnn_width: int = 64,
        cnn_layers: Sequence[int] = (2, 2, 2, 2),
        temporal_kernel: int = 3,
        small_window: bool = False,
        local_dim: int = 64,
        local_heads: int = 4,
        local_ffn: int = 32,
        pool_layers: int = 4,
        local_layers: int = 4,
        pool_patch: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.local_encoder = _local_encoder(
            cnn_width, cnn_layers, temporal_kernel, small_window, local_dim, local_heads, local_ffn,
            pool_layers, local_layers, pool_patch, dropout,
        )  # fmt: skip
        self.head = TransitionHead(local_dim)
        self.groups = {**_LOCAL_GROUPS, "head": "head"}
        self.temporal_receptive_field = self.local_encoder.temporal_receptive_field

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        return self.local_encoder.frame_tokens(frames)

    def frame_memory_bytes(self, height: int, width: int, itemsize: int) -> int:
        return self.local_encoder.frame_memory_bytes(height, width, itemsize)

    def forward_encoded(self, features, *, index, global_frames=None, global_index=None) -> torch.Tensor:
        return self.head(self.local_encoder.temporal_tokens(features, index))


class GlobalOnly(DualTrackFamily):
    """``global_only``: global encoder on the input frames + transition head. Parameters as in
    :class:`~dualtrack.models.global_encoder.GlobalEncoder`. Its per-frame features have no temporal
    receptive field (0): every frame is encoded independently."""

    def __init__(
        self,
        *,
        backbone: str = "resnet18",
        backbone_width: int = 64,
        backbone_layers: Sequence[int] = (2, 2, 2, 2),
        backbone_weights: str | os.PathLike | None = None,
        global_size: int = 224,
        global_dim: int = 512,
        global_layers: int = 8,
        global_heads: int = 8,
        global_ffn: int = 1024,
        dropout: float = 0.1,
        inference_frames: int = 64,
    ) -> None:
        super().__init__()
        if inference_frames < 2:
            raise ValueError(f"global_only: inference_frames must be >= 2, got {inference_frames}")
        # Trained on sparse random subsets, the model sees a sweep at inference as about this many
        # evenly spaced frames (match the training subset size); see dualtrack.inference.
        self.sparse_inference_frames = inference_frames
        self.global_encoder = GlobalEncoder(
            backbone=backbone,
            backbone_width=backbone_width,
            backbone_layers=backbone_layers,
            backbone_weights=backbone_weights,
            global_size=global_size,
            global_dim=global_dim,
            global_layers=global_layers,
            global_heads=global_heads,
            global_ffn=global_ffn,
            dropout=dropout,
        )
        self.head = TransitionHead(global_dim)
        self.groups = {"global": "global_encoder", "head": "head"}
        self.temporal_receptive_field = 0

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        return self.global_encoder.frame_features(frames)

    def frame_memory_bytes(self, height: int, width: int, itemsize: int) -> int:
        return self.global_encoder.frame_memory_bytes(itemsize) + 4 * height * width

    def forward_encoded(self, features, *, index, global_frames=None, global_index=None) -> torch.Tensor:
        return self.head(self.global_encoder.temporal_tokens(features, index))


class Coupled(DualTrackFamily):
    """``coupled``: local encoder + wide temporal transformer (``fusion_*`` sizes) + head."""

    def __init__(
        self,
        *,
        cnn_width: int = 64,
        cnn_layers: Sequence[int] = (2, 2, 2, 2),
        temporal_kernel: int = 3,
        small_window: bool = False,
        local_dim: int = 64,
        local_heads: int = 4,
        local_ffn: int = 32,
        pool_layers: int = 4,
        local_layers: int = 4,
        pool_patch: int = 2,
        fusion_dim: int = 512,
        fusion_layers: int = 8,
        fusion_heads: int = 8,
        fusion_ffn: int = 1024,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.local_encoder = _local_encoder(
            cnn_width, cnn_layers, temporal_kernel, small_window, local_dim, local_heads, local_ffn,
            pool_layers, local_layers, pool_patch, dropout,
        )  # fmt: skip
        self.fusion = CoupledContext(local_dim, fusion_dim, fusion_layers, fusion_heads, fusion_ffn, dropout)
        self.head = TransitionHead(fusion_dim)
        self.groups = {**_LOCAL_GROUPS, "fusion": "fusion", "head": "head"}
        self.temporal_receptive_field = self.local_encoder.temporal_receptive_field

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        return self.local_encoder.frame_tokens(frames)

    def frame_memory_bytes(self, height: int, width: int, itemsize: int) -> int:
        return self.local_encoder.frame_memory_bytes(height, width, itemsize)

    def forward_encoded(self, features, *, index, global_frames=None, global_index=None) -> torch.Tensor:
        return self.head(self.fusion(self.local_encoder.temporal_tokens(features, index), index))


class DualTrack(DualTrackFamily):
    """``dualtrack``: decoupled local and global encoders fused by a transformer decoder.

    Local-encoder arguments as in :class:`~dualtrack.models.local_encoder.LocalEncoder`, global ones as
    in :class:`~dualtrack.models.global_encoder.GlobalEncoder`; ``fusion_*`` size the decoder (paper:
    512 / 8 layers / 8 heads / FFN 1024); ``global_stride``: when ``global_frames`` is not given, the
    global branch sees frames ``0, s, 2s, ...`` of the input (paper: every 8th frame).
    """

    def __init__(
        self,
        *,
        cnn_width: int = 64,
        cnn_layers: Sequence[int] = (2, 2, 2, 2),
        temporal_kernel: int = 3,
        small_window: bool = False,
        local_dim: int = 64,
        local_heads: int = 4,
        local_ffn: int = 32,
        pool_layers: int = 4,
        local_layers: int = 4,
        pool_patch: int = 2,
        backbone: str = "resnet18",
        backbone_width: int = 64,
        backbone_layers: Sequence[int] = (2, 2, 2, 2),
        backbone_weights: str | os.PathLike | None = None,
        global_size: int = 224,
        global_dim: int = 512,
        global_layers: int = 8,
        global_heads: int = 8,
        global_ffn: int = 1024,
        fusion_dim: int = 512,
        fusion_layers: int = 8,
        fusion_heads: int = 8,
        fusion_ffn: int = 1024,
        global_stride: int = 8,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if global_stride < 1:
            raise ValueError(f"global_stride must be >= 1, got {global_stride}")
        self.local_encoder = _local_encoder(
            cnn_width, cnn_layers, temporal_kernel, small_window, local_dim, local_heads, local_ffn,
            pool_layers, local_layers, pool_patch, dropout,
        )  # fmt: skip
        self.global_encoder = GlobalEncoder(
            backbone=backbone,
            backbone_width=backbone_width,
            backbone_layers=backbone_layers,
            backbone_weights=backbone_weights,
            global_size=global_size,
            global_dim=global_dim,
            global_layers=global_layers,
            global_heads=global_heads,
            global_ffn=global_ffn,
            dropout=dropout,
        )
        self.fusion = FusionDecoder(
            local_dim, global_dim, fusion_dim, fusion_layers, fusion_heads, fusion_ffn, dropout
        )
        self.head = TransitionHead(fusion_dim)
        self.global_stride = int(global_stride)
        self.groups = {**_LOCAL_GROUPS, "global": "global_encoder", "fusion": "fusion", "head": "head"}
        self.temporal_receptive_field = self.local_encoder.temporal_receptive_field

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        return self.local_encoder.frame_tokens(frames)

    def frame_memory_bytes(self, height: int, width: int, itemsize: int) -> int:
        return self.local_encoder.frame_memory_bytes(height, width, itemsize)

    def forward(
        self,
        frames: torch.Tensor,
        *,
        index: torch.Tensor | None = None,
        global_frames: torch.Tensor | None = None,
        global_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """As the family's ``forward``; without ``global_frames`` the global branch sees
        ``frames[:, ::global_stride]`` at ``index[:, ::global_stride]``."""
        frames, index = self._prepare(frames, index)
        if global_frames is None:
            global_frames, global_index = frames[:, :: self.global_stride], index[:, :: self.global_stride]
        return self.forward_encoded(
            self.encode_frames(frames), index=index, global_frames=global_frames, global_index=global_index
        )

    def forward_encoded(self, features, *, index, global_frames=None, global_index=None) -> torch.Tensor:
        if global_frames is None or global_index is None:
            raise ValueError(f"{self.model_name}: forward_encoded needs global_frames and global_index")
        if global_frames.ndim != 4 or tuple(global_index.shape) != tuple(global_frames.shape[:2]):
            raise ValueError(
                f"{self.model_name}: global_frames (B, Tg, H, W) {tuple(global_frames.shape)} and "
                f"global_index (B, Tg) {tuple(global_index.shape)} do not match"
            )
        if not global_frames.is_floating_point():
            global_frames = global_frames.float() / 255.0
        global_tokens = self.global_encoder(global_frames, global_index)
        local = self.local_encoder.temporal_tokens(features, index)
        return self.head(self.fusion(local, index, global_tokens, global_index))


# -- registry ---------------------------------------------------------------------------------------
_TINY_LOCAL = dict(
    cnn_width=4, cnn_layers=(1, 1, 1, 1), local_dim=16, local_heads=2, local_ffn=16,
    pool_layers=1, local_layers=1, pool_patch=1,
)  # fmt: skip
_TINY_GLOBAL = dict(
    backbone_width=4, backbone_layers=(1, 1, 1, 1), global_size=32, global_dim=16,
    global_layers=1, global_heads=2, global_ffn=16,
)  # fmt: skip
_TINY_FUSION = dict(fusion_dim=16, fusion_layers=1, fusion_heads=2, fusion_ffn=16)

for _name, _cls, _tiny in (
    ("local_only", LocalOnly, _TINY_LOCAL),
    ("global_only", GlobalOnly, {**_TINY_GLOBAL, "inference_frames": 12}),
    ("coupled", Coupled, {**_TINY_LOCAL, **_TINY_FUSION}),
    ("dualtrack", DualTrack, {**_TINY_LOCAL, **_TINY_GLOBAL, **_TINY_FUSION, "global_stride": 4}),
):
    register_model(_name)(_cls)
    register_model(f"{_name}_tiny")(functools.partial(_cls, **_tiny))
