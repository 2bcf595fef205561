"""dualtrack: sensorless freehand 3D ultrasound with the DualTrack dual-encoder network.

Sub-packages follow the data flow: :mod:`dualtrack.geometry` (pose math), :mod:`dualtrack.data`
(TUS-REC reader/writer, samplers), :mod:`dualtrack.simulate` (B-mode sweep simulator),
:mod:`dualtrack.models` (registry), :mod:`dualtrack.training`, :mod:`dualtrack.evaluation`
(metrics), :mod:`dualtrack.reconstruction` (volumes, Slicer export, reports), :mod:`dualtrack.cli`.
"""

__version__ = "0.1.0"
