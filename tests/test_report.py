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
