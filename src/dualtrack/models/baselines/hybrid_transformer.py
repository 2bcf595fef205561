"""Hybrid Transformer baseline (Ning et al., ISBI 2022), following DualTrack's reproduction.

A CNN extracts local features of every frame; a transformer encoder over the whole sequence
regresses the pose of every frame with access to global (long-range) context:

1. encoder (``encoder=``): ``"video3d"`` (default) = the shared 3D ResNet-18 with a small
   temporal window (temporal kernel 3 in the stem and first stage only, ±5 frames), one
   spatially pooled 512-d vector per frame, the first frame's vector dropped; or ``"pair2d"`` =
   a 2D ResNet-18 on stacked frame pairs. Either way: one feature vector per transition.
2. ``Linear(C, hidden, bias=False)`` plus a learned absolute position embedding indexed by the
   **true frame index** of frame ``i`` (``index[:, 1:]``; up to ``max_positions``), LayerNorm,
   dropout (BERT-style embeddings).
3. a bidirectional post-LN transformer encoder (``num_layers`` x ``heads`` heads, FFN
   ``2 * hidden``, GELU, dropout 0.1).
4. ``Linear(hidden, 6)`` per transition.

Loss: MSE (registry default). Every output sees the whole input sequence; the predictor encodes
long sweeps in exact CNN chunks first (halo: the encoder's).
"""

from __future__ import annotations

import torch
from torch import nn

from dualtrack.models.baselines._common import SequenceBaseline, build_encoder
from dualtrack.models.registry import register_model

__all__ = ["HybridTransformer", "hybrid_transformer", "hybrid_transformer_tiny"]


class HybridTransformer(SequenceBaseline):
    """Per-transition CNN features -> transformer encoder -> 6-DoF. ``(B, T, H, W) -> (B, T-1, 6)``.

    Args:
        encoder: ``"video3d"`` or ``"pair2d"`` (see module docstring).
        width, layers: ResNet-18 base width and blocks per stage.
        hidden: transformer width.
        num_layers, heads: transformer depth and attention heads.
        dropout: dropout in the embeddings and transformer.
        max_positions: size of the position-embedding table (largest frame index + 1).
    """

    def __init__(
        self,
        encoder: str = "video3d",
        width: int = 64,
        layers: tuple[int, ...] = (2, 2, 2, 2),
        hidden: int = 128,
        num_layers: int = 12,
        heads: int = 8,
        dropout: float = 0.1,
        max_positions: int = 4096,
    ) -> None:
        if hidden % heads:
            raise ValueError(f"hybrid_transformer: hidden={hidden} is not divisible by heads={heads}")
        super().__init__(build_encoder(encoder, width, tuple(layers)))
        self.proj = nn.Linear(self.encoder.num_features, hidden, bias=False)
        self.pos = nn.Embedding(max_positions, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            hidden, heads, 2 * hidden, dropout, activation="gelu", batch_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.head = nn.Linear(hidden, 6)
        nn.init.normal_(self.pos.weight, std=0.02)

    def sequence_model(self, feats: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``(B, T-1, C)`` features + frame ``index (B, T)`` -> ``(B, T-1, 6)``."""
        pos = index[:, 1:]
        if int(pos.max()) >= self.pos.num_embeddings or int(pos.min()) < 0:
            raise ValueError(
                f"{self.model_name}: frame index range [{int(pos.min())}, {int(pos.max())}] outside the "
                f"position table [0, {self.pos.num_embeddings}); build the model with a larger max_positions"
            )
        x = self.drop(self.norm(self.proj(feats) + self.pos(pos)))
        return self.head(self.transformer(x))


@register_model("hybrid_transformer")
def hybrid_transformer(
    encoder: str = "video3d",
    hidden: int = 128,
    num_layers: int = 12,
    heads: int = 8,
    dropout: float = 0.1,
    max_positions: int = 4096,
) -> HybridTransformer:
    """Hybrid Transformer: small-window 3D ResNet-18 + 12-layer transformer (hidden 128)."""
    return HybridTransformer(
        encoder=encoder,
        hidden=hidden,
        num_layers=num_layers,
        heads=heads,
        dropout=dropout,
        max_positions=max_positions,
    )


@register_model("hybrid_transformer_tiny")
def hybrid_transformer_tiny(
    encoder: str = "video3d",
    hidden: int = 16,
    num_layers: int = 1,
    heads: int = 2,
    dropout: float = 0.0,
    max_positions: int = 4096,
) -> HybridTransformer:
    """Test-size Hybrid Transformer (width 8, one block per stage, one transformer layer)."""
    return HybridTransformer(
        encoder=encoder,
        width=8,
        layers=(1, 1, 1, 1),
        hidden=hidden,
        num_layers=num_layers,
        heads=heads,
        dropout=dropout,
        max_positions=max_positions,
    )
