"""Transformer building blocks shared by the DualTrack family.

* :func:`sinusoidal_encoding`: fixed position encoding of *true frame indices* (no length limit,
  unlike a learned table; sub-sampled sequences keep their real frame spacing).
* :func:`sinusoidal_encoding_2d`: fixed encoding of a ``h x w`` token grid.
* :class:`TransformerEncoder` / :class:`TransformerDecoder`: pre-norm stacks of PyTorch's
  encoder/decoder layers (GELU, ``batch_first``) with a final LayerNorm. The decoder does
  self-attention over its input tokens, cross-attention to a memory sequence, then the FFN.
  Neither uses a causal mask: attention is bidirectional over the whole sequence.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["sinusoidal_encoding", "sinusoidal_encoding_2d", "TransformerEncoder", "TransformerDecoder"]


def sinusoidal_encoding(index: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Sine/cosine encoding of integer positions.

    Args:
        index: ``(...)`` positions (e.g. ``(B, T)`` true frame indices), any numeric dtype.
        dim: even encoding width.
        base: wavelength base; wavelengths run from ``2 pi`` to ``2 pi * base``.

    Returns:
        ``(..., dim)`` float32: ``[sin(p w_0), cos(p w_0), sin(p w_1), cos(p w_1), ...]`` with
        ``w_k = base^(-2k/dim)``.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal encoding needs an even width, got {dim}")
    freq = torch.exp(
        torch.arange(0, dim, 2, device=index.device, dtype=torch.float32) * (-math.log(base) / dim)
    )
    ang = index.to(torch.float32)[..., None] * freq
    return torch.stack([ang.sin(), ang.cos()], -1).flatten(-2)


def sinusoidal_encoding_2d(h: int, w: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """``(h * w, dim)`` encoding of a row-major token grid: half the channels encode the row, half the
    column. ``dim`` must be a multiple of 4."""
    if dim % 4:
        raise ValueError(f"2D sinusoidal encoding needs a width divisible by 4, got {dim}")
    rows = torch.arange(h, device=device).repeat_interleave(w)
    cols = torch.arange(w, device=device).repeat(h)
    return torch.cat([sinusoidal_encoding(rows, dim // 2), sinusoidal_encoding(cols, dim // 2)], -1)


def _check_heads(dim: int, heads: int) -> None:
    if dim % heads:
        raise ValueError(f"transformer width {dim} is not divisible by the number of heads {heads}")


class TransformerEncoder(nn.Module):
    """Pre-norm transformer encoder: ``(B, T, dim) -> (B, T, dim)``.

    Args:
        dim: token width. heads: attention heads (must divide ``dim``). ffn: hidden width of
        the feed-forward block. depth: number of layers. dropout: dropout probability.
    """

    def __init__(self, dim: int, depth: int, heads: int, ffn: int, dropout: float = 0.1) -> None:
        super().__init__()
        _check_heads(dim, heads)
        layer = nn.TransformerEncoderLayer(
            dim, heads, ffn, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(dim), enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(B, T, dim)``; ``padding_mask``: optional ``(B, T)`` bool, True = ignore."""
        return self.layers(x, src_key_padding_mask=padding_mask)


class TransformerDecoder(nn.Module):
    """Pre-norm transformer decoder without causal mask: ``(B, T, dim), (B, M, dim) -> (B, T, dim)``.

    Each layer: self-attention over the ``T`` input tokens, cross-attention from them to the ``M``
    memory tokens (keys/values), feed-forward.
    """

    def __init__(self, dim: int, depth: int, heads: int, ffn: int, dropout: float = 0.1) -> None:
        super().__init__()
        _check_heads(dim, heads)
        layer = nn.TransformerDecoderLayer(
            dim, heads, ffn, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerDecoder(layer, depth, norm=nn.LayerNorm(dim))

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, T, dim)`` queries; ``memory``: ``(B, M, dim)``; returns ``(B, T, dim)``."""
        return self.layers(x, memory)
