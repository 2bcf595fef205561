"""Typed sizes of DualTrack's three parts: :class:`LocalEncoderConfig`, :class:`GlobalEncoderConfig`,
:class:`FusionConfig`.

Model factories take them nested, under the names of the sub-modules they build::

    create_model("dualtrack", local_encoder={"cnn_width": 32}, global_encoder={"dim": 256},
                 fusion={"layers": 4}, global_stride=8)

and YAML configs write the same nesting under ``model.kwargs``. A mapping is checked like a
config file: unknown keys are an error naming the valid ones (:func:`part_config`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

__all__ = ["LocalEncoderConfig", "GlobalEncoderConfig", "FusionConfig", "part_config", "TRANSFORMERS"]

TRANSFORMERS = ("pre_norm", "bert")
"""Transformer layouts: ``pre_norm`` (this package's: pre-norm PyTorch layers with sinusoidal
encodings of the true frame index) and ``bert`` (the authors' released code: post-norm BERT layers,
relative-key positions over the frame sequence, learned position tables; see
:class:`~dualtrack.models.transformer.BertTransformer`)."""


@dataclass(frozen=True)
class LocalEncoderConfig:
    """Local encoder (:class:`~dualtrack.models.local_encoder.LocalEncoder`).

    Attributes:
        cnn_width, cnn_layers: base width and blocks per stage of the 3D ResNet-18.
        temporal_kernel: temporal size ``k`` of its 3D convolutions.
        small_window: temporal convolutions only in the stem and the first stage (the paper's
            "small temporal windows"): a receptive field of ±5 frames, so most frames of a
            16-frame training clip see real neighbours, as at inference. ``False`` = ``k x 3 x 3``
            in every stage (±17 frames, the authors' released "legacy" network), wider than the
            clips it trains on.
        dim, heads, ffn: token width, heads and FFN width of attention pooling and the temporal
            transformer (paper: 64, 4, 32).
        pool_layers, temporal_layers: their depths (paper: 4 and 4).
        pool_patch: patch size of attention pooling on the CNN map (paper: 2).
        dropout: dropout of the temporal transformer (pooling uses none).
        transformer: ``pre_norm`` or ``bert`` (:data:`TRANSFORMERS`): with ``bert`` the temporal
            transformer is a BERT encoder with relative-key positions (at most ``max_positions``
            frames) and the pooling's LayerNorms use eps ``1e-12`` (Hugging Face's ViT).
        pool_grid: ``(rows, cols)`` of pooling patches for a learned position table (the CLS
            token's included, Hugging Face's ViT), which fixes the crop size (a 256 x 256 crop
            with patch 2: ``(8, 8)``); ``None`` = 2D sinusoidal positions, any crop.
        max_positions: position-table size of the ``bert`` temporal transformer.
    """

    cnn_width: int = 64
    cnn_layers: tuple[int, ...] = (2, 2, 2, 2)
    temporal_kernel: int = 3
    small_window: bool = True
    dim: int = 64
    heads: int = 4
    ffn: int = 32
    pool_layers: int = 4
    temporal_layers: int = 4
    pool_patch: int = 2
    dropout: float = 0.1
    transformer: Literal["pre_norm", "bert"] = "pre_norm"
    pool_grid: tuple[int, int] | None = None
    max_positions: int = 1024

    def __post_init__(self) -> None:
        _check_transformer(self)


@dataclass(frozen=True)
class GlobalEncoderConfig:
    """Global encoder (:class:`~dualtrack.models.global_encoder.GlobalEncoder`).

    Attributes:
        backbone: image backbone by name (``"resnet18"`` or ``"timm:<name>"``).
        width, layers: size of the built-in ResNet-18.
        weights: optional local weights file for the backbone (never downloaded).
        stem_pool: the standard ResNet stem with its ``3 x 3`` max-pool (7 x 7 maps at 224², the
            default); ``False`` drops it like the authors' code (14 x 14 maps, about 4x the FLOPs).
        stem: ``resnet`` (one ``7 x 7`` conv) or ``r2plus1d`` (``7 x 7`` to 45 channels, then
            ``3 x 3`` to 64: the authors' global backbone); see
            :class:`~dualtrack.models.resnet.ResNet2d`.
        size: side of the square the frames are resized to (paper: 224).
        dim, num_layers, heads, ffn: temporal transformer (paper: 512, 8, 8, 1024).
        dropout: transformer dropout.
        transformer: ``pre_norm`` (sinusoidal encoding of the true frame index) or ``bert``
            (:data:`TRANSFORMERS`: a learned table of ``max_positions`` absolute positions indexed
            by the true frame index, then a BERT encoder).
        max_positions: rows of that table (frame indices must stay below it).
    """

    backbone: str = "resnet18"
    width: int = 64
    layers: tuple[int, ...] = (2, 2, 2, 2)
    weights: str | None = None
    stem_pool: bool = True
    size: int = 224
    dim: int = 512
    num_layers: int = 8
    heads: int = 8
    ffn: int = 1024
    dropout: float = 0.1
    stem: Literal["resnet", "r2plus1d"] = "resnet"
    transformer: Literal["pre_norm", "bert"] = "pre_norm"
    max_positions: int = 1024

    def __post_init__(self) -> None:
        _check_transformer(self)


@dataclass(frozen=True)
class FusionConfig:
    """Fusion decoder of ``dualtrack`` / context transformer of ``coupled``
    (:mod:`dualtrack.models.fusion`; paper: 512 wide, 8 layers, 8 heads, FFN 1024).

    ``transformer``: ``pre_norm`` (sinusoidal encodings of the true frame index on both token
    sequences) or ``bert`` (:data:`TRANSFORMERS`: a BERT decoder, relative-key positions over at
    most ``max_positions`` local tokens, cross-attention without a position term; the authors'
    released fusion, 12 layers).
    """

    dim: int = 512
    layers: int = 8
    heads: int = 8
    ffn: int = 1024
    dropout: float = 0.1
    transformer: Literal["pre_norm", "bert"] = "pre_norm"
    max_positions: int = 1024

    def __post_init__(self) -> None:
        _check_transformer(self)


def _check_transformer(cfg: Any) -> None:
    if cfg.transformer not in TRANSFORMERS:
        raise TypeError(f"{type(cfg).__name__}: transformer must be one of {list(TRANSFORMERS)}, "
                        f"got {cfg.transformer!r}")
    if isinstance(cfg.max_positions, bool) or not isinstance(cfg.max_positions, int) or cfg.max_positions < 2:
        raise TypeError(f"{type(cfg).__name__}: max_positions must be an integer >= 2, "
                        f"got {cfg.max_positions!r}")


C = TypeVar("C", LocalEncoderConfig, GlobalEncoderConfig, FusionConfig)


def part_config(cls: type[C], value: C | dict[str, Any] | None, defaults: dict[str, Any] | None = None) -> C:
    """``value`` as a ``cls``: ``None`` = the defaults, a mapping is merged over ``defaults`` (a tiny
    variant's sizes) and checked; sequences become tuples.

    Raises:
        TypeError: unknown keys (the message names the valid ones) or a value of another type.
    """
    if isinstance(value, cls):
        return value
    if value is not None and not isinstance(value, dict):
        raise TypeError(f"{cls.__name__}: expected a mapping of sizes, got {type(value).__name__}")
    merged = {**(defaults or {}), **(value or {})}
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(merged) - set(valid))
    if unknown:
        raise TypeError(f"{cls.__name__}: unknown keys {unknown}; valid keys: {valid}")
    for key, item in merged.items():
        if isinstance(item, list):
            merged[key] = tuple(item)
        elif isinstance(item, os.PathLike):
            merged[key] = os.fspath(item)
    return cls(**merged)
