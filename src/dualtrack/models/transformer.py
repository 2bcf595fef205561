"""Transformer building blocks shared by the DualTrack family.

* :func:`sinusoidal_encoding`: fixed position encoding of *true frame indices* (no length limit,
  unlike a learned table; sub-sampled sequences keep their real frame spacing).
* :func:`sinusoidal_encoding_2d`: fixed encoding of a ``h x w`` token grid.
* :class:`TransformerEncoder` / :class:`TransformerDecoder`: pre-norm stacks of PyTorch's
  encoder/decoder layers (GELU, ``batch_first``) with a final LayerNorm. The decoder does
  self-attention over its input tokens, cross-attention to a memory sequence, then the FFN.
  Neither uses a causal mask: attention is bidirectional over the whole sequence.
* :class:`BertTransformer`: the post-norm layer of BERT (the authors' released DualTrack uses it
  for every sequence model): ``x = LN(x + SelfAttn(x))``, optionally ``x = LN(x + CrossAttn(x,
  memory))``, then ``x = LN(x + FFN(x))``, LayerNorm eps ``1e-12``, exact GELU, no final norm.
  Optional Shaw-style relative-key positions in the self-attention (:class:`Attention`): the
  score of query ``l`` and key ``r`` gains ``q_l . E[l - r]`` before the ``1/sqrt(d)`` scaling,
  with a learned table ``E`` of ``2 * max_positions - 1`` rows per layer, so a sequence may have
  at most ``max_positions`` tokens. Cross-attention has no position term.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "sinusoidal_encoding", "sinusoidal_encoding_2d", "TransformerEncoder", "TransformerDecoder", "Attention",
    "BertTransformer",
]


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
        eps: LayerNorm epsilon (PyTorch's ``1e-5``; Hugging Face's ViT uses ``1e-12``).
    """

    def __init__(
        self, dim: int, depth: int, heads: int, ffn: int, dropout: float = 0.1, eps: float = 1e-5
    ) -> None:
        super().__init__()
        _check_heads(dim, heads)
        layer = nn.TransformerEncoderLayer(
            dim, heads, ffn, dropout, activation="gelu", batch_first=True, norm_first=True, layer_norm_eps=eps
        )
        self.layers = nn.TransformerEncoder(
            layer, depth, norm=nn.LayerNorm(dim, eps=eps), enable_nested_tensor=False
        )

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


class Attention(nn.Module):
    """Multi-head attention with separate query/key/value projections and optional relative-key
    positions (see the module docstring).

    Args:
        dim: token width; heads: attention heads (must divide ``dim``); dropout: on the weights.
        max_positions: size of the relative-key table (``None`` = no position term).

    Shapes: ``forward(x (B, L, dim), memory (B, R, dim) | None) -> (B, L, dim)``; without
    ``memory`` it is self-attention.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, max_positions: int | None = None) -> None:
        super().__init__()
        _check_heads(dim, heads)
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.max_positions = max_positions
        self.distance = nn.Embedding(2 * max_positions - 1, self.head_dim) if max_positions else None

    def _relative_bias(self, q: torch.Tensor, length: int) -> torch.Tensor:
        """``(B, H, L, L)`` additive scores ``q_l . E[l - r] / sqrt(d)``, computed from the
        ``2L - 1`` table rows the sequence needs (``q @ E^T``, then a gather by distance)."""
        m = self.max_positions
        if length > m:
            raise ValueError(f"sequence of {length} tokens is longer than the {m} positions of the "
                             "relative-position table")
        rows = self.distance.weight[m - length : m - 1 + length]  # distances -(L-1) .. L-1
        scores = q @ rows.to(q.dtype).T  # (B, H, L, 2L-1)
        pos = torch.arange(length, device=q.device)
        idx = (pos[:, None] - pos[None, :] + length - 1).expand(*q.shape[:2], length, length)
        return scores.gather(-1, idx) * self.head_dim**-0.5

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        b, n, dim = x.shape
        kv = x if memory is None else memory

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(kv)), split(self.value(kv))
        bias = self._relative_bias(q, n) if self.distance is not None and memory is None else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out(out.transpose(1, 2).reshape(b, n, dim))


class _BertLayer(nn.Module):
    """One post-norm layer: self-attention, optional cross-attention, FFN (module docstring)."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float, max_positions: int | None,
                 cross_attention: bool, eps: float) -> None:
        super().__init__()
        self.attn = Attention(dim, heads, dropout, max_positions)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.cross = Attention(dim, heads, dropout) if cross_attention else None
        self.norm2 = nn.LayerNorm(dim, eps=eps) if cross_attention else None
        self.ffn1 = nn.Linear(dim, ffn)
        self.ffn2 = nn.Linear(ffn, dim)
        self.norm3 = nn.LayerNorm(dim, eps=eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.attn(x)))
        if self.cross is not None:
            x = self.norm2(x + self.drop(self.cross(x, memory)))
        return self.norm3(x + self.drop(self.ffn2(F.gelu(self.ffn1(x)))))


class BertTransformer(nn.Module):
    """Post-norm (BERT) transformer stack, bidirectional (see the module docstring).

    Args:
        dim, depth, heads, ffn, dropout: sizes (dropout on attention weights and residual branches).
        max_positions: relative-key table size of the self-attention (``None`` = no positions).
        cross_attention: every layer also attends to a ``memory`` sequence (a decoder).
        eps: LayerNorm epsilon (BERT's ``1e-12``).

    Shapes: ``forward(x (B, T, dim), memory (B, M, dim) | None) -> (B, T, dim)``.
    """

    def __init__(self, dim: int, depth: int, heads: int, ffn: int, dropout: float = 0.1, *,
                 max_positions: int | None = None, cross_attention: bool = False, eps: float = 1e-12) -> None:
        super().__init__()
        self.cross_attention = cross_attention
        self.layers = nn.ModuleList(
            _BertLayer(dim, heads, ffn, dropout, max_positions, cross_attention, eps) for _ in range(depth)
        )

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        if (memory is None) == self.cross_attention:
            raise ValueError("a cross-attention stack needs a memory sequence; "
                             "a self-attention one takes none")
        for layer in self.layers:
            x = layer(x, memory)
        return x
