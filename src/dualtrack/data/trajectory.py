"""Trajectory files: the poses of one sweep as ``dualtrack predict`` writes them and
``dualtrack reconstruct --poses`` reads them (``.h5`` or ``.csv``; :func:`write_trajectory`,
:func:`read_trajectory`). The convention is written into every file (:data:`TRAJECTORY_CONVENTION`).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dualtrack.utils import atomic_write

__all__ = ["TRAJECTORY_CONVENTION", "Trajectory", "write_trajectory", "read_trajectory"]

log = logging.getLogger(__name__)

TRAJECTORY_CONVENTION = (
    "dualtrack trajectory v1. global[i] = T_{0<-i}: 4x4 rigid, maps homogeneous column points in "
    "image mm of frame i to image mm of frame 0 (global[0] = I); local[i-1] = T_{i-1<-i} (frame i "
    "-> frame i-1), i = 1..N-1. TUS-REC corner-origin image mm: pixel (u, v) 1-based column/row, "
    "point = S @ (u, v, 0, 1). Translations in mm."
)


@dataclass
class Trajectory:
    """Poses of one sweep as stored by :func:`write_trajectory`.

    Attributes:
        local: ``(N-1, 4, 4)`` float64, ``local[i-1] = T_{i-1<-i}``.
        global_: ``(N, 4, 4)`` float64, ``global_[i] = T_{0<-i}``.
        attrs: metadata (e.g. ``spacing``, ``shape``, ``scan``, ``model``).
    """

    local: np.ndarray
    global_: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)


def _check_trajectory(local: Any, global_: Any) -> tuple[np.ndarray, np.ndarray]:
    g = np.asarray(global_, dtype=np.float64)
    loc = np.asarray(local, dtype=np.float64)
    if g.ndim != 3 or g.shape[1:] != (4, 4) or g.shape[0] < 1:
        raise ValueError(f"global poses must be (N, 4, 4), got {g.shape}")
    if loc.shape != (g.shape[0] - 1, 4, 4):
        raise ValueError(
            f"local poses must be ({g.shape[0] - 1}, 4, 4) for {g.shape[0]} frames, got {loc.shape}"
        )
    return loc, g


_CSV_COLUMNS = ["frame"] + [f"{m}{r}{c}" for m in "GL" for r in range(4) for c in range(4)]


def write_trajectory(
    path: str | os.PathLike,
    local: np.ndarray,
    global_: np.ndarray,
    *,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write predicted (or true) poses of a sweep; the format follows the suffix.

    * ``.h5`` / ``.hdf5``: datasets ``global`` ``(N, 4, 4)`` and ``local`` ``(N-1, 4, 4)``
      (float64); root attributes ``convention`` (:data:`TRAJECTORY_CONVENTION`),
      ``num_frames`` and every entry of ``attrs`` (scalars, strings, small arrays).
    * ``.csv``: ``#``-comment lines with the convention and ``attrs``, then a header row
      ``frame, G00..G33, L00..L33`` and one row per frame: the 16 row-major numbers of
      ``global[i]`` and of ``local[i-1]`` (empty for frame 0).

    Written atomically. Read back with :func:`read_trajectory`.

    Args:
        path: output file.
        local: ``(N-1, 4, 4)`` ``T_{i-1<-i}`` in corner-origin image mm.
        global_: ``(N, 4, 4)`` ``T_{0<-i}`` in corner-origin image mm.
        attrs: metadata, e.g. ``{"spacing": (sx, sy), "shape": (H, W), "scan": key}``.
    """
    path = Path(path)
    loc, g = _check_trajectory(local, global_)
    attrs = dict(attrs or {})
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        with atomic_write(path) as tmp:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("global", data=g)
                f.create_dataset("local", data=loc)
                f.attrs["convention"] = TRAJECTORY_CONVENTION
                f.attrs["num_frames"] = g.shape[0]
                for key, value in attrs.items():
                    f.attrs[key] = value
    elif suffix == ".csv":
        buf = io.StringIO()
        for line in TRAJECTORY_CONVENTION.split(". "):
            buf.write(f"# {line.rstrip('.')}.\n")
        for key, value in attrs.items():
            buf.write(f"# attr {key} = {_attr_text(value)}\n")
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(_CSV_COLUMNS)
        for i in range(g.shape[0]):
            lrow = [repr(float(x)) for x in loc[i - 1].ravel()] if i > 0 else [""] * 16
            writer.writerow([i, *(repr(float(x)) for x in g[i].ravel()), *lrow])
        with atomic_write(path) as tmp:
            tmp.write_text(buf.getvalue(), encoding="utf-8")
    else:
        raise ValueError(f"{path}: trajectory files must end in .h5, .hdf5 or .csv")
    log.info("wrote trajectory %s (%d frames)", path, g.shape[0])
    return path


def _attr_text(value: Any) -> str:
    if isinstance(value, (list, tuple, np.ndarray)):
        return " ".join(str(v) for v in np.asarray(value).ravel())
    return str(value).replace("\n", " ")


def read_trajectory(path: str | os.PathLike) -> Trajectory:
    """Read a file written by :func:`write_trajectory` (``.h5``/``.hdf5`` or ``.csv``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: missing datasets/columns or inconsistent shapes (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trajectory file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        try:
            with h5py.File(path, "r") as f:
                missing = [k for k in ("global", "local") if k not in f]
                if missing:
                    raise ValueError(
                        f"{path}: not a dualtrack trajectory file (missing {missing}; found {sorted(f)})"
                    )
                g, loc = f["global"][()], f["local"][()]
                attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        except OSError as exc:
            raise ValueError(f"{path}: cannot read as HDF5: {exc}") from None
    elif suffix == ".csv":
        attrs = {}
        rows = []
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        for line in lines:
            if line.startswith("# attr "):
                key, _, value = line[len("# attr "):].partition(" = ")
                attrs[key] = value
        body = [line for line in lines if line and not line.startswith("#")]
        reader = csv.reader(body)
        header = next(reader, None)
        if header != _CSV_COLUMNS:
            raise ValueError(f"{path}: unexpected CSV columns (expected frame, G00..G33, L00..L33)")
        for row in reader:
            rows.append(row)
        if not rows:
            raise ValueError(f"{path}: no frames")
        try:
            g = np.array([[float(x) for x in r[1:17]] for r in rows]).reshape(-1, 4, 4)
            loc = np.array([[float(x) for x in r[17:33]] for r in rows[1:]]).reshape(-1, 4, 4)
        except ValueError as exc:
            raise ValueError(f"{path}: bad number in trajectory CSV: {exc}") from None
    else:
        raise ValueError(f"{path}: trajectory files must end in .h5, .hdf5 or .csv")
    try:
        loc, g = _check_trajectory(loc, g)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return Trajectory(local=loc, global_=g, attrs=attrs)
