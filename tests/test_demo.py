"""`dualtrack demo --quick` end to end: dataset, runs, evaluation, volumes, Slicer files and report."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from dualtrack.cli import main
from dualtrack.data.trajectory import read_trajectory
from dualtrack.demo import DEMO_LABEL, OUTPUT_ENTRIES, findings, format_summary, results_markdown, run_demo
from dualtrack.evaluation.evaluate import read_table
from dualtrack.reconstruction.export import read_nrrd, read_sequence_metafile

PAPER = ("GPE (mm)", "LPE (mm)", "FDR (%)", "max drift (mm)")
OFFICIAL = ("GPE all-pixel (mm)", "LPE all-pixel (mm)", "GLE (mm)", "LLE (mm)")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return run_demo(tmp_path_factory.mktemp("demo") / "out", quick=True)


def test_outputs_exist(demo):
    out = demo.out_dir
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_ENTRIES)
    for stage in ("local", "global", "fusion"):
        assert (demo.runs[stage] / "last.pt").is_file()
    splits = demo.splits
    assert not set(splits["test"]) & (set(splits["train"]) | set(splits["val"]))
    assert demo.test_scan.startswith(f"sub{splits['test'][0]}__")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["note"] == DEMO_LABEL and summary["test_scan"] == demo.test_scan


def test_metrics_table_is_finite_and_positive(demo):
    rows = {row["method"]: row for row in demo.table}
    assert set(rows) == {
        "DualTrack (demo)", "local-only (stage 1)", "global-only (stage 2)", "identity (no motion)"
    }
    for row in rows.values():
        assert row["test scans"] >= 1
        for col in PAPER + OFFICIAL:
            assert math.isfinite(row[col]) and row[col] > 0, (row["method"], col, row[col])
        assert math.isfinite(row["TUS-REC score"])
    assert rows["identity (no motion)"]["TUS-REC score"] == 0.0
    # the table is the mean of the per-scan files written by the evaluation
    table = read_table(demo.out_dir / "evaluation" / "dualtrack" / "metrics.csv")
    assert rows["DualTrack (demo)"]["GPE (mm)"] == pytest.approx(np.mean([r["GPE"] for r in table.values()]))
    # paper 5-point GPE and official all-pixel GPE measure nearly the same thing
    dt = rows["DualTrack (demo)"]
    assert 0.5 < dt["GPE all-pixel (mm)"] / dt["GPE (mm)"] < 1.5


def test_volumes_and_slicer_files(demo):
    pred, true = (read_nrrd(demo.volumes[k]) for k in ("predicted", "true"))
    for vol in (pred, true):
        assert vol.data.ndim == 3 and np.isfinite(vol.data).all()
        assert (vol.data > 0).mean() > 0.2  # the sweep fills a good part of its bounding box
    seq = read_sequence_metafile(demo.sequence)
    traj = read_trajectory(demo.prediction / "trajectory.h5")
    assert seq.frames.shape[0] == traj.global_.shape[0]
    assert set(seq.transforms) >= {"ImageToReference", "TrueImageToReference"}


def test_html_report(demo):
    html = demo.report.read_text()
    assert "not the paper" in html and "Short demo run" in html
    assert html.count("<tr>") == 1 + len(demo.table)  # header + one row per method
    assert len(re.findall(r'src="data:image/png;base64,', html)) == len(demo.figures) == 5
    for png in demo.figures.values():
        assert png.stat().st_size > 5000
    text = format_summary(demo)
    assert "not the paper" in text and str(demo.report) in text and "DualTrack (demo)" in text


def test_refuses_non_empty_output(demo, capsys):
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_demo(demo.out_dir, quick=True)
    capsys.readouterr()
    assert main(["demo", "--quick", "-o", str(demo.out_dir)]) == 1
    err = capsys.readouterr().err
    assert "not empty" in err and "Traceback" not in err


def test_preset_too_small_for_the_plan(tmp_path):
    with pytest.raises(ValueError, match="smaller than the 'cpu' plan's 96x128"):
        run_demo(tmp_path / "out", preset="tiny")
    assert not (tmp_path / "out").exists()


def _rows(dual: float, local: float, glob: float, ident: float) -> list[dict]:
    labels = ("DualTrack (demo)", "local-only (stage 1)", "global-only (stage 2)", "identity (no motion)")
    return [{"method": m, "GPE (mm)": v, "test scans": 4} for m, v in zip(labels, (dual, local, glob, ident),
                                                                          strict=True)]


@pytest.mark.parametrize(
    ("gpes", "expected"),
    [
        ((2.84, 2.98, 17.1, 14.0), ["no better than predicting no motion", "no clear difference"]),
        ((2.0, 3.0, 17.1, 14.0), ["no better than predicting no motion", "fusion stage's extra training"]),
        ((2.0, 3.0, 9.0, 14.0), ["beats predicting no motion", "consistent with global context helping"]),
        ((3.5, 3.0, 9.0, 14.0), ["beats predicting no motion", "hurt"]),
    ],
)
def test_findings_follow_the_numbers(gpes, expected):
    text = " ".join(findings(_rows(*gpes)))
    for needle in expected:
        assert needle in text
    assert f"{gpes[0]:.3g} vs {gpes[1]:.3g} mm" in text


def test_summary_md_is_generated_from_summary_json(demo):
    summary = json.loads((demo.out_dir / "summary.json").read_text())
    assert (demo.out_dir / "summary.md").read_text() == results_markdown(summary)
    assert summary["findings"] == findings(demo.table)
    assert summary["machine"]["torch_threads"] >= 1
    html_text = demo.report.read_text()
    assert "What this run shows" in html_text
