"""The house rules of the model contract: no caller probes a model, every shipped config builds a
model that trains, every caller of the predictor gets the same trajectory, and the local encoder's
training clips see what inference sees."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from conftest import model_inputs
from dualtrack.data import TusRecDataset, read_calibration
from dualtrack.data.trajectory import read_trajectory
from dualtrack.evaluation.benchmark import load_benchmark_config, shipped_benchmarks
from dualtrack.evaluation.evaluate import evaluate_model
from dualtrack.evaluation.global_check import predict_with_global_input
from dualtrack.evaluation.submission import ddfs_from_poses, make_predict_ddfs, model_predictor
from dualtrack.inference import Predictor
from dualtrack.models import LocalEncoderConfig, create_model
from dualtrack.training.config import load_config, shipped_configs
from dualtrack.training.stages import build_model, resolve_phases

SRC = Path(__file__).resolve().parents[1] / "src" / "dualtrack"
PROBE = re.compile(r"\b(hasattr|getattr)\(\s*(self\.)?(model|bare|net|wrapper)\b")


def test_no_caller_probes_a_model_outside_the_models_package() -> None:
    """``hasattr``/``getattr`` on a model only inside ``dualtrack/models``: everyone else reads the
    contract (``input_spec``, ``encode``/``decode``, ``parameter_groups``, ``stage_sources``)."""
    hits = []
    for path in sorted(SRC.rglob("*.py")):
        if "models" in path.relative_to(SRC).parts[:1]:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if PROBE.search(line):
                hits.append(f"{path.relative_to(SRC)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)
    # the pattern finds what it is meant to find
    assert PROBE.search('    crop = getattr(model, "input_crop", None)')


LAYERS = {
    "utils": 0, "geometry": 0, "metrics": 1, "data": 1, "simulate": 2, "models": 2, "inference": 3,
    "training": 4, "evaluation": 5, "reconstruction": 1, "predict": 5, "demo": 6, "cli": 7,
}
"""Layer of each top-level module or package: imports point only to a lower or the same layer."""


def _imports(path: Path) -> set[str]:
    names = re.findall(r"^\s*(?:from|import) dualtrack\.(\w+)", path.read_text(), re.M)
    return set(names)


def test_imports_point_one_way() -> None:
    """No module imports from a higher layer (``core -> data/models -> inference -> training ->
    evaluation -> demo -> cli``); ``training`` and ``evaluation`` no longer import each other."""
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        own = rel.parts[0].removesuffix(".py")
        if own not in LAYERS:
            continue
        for target in _imports(path) - {own}:
            if target in LAYERS and LAYERS[target] > LAYERS[own]:
                bad.append(f"{rel} ({own}, layer {LAYERS[own]}) imports dualtrack.{target} "
                           f"(layer {LAYERS[target]})")
    assert not bad, "\n".join(bad)


def _shipped_model_configs() -> list[tuple[str, dict]]:
    out = {}
    for name in shipped_configs():
        cfg = load_config(name)
        out[f"{name}"] = (cfg.model.name, cfg.model.kwargs)
    for bench in shipped_benchmarks():
        for model in load_benchmark_config(bench).models:
            for stage in model.stages:
                cfg = load_config(stage.config, [*load_benchmark_config(bench).train_overrides,
                                                 *model.overrides, *stage.overrides])
                out[f"{bench}:{model.name}.{stage.name}"] = (cfg.model.name, cfg.model.kwargs)
    return sorted(out.items())


@pytest.mark.parametrize(("where", "model"), _shipped_model_configs(),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_every_shipped_config_builds_a_model_that_takes_a_training_step(where: str, model: tuple) -> None:
    """Every training config shipped (and every stage of every shipped benchmark) builds its model,
    which takes one optimiser step on a tiny clip (lightning-hydra-template's config test)."""
    name, kwargs = model
    torch.manual_seed(0)
    net = create_model(name, **kwargs).train()
    spec = net.input_spec
    t = max(8, spec.min_frames)
    frames = (255 * torch.rand(1, t, 32, 32)).to(torch.uint8)
    if spec.sparse_frames is not None:
        index = torch.arange(0, 2 * t, 2)[None]
        extra = {"index": index}
    else:
        extra = model_inputs(net, frames)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    before = [p.detach().clone() for p in net.parameters()]
    loss = net.loss(net(frames, **extra), torch.randn(1, t - 1, 6))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss), where
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True)), where


def test_shipped_stage_configs_resolve_their_phases() -> None:
    for name in shipped_configs():
        cfg = load_config(name)
        assert build_model(cfg).model_name == cfg.model.name
        assert resolve_phases(cfg), name


def test_every_caller_of_the_predictor_gets_the_same_trajectory(demo_output: Path, tmp_path: Path) -> None:
    """CLI ``predict`` (through the demo's prediction folder and once more directly), ``evaluate``,
    the global-branch check, the TUS-REC ``predict_ddfs`` adapter and the demo: one trajectory, with
    the crop the model was trained with (the bug this replaces: evaluating a loaded model without
    naming the crop ran the local CNN on whole frames)."""
    from dualtrack.cli import main

    run = demo_output / "runs" / "dualtrack" / "fusion"
    dataset = TusRecDataset(demo_output / "data")
    predictor = Predictor.from_run(run, device="cpu", precision="fp32")
    assert predictor.spec.local_crop == (32, 48)  # the demo's training crop, restored from the run
    demo_pred = read_trajectory(demo_output / "prediction" / "trajectory.h5")
    key = str(demo_pred.attrs["scan"])
    subject, name = Path(key).parent.name, Path(key).stem
    sweep = dataset.load(subject, name)
    reference = predictor.predict(sweep).global_

    assert main(["predict", key, "--weights", str(run), "-o", str(tmp_path / "p"), "--precision", "fp32",
                 "--device", "cpu"]) == 0
    via_cli = read_trajectory(tmp_path / "p" / "trajectory.h5").global_
    via_eval = evaluate_model(predictor, dataset, [(subject, name)], keep_poses=True).poses[sweep.key]
    via_check = predict_with_global_input(predictor, sweep, None).global_
    for got in (via_cli, via_eval, via_check):
        np.testing.assert_allclose(got, reference, atol=1e-9)
    # the demo's own prediction ran with the default precision (bf16 where the CPU has it)
    auto = Predictor.from_run(run, device="cpu").predict(sweep).global_
    np.testing.assert_allclose(demo_pred.global_, auto, atol=1e-9)

    calib = read_calibration(demo_output / "data" / "calib_matrix.csv")
    landmarks = np.array([[1, 5, 5], [len(sweep.frames) - 1, 20, 10]])
    with h5py.File(demo_output / "data" / "frames_transfs" / subject / f"{name}.h5") as f:
        frames = f["frames"][()]
    ddfs = make_predict_ddfs(model_predictor(run, precision="fp32"))(
        frames, landmarks, str(demo_output / "data" / "calib_matrix.csv"), "cpu")
    expected = ddfs_from_poses(reference, frames.shape[1:], calib.scale, landmarks, "cpu")
    for a, b in zip(ddfs, expected, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    # what the old default did (the whole frame into the local CNN) is a different trajectory
    whole = Predictor.from_model(predictor.model, device="cpu", precision="fp32")
    predictor.model.configure_input(local_crop=None)
    assert np.abs(whole.predict(sweep).global_ - reference).max() > 1e-3


def test_a_training_clip_sees_what_inference_sees() -> None:
    """With the default local encoder (3D ResNet-18 layout, small temporal window) and the paper's
    16-frame clips, the per-frame features of a clip's inner frames are the same whether the clip
    is the start of a sweep or its middle, and the same as inside the whole sweep: training and
    inference agree on every frame more than the receptive field away from the clip's ends."""
    cfg = LocalEncoderConfig(cnn_width=4, dim=16, heads=2, ffn=16, pool_layers=1, temporal_layers=1)
    assert cfg.small_window == LocalEncoderConfig().small_window  # the default's receptive field
    model = create_model("local_only", local_encoder=cfg)
    halo = model.input_spec.halo
    clip = load_config("local").sampling.clip_length
    assert halo == 5 and clip == 16 and clip > 2 * halo + 1
    sweep = torch.rand(1, 48, 32, 32)
    model.train()
    with torch.no_grad():
        model(sweep)  # BatchNorm statistics of this input
    model.eval()
    inner = slice(halo, clip - halo)
    with torch.no_grad():
        whole = model.encode(sweep)
        for start in (0, 16, 32 - clip // 2):
            alone = model.encode(sweep[:, start : start + clip])
            torch.testing.assert_close(alone[:, inner], whole[:, start + halo : start + clip - halo],
                                       atol=1e-5, rtol=1e-4)
    legacy = create_model("local_only", local_encoder={**cfg.__dict__, "small_window": False})
    assert legacy.input_spec.halo == 17 and clip <= 2 * legacy.input_spec.halo  # no frame would agree
