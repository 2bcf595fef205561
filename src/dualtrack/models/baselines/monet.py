"""MoNet baseline without IMU (Luo et al., MICCAI 2022), as compared against in DualTrack.

Without the IMU branches and the IMU-driven test-time optimisation, MoNet reduces to:

1. a 2D ResNet-18 on every consecutive frame pair stacked as 2 channels, spatially mean-pooled
   (one 512-d vector per transition);
2. a causal recurrent network (4-layer LSTM, hidden 256, as in DualTrack's reproduction) over the
   transitions of the sequence;
3. a linear head giving the 6-DoF of every transition.

Loss: MSE on the normalised 6-DoF plus ``corr_weight`` times the correlation loss ``1 - r``
(Pearson correlation along time, per sequence and DoF; see
:func:`~dualtrack.models.baselines._common.pearson_correlation_loss`).

The recurrence is unidirectional, so output ``i`` depends on frames ``0..i`` only. Nothing
bounds how far back it looks; the predictor encodes a long sweep in CNN chunks (halo 1, the pair
encoder's) and runs the recurrence once
(:class:`~dualtrack.models.baselines._common.SequenceBaseline`).
"""

from __future__ import annotations

import torch
from torch import nn

from dualtrack.models.baselines._common import PairEncoder, SequenceBaseline, pearson_correlation_loss
from dualtrack.models.registry import register_model

__all__ = ["MoNet", "monet", "monet_tiny"]


class MoNet(SequenceBaseline):
    """Pair CNN -> LSTM/GRU -> per-step 6-DoF. ``(B, T, H, W) -> (B, T-1, 6)``.

    Args:
        width, layers: ResNet-18 base width and blocks per stage of the pair encoder.
        rnn: ``"lstm"`` or ``"gru"``.
        hidden: hidden size of the recurrent layers.
        num_layers: stacked recurrent layers.
        corr_weight: weight of the correlation loss term (0 = plain MSE).
    """

    def __init__(
        self,
        width: int = 64,
        layers: tuple[int, ...] = (2, 2, 2, 2),
        rnn: str = "lstm",
        hidden: int = 256,
        num_layers: int = 4,
        corr_weight: float = 1.0,
    ) -> None:
        rnn_types = {"lstm": nn.LSTM, "gru": nn.GRU}
        if rnn not in rnn_types:
            raise ValueError(f"monet: unknown rnn {rnn!r}; expected one of {sorted(rnn_types)}")
        super().__init__(PairEncoder(width=width, layers=tuple(layers)))
        self.rnn = rnn_types[rnn](self.encoder.num_features, hidden, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden, 6)
        self.corr_weight = float(corr_weight)

    def sequence_model(self, feats: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``(B, T-1, C)`` pair features -> ``(B, T-1, 6)``; ``index`` is unused (the RNN is ordered)."""
        out, _ = self.rnn(feats)
        return self.head(out)

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """MSE + ``corr_weight`` * (1 - Pearson r over time, averaged over sequences and DoFs)."""
        mse = torch.nn.functional.mse_loss(pred.float(), target.float())
        if self.corr_weight == 0:
            return mse
        return mse + self.corr_weight * pearson_correlation_loss(pred, target, dim=1)


@register_model("monet")
def monet(rnn: str = "lstm", hidden: int = 256, num_layers: int = 4, corr_weight: float = 1.0) -> MoNet:
    """MoNet without IMU: ResNet-18 pair encoder (11.2 M) + 4-layer LSTM (hidden 256)."""
    return MoNet(rnn=rnn, hidden=hidden, num_layers=num_layers, corr_weight=corr_weight)


@register_model("monet_tiny")
def monet_tiny(rnn: str = "lstm", hidden: int = 16, num_layers: int = 1, corr_weight: float = 1.0) -> MoNet:
    """Test-size MoNet (width 8, one block per stage, one small recurrent layer)."""
    return MoNet(
        width=8, layers=(1, 1, 1, 1), rnn=rnn, hidden=hidden, num_layers=num_layers, corr_weight=corr_weight
    )
