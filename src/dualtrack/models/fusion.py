"""Fusion of local and global tokens, the coupled ablation's context transformer, and the pose head.

* :class:`FusionDecoder`: local tokens ``(B, T, Dl)`` -> ``Linear`` (no bias) to ``dim`` + sinusoidal
  encoding of their true frame index -> transformer decoder whose self-attention runs over the ``T``
  local tokens and whose cross-attention reads the ``Tg`` global tokens (projected to ``dim`` if
  needed, plus the encoding of *their* true frame indices, so both sequences share one time axis).
* :class:`CoupledContext`: the ``coupled`` ablation: the same projection, then a self-attention-only
  transformer on the local tokens (no separate global encoder).
* :class:`TransitionHead`: per-transition 6-DoF from per-frame tokens. The output for the transition
  ``i-1 -> i`` (``i = 1..T-1``) is ``Linear([token_{i-1}, token_i])``, a linear map of the
  concatenated tokens of both frames, so every frame's token (the first one included) is used.
* :class:`TokenHead`: the authors' head: ``Linear(token_i)`` for ``i = 1..T-1``; the first
  frame's output is dropped.

With ``transformer="bert"`` (:data:`~dualtrack.models.config.TRANSFORMERS`) the decoder and the
context transformer are BERT stacks (:class:`~dualtrack.models.transformer.BertTransformer`) with
relative-key positions over the local tokens and no position term on the global tokens (which
carry the global encoder's own), as in the authors' released fusion.
"""

from __future__ import annotations

import torch
from torch import nn

from dualtrack.models.config import FusionConfig
from dualtrack.models.transformer import (
    BertTransformer,
    TransformerDecoder,
    TransformerEncoder,
    sinusoidal_encoding,
)

__all__ = ["FusionDecoder", "CoupledContext", "TransitionHead", "TokenHead", "HEADS", "make_head"]


class FusionDecoder(nn.Module):
    """Local tokens attend to global tokens.

    Shapes: ``forward(local (B, T, local_dim), index (B, T), global_tokens (B, Tg, global_dim),
    global_index (B, Tg)) -> (B, T, dim)``.
    """

    def __init__(self, local_dim: int, global_dim: int, cfg: FusionConfig) -> None:
        super().__init__()
        dim = cfg.dim
        self.local_proj = nn.Linear(local_dim, dim, bias=False)
        self.global_proj: nn.Module = nn.Linear(global_dim, dim) if global_dim != dim else nn.Identity()
        self.bert = cfg.transformer == "bert"
        self.decoder: nn.Module
        if self.bert:
            self.decoder = BertTransformer(dim, cfg.layers, cfg.heads, cfg.ffn, cfg.dropout,
                                           max_positions=cfg.max_positions, cross_attention=True)
        else:
            self.decoder = TransformerDecoder(dim, cfg.layers, cfg.heads, cfg.ffn, cfg.dropout)
        self.dim = dim

    def forward(
        self,
        local: torch.Tensor,
        index: torch.Tensor,
        global_tokens: torch.Tensor,
        global_index: torch.Tensor,
    ) -> torch.Tensor:
        x = self.local_proj(local)
        mem = self.global_proj(global_tokens)
        if self.bert:
            return self.decoder(x, mem)
        x = x + sinusoidal_encoding(index, self.dim).to(x.dtype)
        mem = mem + sinusoidal_encoding(global_index, self.dim).to(mem.dtype)
        return self.decoder(x, mem)


class CoupledContext(nn.Module):
    """Wide temporal transformer on top of the local tokens (the ``coupled`` ablation).

    Shapes: ``forward(local (B, T, local_dim), index (B, T)) -> (B, T, dim)``.
    """

    def __init__(self, local_dim: int, cfg: FusionConfig) -> None:
        super().__init__()
        dim = cfg.dim
        self.local_proj = nn.Linear(local_dim, dim, bias=False)
        self.bert = cfg.transformer == "bert"
        self.encoder: nn.Module
        if self.bert:
            self.encoder = BertTransformer(dim, cfg.layers, cfg.heads, cfg.ffn, cfg.dropout,
                                           max_positions=cfg.max_positions)
        else:
            self.encoder = TransformerEncoder(dim, cfg.layers, cfg.heads, cfg.ffn, cfg.dropout)
        self.dim = dim

    def forward(self, local: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        x = self.local_proj(local)
        if self.bert:
            return self.encoder(x)
        return self.encoder(x + sinusoidal_encoding(index, self.dim).to(x.dtype))


class TransitionHead(nn.Module):
    """``(B, T, dim)`` per-frame tokens -> ``(B, T-1, 6)`` normalised 6-DoF of ``T_{i-1<-i}``.

    Small initial weights and zero bias: an untrained model predicts the target mean.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * dim, 6)
        nn.init.normal_(self.linear.weight, std=0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] < 2:
            raise ValueError(f"need at least 2 frames to predict a transition, got {tokens.shape[1]}")
        return self.linear(torch.cat([tokens[:, :-1], tokens[:, 1:]], -1))


class TokenHead(nn.Module):
    """``(B, T, dim)`` per-frame tokens -> ``(B, T-1, 6)``: ``Linear(token_i)`` for ``i >= 1`` (the
    authors' head; the first frame's output is dropped)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 6)
        nn.init.normal_(self.linear.weight, std=0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] < 2:
            raise ValueError(f"need at least 2 frames to predict a transition, got {tokens.shape[1]}")
        return self.linear(tokens[:, 1:])


HEADS = {"pair": TransitionHead, "token": TokenHead}
"""Pose heads by name: ``pair`` (:class:`TransitionHead`, the default) and ``token``
(:class:`TokenHead`, the authors')."""


def make_head(kind: str, dim: int) -> nn.Module:
    """The pose head ``kind`` (:data:`HEADS`) on ``dim``-wide tokens."""
    if kind not in HEADS:
        raise ValueError(f"head must be one of {sorted(HEADS)}, got {kind!r}")
    return HEADS[kind](dim)
