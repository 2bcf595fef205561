"""``dualtrack benchmark`` end to end on a tiny simulated dataset with every tiny model: the table's
structure and values, the files written, resuming without retraining, and config validation."""

from __future__ import annotations

import csv
import math
import re
import shutil
from pathlib import Path

import pytest

from dualtrack.cli import main
from dualtrack.evaluation.benchmark import (
    BenchmarkResult,
    benchmark_config_from_dict,
    format_paper_table,
    load_benchmark_config,
    run_benchmark,
)
from dualtrack.evaluation.evaluate import read_table
from dualtrack.training.config import ConfigError

MODELS = ["dclnet", "two_frame_cnn", "monet", "hybrid_transformer", "global_only", "local_only", "coupled",
          "dualtrack"]  # fmt: skip
POSITIVE = ["GPE", "LPE", "FDR", "max_drift", "tusrec_GPE", "tusrec_LPE", "tusrec_GLE", "tusrec_LLE"]


def settings(root: Path) -> list[str]:
    """The tiny benchmark on the session's ``tiny_dataset`` (3 subjects: 1 train, 1 val, 1 test)."""
    return ["data.simulate=null", f"data.root={root}", "data.val=1", "data.test=1"]


@pytest.fixture(scope="module")
def runs(
    tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[BenchmarkResult, BenchmarkResult, dict]:
    """The tiny benchmark run twice into the same folder (the second run must train nothing)."""
    out = tmp_path_factory.mktemp("bench_out")
    cfg = load_benchmark_config("benchmark_tiny", settings(tiny_dataset))
    first = run_benchmark(cfg, out, progress=False)
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/last.pt")}
    second = run_benchmark(cfg, out, progress=False)
    return first, second, mtimes


def _md_rows(text: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|")
    ]


def test_table_structure_and_values(runs) -> None:
    first, _, _ = runs
    assert [r["model"] for r in first.rows] == MODELS
    assert len(first.tables) == 8
    scans = set(first.tables["dualtrack"])
    assert len(scans) == 2  # 1 held-out subject x 2 scans
    for row in first.rows:
        assert set(first.tables[row["model"]]) == scans  # every model on the same scans
        assert row["n_scans"] == 2 and row["parameters"] > 0
        for metric in POSITIVE:
            value = row[f"{metric}_mean"]
            assert math.isfinite(value) and value > 0, (row["model"], metric, value)
        assert math.isfinite(row["final_score_mean"])
        assert row["final_score_mean"] < 1.0  # 1 would be a perfect trajectory
    # the ablation rows of the paper's block: global only, local only, coupled, DualTrack
    assert [r["ablation"] for r in first.rows if r["ablation"]] == ["010", "100", "110", "111"]
    # reused stages: the ablations are DualTrack's own stages
    assert first.plan.weights["local_only"] == first.plan.weights["dualtrack"].parent / "local"
    assert first.plan.weights["global_only"] == first.plan.weights["dualtrack"].parent / "global"


def test_markdown_table_matches_csv(runs) -> None:
    first, _, _ = runs
    out = first.out_dir
    rows = _md_rows((out / "table.md").read_text(encoding="utf-8"))
    header = rows[0]
    assert header[:5] == ["Method", "GPE (mm)", "LPE (µm)", "FDR (%)", "Max. drift (mm)"]
    assert "GPE all-px (mm)" in header and "Score" in header and header[-1] == "p GPE vs DualTrack"
    labels = [r[0] for r in rows[2:]]
    assert labels == [
        "**Baseline comparison**", "DCL-Net", "2-Frame CNN", "MoNet", "Hybrid Transformer", "DualTrack",
        "**Ablation (local / global / dual encoder)**", "✗ ✓ ✗ (Global only)", "✓ ✗ ✗ (Local only)",
        "✓ ✓ ✗ (Coupled)", "✓ ✓ ✓ (DualTrack)",
    ]  # fmt: skip
    with open(out / "table.csv", newline="", encoding="utf-8") as fh:
        csv_rows = {r["model"]: r for r in csv.DictReader(fh)}
    assert list(csv_rows) == MODELS
    by_label = {r[0]: r for r in rows[2:]}
    for model, label in (("dclnet", "DCL-Net"), ("dualtrack", "DualTrack"), ("coupled", "✓ ✓ ✗ (Coupled)")):
        cells = [c.strip("*") for c in by_label[label]]
        assert float(cells[1]) == pytest.approx(float(csv_rows[model]["GPE_mean"]), abs=0.006)
        assert float(cells[2]) == pytest.approx(1000 * float(csv_rows[model]["LPE_mean"]), abs=0.006)
    # best GPE of the comparison block is bold, and only one value per column and block is
    gpe_cells = [
        by_label[lbl][1] for lbl in ("DCL-Net", "2-Frame CNN", "MoNet", "Hybrid Transformer", "DualTrack")
    ]
    assert sum(c.startswith("**") for c in gpe_cells) >= 1
    best = min(float(c.strip("*")) for c in gpe_cells)
    assert all(float(c.strip("*")) == best for c in gpe_cells if c.startswith("**"))


def test_files_per_scan_wilcoxon_global_check_and_reports(runs) -> None:
    first, _, _ = runs
    out = first.out_dir
    for model in MODELS:
        table = read_table(out / "per_scan" / f"{model}.csv")
        assert table.keys() == first.tables[model].keys()
        mean = sum(r["GPE"] for r in table.values()) / len(table)
        assert mean == pytest.approx(next(r for r in first.rows if r["model"] == model)["GPE_mean"], rel=1e-9)
    with open(out / "wilcoxon.csv", newline="", encoding="utf-8") as fh:
        wil = list(csv.DictReader(fh))
    assert {r["model"] for r in wil} == set(MODELS) - {"dualtrack"}
    assert {r["metric"] for r in wil} >= {"GPE", "LPE", "FDR", "max_drift", "tusrec_GPE"}
    assert all(0.0 < float(r["p_value"]) <= 1.0 and int(r["n"]) == 2 for r in wil)
    with open(out / "global_check.csv", newline="", encoding="utf-8") as fh:
        gc = list(csv.DictReader(fh))
    assert [(r["model"], r["mode"]) for r in gc] == [
        ("dualtrack", m) for m in ("none", "zeros", "noise", "other_sweep", "shuffle")
    ]
    assert all(math.isfinite(float(r["GPE"])) and float(r["GPE"]) > 0 for r in gc)
    none_gpe = float(gc[0]["GPE"])
    assert none_gpe == pytest.approx(
        next(r for r in first.rows if r["model"] == "dualtrack")["GPE_mean"], rel=1e-9
    )
    for metric in ("GPE", "LPE", "FDR", "max_drift"):
        png = out / f"boxplots_{metric}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("<img") == 4 and "DualTrack" in html
    summary = (out / "summary.md").read_text(encoding="utf-8")
    for heading in ("## Data", "## Models", "## Results", "## Paired Wilcoxon", "## Global-branch check"):
        assert heading in summary
    assert re.search(
        r"\* DualTrack: the largest change of the predicted trajectory is [0-9.e+-]+ mm", summary
    )
    assert (out / "splits.json").is_file() and (out / "benchmark.json").is_file()
    # the no-motion reference: its own per-scan errors on the same scans, and each model's score
    identity = read_table(out / "per_scan" / "identity.csv")
    assert identity.keys() == first.tables["dualtrack"].keys()
    identity_gpe = sum(r["GPE"] for r in identity.values()) / len(identity)
    assert identity_gpe > 0
    for row in first.rows:
        assert row["GPE_score"] == pytest.approx(1 - row["GPE_mean"] / identity_gpe, rel=1e-9)
    assert f"mean GPE of {identity_gpe:.2f} mm" in summary


def test_second_run_reuses_every_model(runs) -> None:
    first, second, mtimes = runs
    assert sorted(first.trained) == sorted(j.key for j in first.plan.jobs) and len(first.trained) == 8
    assert second.trained == [] and sorted(second.reused) == sorted(first.trained)
    assert len(mtimes) == 8
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # no checkpoint rewritten

    def strip(tables):  # prediction time varies between runs
        return {
            m: {k: {x: v for x, v in r.items() if x != "seconds"} for k, r in t.items()}
            for m, t in tables.items()
        }

    assert strip(second.tables) == strip(first.tables)  # same weights, same scans -> same numbers


def test_cli_dry_run_and_errors(runs, tiny_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = runs[0].out_dir
    args = ["benchmark", "benchmark_tiny", *settings(tiny_dataset), "-o", str(out)]
    assert main([*args, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert printed.count(" reuse ") == 8 and "dry run" in printed
    # another split than the one the runs were trained on is refused
    assert main([*args[:6], "data.val=0", "-o", str(out), "--dry-run"]) == 2
    assert "another subject split" in capsys.readouterr().err
    # changed training settings of a finished run are refused, naming the setting
    bad = [*args[:6], "train_overrides=[data.num_workers=0, runtime.progress=false, optim.lr=0.5]", *args[6:]]
    assert main([*bad, "--dry-run"]) == 2
    assert "optim.lr" in capsys.readouterr().err


def test_a_checkpoint_of_another_model_in_a_run_folder_is_refused(runs, tiny_dataset, tmp_path, capsys):
    out = tmp_path / "bench"
    shutil.copytree(runs[0].out_dir, out)
    two_frame = next(out.glob("runs/two_frame_cnn/*/last.pt"))
    shutil.copyfile(next(out.glob("runs/dualtrack/local/last.pt")), two_frame)  # a local_only_tiny checkpoint
    assert main(["benchmark", "benchmark_tiny", *settings(tiny_dataset), "-o", str(out), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert str(two_frame) in err and "holds a 'local_only_tiny' model" in err


def _cfg(**models) -> dict:
    base = {"data": {"root": "/nonexistent"}, "evaluation": {"reference": None}}
    return {**base, "models": [{"name": k, **v} for k, v in models.items()]}


def test_config_validation() -> None:
    stage = [{"name": "local", "config": "tiny_local"}]
    ok = benchmark_config_from_dict(_cfg(a={"stages": stage}, b={"reuse": "a.local"}))
    assert ok.model("b").reuse == "a.local"
    cases = [
        (_cfg(a={"stages": stage, "colour": 1}), "unknown key"),
        (_cfg(a={"stages": stage}, b={"stages": stage, "reuse": "a"}), "exactly one"),
        (_cfg(a={"stages": stage}, a2={"run_dir": "x", "ablation": [True]}), "ablation must be"),
        ({**_cfg(a={"stages": stage}, b={"stages": stage}), "models": [{"name": "a", "stages": stage}] * 2},
         "duplicate model names"),
        ({**_cfg(a={"stages": stage}), "evaluation": {"reference": "zzz"}}, "evaluation.reference"),
        (_cfg(a={"stages": [{"name": "s", "config": "x", "overrides": ["data.root=/x"]}]}), "data.root"),
        ({"models": [{"name": "a", "stages": stage}], "evaluation": {"reference": None}}, "data.root"),
    ]  # fmt: skip
    for data, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            benchmark_config_from_dict(data)


def test_plan_resolves_references_and_rejects_cycles(tmp_path: Path) -> None:
    from dualtrack.data.splits import Splits
    from dualtrack.evaluation.benchmark import plan_benchmark

    splits = Splits(["000"], [], ["001"])
    cfg = load_benchmark_config("benchmark_tiny", [f"output={tmp_path}"])
    plan = plan_benchmark(cfg, tmp_path / "data", tmp_path / "splits.json", splits)
    keys = [j.key for j in plan.jobs]
    assert keys.index("dualtrack.local") < keys.index("dualtrack.fusion")
    assert keys.index("dualtrack.global") < keys.index("dualtrack.fusion")
    assert keys.index("dualtrack.local") < keys.index("coupled.coupled")
    fusion = next(j for j in plan.jobs if j.key == "dualtrack.fusion").config
    assert fusion.stage.local_from == str(tmp_path / "runs" / "dualtrack" / "local")
    assert fusion.stage.global_from == str(tmp_path / "runs" / "dualtrack" / "global")
    assert fusion.data.root == str(tmp_path / "data") and fusion.data.splits == str(tmp_path / "splits.json")
    two = next(j for j in plan.jobs if j.key == "two_frame_cnn.train").config
    assert two.stage.local_from is None and two.model.name == "two_frame_cnn_tiny"
    scaled = plan_benchmark(
        load_benchmark_config("benchmark", ["epoch_scale=0.01"]), tmp_path, tmp_path, splits
    )
    local = next(j for j in scaled.jobs if j.key == "dualtrack.local").config
    assert [p.epochs for p in local.stage.phases] == [40, 5, 5]  # 4000, 500 and 500 epochs scaled
    cyc = benchmark_config_from_dict(_cfg(a={"reuse": "b"}, b={"reuse": "a"}))
    with pytest.raises(ConfigError, match="cycle"):
        plan_benchmark(cyc, tmp_path, tmp_path, splits)
    bad = benchmark_config_from_dict(
        _cfg(a={"stages": [{"name": "f", "config": "tiny_fusion", "local_from": "x"}]})
    )
    with pytest.raises(ConfigError, match="neither an earlier stage"):
        plan_benchmark(bad, tmp_path, tmp_path, splits)


def test_format_paper_table_bolds_the_best_per_block() -> None:
    def row(model, gpe, comparison=True, ablation=""):
        return {"model": model, "label": model.upper(), "comparison": comparison, "ablation": ablation,
                "GPE_mean": gpe, "LPE_mean": gpe / 10, "FDR_mean": gpe, "max_drift_mean": 2 * gpe,
                "final_score_mean": 1 / gpe}  # fmt: skip

    rows = [row("a", 5.0), row("b", 4.0), row("c", 6.0, False, "110"), row("d", 7.0, False, "111")]
    text = format_paper_table(rows, {"a": 0.01}, "B")
    lines = _md_rows(text)
    assert lines[0] == ["Method", "GPE (mm)", "LPE (µm)", "FDR (%)", "Max. drift (mm)", "Score", "p GPE vs B"]
    body = {r[0]: r for r in lines[2:]}
    assert body["A"][1] == "5.00" and body["B"][1] == "**4.00**"
    assert body["A"][2] == "500.00"  # LPE 0.5 mm shown in µm
    assert body["B"][5] == "**0.250**"  # the score: higher is better
    assert body["A"][6] == "0.01" and body["B"][6] == ""
    assert body["✓ ✓ ✗ (C)"][1] == "**6.00**" and body["✓ ✓ ✓ (D)"][1] == "7.00"
