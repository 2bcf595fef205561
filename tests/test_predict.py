"""`dualtrack predict`: one simulated sweep through a tiny exported model, outputs and clear errors."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import predict
from dualtrack.cli import main
from dualtrack.data import TusRecDataset
from dualtrack.data.scan import load_frames
from dualtrack.data.trajectory import read_trajectory
from dualtrack.geometry import chain_local
from dualtrack.metrics import paper_metrics
from dualtrack.models import create_model
from dualtrack.models.weights import export_model, load_model
from dualtrack.predict import predict_file
from dualtrack.simulate.dataset import simulate_dataset
from dualtrack.training.checkpoint import TrainState, save_checkpoint

SCAN = "LH_Per_L_DtP"
CROP = [32, 48]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A one-scan tiny simulated dataset in both TUS-REC layouts."""
    root = tmp_path_factory.mktemp("sim")
    kw = dict(preset="tiny", scans=[SCAN], num_frames=16, progress=False)
    train = simulate_dataset(root / "train", ["000"], **kw)
    test = simulate_dataset(root / "test", ["000"], layout="test", **kw)
    return {
        "train": train / "frames_transfs" / "000" / f"{SCAN}.h5",
        "test": test / "frames" / "000" / f"{SCAN}.h5",
        "sweep": TusRecDataset(train).load("000", SCAN),
    }


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny DualTrack exported like released weights (random weights, non-trivial target stats)."""
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    model = create_model("dualtrack_tiny")
    model.set_target_stats(torch.tensor([0.0, 0.01, 0.3, 0.1, -0.1, 0.05]), torch.full((6,), 0.2))
    model.configure_input(local_crop=tuple(CROP))
    ckpt = save_checkpoint(root / "last.pt", model, None, None, TrainState(), {})
    return export_model(ckpt, root / "export")


def test_predict_writes_trajectory_and_metrics(data, weights, tmp_path):
    sweep = data["sweep"]
    n = sweep.num_frames
    res = predict_file(data["train"], weights, tmp_path / "out")
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["metrics.json", "trajectory.csv", "trajectory.h5"]

    traj = read_trajectory(res.files["trajectory_h5"])
    assert traj.global_.shape == (n, 4, 4) and traj.local.shape == (n - 1, 4, 4)
    np.testing.assert_allclose(traj.global_[0], np.eye(4), atol=1e-12)
    np.testing.assert_allclose(chain_local(traj.local), traj.global_, atol=1e-9)
    assert not np.allclose(traj.local, np.eye(4))  # the model predicts motion, not identity
    np.testing.assert_allclose(traj.attrs["spacing"], sweep.spacing)
    assert traj.attrs["model"] == "dualtrack_tiny"
    from_csv = read_trajectory(res.files["trajectory_csv"])
    np.testing.assert_allclose(from_csv.global_, traj.global_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(from_csv.local, traj.local, rtol=0, atol=1e-12)

    # the same poses as the library's inference with the export's crop
    model = load_model(weights)
    assert model.input_spec.local_crop == tuple(CROP)
    direct = predict(model, sweep, device="cpu", crop=tuple(CROP))
    np.testing.assert_allclose(traj.global_, direct.global_, atol=1e-9)
    # the predictor uses the crop the loaded model was trained with
    default = predict(model, sweep, device="cpu")
    np.testing.assert_allclose(default.global_, direct.global_, atol=1e-12)
    whole = predict(model, sweep, device="cpu", crop=None)
    assert not np.allclose(whole.global_, direct.global_, atol=1e-6)

    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    expected = paper_metrics(sweep.global_transforms(), traj.global_, sweep.shape, sweep.calibration.scale)
    for key in ("GPE", "LPE", "FDR", "max_drift"):
        assert metrics["paper"][key] == pytest.approx(expected[key], rel=1e-9)
        assert np.isfinite(metrics["paper"][key]) and metrics["paper"][key] > 0
    assert "tusrec" not in metrics  # only on request
    assert metrics["num_frames"] == n


def test_predict_refuses_to_overwrite(data, weights, tmp_path):
    out = tmp_path / "out"
    predict_file(data["train"], weights, out)
    before = (out / "trajectory.h5").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="--overwrite"):
        predict_file(data["train"], weights, out)
    assert (out / "trajectory.h5").stat().st_mtime_ns == before
    res = predict_file(data["train"], weights, out, overwrite=True, tusrec_metrics=True)
    tus = res.metrics["tusrec"]
    assert set(tus) == {"GPE", "LPE", "GLE", "LLE"}  # landmarks found beside the scan
    assert all(np.isfinite(v) and v > 0 for v in tus.values())
    assert res.metrics["normalised"]["final_score"] < 1.0


def test_test_layout_finds_tforms_twin(data, weights, tmp_path):
    a = predict_file(data["train"], weights, tmp_path / "a")
    b = predict_file(data["test"], weights, tmp_path / "b")
    assert b.metrics is not None  # ground truth from transfs/<sid>/<scan>.h5
    np.testing.assert_allclose(b.global_, a.global_, atol=1e-9)
    assert b.metrics["paper"]["GPE"] == pytest.approx(a.metrics["paper"]["GPE"])


def test_frame_folders_and_npy_stacks_give_the_same_poses(data, weights, tmp_path):
    frames = np.asarray(data["sweep"].frames)
    ref = predict_file(data["train"], weights, tmp_path / "ref")
    png, npy = tmp_path / "png", tmp_path / "npy"
    png.mkdir()
    npy.mkdir()
    for i, f in enumerate(frames):  # names sort wrongly as text: frame_10 < frame_2
        Image.fromarray(f).save(png / f"frame_{i}.png")
        np.save(npy / f"frame_{i}.npy", f)
    np.save(tmp_path / "stack.npy", frames)
    np.testing.assert_array_equal(load_frames(png), frames)
    for source in (png, npy, tmp_path / "stack.npy"):
        res = predict_file(source, weights, tmp_path / f"out_{source.stem}", spacing=data["sweep"].spacing)
        assert res.metrics is None and "metrics_json" not in res.files
        np.testing.assert_allclose(res.global_, ref.global_, atol=1e-9)


def test_too_few_frames(data, weights, tmp_path):
    one = tmp_path / "one.npy"
    np.save(one, np.asarray(data["sweep"].frames)[:1])
    with pytest.raises(ValueError, match=r"needs frames \(N >= 2"):
        predict_file(one, weights, tmp_path / "out", spacing=(0.3, 0.3))
    assert not (tmp_path / "out").exists()  # nothing written on error


def test_mismatched_frames_and_tforms(data, weights, tmp_path):
    bad = tmp_path / "data" / "frames_transfs" / "000" / "bad.h5"
    bad.parent.mkdir(parents=True)
    with h5py.File(bad, "w") as f:
        f["frames"] = np.asarray(data["sweep"].frames)
        f["tforms"] = data["sweep"].tforms[:-3]
    calib = data["train"].parents[2] / "calib_matrix.csv"
    with pytest.raises(ValueError, match=r"tforms.*\(13, 4, 4\).*16 frames"):
        predict_file(bad, weights, tmp_path / "out", calib=calib)


def test_bad_weights(data, weights, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        predict_file(data["train"], tmp_path / "nowhere", tmp_path / "o1")
    # another architecture's weights under this config
    other = tmp_path / "other"
    other.mkdir()
    config = (weights / "config.json").read_text()
    (other / "config.json").write_text(config.replace("dualtrack_tiny", "coupled_tiny"))
    (other / "model.safetensors").write_bytes((weights / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="do not fit model 'coupled_tiny'"):
        predict_file(data["train"], other, tmp_path / "o2")
    # unreadable weights
    (other / "config.json").write_text(config)
    (other / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read the weights"):
        predict_file(data["train"], other, tmp_path / "o3")
    # a crop that does not fit the frames
    np.save(tmp_path / "small.npy", np.zeros((4, 20, 20), np.uint8))
    with pytest.raises(ValueError, match="smaller than the 32x48 input crop"):
        predict_file(tmp_path / "small.npy", weights, tmp_path / "o4", spacing=(0.3, 0.3))


def test_frames_need_spacing(data, weights, tmp_path):
    np.save(tmp_path / "stack.npy", np.asarray(data["sweep"].frames))
    with pytest.raises(ValueError, match="--spacing"):
        predict_file(tmp_path / "stack.npy", weights, tmp_path / "out")
    with pytest.raises(ValueError, match="two positive numbers"):
        predict_file(tmp_path / "stack.npy", weights, tmp_path / "out", spacing=(0.0, 0.3))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no frames found"):
        predict_file(empty, weights, tmp_path / "out", spacing=(0.3, 0.3))


def test_cli(data, weights, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["predict", str(data["train"]), "--weights", str(weights), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "16 frames 48x64" in printed and "GPE" in printed and str(out / "trajectory.h5") in printed
    assert main(["predict", str(data["train"]), "--weights", str(weights), "-o", str(out)]) == 1
    assert "exists and is not empty" in capsys.readouterr().err
    argv = ["predict", str(tmp_path / "missing.h5"), "--weights", str(weights), "-o", str(out) + "2"]
    assert main(argv) == 1
    assert "scan not found" in capsys.readouterr().err
    # a bad flag value is a usage error (exit 2), named in the flag's own words
    assert main([*argv[:-1], str(out) + "3", "--chunk-size", "0"]) == 2
    assert "--chunk-size must be >= 1" in capsys.readouterr().err
