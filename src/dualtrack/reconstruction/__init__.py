"""3D reconstruction of tracked sweeps and exports for 3D Slicer.

* :mod:`~dualtrack.reconstruction.compounding`: :func:`reconstruct_volume` -> :class:`Volume`.
* :mod:`~dualtrack.reconstruction.export`: NRRD volumes, PLUS sequence metafiles (trajectory
  files are :mod:`dualtrack.data.trajectory`).
* :mod:`~dualtrack.reconstruction.report`: PNG plots and a self-contained HTML report (imports
  matplotlib, so it is not imported here).

Conventions: ``docs/reconstruction.md``.
"""

from dualtrack.reconstruction.compounding import (
    GridSpec,
    Volume,
    VolumeTooLargeError,
    estimate_memory_bytes,
    plan_grid,
    reconstruct_volume,
)
from dualtrack.reconstruction.export import (
    IMAGE_MM_TO_RAS,
    SequenceMetafile,
    read_nrrd,
    read_nrrd_header,
    read_sequence_metafile,
    write_nrrd,
    write_sequence_metafile,
)

__all__ = [
    "GridSpec",
    "Volume",
    "VolumeTooLargeError",
    "estimate_memory_bytes",
    "plan_grid",
    "reconstruct_volume",
    "IMAGE_MM_TO_RAS",
    "SequenceMetafile",
    "read_nrrd",
    "read_nrrd_header",
    "read_sequence_metafile",
    "write_nrrd",
    "write_sequence_metafile",
]
