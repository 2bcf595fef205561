"""`dualtrack evaluate`: per-scan tables and summaries on whole sweeps, comparisons with Wilcoxon tests."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import predict
from dualtrack.cli import main
from dualtrack.data import TusRecDataset
from dualtrack.evaluation.evaluate import (
    Evaluation,
    compare,
    evaluate_model,
    format_comparison,
    read_table,
    select_scans,
    summarise,
    write_results,
)
from dualtrack.inference import Predictor
from dualtrack.metrics import paper_metrics
from dualtrack.models import TrajectoryModel
from dualtrack.models.weights import load_bundle
from dualtrack.training.loop import prepare_run, train


@pytest.fixture(scope="module")
def local_run(tiny_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("eval") / "local"
    overrides = [
        f"data.root={tiny_dataset}",
        "runtime.device=cpu",
        "runtime.tensorboard=false",
        "stage.phases.0.epochs=1",
        "stage.phases.1.epochs=0",
        "runtime.val_every=0",
    ]
    train(prepare_run("tiny_local", overrides)[0], run)
    return run


def test_evaluate_model_matches_direct_metrics(tiny_dataset, local_run):
    dataset = TusRecDataset(tiny_dataset)
    scans = select_scans(dataset, "val", local_run / "splits.json")
    assert len(scans) == 2 and len({s for s, _ in scans}) == 1
    bundle = load_bundle(local_run)
    assert bundle.model.input_spec.local_crop == (32, 48)  # the training crop, restored on loading
    ev = evaluate_model(Predictor.from_run(local_run, device="cpu"), dataset, scans, tusrec=True)
    sweep = dataset.load(*scans[0])
    pred = predict(bundle.model, sweep, device="cpu")
    direct = paper_metrics(sweep.global_transforms(), pred.global_, sweep.shape, sweep.calibration.scale)
    row = ev.table[sweep.key]
    for k in ("GPE", "LPE", "FDR", "max_drift"):
        assert row[k] == pytest.approx(direct[k], rel=1e-9)
    assert row["frames"] == sweep.num_frames and row["seconds"] > 0
    # the all-pixel GPE is close to the 5-point one; identity is worse than nothing only if the model is
    assert row["tusrec_GPE"] == pytest.approx(row["GPE"], rel=0.2)
    assert {"tusrec_GLE", "tusrec_LLE", "GPE_norm", "final_score"} <= set(row)
    assert ev.summary["GPE"]["mean"] == pytest.approx(np.mean([r["GPE"] for r in ev.table.values()]))
    with pytest.raises(ValueError, match="needs a splits file"):
        select_scans(dataset, "test", None)
    with pytest.raises(ValueError, match="no scans in split 'test'"):
        select_scans(dataset, "test", local_run / "splits.json")


def test_tables_round_trip_and_compare(tmp_path):
    rng = np.random.default_rng(0)
    keys = [f"sub{i:03d}__LH_Par_C_DtP" for i in range(12)]
    base = {k: {"GPE": 5 + rng.random(), "LPE": 0.2, "FDR": 5.0, "max_drift": 8.0} for k in keys}
    better = {k: {m: v * (0.7 if m == "GPE" else 1.0) for m, v in row.items()} for k, row in base.items()}
    noisy = {k: {m: v + rng.normal(0, 0.5) for m, v in row.items()} for k, row in base.items()}
    for name, table in (("base", base), ("better", better)):
        write_results(Evaluation(table=table, info={"model": name}), tmp_path / name)
    back = read_table(tmp_path / "base")
    assert all(back[k] == pytest.approx(base[k], rel=1e-15) for k in keys)
    summary = json.loads((tmp_path / "base" / "summary.json").read_text())
    assert summary["num_scans"] == 12 and summary["metrics"]["GPE"]["n"] == 12
    result = compare(
        {"base": back, "better": read_table(tmp_path / "better"), "noisy": noisy}, reference="base"
    )
    assert result["scans"] == 12 and set(result["tests"]) == {"base vs better", "base vs noisy"}
    gpe = result["tests"]["base vs better"]["GPE"]
    assert gpe["p_value"] < 0.01 and gpe["mean_b"] == pytest.approx(0.7 * gpe["mean_a"])
    assert result["tests"]["base vs better"]["LPE"]["p_value"] == 1.0  # identical values
    assert result["summary"]["better"]["GPE"]["mean"] < result["summary"]["base"]["GPE"]["mean"]
    text = format_comparison(result)
    assert "base vs better" in text and "GPE" in text
    with pytest.raises(ValueError, match="at least two"):
        compare({"base": base})
    partial = {k: v for k, v in list(better.items())[:5]}
    assert compare({"a": base, "b": partial})["scans"] == 5


def test_summary_ignores_nan():
    s = summarise({"a": {"FDR": math.nan, "GPE": 1.0}, "b": {"FDR": 2.0, "GPE": 3.0}})
    assert s["FDR"]["mean"] == 2.0 and s["FDR"]["n"] == 1 and s["GPE"]["median"] == 2.0


def test_evaluate_cli(tiny_dataset, local_run, tmp_path, capsys):
    assert main(["evaluate", str(local_run), "--split", "val", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "GPE" in out and (local_run / "eval-val" / "metrics.csv").is_file()
    table = read_table(local_run / "eval-val")
    assert len(table) == 2
    assert main(["export", str(local_run), "-o", str(tmp_path / "exp")]) == 0
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "exp"),
                "--data",
                str(tiny_dataset),
                "--split",
                "all",
                "--device",
                "cpu",
                "-o",
                str(tmp_path / "all"),
            ]
        )
        == 0
    )
    everything = read_table(tmp_path / "all")
    assert len(everything) == 6
    for key, row in table.items():
        assert everything[key]["GPE"] == pytest.approx(row["GPE"], rel=1e-6)
    assert (
        main(
            [
                "evaluate",
                "--compare",
                f"run={local_run / 'eval-val'}",
                f"export={tmp_path / 'all'}",
                "-o",
                str(tmp_path / "cmp"),
            ]
        )
        == 0
    )
    assert (tmp_path / "cmp" / "comparison.json").is_file()
    assert "Wilcoxon" in capsys.readouterr().out
    # a missing run is a data error (1), a missing flag a usage error (2): a message, no traceback
    assert main(["evaluate", str(tmp_path / "nothing"), "--data", str(tiny_dataset)]) == 1
    assert main(["evaluate", str(tmp_path / "exp")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "--data DIR is required" in err


class StillModel(TrajectoryModel):
    """Predicts no motion at all (the TUS-REC normalisers' reference prediction)."""

    def decode(self, features, *, index, global_frames=None, global_index=None):
        return torch.zeros(features.shape[0], features.shape[1] - 1, 6)


def test_identity_prediction_scores_zero(tiny_dataset):
    dataset = TusRecDataset(tiny_dataset)
    still = Predictor.from_model(StillModel(), device="cpu")
    ev = evaluate_model(still, dataset, dataset.scans[:2], tusrec=True)
    for row in ev.table.values():
        assert row["final_score"] == pytest.approx(0.0, abs=1e-9)
        assert row["GPE_norm"] == pytest.approx(0.0, abs=1e-9)
        assert row["FDR"] == pytest.approx(100.0)  # the final drift is the whole displacement


def test_bf16_changes_a_trained_models_trajectory_by_under_2_percent_of_its_gpe(tiny_dataset, local_run):
    """The tolerance of the default precision (bf16 autocast where the CPU has it): the trajectory
    moves by less than 2 % of the model's error."""
    from conftest import predict
    from dualtrack.metrics import paper_metrics
    from dualtrack.models.weights import load_bundle

    bundle = load_bundle(local_run)
    dataset = TusRecDataset(tiny_dataset)
    gpe, moved = [], []
    for subject, name in dataset.scans:
        sweep = dataset.load(subject, name)
        ref = predict(bundle.model, sweep, precision="fp32")
        low = predict(bundle.model, sweep, precision="bf16")
        args = (sweep.shape, sweep.calibration.scale)
        gpe.append(paper_metrics(sweep.global_transforms(), ref.global_, *args)["GPE"])
        moved.append(paper_metrics(ref.global_, low.global_, *args)["GPE"])
        assert not np.array_equal(ref.global_, low.global_)  # bf16 really ran
    assert np.mean(moved) < 0.02 * np.mean(gpe), (np.mean(moved), np.mean(gpe))
