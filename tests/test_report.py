"""Report figures are real PNGs; the HTML page is self-contained and escapes user text."""

from __future__ import annotations

import base64
import html
import re

import numpy as np
import pytest

from dualtrack.geometry import params_to_matrix
from dualtrack.reconstruction.compounding import Volume
from dualtrack.reconstruction.report import (
    central_slices_on_common_grid,
    plot_boxplots,
    plot_drift,
    plot_orthogonal_slices,
    plot_trajectory_3d,
    write_html_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def poses(n: int, drift: float = 0.0) -> np.ndarray:
    p = np.zeros((n, 6))
    p[:, 2] = np.arange(n) * 0.5
    p[:, 0] = np.arange(n) * drift
    return params_to_matrix(p)


def test_trajectory_drift_and_boxplots_write_pngs(tmp_path):
    a = plot_trajectory_3d(poses(30), poses(30, 0.05), (48, 64), (0.2, 0.2), tmp_path / "traj.png", every=5)
    b = plot_trajectory_3d(None, poses(30), (48, 64), (0.2, 0.2), tmp_path / "pred_only.png")
    curves = {"dualtrack": np.linspace(0, 2, 30), "two_frame": np.linspace(0, 5, 30)}
    c = plot_drift(curves, tmp_path / "drift.png")
    tables = {
        "dualtrack": {"s1": {"GPE": 1.0}, "s2": {"GPE": 2.0}, "s3": {"GPE": 1.5}},
        "two_frame": [{"GPE": 3.0}, {"GPE": 4.5}],
        "identity": [9.0, 11.0, 10.0],
    }
    d = plot_boxplots(tables, "GPE", tmp_path / "box.png")
    for path in (a, b, c, d):
        w, h = png_size(path)
        assert w > 200 and h > 200
    with pytest.raises(ValueError, match="GPE"):
        plot_boxplots({"m": [{"LPE": 1.0}]}, "GPE", tmp_path / "bad.png")
    with pytest.raises(ValueError):
        plot_trajectory_3d(None, None, (48, 64), (0.2, 0.2), tmp_path / "none.png")


def test_orthogonal_slices_share_one_window(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(1, 200, (12, 14, 16)).astype(np.float32)
    vol = Volume(data=data, spacing=np.ones(3), origin=np.zeros(3), direction=np.eye(3))
    one = plot_orthogonal_slices(vol, None, tmp_path / "one.png")
    two = plot_orthogonal_slices(vol, data * 0.5, tmp_path / "two.png")
    _, h1 = png_size(one)
    _, h2 = png_size(two)
    assert h2 > 1.5 * h1  # two rows
    with pytest.raises(ValueError, match="3-D"):
        plot_orthogonal_slices(np.zeros((3, 3)), None, tmp_path / "bad.png")


def _sampled(origin: np.ndarray, n: int) -> Volume:
    """A smooth blob sampled on an n^3 grid of 1 mm voxels starting at ``origin`` (reference mm)."""
    idx = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).astype(float)  # (i, j, k)
    pts = idx + origin
    blob = np.exp(-((pts - [9.0, 10.0, 11.0]) ** 2).sum(-1) / 20.0) * 100 + pts[..., 0]
    return Volume(data=blob.transpose(2, 1, 0).astype(np.float32), spacing=np.ones(3),
                  origin=np.asarray(origin, float), direction=np.eye(3))


def test_slices_of_two_grids_are_cut_on_one_common_grid_in_mm():
    a, b = _sampled(np.zeros(3), 20), _sampled(np.array([2.0, 2.0, 2.0]), 20)
    slices, extents, direction = central_slices_on_common_grid([a, b])
    assert np.allclose(direction, np.eye(3))
    # union of both extents (0..21 mm on each axis) at 1 mm; extents are voxel edges in mm
    assert extents[0] == pytest.approx((-0.5, 21.5, 21.5, -0.5))
    for pa, pb in zip(slices[0], slices[1], strict=True):
        assert pa.shape == pb.shape == (22, 22)
        # where both volumes have data, the same pixel is the same point in space: same value
        np.testing.assert_allclose(pa[2:20, 2:20], pb[2:20, 2:20], atol=1e-3)
    # outside a volume its slice is empty
    assert np.all(slices[0][0][:, 21] == 0) and np.all(slices[1][0][:, 0] == 0)
    # cut per grid (the old figure) the two central planes differ: the common grid is what aligns them
    assert not np.allclose(a.data[10], b.data[10], atol=1e-3)


def test_html_report_is_self_contained_and_escaped(tmp_path):
    png = plot_drift({"m": np.arange(5.0)}, tmp_path / "drift.png")
    rows = [
        {"method": "dualtrack", "GPE": 4.91234, "FDR (%)": 7.5},
        {"method": "<script>alert(1)</script>", "GPE": float("nan"), "extra": "x&y"},
    ]
    out = write_html_report(
        tmp_path / "sub" / "report.html", "Demo <run> & results", rows, [("drift <curve>", png)],
        notes=["Short demo run: numbers are illustrative.", "a < b"],
    )
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "<script>" not in text
    assert html.escape("<script>alert(1)</script>") in text
    assert "<title>Demo &lt;run&gt; &amp; results</title>" in text
    assert "a &lt; b" in text and "drift &lt;curve&gt;" in text
    # the metrics table: header = union of keys in order, values formatted, missing cells empty
    header = re.findall(r"<th>(.*?)</th>", text)
    assert header == ["method", "GPE", "FDR (%)", "extra"]
    cells = re.findall(r"<tr>(.*?)</tr>", text)
    assert re.findall(r"<td>(.*?)</td>", cells[0]) == ["dualtrack", "4.912", "7.5", ""]
    assert re.findall(r"<td>(.*?)</td>", cells[1])[1:] == ["nan", "", "x&amp;y"]
    # the image is embedded, byte for byte, and nothing is linked
    blobs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(blobs) == 1 and base64.b64decode(blobs[0]) == png.read_bytes()
    assert not re.search(r'(src|href)="(?!data:)', text)
    with pytest.raises(FileNotFoundError):
        write_html_report(tmp_path / "r2.html", "t", rows, [("missing", tmp_path / "nope.png")])
