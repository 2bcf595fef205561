"""Baselines of the DualTrack paper as registered models (see docs/baselines.md).

* ``two_frame_cnn``: 2-Frame CNN (Prevost et al. 2018; TUS-REC organisers' EfficientNet-B1 variant).
* ``monet``: MoNet without IMU (Luo et al. 2022): pair CNN + LSTM + correlation loss.
* ``dclnet``: DCL-Net (Guo et al. 2020): 3D ResNeXt + attention on short clips, mean motion.
* ``hybrid_transformer``: Hybrid Transformer (Ning et al. 2022): CNN features + transformer encoder.

Each also has a ``<name>_tiny`` variant for tests.
"""

from dualtrack.models.baselines.dclnet import DCLNet
from dualtrack.models.baselines.hybrid_transformer import HybridTransformer
from dualtrack.models.baselines.monet import MoNet
from dualtrack.models.baselines.two_frame import TwoFrameCNN

__all__ = ["DCLNet", "HybridTransformer", "MoNet", "TwoFrameCNN"]
