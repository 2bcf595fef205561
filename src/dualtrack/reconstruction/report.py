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
    "plot_boxplots",
    "write_html_report",
]

_TRUE_COLOUR = "#1f77b4"
_PRED_COLOUR = "#d62728"


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


def _as_data(vol: Volume | np.ndarray) -> np.ndarray:
    data = vol.data if isinstance(vol, Volume) else np.asarray(vol)
    if data.ndim != 3:
        raise ValueError(f"volume must be 3-D (D, H, W), got shape {data.shape}")
    return np.asarray(data, dtype=np.float32)


def plot_orthogonal_slices(
    vol_pred: Volume | np.ndarray,
    vol_true: Volume | np.ndarray | None,
    path: str | os.PathLike,
    *,
    labels: tuple[str, str] = ("predicted", "true"),
    title: str = "Reconstructed volume: central slices",
) -> Path:
    """Central slices along each grid axis, one row per volume, with one shared window/level.

    The window is the 1st-99.5th percentile of the non-zero voxels of both volumes, so equal
    intensities look equal in both rows. Columns: the central ``k`` slice (the plane of frame 0
    for ``frame="first"``: lateral ``i`` across, depth ``j`` down), the central ``j`` slice
    (``i`` across, elevation ``k`` down) and the central ``i`` slice (``j`` across, ``k`` down).

    Args:
        vol_pred: :class:`Volume` or ``(D, H, W)`` array.
        vol_true: the second volume or ``None``.
        path: output PNG.
        labels: row labels.
        title: figure title.
    """
    vols = [(labels[0], _as_data(vol_pred))]
    if vol_true is not None:
        vols.append((labels[1], _as_data(vol_true)))
    nonzero = np.concatenate([v[v > 0].ravel() for _, v in vols])
    lo, hi = (np.percentile(nonzero, [1, 99.5]) if nonzero.size else (0.0, 1.0))
    hi = hi if hi > lo else lo + 1.0
    fig = Figure(figsize=(11, 3.4 * len(vols)), layout="constrained")
    axes = fig.subplots(len(vols), 3, squeeze=False)
    for row, (label, v) in enumerate(vols):
        d, h, w = v.shape
        views = [(v[d // 2], "k", "i", "j"), (v[:, h // 2], "j", "i", "k"), (v[:, :, w // 2], "i", "j", "k")]
        for col, (img, name, xlab, ylab) in enumerate(views):
            ax = axes[row, col]
            im = ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest", aspect="equal")
            ax.set_title(f"{label}: central {name} slice ({xlab}-{ylab} plane)", fontsize=9)
            ax.set_xlabel(xlab)
            ax.set_ylabel(ylab)
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
    ax.boxplot(values, showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20 if len(names) > 4 else 0)
    rng = np.random.default_rng(0)
    for k, v in enumerate(values, start=1):
        ax.scatter(k + rng.uniform(-0.12, 0.12, len(v)), v, s=10, alpha=0.6, color="k", zorder=3)
    ax.set_ylabel(f"{metric} ({unit})" if unit else metric)
    ax.set_title(title or f"{metric} per scan (n = {', '.join(str(len(v)) for v in values)})")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


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
