"""Probe calibration: the TUS-REC ``calib_matrix.csv`` file and the :class:`Calibration` pair.

The file is plain text read line by line (the organisers' reader splits each line on commas):

* line 0: a header (``scaling_from_pixel_to_mm``);
* lines 1-4: the ``(4, 4)`` pixel -> image-mm scaling ``S``, 4 comma-separated numbers a line;
* line 5: a header (``spatial_calibration_from_image_coordinate_system_to_tracking_tool_coordinate_system``);
* lines 6-9: the ``(4, 4)`` rigid image-mm -> tracking-tool matrix ``C``;
* any later lines are ignored (older files carry e.g. a time-offset row there).

A pixel ``(u, v)`` (1-based column, row) maps to image mm as ``S @ (u, v, 0, 1)`` and to tool
coordinates as ``C @ S @ (u, v, 0, 1)``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dualtrack.utils import atomic_write

__all__ = [
    "Calibration",
    "read_calibration",
    "write_calibration",
    "TUSREC2024_CALIBRATION",
    "CALIBRATION_FILENAME",
    "SCALE_HEADER",
    "RIGID_HEADER",
]

CALIBRATION_FILENAME = "calib_matrix.csv"
SCALE_HEADER = "scaling_from_pixel_to_mm"
RIGID_HEADER = "spatial_calibration_from_image_coordinate_system_to_tracking_tool_coordinate_system"


@dataclass(frozen=True)
class Calibration:
    """Calibration of one probe.

    Attributes:
        scale: ``(4, 4)`` float64 ``S``, pixel -> image mm (``diag(sx, sy, 1, 1)`` for TUS-REC).
        image_to_tool: ``(4, 4)`` float64 rigid ``C``, image mm -> tracking-tool coordinates.
    """

    scale: np.ndarray
    image_to_tool: np.ndarray

    def __post_init__(self) -> None:
        for field, value in (("scale", self.scale), ("image_to_tool", self.image_to_tool)):
            arr = np.array(value, dtype=np.float64)
            if arr.shape != (4, 4):
                raise ValueError(f"Calibration.{field} must have shape (4, 4), got {arr.shape}")
            object.__setattr__(self, field, arr)

    @property
    def spacing(self) -> tuple[float, float]:
        """``(sx, sy)``: mm per pixel along columns (x, width) and rows (y, height)."""
        return float(self.scale[0, 0]), float(self.scale[1, 1])

    @property
    def pixel_to_tool(self) -> np.ndarray:
        """``(4, 4)`` ``C @ S``: pixel ``(u, v, 0, 1)`` -> tracking-tool coordinates (mm)."""
        return self.image_to_tool @ self.scale

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Calibration):
            return NotImplemented
        return bool(
            np.array_equal(self.scale, other.scale)
            and np.array_equal(self.image_to_tool, other.image_to_tool)
        )

    def __hash__(self) -> int:
        return hash((self.scale.tobytes(), self.image_to_tool.tobytes()))


TUSREC2024_CALIBRATION = Calibration(
    scale=np.diag([0.229389190673828, 0.220979690551758, 1.0, 1.0]),
    image_to_tool=np.array(
        [
            [0.231065, -0.218052, 0.948189, -70.741329],
            [-0.190847, -0.965787, -0.175591, -80.650566],
            [0.954037, -0.140386, -0.264774, -46.176622],
            [0.0, 0.0, 0.0, 1.0],
        ]
    ),
)
"""The published TUS-REC 2024 calibration (480x640 frames, 4DC7-3/40 probe, 9 cm depth)."""


def _parse_row(path: Path, lines: list[str], index: int) -> list[float]:
    if index >= len(lines):
        raise ValueError(
            f"{path}: calibration file has only {len(lines)} lines; expected at least 10 "
            f"(header, 4 rows of S, header, 4 rows of C), line {index + 1} is missing"
        )
    fields = [f.strip() for f in lines[index].split(",")]
    while fields and fields[-1] == "":
        fields.pop()
    try:
        values = [float(f) for f in fields]
    except ValueError:
        raise ValueError(
            f"{path}: line {index + 1} should hold 4 comma-separated numbers, found {lines[index].strip()!r}"
        ) from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(
            f"{path}: line {index + 1} should hold 4 finite comma-separated numbers, "
            f"found {lines[index].strip()!r}"
        )
    return values


def _check_header(path: Path, lines: list[str], index: int, expected: str) -> None:
    if index >= len(lines):
        return
    fields = [f.strip() for f in lines[index].split(",") if f.strip()]
    if not fields:
        return
    try:
        [float(f) for f in fields]
    except ValueError:
        return
    raise ValueError(
        f"{path}: line {index + 1} should be a header line (like {expected!r}), found numbers "
        f"{lines[index].strip()!r}; the TUS-REC format is: header, 4 rows of S, header, 4 rows of C"
    )


def read_calibration(path: str | os.PathLike) -> Calibration:
    """Read a TUS-REC ``calib_matrix.csv``.

    Args:
        path: the csv file.

    Returns:
        The :class:`Calibration` (float64; the organisers parse float32, a < 1e-6 relative change).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the text does not follow the format, the pixel spacing is not positive or the
            image-to-tool matrix is singular (the message names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: calibration file is not a text file") from None
    _check_header(path, lines, 0, SCALE_HEADER)
    _check_header(path, lines, 5, RIGID_HEADER)
    scale = np.array([_parse_row(path, lines, i) for i in range(1, 5)])
    rigid = np.array([_parse_row(path, lines, i) for i in range(6, 10)])
    sx, sy = scale[0, 0], scale[1, 1]
    if not (sx > 0 and sy > 0):
        raise ValueError(
            f"{path}: the pixel spacing (S[0,0], S[1,1]) = ({sx:g}, {sy:g}) mm must be positive; "
            "every distance in mm would be wrong"
        )
    det = np.linalg.det(rigid[:3, :3])
    if abs(det) < 1e-6:
        raise ValueError(
            f"{path}: the image-to-tool matrix (rows 7-9) is singular (det {det:.3g}); it must be a "
            "rigid transform"
        )
    return Calibration(scale=scale, image_to_tool=rigid)


def write_calibration(path: str | os.PathLike, calib: Calibration) -> Path:
    """Write ``calib`` as a TUS-REC ``calib_matrix.csv`` (atomically).

    Numbers are written with ``repr`` so that :func:`read_calibration` returns them exactly.

    Args:
        path: destination file, or a dataset root folder (then ``<root>/calib_matrix.csv``).
        calib: the calibration.

    Returns:
        The path written.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CALIBRATION_FILENAME
    rows = [SCALE_HEADER]
    rows += [",".join(repr(float(v)) for v in row) for row in calib.scale]
    rows.append(RIGID_HEADER)
    rows += [",".join(repr(float(v)) for v in row) for row in calib.image_to_tool]
    with atomic_write(path) as tmp:
        tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path
