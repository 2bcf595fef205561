"""Report figures (PNG, matplotlib's Agg renderer) and a self-contained HTML page.

Every plotting function writes one PNG atomically and returns its path. Poses follow
:mod:`dualtrack.geometry`: global poses ``(N, 4, 4)`` ``T_{0<-i}`` in corner-origin image mm of
frame 0, so trajectory plots are drawn in frame-0 image mm (``x`` lateral, ``y`` depth, ``z``
elevation). Figures are built with :class:`matplotlib.figure.Figure` (no pyplot, no global
backend switch), so the functions are safe in headless runs and worker threads.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from dualtrack.geometry import image_points, transform_points
from dualtrack.reconstruction.compounding import Volume, as_scale_matrix
from dualtrack.utils import atomic_write

log = logging.getLogger(__name__)

__all__ = [
    "plot_trajectory_3d",
    "plot_drift",
    "plot_orthogonal_slices",
    "central_slices_on_common_grid",
    "plot_boxplots",
    "write_html_report",
]

_TRUE_COLOUR = "#1f77b4"
_PRED_COLOUR = "#d62728"
_MEDIAN_COLOUR = "#ff7f0e"
_MEAN_COLOUR = "#2ca02c"


def _save(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    log.info("wrote %s", path)
    return path


def _outline(corners: np.ndarray) -> np.ndarray:
    """Closed outline ``(5, 3)`` from TUS-REC corner order (1,1), (W,1), (1,H), (W,H)."""
    return corners[[0, 1, 3, 2, 0]]


def plot_trajectory_3d(
    g_gt: np.ndarray | None,
    g_pred: np.ndarray | None,
    shape: tuple[int, int],
    scale: Any,
    path: str | os.PathLike,
    *,
    every: int | None = None,
    title: str = "Probe trajectory",
) -> Path:
    """3-D plot of the image-centre path and frame outlines, true vs predicted.

    Args:
        g_gt: ``(N, 4, 4)`` true global poses ``T_{0<-i}`` (or ``None``).
        g_pred: ``(N, 4, 4)`` predicted global poses (or ``None``); at least one is required.
        shape: frame size ``(H, W)``.
        scale: ``(4, 4)`` pixel -> mm ``S`` or spacing ``(sx, sy)``.
        path: output PNG.
        every: draw a frame outline every ``every`` frames (default: about 8 outlines).
        title: figure title.
    """
    sets = [(g, lbl, c) for g, lbl, c in ((g_gt, "true", _TRUE_COLOUR), (g_pred, "predicted", _PRED_COLOUR))
            if g is not None]
    if not sets:
        raise ValueError("plot_trajectory_3d needs g_gt or g_pred")
    s_mat = as_scale_matrix(scale)
    five = image_points(shape, s_mat, "five")
    fig = Figure(figsize=(7, 6))
    ax = fig.add_subplot(projection="3d")
    for g, label, colour in sets:
        g = np.asarray(g, dtype=np.float64)
        if g.ndim != 3 or g.shape[1:] != (4, 4):
            raise ValueError(f"{label} poses must be (N, 4, 4), got {g.shape}")
        pts = transform_points(g, five)  # (N, 5, 3)
        centre = pts[:, 4]
        ax.plot(centre[:, 0], centre[:, 1], centre[:, 2], color=colour, lw=2, label=f"{label} image centre")
        step = every or max(1, math.ceil(len(g) / 8))
        idx = sorted(set(range(0, len(g), step)) | {len(g) - 1})
        for k, i in enumerate(idx):
            o = _outline(pts[i, :4])
            ax.plot(o[:, 0], o[:, 1], o[:, 2], color=colour, lw=0.8, alpha=0.6,
                    label=f"{label} frame outline" if k == 0 else None)
    ax.set_xlabel("x lateral (mm)")
    ax.set_ylabel("y depth (mm)")
    ax.set_zlabel("z elevation (mm)")
    ax.invert_yaxis()
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_drift(
    drift_curves: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    *,
    title: str = "Drift of the image centre",
    frame_rate_hz: float | None = None,
) -> Path:
    """Drift (distance of the predicted from the true image centre) along the sweep.

    Args:
        drift_curves: ``{label: (N,) drift in mm per frame}`` (e.g. one per method).
        path: output PNG.
        title: figure title.
        frame_rate_hz: if given, the x axis is time in seconds instead of frame index.
    """
    if not drift_curves:
        raise ValueError("plot_drift needs at least one curve")
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for label, curve in drift_curves.items():
        y = np.asarray(curve, dtype=np.float64).ravel()
        x = np.arange(len(y)) / frame_rate_hz if frame_rate_hz else np.arange(len(y))
        ax.plot(x, y, lw=1.5, label=f"{label} (final {y[-1]:.1f} mm)" if len(y) else label)
    ax.set_xlabel("time (s)" if frame_rate_hz else "frame")
    ax.set_ylabel("drift (mm)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _as_volume(vol: Volume | np.ndarray) -> Volume:
    """A :class:`Volume` as float32; a plain ``(D, H, W)`` array gets unit voxels at the origin."""
    if isinstance(vol, Volume):
        data = np.asarray(vol.data, dtype=np.float32)
        if data.ndim != 3:
            raise ValueError(f"volume must be 3-D (D, H, W), got shape {data.shape}")
        return Volume(data, np.asarray(vol.spacing, float), np.asarray(vol.origin, float),
                      np.asarray(vol.direction, float))
    data = np.asarray(vol, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"volume must be 3-D (D, H, W), got shape {data.shape}")
    return Volume(data, np.ones(3), np.zeros(3), np.eye(3))


def central_slices_on_common_grid(
    volumes: Sequence[Volume | np.ndarray],
) -> tuple[list[list[np.ndarray]], list[tuple[float, float, float, float]], np.ndarray]:
    """The three central orthogonal slices of several volumes, all resampled on one common grid.

    The common grid has the first volume's axes (``direction``), the finest spacing of all
    volumes on each axis, and the union of their extents, so the same row and column of every
    volume's slice is the same point in reference (frame-0 image) mm and the central planes cut
    every volume at the same place. Voxels are sampled trilinearly (0 outside a volume).

    Args:
        volumes: :class:`Volume` s (a plain ``(D, H, W)`` array counts as unit voxels at the origin).

    Returns:
        ``(slices, extents, direction)``: ``slices[v]`` = ``[k-plane (nj, ni), j-plane (nk, ni),
        i-plane (nk, nj)]`` of volume ``v``; ``extents[a]`` = matplotlib ``imshow`` extent
        ``(left, right, bottom, top)`` in mm along the common axes for plane ``a`` (rows run down
        the second axis); ``direction`` = the common ``(3, 3)`` axes (columns i, j, k).
    """
    from scipy.ndimage import map_coordinates

    vols = [_as_volume(v) for v in volumes]
    direction = vols[0].direction
    spacing = np.min([v.spacing for v in vols], axis=0)
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for v in vols:
        ni, nj, nk = v.shape_ijk
        corners = np.array([[a, b, c] for a in (0, ni - 1) for b in (0, nj - 1) for c in (0, nk - 1)], float)
        along = v.index_to_reference(corners) @ direction  # coordinates along the common axes
        lo, hi = np.minimum(lo, along.min(0)), np.maximum(hi, along.max(0))
    size = np.floor((hi - lo) / spacing + 1e-9).astype(int) + 1
    axes = [lo[a] + spacing[a] * np.arange(size[a]) for a in range(3)]
    centre = [axes[a][size[a] // 2] for a in range(3)]

    def plane(a: int, b: int, fixed: int) -> np.ndarray:
        """Points ``(len(axes[b]), len(axes[a]), 3)`` along the common axes: ``a`` across, ``b`` down."""
        grid = np.zeros((len(axes[b]), len(axes[a]), 3))
        grid[..., a] = axes[a][None, :]
        grid[..., b] = axes[b][:, None]
        grid[..., fixed] = centre[fixed]
        return grid

    planes = [plane(0, 1, 2), plane(0, 2, 1), plane(1, 2, 0)]
    slices = []
    for v in vols:
        inv = np.linalg.inv(v.affine)
        out = []
        for pts in planes:
            ref = pts.reshape(-1, 3) @ direction.T  # common-axis coordinates -> reference mm
            ijk = transform_points(inv, ref)
            sample = map_coordinates(v.data, ijk[:, ::-1].T, order=1, mode="constant", cval=0.0)
            out.append(sample.reshape(pts.shape[:2]).astype(np.float32))
        slices.append(out)
    half = spacing / 2
    extents = [
        (axes[a][0] - half[a], axes[a][-1] + half[a], axes[b][-1] + half[b], axes[b][0] - half[b])
        for a, b in ((0, 1), (0, 2), (1, 2))
    ]
    return slices, extents, direction


def plot_orthogonal_slices(
    vol_pred: Volume | np.ndarray,
    vol_true: Volume | np.ndarray | None,
    path: str | os.PathLike,
    *,
    labels: tuple[str, str] = ("predicted", "true"),
    title: str = "Reconstructed volume: central slices",
) -> Path:
    """Central orthogonal slices, one row per volume, on one common grid with one grey window.

    Both volumes are resampled on a common grid (:func:`central_slices_on_common_grid`), so the
    rows cut the same planes in space and differences show the trajectory, not the grids. Axes are
    in mm along the grid axes; for volumes in frame-0 axes (``frame="first"``) these are the lateral
    ``x``, depth ``y`` and elevation ``z`` of frame 0 (plain arrays are shown in voxels). The window
    is the 1st-99.5th percentile of the non-zero voxels of both volumes, so equal intensities look
    equal in both rows. Columns: the ``x``-``y`` plane (the plane of frame 0), ``x``-``z`` and
    ``y``-``z``.

    Args:
        vol_pred: :class:`Volume` or ``(D, H, W)`` array.
        vol_true: the second volume or ``None``.
        path: output PNG.
        labels: row labels.
        title: figure title.
    """
    inputs = [vol_pred] if vol_true is None else [vol_pred, vol_true]
    unit = "mm" if all(isinstance(v, Volume) for v in inputs) else "voxels"
    slices, extents, direction = central_slices_on_common_grid(inputs)
    names = (
        ("lateral x", "depth y", "elevation z")
        if np.allclose(direction, np.eye(3), atol=1e-6)
        else ("grid axis i", "grid axis j", "grid axis k")
    )
    nonzero = np.concatenate([img[img > 0].ravel() for row in slices for img in row])
    lo, hi = (np.percentile(nonzero, [1, 99.5]) if nonzero.size else (0.0, 1.0))
    hi = hi if hi > lo else lo + 1.0
    fig = Figure(figsize=(11, 3.4 * len(slices)), layout="constrained")
    axes = fig.subplots(len(slices), 3, squeeze=False)
    views = ((0, 1), (0, 2), (1, 2))
    for row, imgs in enumerate(slices):
        for col, (img, (a, b)) in enumerate(zip(imgs, views, strict=True)):
            ax = axes[row, col]
            im = ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest", aspect="equal",
                           extent=extents[col])
            ax.set_title(f"{labels[row]}: {names[a].split()[-1]}-{names[b].split()[-1]} plane", fontsize=9)
            ax.set_xlabel(f"{names[a]} ({unit})")
            ax.set_ylabel(f"{names[b]} ({unit})")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="intensity")
    fig.suptitle(title)
    return _save(fig, path)


def _metric_values(rows: Any, metric: str, method: str) -> np.ndarray:
    items: Iterable[Any] = rows.values() if isinstance(rows, Mapping) else rows
    out = []
    for row in items:
        if isinstance(row, Mapping):
            if metric not in row:
                raise ValueError(f"plot_boxplots: method {method!r} has a scan without metric {metric!r}")
            out.append(float(row[metric]))
        else:
            out.append(float(row))
    return np.array(out)


def plot_boxplots(
    tables: Mapping[str, Any],
    metric: str,
    path: str | os.PathLike,
    *,
    unit: str = "mm",
    title: str | None = None,
) -> Path:
    """Box plots of per-scan errors, one box per method, with the scans as points.

    Args:
        tables: ``{method: per-scan values}`` where the values are ``{scan: {metric: value}}``
            (the evaluation tables), a list of ``{metric: value}`` rows, or plain numbers.
        metric: the metric to plot (e.g. ``"GPE"``).
        path: output PNG.
        unit: axis unit.
        title: figure title (default: the metric).
    """
    if not tables:
        raise ValueError("plot_boxplots needs at least one method")
    names = list(tables)
    values = [_metric_values(tables[m], metric, m) for m in names]
    if any(len(v) == 0 for v in values):
        raise ValueError("plot_boxplots: a method has no scans")
    fig = Figure(figsize=(max(4.0, 1.3 * len(names) + 2), 4))
    ax = fig.add_subplot()
    ax.boxplot(values, showmeans=True, medianprops={"color": _MEDIAN_COLOUR},
               meanprops={"marker": "^", "markerfacecolor": _MEAN_COLOUR, "markeredgecolor": _MEAN_COLOUR})
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20 if len(names) > 3 else 0)
    rng = np.random.default_rng(0)
    for k, v in enumerate(values, start=1):
        ax.scatter(k + rng.uniform(-0.12, 0.12, len(v)), v, s=10, alpha=0.6, color="k", zorder=3)
    ax.set_ylabel(f"{metric} ({unit})" if unit else metric)
    ax.set_title(title or f"{metric} per scan (n = {', '.join(str(len(v)) for v in values)})")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=_box_legend(), loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _save(fig, path)


def _box_legend() -> list[Any]:
    """Legend entries for every marker of :func:`plot_boxplots`."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    return [
        Line2D([], [], color=_MEDIAN_COLOUR, label="median"),
        Line2D([], [], marker="^", linestyle="", color=_MEAN_COLOUR, label="mean"),
        Patch(facecolor="none", edgecolor="k", label="box: 25th-75th percentile"),
        Line2D([], [], color="k", label="whiskers: last scan within 1.5 x box height"),
        Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="k",
               label="circle: scan beyond the whiskers"),
        Line2D([], [], marker="o", linestyle="", color="k", alpha=0.6, markersize=4, label="dot: one scan"),
    ]


def _cell(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return html.escape(f"{v:.4g}" if math.isfinite(v) else str(v))
    return html.escape(str(value))


def write_html_report(
    path: str | os.PathLike,
    title: str,
    metrics_table: Sequence[Mapping[str, Any]],
    images: Sequence[tuple[str, str | os.PathLike]],
    notes: str | Sequence[str] = (),
) -> Path:
    """One self-contained HTML page: title, notes, a metrics table and embedded PNG figures.

    Images are embedded as base64 ``data:`` URIs, so the page can be moved or mailed alone. All
    user strings (title, notes, table keys and values, captions) are HTML-escaped.

    Args:
        path: output ``.html``.
        title: page title.
        metrics_table: rows (dicts); the columns are the union of their keys in first-seen order,
            floats shown with 4 significant digits, missing cells empty.
        images: ``(caption, png_path)`` pairs.
        notes: a paragraph or a list of paragraphs shown under the title.

    Returns:
        The written path.
    """
    paragraphs = [notes] if isinstance(notes, str) else list(notes)
    columns: list[str] = []
    for row in metrics_table:
        columns += [str(k) for k in row if str(k) not in columns]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #bbb;padding:4px 8px;"
        "text-align:right}th{background:#eee}td:first-child,th:first-child{text-align:left}"
        "figure{margin:1.5em 0}img{max-width:100%}figcaption{color:#555;font-size:0.9em}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    parts += [f"<p>{html.escape(str(p))}</p>" for p in paragraphs]
    if metrics_table:
        parts.append('<h2>Metrics</h2><table class="metrics"><thead><tr>')
        parts += [f"<th>{html.escape(c)}</th>" for c in columns]
        parts.append("</tr></thead><tbody>")
        for row in metrics_table:
            keyed = {str(k): v for k, v in row.items()}
            cells = "".join(f"<td>{_cell(keyed[c]) if c in keyed else ''}</td>" for c in columns)
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</tbody></table>")
    if images:
        parts.append("<h2>Figures</h2>")
    for caption, png in images:
        png = Path(png)
        if not png.is_file():
            raise FileNotFoundError(f"report image not found: {png}")
        b64 = base64.b64encode(png.read_bytes()).decode("ascii")
        cap = html.escape(caption)
        parts.append(
            f'<figure><img alt="{cap}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{cap}</figcaption></figure>"
        )
    parts.append("</body></html>")
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    log.info("wrote %s", path)
    return path
