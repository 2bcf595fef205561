"""Local encoder of DualTrack: 3D CNN -> per-frame attention pooling -> small temporal transformer.

Pipeline for frames ``(B, T, H, W)`` in ``[0, 1]`` (full resolution, e.g. a 256 x 256 centre crop):

1. :meth:`LocalEncoder.cnn_features`: :class:`~dualtrack.models.resnet.ResNet3d` (temporal stride 1)
   -> one feature map per frame ``(B, T, C, H/16, W/16)``. Each frame's map depends only on frames
   within ``temporal_receptive_field`` on either side, so long sweeps can run in chunks with a halo.
2. :meth:`LocalEncoder.pool_features`: :class:`AttentionPool`, a small ViT per frame: ``p x p``
   patches of the map -> ``dim`` tokens + 2D sinusoidal positions (or, with ``pool_grid``, a
   learned table covering the CLS token too, as Hugging Face's ViT), a learned CLS token,
   ``pool_layers`` pre-norm layers; the CLS output is the frame's token ``(B, T, dim)``.
3. :meth:`LocalEncoder.temporal_tokens`: sinusoidal encoding of the true frame index added, then a
   bidirectional transformer (``temporal_layers`` layers, ``heads`` heads, FFN ``ffn``)
   over the frames -> ``(B, T, dim)``; with ``transformer: bert`` a BERT encoder with
   relative-key positions instead (the authors' layout).

Steps 1-2 (:meth:`LocalEncoder.frame_tokens`) are per frame up to the CNN's receptive field; step 3
mixes the whole sequence. Paper sizes: 3D ResNet-18, hidden 64, FFN 32, 4 layers, 4 heads.
"""

from __future__ import annotations

import torch
from torch import nn

from dualtrack.models.config import LocalEncoderConfig
from dualtrack.models.resnet import ResNet3d, half_resolution_activation_bytes
from dualtrack.models.transformer import (
    BertTransformer,
    TransformerEncoder,
    sinusoidal_encoding,
    sinusoidal_encoding_2d,
)

__all__ = ["AttentionPool", "LocalEncoder"]


class AttentionPool(nn.Module):
    """Attention pooling of one feature map into one token (a tiny ViT with a CLS token).

    Args:
        in_channels: channels ``C`` of the feature map.
        dim: token width. depth / heads / ffn: transformer size. patch: patch size ``p`` on the map.
        dropout: transformer dropout.
        grid: ``(rows, cols)`` of patches for a learned position table ``(1, 1 + rows * cols, dim)``
            added to the CLS and patch tokens; ``None`` = 2D sinusoidal positions on the patches.
        eps: LayerNorm epsilon.

    Shapes: ``(N, C, h, w) -> (N, dim)`` with ``h, w >= p`` (trailing rows/columns that do not fill a
    patch are dropped); with ``grid`` the patches must form exactly that grid.
    """

    def __init__(
        self, in_channels: int, dim: int, depth: int, heads: int, ffn: int, patch: int, dropout: float = 0.0,
        grid: tuple[int, int] | None = None, eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if grid is None and dim % 4:
            raise ValueError(f"attention pooling width must be a multiple of 4 (2D positions), got {dim}")
        if grid is not None and (len(grid) != 2 or min(grid) < 1):
            raise ValueError(f"pool_grid must be two positive patch counts, got {grid}")
        self.patch = patch
        self.grid = None if grid is None else (int(grid[0]), int(grid[1]))
        self.embed = nn.Conv2d(in_channels, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls, std=0.02)
        self.pos = None
        if self.grid is not None:
            self.pos = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], dim))
            nn.init.trunc_normal_(self.pos, std=0.02)
        self.encoder = TransformerEncoder(dim, depth, heads, ffn, dropout, eps=eps)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        if maps.shape[-1] < self.patch or maps.shape[-2] < self.patch:
            raise ValueError(
                f"feature map {tuple(maps.shape[-2:])} is smaller than the pooling patch {self.patch}; "
                "use larger frames or a smaller pool_patch"
            )
        x = self.embed(maps)
        h, w = x.shape[-2:]
        if self.pos is not None and (h, w) != self.grid:
            raise ValueError(
                f"attention pooling has a learned position table for {self.grid[0]}x{self.grid[1]} "
                f"patches, got {h}x{w} (a different local crop size than the model's)"
            )
        tokens = x.flatten(2).transpose(1, 2)
        if self.pos is None:
            tokens = tokens + sinusoidal_encoding_2d(h, w, x.shape[1], x.device).to(x.dtype)
        tokens = torch.cat([self.cls.to(tokens.dtype).expand(len(tokens), -1, -1), tokens], 1)
        if self.pos is not None:  # the learned table covers the CLS slot too
            tokens = tokens + self.pos.to(tokens.dtype)
        return self.encoder(tokens)[:, 0]


class LocalEncoder(nn.Module):
    """3D CNN + attention pooling + temporal transformer (see the module docstring), sized by a
    :class:`~dualtrack.models.config.LocalEncoderConfig`."""

    def __init__(self, cfg: LocalEncoderConfig) -> None:
        super().__init__()
        self.cnn = ResNet3d(1, cfg.cnn_width, cfg.cnn_layers, cfg.temporal_kernel, cfg.small_window)
        bert = cfg.transformer == "bert"
        self.pool = AttentionPool(self.cnn.num_features, cfg.dim, cfg.pool_layers, cfg.heads, cfg.ffn,
                                  cfg.pool_patch, grid=cfg.pool_grid, eps=1e-12 if bert else 1e-5)
        self.temporal: nn.Module
        if bert:
            self.temporal = BertTransformer(cfg.dim, cfg.temporal_layers, cfg.heads, cfg.ffn, cfg.dropout,
                                            max_positions=cfg.max_positions)
        else:
            self.temporal = TransformerEncoder(cfg.dim, cfg.temporal_layers, cfg.heads, cfg.ffn, cfg.dropout)
        self.bert = bert
        self.dim = cfg.dim

    def frame_memory_bytes(self, height: int, width: int, itemsize: int) -> int:
        """Peak activation bytes per frame of :meth:`frame_tokens`: those of the 3D CNN's first stage
        (:func:`~dualtrack.models.resnet.half_resolution_activation_bytes`)."""
        return half_resolution_activation_bytes(self.cnn.width, height, width, itemsize)

    @property
    def temporal_receptive_field(self) -> int:
        """Frames each side that influence one frame's :meth:`frame_tokens` (the CNN's)."""
        return self.cnn.temporal_receptive_field

    def cnn_features(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T, H, W)`` frames in ``[0, 1]`` -> ``(B, T, C, H/16, W/16)`` CNN feature maps."""
        return self.cnn(frames[:, None]).transpose(1, 2)

    def pool_features(self, maps: torch.Tensor) -> torch.Tensor:
        """``(B, T, C, h, w)`` maps -> ``(B, T, dim)`` per-frame tokens."""
        b, t = maps.shape[:2]
        return self.pool(maps.flatten(0, 1)).unflatten(0, (b, t))

    def frame_tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T, H, W) -> (B, T, dim)``: CNN + pooling (chunkable with a halo)."""
        return self.pool_features(self.cnn_features(frames))

    def temporal_tokens(self, tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``(B, T, dim)`` frame tokens, ``(B, T)`` true frame indices -> ``(B, T, dim)`` (the
        ``bert`` layout's relative positions count tokens, not frame indices)."""
        if self.bert:
            return self.temporal(tokens)
        return self.temporal(tokens + sinusoidal_encoding(index, self.dim).to(tokens.dtype))

    def forward(self, frames: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``(B, T, H, W)``, ``(B, T)`` -> ``(B, T, dim)`` contextualised local tokens."""
        return self.temporal_tokens(self.frame_tokens(frames), index)
