"""DualTrack and its ablations as registered :class:`~dualtrack.models.registry.TrajectoryModel` s.

Registered names (each with a ``*_tiny`` variant of under 100 k parameters for tests):

* ``dualtrack``: :class:`DualTrack` = :class:`~dualtrack.models.local_encoder.LocalEncoder` on all
  frames + :class:`~dualtrack.models.global_encoder.GlobalEncoder` on every ``global_stride``-th
  uncropped frame + :class:`~dualtrack.models.fusion.FusionDecoder` (local tokens attend to global
  tokens) + :class:`~dualtrack.models.fusion.TransitionHead`.
* ``local_only``: :class:`LocalOnly` = local encoder + head.
* ``global_only``: :class:`GlobalOnly` = global encoder on the input frames + head.
* ``coupled``: :class:`Coupled` = local encoder + a wide temporal transformer
  (:class:`~dualtrack.models.fusion.CoupledContext`) + head; no separate global encoder.

Sizes come nested (:mod:`dualtrack.models.config`): ``local_encoder=``, ``global_encoder=``,
``fusion=`` mappings or config objects.

Contract (:mod:`dualtrack.models.registry`): ``encode`` is the per-frame part (the local 3D CNN +
attention pooling, exact under chunking with the CNN's temporal receptive field as halo; the
global backbone for ``global_only``, halo 0); ``decode`` runs the temporal transformers, the global
branch and the fusion over the whole sequence. The output for transition ``i`` comes from the pair
of final tokens of frames ``i-1`` and ``i``.

Parameter groups: ``local_cnn`` (``local_encoder.cnn``), ``local_pool`` (``local_encoder.pool``),
``local_temporal`` (``local_encoder.temporal``), ``global`` (``global_encoder``), ``fusion``
(``fusion``: the decoder of DualTrack, the context transformer of ``coupled``) and ``head``.
Staging (:meth:`~dualtrack.models.registry.TrajectoryModel.stage_sources`): a ``local_from`` run
provides ``local_encoder`` and keeps the 3D CNN and the pooling frozen; the local temporal
transformer trains on (the authors' fusion trains everything but the CNN and the pooling). A
``global_from`` run provides ``global_encoder``, which trains on too. State-dict prefixes are
shared across the family, so ``local_only``'s ``local_encoder.*`` loads into
``dualtrack.local_encoder``.
"""

from __future__ import annotations

import torch

from dualtrack.models.config import FusionConfig, GlobalEncoderConfig, LocalEncoderConfig, part_config
from dualtrack.models.fusion import CoupledContext, FusionDecoder, make_head
from dualtrack.models.global_encoder import GlobalEncoder
from dualtrack.models.local_encoder import LocalEncoder
from dualtrack.models.registry import TrajectoryModel, register_model
from dualtrack.models.spec import InputSpec, StageSource

__all__ = ["LocalOnly", "GlobalOnly", "Coupled", "DualTrack"]

_LOCAL_GROUPS = {
    "local_cnn": "local_encoder.cnn",
    "local_pool": "local_encoder.pool",
    "local_temporal": "local_encoder.temporal",
}
_FROM_LOCAL = StageSource(modules=("local_encoder",), freeze=("local_cnn", "local_pool"))
_FROM_GLOBAL = StageSource(modules=("global_encoder",))


class LocalOnly(TrajectoryModel):
    """``local_only``: local encoder + transition head."""

    def __init__(self, *, local_encoder: LocalEncoderConfig | dict | None = None, head: str = "pair") -> None:
        cfg = part_config(LocalEncoderConfig, local_encoder)
        enc = LocalEncoder(cfg)
        super().__init__(InputSpec(halo=enc.temporal_receptive_field, max_frames=_max_frames(cfg)))
        self.local_encoder = enc
        self.head = make_head(head, cfg.dim)
        self.groups = {**_LOCAL_GROUPS, "head": "head"}

    def encode_groups(self) -> tuple[str, ...]:
        return ("local_cnn", "local_pool")

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.local_encoder.frame_tokens(frames)

    def frame_memory_bytes(self, height: int, width: int, itemsize: int) -> int:
        return self.local_encoder.frame_memory_bytes(height, width, itemsize)

    def decode(self, features, *, index, global_frames=None, global_index=None) -> torch.Tensor:
        return self.head(self.local_encoder.temporal_tokens(features, index))


class GlobalOnly(TrajectoryModel):
    """``global_only``: global encoder on the input frames + transition head. Its per-frame
    features have no temporal receptive field (halo 0). Trained on sparse random subsets, it sees
    a sweep at inference as ``input_spec.sparse_frames`` evenly spaced frames: ``inference_frames``
    until training sets it to its subset size (see :mod:`dualtrack.inference`)."""

    def __init__(
        self, *, global_encoder: GlobalEncoderConfig | dict | None = None, inference_frames: int = 64,
        head: str = "pair",
    ) -> None:
        if inference_frames < 2:
            raise ValueError(f"global_only: inference_frames must be >= 2, got {inference_frames}")
        cfg = part_config(GlobalEncoderConfig, global_encoder)
        super().__init__(InputSpec(halo=0, sparse_frames=int(inference_frames), max_frames=_max_frames(cfg)))
        self.global_encoder = GlobalEncoder(cfg)
        self.head = make_head(head, cfg.dim)
        self.groups = {"global": "global_encoder", "head": "head"}

    def encode_groups(self) -> tuple[str, ...]:
        return ("global",)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.global_encoder.frame_features(frames)

    def frame_memory_bytes(self, height: int, width: int, itemsize: int) -> int:
        return self.global_encoder.frame_memory_bytes(itemsize) + 4 * height * width

    def decode(self, features, *, index, global_frames=None, global_index=None) -> torch.Tensor:
        return self.head(self.global_encoder.temporal_tokens(features, index))


class Coupled(TrajectoryModel):
    """``coupled``: local encoder + wide temporal transformer (``fusion`` sizes) + head."""

    def __init__(
        self,
        *,
        local_encoder: LocalEncoderConfig | dict | None = None,
        fusion: FusionConfig | dict | None = None,
        head: str = "pair",
    ) -> None:
        lcfg = part_config(LocalEncoderConfig, local_encoder)
        fcfg = part_config(FusionConfig, fusion)
        enc = LocalEncoder(lcfg)
        super().__init__(InputSpec(halo=enc.temporal_receptive_field, max_frames=_max_frames(lcfg, fcfg)))
        self.local_encoder = enc
        self.fusion = CoupledContext(lcfg.dim, fcfg)
        self.head = make_head(head, fcfg.dim)
        self.groups = {**_LOCAL_GROUPS, "fusion": "fusion", "head": "head"}

    def encode_groups(self) -> tuple[str, ...]:
        return ("local_cnn", "local_pool")

    def stage_sources(self) -> dict[str, StageSource]:
        return {"local_from": _FROM_LOCAL}

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.local_encoder.frame_tokens(frames)

    def frame_memory_bytes(self, height: int, width: int, itemsize: int) -> int:
        return self.local_encoder.frame_memory_bytes(height, width, itemsize)

    def decode(self, features, *, index, global_frames=None, global_index=None) -> torch.Tensor:
        return self.head(self.fusion(self.local_encoder.temporal_tokens(features, index), index))


class DualTrack(TrajectoryModel):
    """``dualtrack``: decoupled local and global encoders fused by a transformer decoder.

    Args:
        local_encoder, global_encoder, fusion: sizes (:mod:`dualtrack.models.config`; paper:
            fusion 512 wide, 8 layers, 8 heads, FFN 1024).
        global_stride: the global branch sees the uncropped frames ``0, s, 2s, ...`` of the sweep
            (paper: every 8th frame; the authors' released models: every 16th); it is part of the
            model's input spec.
        head: ``pair`` (:class:`~dualtrack.models.fusion.TransitionHead`) or ``token``
            (:class:`~dualtrack.models.fusion.TokenHead`, the authors').
    """

    def __init__(
        self,
        *,
        local_encoder: LocalEncoderConfig | dict | None = None,
        global_encoder: GlobalEncoderConfig | dict | None = None,
        fusion: FusionConfig | dict | None = None,
        global_stride: int = 8,
        head: str = "pair",
    ) -> None:
        if isinstance(global_stride, bool) or not isinstance(global_stride, int) or global_stride < 1:
            raise ValueError(f"global_stride must be an integer >= 1, got {global_stride!r}")
        lcfg = part_config(LocalEncoderConfig, local_encoder)
        gcfg = part_config(GlobalEncoderConfig, global_encoder)
        fcfg = part_config(FusionConfig, fusion)
        enc = LocalEncoder(lcfg)
        super().__init__(
            InputSpec(halo=enc.temporal_receptive_field, global_stride=global_stride,
                      global_size=(gcfg.size, gcfg.size), max_frames=_max_frames(lcfg, gcfg, fcfg))
        )
        self.local_encoder = enc
        self.global_encoder = GlobalEncoder(gcfg)
        self.fusion = FusionDecoder(lcfg.dim, gcfg.dim, fcfg)
        self.head = make_head(head, fcfg.dim)
        self.groups = {**_LOCAL_GROUPS, "global": "global_encoder", "fusion": "fusion", "head": "head"}

    def encode_groups(self) -> tuple[str, ...]:
        return ("local_cnn", "local_pool")

    def stage_sources(self) -> dict[str, StageSource]:
        return {"local_from": _FROM_LOCAL, "global_from": _FROM_GLOBAL}

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.local_encoder.frame_tokens(frames)

    def frame_memory_bytes(self, height: int, width: int, itemsize: int) -> int:
        return self.local_encoder.frame_memory_bytes(height, width, itemsize)

    def decode(self, features, *, index, global_frames=None, global_index=None) -> torch.Tensor:
        global_tokens = self.global_encoder(global_frames, global_index)
        local = self.local_encoder.temporal_tokens(features, index)
        return self.head(self.fusion(local, index, global_tokens, global_index))


def _max_frames(*parts: LocalEncoderConfig | GlobalEncoderConfig | FusionConfig) -> int | None:
    """The longest sweep the position tables of the ``bert`` parts cover (``None``: no limit)."""
    limits = [p.max_positions for p in parts if p.transformer == "bert"]
    return min(limits) if limits else None


# -- registry ---------------------------------------------------------------------------------------
_TINY_LOCAL = dict(cnn_width=4, cnn_layers=(1, 1, 1, 1), dim=16, heads=2, ffn=16, pool_layers=1,
                   temporal_layers=1, pool_patch=1)
_TINY_GLOBAL = dict(width=4, layers=(1, 1, 1, 1), size=32, dim=16, num_layers=1, heads=2, ffn=16)
_TINY_FUSION = dict(dim=16, layers=1, heads=2, ffn=16)

for _name, _cls in (("local_only", LocalOnly), ("global_only", GlobalOnly), ("coupled", Coupled),
                    ("dualtrack", DualTrack)):
    register_model(_name)(_cls)


def _tiny_local(sizes: dict | None) -> LocalEncoderConfig:
    return part_config(LocalEncoderConfig, sizes, _TINY_LOCAL)


def _tiny_global(sizes: dict | None) -> GlobalEncoderConfig:
    return part_config(GlobalEncoderConfig, sizes, _TINY_GLOBAL)


def _tiny_fusion(sizes: dict | None) -> FusionConfig:
    return part_config(FusionConfig, sizes, _TINY_FUSION)


@register_model("local_only_tiny")
def local_only_tiny(*, local_encoder: dict | None = None) -> LocalOnly:
    """Test-size ``local_only`` (given sizes are merged over the tiny ones, as for every tiny variant)."""
    return LocalOnly(local_encoder=_tiny_local(local_encoder))


@register_model("global_only_tiny")
def global_only_tiny(*, global_encoder: dict | None = None, inference_frames: int = 12) -> GlobalOnly:
    """Test-size ``global_only``."""
    return GlobalOnly(global_encoder=_tiny_global(global_encoder), inference_frames=inference_frames)


@register_model("coupled_tiny")
def coupled_tiny(*, local_encoder: dict | None = None, fusion: dict | None = None) -> Coupled:
    """Test-size ``coupled``."""
    return Coupled(local_encoder=_tiny_local(local_encoder), fusion=_tiny_fusion(fusion))


@register_model("dualtrack_tiny")
def dualtrack_tiny(
    *, local_encoder: dict | None = None, global_encoder: dict | None = None, fusion: dict | None = None,
    global_stride: int = 4,
) -> DualTrack:
    """Test-size ``dualtrack``."""
    return DualTrack(local_encoder=_tiny_local(local_encoder), global_encoder=_tiny_global(global_encoder),
                     fusion=_tiny_fusion(fusion), global_stride=global_stride)


# -- the authors' released architectures ------------------------------------------------------------
TUSREC_SPACING = (0.229389190673828, 0.220979690551758)
"""Pixel spacing (mm, ``(sx, sy)``) of the TUS-REC 2024 frames the released models were trained on."""


def _authors_parts(max_positions: int, tiny: bool) -> dict[str, object]:
    """Sizes of the authors' released DualTrack (facts: docs/models.md): the legacy ±17-frame 3D
    CNN, ViT pooling with learned positions on 8 x 8 patches, BERT sequence models with relative-key
    positions, the R(2+1)D-stem global ResNet-18 without max-pool, a learned global position
    table, a 12-layer fusion decoder. ``tiny`` keeps the layout at test size (a 32 x 32 crop,
    every 4th frame in the global branch so that short test sweeps have several global tokens)."""
    if tiny:
        local = dict(cnn_width=4, cnn_layers=(1, 1, 1, 1), dim=16, heads=2, ffn=8, pool_layers=1,
                     temporal_layers=1, pool_patch=1, pool_grid=(2, 2))
        glob = dict(width=4, layers=(1, 1, 1, 1), size=32, dim=16, num_layers=1, heads=2, ffn=32)
        fusion = dict(dim=16, layers=2, heads=2, ffn=32)
    else:
        local = dict(dim=64, heads=4, ffn=32, pool_layers=4, temporal_layers=4, pool_patch=2,
                     pool_grid=(8, 8))
        glob = dict(size=224, dim=512, num_layers=8, heads=8, ffn=1024)
        fusion = dict(dim=512, layers=12, heads=8, ffn=1024)
    bert = dict(transformer="bert", max_positions=max_positions)
    return dict(
        local_encoder=part_config(LocalEncoderConfig, {**local, **bert, "small_window": False}),
        global_encoder=part_config(
            GlobalEncoderConfig, {**glob, **bert, "stem": "r2plus1d", "stem_pool": False}
        ),
        fusion=part_config(FusionConfig, {**fusion, **bert}),
    )


def _authors_model(max_positions: int, tiny: bool = False) -> DualTrack:
    model = DualTrack(**_authors_parts(max_positions, tiny), global_stride=4 if tiny else 16, head="token")
    # the released models saw TUS-REC frames only; the test sizes take any spacing
    model.configure_input(local_crop=(32, 32) if tiny else (256, 256),
                          pixel_spacing=None if tiny else TUSREC_SPACING)
    return model


@register_model("dualtrack_tusrec2024")
def dualtrack_tusrec2024() -> DualTrack:
    """The authors' released TUS-REC 2024 DualTrack (101.9 M parameters; sweeps of up to 1024
    frames): weights come from ``dualtrack import-weights`` (docs/models.md)."""
    return _authors_model(1024)


@register_model("dualtrack_tusrec2025")
def dualtrack_tusrec2025() -> DualTrack:
    """The authors' TUS-REC 2025 challenge DualTrack: the 2024 layout with 4096-entry position
    tables (sweeps of up to 4096 frames)."""
    return _authors_model(4096)


@register_model("dualtrack_tusrec2024_tiny")
def dualtrack_tusrec2024_tiny() -> DualTrack:
    """Test-size ``dualtrack_tusrec2024`` (same layout; 32 x 32 local crop, global stride 4, 64 positions)."""
    return _authors_model(64, tiny=True)


@register_model("dualtrack_tusrec2025_tiny")
def dualtrack_tusrec2025_tiny() -> DualTrack:
    """Test-size ``dualtrack_tusrec2025`` (same layout; 32 x 32 local crop, global stride 4,
    128 positions)."""
    return _authors_model(128, tiny=True)
