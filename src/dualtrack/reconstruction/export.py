"""File export for 3D Slicer and other tools: NRRD volumes, PLUS sequence metafiles, trajectories.

Coordinate convention (shared by every writer here)
---------------------------------------------------
Volumes and poses live in the *reference* frame = image mm of frame 0 of the sweep (TUS-REC
corner origin: ``x`` lateral along the columns, ``y`` depth along the rows, ``z = x × y``
elevation). Slicer has no notion of that frame, so the writers map it to Slicer's RAS world with
one fixed rotation, :data:`IMAGE_MM_TO_RAS`::

    R = -x,   A = -z,   S = -y        (equivalently  L = x,  P = z,  S = -y)

With it, frame 0 lies in the coronal plane ``A = 0`` and Slicer's coronal view (screen right =
patient left, screen up = superior) shows it as the scanner does: lateral to the right, depth
downwards. Any other rigid ``reference_to_ras`` can be passed; the volume and the sequence of the
same sweep overlay in Slicer as long as both use the same matrix.

* NRRD: ``space: right-anterior-superior`` (default) writes RAS coordinates;
  ``left-posterior-superior`` writes the same placement in LPS (x and y negated) for tools that
  expect LPS. ``sizes`` = ``ni nj nk`` (fastest first, the reverse of ``Volume.data.shape``),
  ``space directions`` = the world vectors of one voxel step along ``i``, ``j``, ``k``,
  ``space origin`` = the centre of voxel ``(0, 0, 0)``.
* Sequence metafile (PLUS / SlicerIGT convention): pixel coordinates are 0-based ``(i, j)`` =
  TUS-REC ``(u - 1, v - 1)``, ``ElementSpacing = 1 1 1`` and the per-frame
  ``ImageToReferenceTransform`` holds the whole pixel -> RAS map (not rigid: it includes the
  pixel size): ``IMAGE_MM_TO_RAS @ G_i @ S @ T(1, 1, 0)``. Slicer uses these matrices as RAS
  transforms as-is.
* Trajectory files (``.h5`` / ``.csv``): the raw poses in reference mm, no RAS mapping.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dualtrack import geometry
from dualtrack.reconstruction.compounding import Volume, as_scale_matrix
from dualtrack.utils import atomic_write

log = logging.getLogger(__name__)

__all__ = [
    "IMAGE_MM_TO_RAS",
    "write_nrrd",
    "read_nrrd",
    "read_nrrd_header",
    "SequenceMetafile",
    "write_sequence_metafile",
    "read_sequence_metafile",
    "image_to_reference_matrices",
    "poses_from_image_to_reference",
]

IMAGE_MM_TO_RAS = np.array(
    [[-1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
"""``(4, 4)`` rigid map from reference (frame-0 image) mm to Slicer RAS: ``R=-x, A=-z, S=-y``."""

_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_SPACES = {"RAS": "right-anterior-superior", "LPS": "left-posterior-superior"}
_NRRD_TYPES = {
    np.dtype(np.uint8): "uint8",
    np.dtype(np.int8): "int8",
    np.dtype(np.uint16): "uint16",
    np.dtype(np.int16): "int16",
    np.dtype(np.uint32): "uint32",
    np.dtype(np.int32): "int32",
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
}
_NRRD_TYPE_ALIASES = {
    "uchar": "uint8", "unsigned char": "uint8", "uint8_t": "uint8", "signed char": "int8", "int8_t": "int8",
    "short": "int16", "short int": "int16", "int16_t": "int16", "ushort": "uint16",
    "unsigned short": "uint16", "uint16_t": "uint16", "int": "int32", "int32_t": "int32",
    "uint": "uint32", "unsigned int": "uint32", "uint32_t": "uint32",
}


def _check_rigid(matrix: np.ndarray, name: str) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4):
        raise ValueError(f"{name} must be (4, 4), got {m.shape}")
    if not geometry.is_rigid(m, atol=1e-6):
        raise ValueError(
            f"{name} must be a rigid transform (orthonormal rotation with det +1, last row 0 0 0 1)"
        )
    return m


def _world_from_reference(reference_to_ras: np.ndarray, space: str) -> np.ndarray:
    if space not in _SPACES:
        raise ValueError(f"space must be 'RAS' or 'LPS', got {space!r}")
    m = _check_rigid(reference_to_ras, "reference_to_ras")
    return _LPS_FROM_RAS @ m if space == "LPS" else m


def _fmt(x: float) -> str:
    return repr(float(x)) if x != 0 else "0"


def _vec(v: Sequence[float]) -> str:
    return "(" + ",".join(_fmt(x) for x in v) + ")"


# ----------------------------------------------------------------------------------------- NRRD


def write_nrrd(
    path: str | os.PathLike,
    volume: Volume,
    *,
    space: str = "RAS",
    reference_to_ras: np.ndarray = IMAGE_MM_TO_RAS,
    compress: bool = True,
    custom_fields: Mapping[str, str] | None = None,
) -> Path:
    """Write a volume as a single-file NRRD (``NRRD0004``) that 3D Slicer opens directly.

    The voxel ``data[k, j, i]`` of ``volume`` has its centre at reference-mm point
    ``p = origin + direction @ (spacing * (i, j, k))``; the file places it at world point
    ``M @ p`` with ``M = reference_to_ras`` (RAS) or ``diag(-1, -1, 1) @ M`` (LPS), so a volume
    written in either space lands at the same place in Slicer. Header fields: ``type``,
    ``dimension: 3``, ``space``, ``sizes: ni nj nk``, ``space directions`` (one vector per index
    axis, length = spacing), ``kinds: domain domain domain``, ``endian: little``,
    ``encoding: gzip|raw``, ``space origin``, ``space units: "mm" "mm" "mm"`` plus
    ``key:=value`` custom fields. Written atomically.

    Args:
        path: output file, usually ``*.nrrd``.
        volume: the :class:`~dualtrack.reconstruction.compounding.Volume`.
        space: ``"RAS"`` (``right-anterior-superior``) or ``"LPS"`` (``left-posterior-superior``).
        reference_to_ras: ``(4, 4)`` rigid reference mm -> RAS (default :data:`IMAGE_MM_TO_RAS`).
        compress: gzip the data (``encoding: gzip``) instead of ``raw``.
        custom_fields: extra ``key:=value`` lines (keys without ``:=`` or newlines).

    Returns:
        The written path.
    """
    path = Path(path)
    data = np.asarray(volume.data)
    if data.ndim != 3:
        raise ValueError(f"volume data must be 3-D (D, H, W), got shape {data.shape}")
    if data.dtype not in _NRRD_TYPES:
        raise ValueError(f"unsupported volume dtype {data.dtype} for NRRD (use uint8, int16, float32, ...)")
    world = _world_from_reference(reference_to_ras, space)
    affine = world @ volume.affine
    lines = [
        "NRRD0004",
        "# Complete NRRD file format specification at: http://teem.sourceforge.net/nrrd/format.html",
        "# written by dualtrack; world = " + space + " of the reference frame (frame-0 image mm)",
        f"type: {_NRRD_TYPES[data.dtype]}",
        "dimension: 3",
        f"space: {_SPACES[space]}",
        f"sizes: {data.shape[2]} {data.shape[1]} {data.shape[0]}",
        "space directions: " + " ".join(_vec(affine[:3, a]) for a in range(3)),
        "kinds: domain domain domain",
        "endian: little",
        f"encoding: {'gzip' if compress else 'raw'}",
        f"space origin: {_vec(affine[:3, 3])}",
        'space units: "mm" "mm" "mm"',
    ]
    for key, value in (custom_fields or {}).items():
        key, value = str(key), str(value)
        if ":=" in key or "\n" in key + value or not key.strip():
            raise ValueError(f"invalid NRRD custom field {key!r}: no ':=' or newlines allowed")
        lines.append(f"{key}:={value}")
    payload = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<")).tobytes()
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        f.write(("\n".join(lines) + "\n\n").encode("ascii"))
        if compress:
            with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=1, mtime=0) as gz:
                gz.write(payload)
        else:
            f.write(payload)
    log.info("wrote %s (%s voxels, %s)", path, "x".join(map(str, data.shape[::-1])), space)
    return path


def _split_header(path: Path, raw: bytes, first_line: bytes) -> tuple[list[str], int]:
    if not raw.startswith(first_line):
        raise ValueError(f"{path}: not a {first_line.decode()} file")
    end = raw.find(b"\n\n")
    if end < 0:
        raise ValueError(f"{path}: header has no terminating blank line (truncated file?)")
    text = raw[:end].decode("ascii", errors="replace")
    return text.split("\n"), end + 2


def read_nrrd_header(path: str | os.PathLike) -> dict[str, str]:
    """Header of a NRRD file: field -> raw value string (custom ``key:=value`` fields included)."""
    header, _ = _read_nrrd_raw(Path(path), header_only=True)
    return header


def _read_nrrd_raw(path: Path, header_only: bool = False) -> tuple[dict[str, str], bytes]:
    if not path.is_file():
        raise FileNotFoundError(f"NRRD file not found: {path}")
    raw = path.read_bytes()
    lines, offset = _split_header(path, raw, b"NRRD000")
    header: dict[str, str] = {}
    for line in lines[1:]:
        if not line or line.startswith("#"):
            continue
        if ":=" in line:
            key, value = line.split(":=", 1)
        elif ": " in line:
            key, value = line.split(": ", 1)
        else:
            raise ValueError(f"{path}: malformed header line {line!r}")
        header[key.strip()] = value.strip()
    return header, (b"" if header_only else raw[offset:])


def _parse_vectors(text: str, path: Path, name: str) -> list[list[float] | None]:
    out: list[list[float] | None] = []
    for token in re.findall(r"\([^)]*\)|none", text):
        if token == "none":
            out.append(None)
        else:
            out.append([float(x) for x in token.strip("()").split(",")])
    if not out:
        raise ValueError(f"{path}: cannot parse '{name}: {text}'")
    return out


def read_nrrd(path: str | os.PathLike, *, reference_to_ras: np.ndarray = IMAGE_MM_TO_RAS) -> Volume:
    """Read a 3-D single-file NRRD (raw or gzip) into a :class:`Volume` in reference mm.

    The inverse of :func:`write_nrrd`: world coordinates (RAS or LPS, from the ``space`` field)
    are mapped back with ``reference_to_ras``. Detached data files are not supported.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a NRRD, an unsupported field value, or a data size mismatch.
    """
    path = Path(path)
    header, payload = _read_nrrd_raw(path)
    try:
        dim = int(header["dimension"])
        sizes = [int(x) for x in header["sizes"].split()]
        type_name = header["type"]
        encoding = header["encoding"]
    except KeyError as exc:
        raise ValueError(f"{path}: required NRRD field {exc.args[0]!r} missing") from None
    if dim != 3 or len(sizes) != 3:
        raise ValueError(f"{path}: only 3-D NRRD volumes are supported (dimension {dim})")
    if "data file" in header or "datafile" in header:
        raise ValueError(f"{path}: detached NRRD data files are not supported")
    type_name = _NRRD_TYPE_ALIASES.get(type_name, type_name)
    dtypes = {v: k for k, v in _NRRD_TYPES.items()}
    if type_name not in dtypes:
        raise ValueError(f"{path}: unsupported NRRD type {header['type']!r}")
    dtype = dtypes[type_name]
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if header.get("endian", "little") == "big" else "<")
    if encoding in ("gzip", "gz"):
        payload = gzip.decompress(payload)
    elif encoding != "raw":
        raise ValueError(f"{path}: unsupported NRRD encoding {encoding!r} (raw or gzip)")
    count = int(np.prod(sizes))
    if len(payload) != count * dtype.itemsize:
        raise ValueError(f"{path}: data has {len(payload)} bytes, expected {count * dtype.itemsize}")
    data = np.frombuffer(payload, dtype=dtype).reshape(sizes[::-1]).astype(dtype.newbyteorder("="))

    space = header.get("space", "right-anterior-superior")
    names = {v: k for k, v in _SPACES.items()}
    names.update({"RAS": "RAS", "LPS": "LPS"})
    if space not in names:
        raise ValueError(f"{path}: unsupported space {space!r} (RAS or LPS)")
    world_from_ref = _world_from_reference(reference_to_ras, names[space])
    dirs = _parse_vectors(header.get("space directions", ""), path, "space directions")
    if len(dirs) != 3 or any(d is None for d in dirs):
        raise ValueError(f"{path}: 'space directions' must give 3 vectors")
    origin = _parse_vectors(header.get("space origin", "(0,0,0)"), path, "space origin")[0]
    affine = np.eye(4)
    affine[:3, :3] = np.array(dirs, dtype=np.float64).T
    affine[:3, 3] = origin
    ref = np.linalg.inv(world_from_ref) @ affine
    spacing = np.linalg.norm(ref[:3, :3], axis=0)
    return Volume(
        data=data,
        spacing=spacing,
        origin=ref[:3, 3].copy(),
        direction=ref[:3, :3] / spacing[None, :],
        weight=None,
    )


# ------------------------------------------------------------------------ PLUS sequence metafile


_ZERO_TO_ONE_BASED = geometry.translation_matrix((1.0, 1.0, 0.0))
"""0-based pixel ``(i, j, 0, 1)`` -> TUS-REC 1-based pixel ``(u, v, 0, 1) = (i + 1, j + 1, 0, 1)``."""


def image_to_reference_matrices(
    poses: np.ndarray, spacing: Any, reference_to_ras: np.ndarray = IMAGE_MM_TO_RAS
) -> np.ndarray:
    """PLUS ``ImageToReference`` matrices: 0-based pixel ``(i, j, 0, 1)`` -> RAS mm.

    Args:
        poses: ``(N, 4, 4)`` global poses ``T_{0<-i}`` in corner-origin image mm.
        spacing: ``(sx, sy)`` mm/pixel or the ``(4, 4)`` scale ``S``.
        reference_to_ras: ``(4, 4)`` rigid reference -> RAS map.

    Returns:
        ``(N, 4, 4)`` = ``reference_to_ras @ G_i @ S @ T(1, 1, 0)``.
    """
    m = _check_rigid(reference_to_ras, "reference_to_ras")
    return m @ np.asarray(poses, dtype=np.float64) @ as_scale_matrix(spacing) @ _ZERO_TO_ONE_BASED


def poses_from_image_to_reference(
    matrices: np.ndarray, reference_to_ras: np.ndarray = IMAGE_MM_TO_RAS
) -> tuple[np.ndarray, tuple[float, float]]:
    """Inverse of :func:`image_to_reference_matrices`.

    Args:
        matrices: ``(N, 4, 4)`` ImageToReference matrices (pixel -> RAS).
        reference_to_ras: the rigid map used when writing.

    Returns:
        ``(poses (N, 4, 4), (sx, sy))``; the spacing is the column norms of the first valid frame
        (the norms of the x and y columns of ``G_i S`` for rigid ``G_i``).
    """
    a = np.linalg.inv(_check_rigid(reference_to_ras, "reference_to_ras")) @ np.asarray(matrices, float)
    a = a @ np.linalg.inv(_ZERO_TO_ONE_BASED)
    finite = np.all(np.isfinite(a), axis=(1, 2))
    if not finite.any():
        raise ValueError("no valid ImageToReference matrix to recover the pixel spacing from")
    first = a[np.flatnonzero(finite)[0]]
    sx, sy = (float(np.linalg.norm(first[:3, c])) for c in (0, 1))
    return a @ np.linalg.inv(as_scale_matrix((sx, sy))), (sx, sy)


@dataclass
class SequenceMetafile:
    """Content of a PLUS sequence metafile.

    Attributes:
        frames: ``(N, H, W)`` uint8.
        transforms: per transform name (e.g. ``"ImageToReference"``) the ``(N, 4, 4)`` matrices
            as stored (row-major 16 numbers per frame; NaN where the status is not OK).
        statuses: per transform name, ``N`` status strings (``"OK"`` / ``"INVALID"``).
        timestamps: ``(N,)`` seconds.
        fields: global header fields (name -> value string), in file order.
        frame_fields: ``N`` dicts of every per-frame field (without the ``Seq_FrameXXXX_`` prefix).
    """

    frames: np.ndarray
    transforms: dict[str, np.ndarray]
    statuses: dict[str, list[str]]
    timestamps: np.ndarray
    fields: dict[str, str] = field(default_factory=dict)
    frame_fields: list[dict[str, str]] = field(default_factory=list)


def write_sequence_metafile(
    path: str | os.PathLike,
    frames: Any,
    poses: np.ndarray,
    spacing: Any,
    *,
    extra_poses: Mapping[str, np.ndarray] | None = None,
    timestamps: np.ndarray | None = None,
    frame_rate_hz: float = 20.0,
    orientation: str = "MF",
    reference_to_ras: np.ndarray = IMAGE_MM_TO_RAS,
    compress: bool = True,
    chunk_frames: int = 64,
) -> Path:
    """Write a tracked sweep as a PLUS sequence metafile (``.seq.mha``) for Slicer playback.

    Each frame gets ``Seq_FrameXXXX_ImageToReferenceTransform`` (16 numbers, row-major; see
    :func:`image_to_reference_matrices`) with ``...TransformStatus = OK`` (``INVALID`` and an
    identity matrix where the pose has NaN/inf), ``Timestamp``, ``UnfilteredTimestamp``,
    ``FrameNumber`` and ``ImageStatus = OK``. Every entry of ``extra_poses`` adds a second
    transform per frame named ``<name>ToReference`` (e.g. ``{"TrueImage": gt_poses}``), so the
    predicted and the true trajectory can be compared in one Slicer sequence browser.
    ``ElementDataFile = LOCAL`` is the last header line; pixel data follow (zlib with
    ``CompressedDataSize`` when ``compress``). Written atomically.

    Args:
        path: output ``.mha`` file (``.seq.mha`` recommended).
        frames: ``(N, H, W)`` uint8 array or lazy array (read ``chunk_frames`` at a time).
        poses: ``(N, 4, 4)`` global poses ``T_{0<-i}`` in corner-origin image mm.
        spacing: ``(sx, sy)`` mm/pixel or the ``(4, 4)`` scale ``S``.
        extra_poses: more ``(N, 4, 4)`` pose sets by frame name (letters and digits only).
        timestamps: ``(N,)`` seconds; default ``i / frame_rate_hz`` (TUS-REC records at 20 Hz).
        frame_rate_hz: used when ``timestamps`` is ``None``.
        orientation: ``UltrasoundImageOrientation`` (``MF``: first row = near the transducer).
        reference_to_ras: rigid reference mm -> RAS map (default :data:`IMAGE_MM_TO_RAS`).
        compress: zlib-compress the pixel data.
        chunk_frames: frames read and written at once.

    Returns:
        The written path.
    """
    path = Path(path)
    if path.suffix.lower() != ".mha":
        raise ValueError(f"{path}: a sequence metafile must end in .mha (e.g. sweep.seq.mha)")
    shape = tuple(getattr(frames, "shape", ()))
    if len(shape) != 3:
        raise ValueError(f"frames must be (N, H, W), got shape {shape}")
    n, h, w = (int(x) for x in shape)
    sets = {"Image": np.asarray(poses, dtype=np.float64)}
    for name, value in (extra_poses or {}).items():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", name) or name in sets:
            raise ValueError(f"invalid or duplicate pose set name {name!r} (letters and digits)")
        sets[name] = np.asarray(value, dtype=np.float64)
    for name, value in sets.items():
        if value.shape != (n, 4, 4):
            raise ValueError(f"{name} poses must be ({n}, 4, 4) to match {n} frames, got {value.shape}")
    if timestamps is None:
        timestamps = np.arange(n) / float(frame_rate_hz)
    timestamps = np.asarray(timestamps, dtype=np.float64)
    if timestamps.shape != (n,):
        raise ValueError(f"timestamps must be ({n},), got {timestamps.shape}")
    if not re.fullmatch(r"[MU][FN][AD]?", orientation):
        raise ValueError(f"orientation must be like 'MF', 'UN' or 'MFA', got {orientation!r}")
    mats = {name: image_to_reference_matrices(p, spacing, reference_to_ras) for name, p in sets.items()}

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=path.parent) as body:
        comp = zlib.compressobj(1) if compress else None
        for a in range(0, n, chunk_frames):
            block = np.asarray(frames[a:min(n, a + chunk_frames)])
            if block.dtype != np.uint8:
                raise ValueError(f"frames must be uint8, got {block.dtype}")
            chunk = np.ascontiguousarray(block).tobytes()
            body.write(comp.compress(chunk) if comp else chunk)
        if comp:
            body.write(comp.flush())
        size = body.tell()

        head = [
            "ObjectType = Image",
            "NDims = 3",
            "AnatomicalOrientation = RAI",
            "BinaryData = True",
            "BinaryDataByteOrderMSB = False",
            "CenterOfRotation = 0 0 0",
            f"CompressedData = {'True' if compress else 'False'}",
        ]
        if compress:
            head.append(f"CompressedDataSize = {size}")
        head += [
            f"DimSize = {w} {h} {n}",
            "ElementNumberOfChannels = 1",
            "ElementSpacing = 1 1 1",
            "Offset = 0 0 0",
            "TransformMatrix = 1 0 0 0 1 0 0 0 1",
            "Kinds = domain domain list",
            f"UltrasoundImageOrientation = {orientation}",
            "UltrasoundImageType = BRIGHTNESS",
        ]
        for i in range(n):
            pre = f"Seq_Frame{i:04d}_"
            head.append(f"{pre}FrameNumber = {i}")
            for name, m in mats.items():
                ok = bool(np.all(np.isfinite(m[i])))
                vals = m[i] if ok else np.eye(4)
                head.append(f"{pre}{name}ToReferenceTransform = " + " ".join(_fmt(x) for x in vals.ravel()))
                head.append(f"{pre}{name}ToReferenceTransformStatus = {'OK' if ok else 'INVALID'}")
            head.append(f"{pre}Timestamp = {timestamps[i]:.6f}")
            head.append(f"{pre}UnfilteredTimestamp = {timestamps[i]:.6f}")
            head.append(f"{pre}ImageStatus = OK")
        head += ["ElementType = MET_UCHAR", "ElementDataFile = LOCAL"]
        with atomic_write(path) as tmp, open(tmp, "wb") as f:
            f.write(("\n".join(head) + "\n").encode("ascii"))
            body.seek(0)
            shutil.copyfileobj(body, f, 1 << 20)
    log.info("wrote %s (%d frames %dx%d, transforms: %s)", path, n, h, w, ", ".join(mats))
    return path


def read_sequence_metafile(path: str | os.PathLike) -> SequenceMetafile:
    """Read a single-file PLUS sequence metafile (``ElementDataFile = LOCAL``, ``MET_UCHAR``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a MetaIO image, unsupported element type or data size mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sequence metafile not found: {path}")
    fields: dict[str, str] = {}
    per_frame: dict[int, dict[str, str]] = {}
    with open(path, "rb") as f:
        while True:
            raw = f.readline()
            if not raw:
                raise ValueError(f"{path}: header ends without 'ElementDataFile' (truncated file?)")
            line = raw.decode("ascii", errors="replace").strip()
            if not line:
                continue
            if " = " not in line and "=" not in line:
                raise ValueError(f"{path}: malformed header line {line!r}")
            key, value = (s.strip() for s in line.split("=", 1))
            match = re.fullmatch(r"Seq_Frame(\d+)_(.+)", key)
            if match:
                per_frame.setdefault(int(match.group(1)), {})[match.group(2)] = value
            else:
                fields[key] = value
            if key == "ElementDataFile":
                break
        payload = f.read()
    if fields.get("ObjectType") != "Image":
        raise ValueError(f"{path}: not a MetaIO image (ObjectType {fields.get('ObjectType')!r})")
    if fields.get("ElementDataFile") != "LOCAL":
        raise ValueError(f"{path}: only ElementDataFile = LOCAL is supported")
    if fields.get("ElementType") != "MET_UCHAR":
        raise ValueError(f"{path}: only MET_UCHAR frames are supported, got {fields.get('ElementType')!r}")
    dims = [int(x) for x in fields.get("DimSize", "").split()]
    if len(dims) != 3:
        raise ValueError(f"{path}: DimSize must have 3 numbers (W H N), got {fields.get('DimSize')!r}")
    w, h, n = dims
    if fields.get("CompressedData", "False").lower() == "true":
        expected = int(fields.get("CompressedDataSize", len(payload)))
        payload = zlib.decompress(payload[:expected])
    if len(payload) != w * h * n:
        raise ValueError(f"{path}: pixel data has {len(payload)} bytes, expected W*H*N = {w * h * n}")
    frames = np.frombuffer(payload, dtype=np.uint8).reshape(n, h, w).copy()
    if sorted(per_frame) != list(range(n)):
        raise ValueError(f"{path}: per-frame fields found for {len(per_frame)} frames, DimSize says {n}")
    frame_fields = [per_frame[i] for i in range(n)]
    names = sorted(
        {k[: -len("Transform")] for ff in frame_fields for k in ff if k.endswith("Transform")}
    )
    transforms: dict[str, np.ndarray] = {}
    statuses: dict[str, list[str]] = {}
    for name in names:
        mats = np.full((n, 4, 4), np.nan)
        stat = []
        for i, ff in enumerate(frame_fields):
            s = ff.get(f"{name}TransformStatus", "OK")
            stat.append(s)
            text = ff.get(f"{name}Transform")
            if text is not None and s == "OK":
                vals = [float(x) for x in text.split()]
                if len(vals) != 16:
                    raise ValueError(f"{path}: frame {i} {name}Transform has {len(vals)} numbers, not 16")
                mats[i] = np.array(vals).reshape(4, 4)
        transforms[name] = mats
        statuses[name] = stat
    timestamps = np.array([float(ff.get("Timestamp", "nan")) for ff in frame_fields])
    return SequenceMetafile(frames, transforms, statuses, timestamps, fields, frame_fields)
