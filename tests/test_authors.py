"""Importing the DualTrack authors' released checkpoints (`dualtrack import-weights`).

The authors' code is not available here: a committed manifest of their checkpoints' key names and
shapes (tests/data/authors_checkpoints.json, facts) stands in for the real files. The numerical
comparison with their code is benchmarks/compare_authors.py (docs/models.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dualtrack.cli import main
from dualtrack.inference import Predictor
from dualtrack.models import create_model
from dualtrack.models.authors import (
    CheckpointMismatch,
    authors_key,
    convert_authors_state,
    read_authors_checkpoint,
)
from dualtrack.models.transformer import Attention
from dualtrack.models.weights import load_bundle

MANIFEST = json.loads((Path(__file__).parent / "data" / "authors_checkpoints.json").read_text())
ARCHS = ["dualtrack_tusrec2024", "dualtrack_tusrec2025"]


def _meta_state(arch: str) -> dict[str, torch.Tensor]:
    """A synthetic checkpoint with exactly the manifest's keys and shapes (no memory: meta tensors)."""
    return {
        k: torch.empty(shape, dtype=getattr(torch, dtype), device="meta")
        for k, shape, dtype in MANIFEST[arch]["keys"]
    }


def _meta_model(arch: str):
    with torch.device("meta"):
        return create_model(arch)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_released_layout_maps_completely_and_strictly(arch: str) -> None:
    model = _meta_model(arch)
    state = convert_authors_state(_meta_state(arch), model, arch)
    ours = model.state_dict()
    assert set(state) == set(ours)
    assert all(tuple(state[k].shape) == tuple(ours[k].shape) for k in ours)
    # every parameter of theirs but the unused pretraining heads is one of ours
    dropped = [k for k, _, _ in MANIFEST[arch]["keys"] if authors_key(k) is None]
    assert sorted(dropped) == sorted(
        f"{p}.{w}"
        for p in (
            "global_encoder.fc",
            "local_encoder.0.backbone.module.fc",
            "local_encoder.0.temporal_encoder.fc",
        )
        for w in ("weight", "bias")
    )
    shapes = {k: s for k, s, _ in MANIFEST[arch]["keys"]}
    head_params = sum(math.prod(shapes[k]) for k in dropped)
    assert sum(p.numel() for p in model.parameters()) + head_params == MANIFEST[arch]["parameters"]
    assert model.input_spec.max_frames == (1024 if arch.endswith("2024") else 4096)


def _edited(arch: str, edit: str) -> dict[str, torch.Tensor]:
    state = _meta_state(arch)
    key = "fusion_module.module.layer.3.crossattention.self.key.weight"
    if edit == "renamed":
        state["fusion_module.module.layer.3.crossattention.self.keys.weight"] = state.pop(key)
    elif edit == "missing":
        del state[key]
    elif edit == "shape":
        state[key] = torch.empty(512, 256, device="meta")
    elif edit == "extra":
        state["fusion_module.module.layer.12.output.dense.bias"] = torch.empty(512, device="meta")
    return state


@pytest.mark.parametrize(
    "edit,message",
    [
        ("renamed", r"do not map.*crossattention\.self\.keys\.weight"),
        ("missing", r"not in the checkpoint: fusion\.decoder\.layers\.3\.cross\.key\.weight"),
        ("shape", r"shapes differ: fusion\.decoder\.layers\.3\.cross\.key\.weight: checkpoint \(512, 256\)"),
        ("extra", r"layer\.12\.output\.dense\.bias \(-> fusion\.decoder\.layers\.12\.ffn2\.bias"),
    ],
)
def test_a_checkpoint_that_does_not_fit_is_refused_naming_the_keys(edit: str, message: str) -> None:
    with pytest.raises(CheckpointMismatch, match=message):
        convert_authors_state(
            _edited("dualtrack_tusrec2024", edit), _meta_model("dualtrack_tusrec2024"), "x.pt"
        )


def test_the_2024_checkpoint_does_not_load_as_2025() -> None:
    with pytest.raises(CheckpointMismatch, match=r"shapes differ: .*distance\.weight: checkpoint \(2047, "):
        convert_authors_state(
            _meta_state("dualtrack_tusrec2024"), _meta_model("dualtrack_tusrec2025"), "x.pt"
        )


def _their_tensor(our: torch.Tensor, shape: list[int], slot: int | None) -> torch.Tensor:
    """The tensor their layout stores for (a part of) one of ours: the inverse of the import."""
    if slot is not None:
        return our.chunk(3)[slot].clone()
    if len(shape) == 5 and our.ndim == 4:
        return our[:, :, None].clone()
    return our.clone()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A checkpoint in the authors' layout for the tiny variant (the manifest's key names that
    exist at that size, holding a randomly initialised tiny model's tensors), and that model."""
    torch.manual_seed(0)
    model = create_model("dualtrack_tusrec2024_tiny").eval()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point() and not name.startswith("target"):
                t.add_(0.05 * torch.randn_like(t))
    ours = model.state_dict()
    state = {}
    for key, shape, _ in MANIFEST["dualtrack_tusrec2024"]["keys"]:
        mapped = authors_key(key)
        if mapped is None:
            state[key] = torch.randn(shape)  # their unused pretraining heads
        elif mapped[0] in ours:
            state[key] = _their_tensor(ours[mapped[0]], shape, mapped[1])
    path = tmp_path_factory.mktemp("authors") / "dualtrack_final_tiny.pt"
    torch.save(state, path)
    return path, model


def test_import_weights_round_trips_the_tiny_variant_through_predict(tiny_checkpoint, tmp_path) -> None:
    path, model = tiny_checkpoint
    out = tmp_path / "imported"
    assert main(["import-weights", str(path), "--arch", "dualtrack_tusrec2024_tiny", "-o", str(out)]) == 0
    meta = json.loads((out / "config.json").read_text())
    assert (
        meta["model_name"] == "dualtrack_tusrec2024_tiny"
        and "CC BY-NC-SA" in meta["imported_from"]["licence"]
    )
    bundle = load_bundle(out)
    for name, value in model.state_dict().items():
        assert torch.equal(bundle.model.state_dict()[name], value), name
    assert bundle.model.input_spec == model.input_spec
    frames = np.random.default_rng(0).integers(0, 256, (40, 40, 48), dtype=np.uint8)
    imported = Predictor.from_export(out, precision="fp32").predict(frames, spacing=(0.2, 0.2))
    direct = Predictor.from_model(model, precision="fp32").predict(frames, spacing=(0.2, 0.2))
    np.testing.assert_array_equal(imported.params, direct.params)
    assert np.abs(imported.params).max() > 1e-3
    # the model's own layout: the first frame's output is dropped, one row per transition
    x = torch.from_numpy(frames[:, 4:36, 8:40]).float()[None] / 255
    idx = torch.arange(40)[None]
    with torch.no_grad():
        raw = model(
            x,
            index=idx,
            global_frames=torch.from_numpy(frames[::4]).float()[None] / 255,
            global_index=idx[:, ::4],
        )[0]
    np.testing.assert_allclose(imported.params, raw.double().numpy(), atol=1e-5)


def test_a_sweep_longer_than_the_position_tables_is_refused(tiny_checkpoint) -> None:
    _, model = tiny_checkpoint
    frames = np.zeros((65, 40, 48), np.uint8)
    with pytest.raises(ValueError, match="65 frames, more than the 64"):
        Predictor.from_model(model).predict(frames, spacing=(0.2, 0.2))


def test_import_weights_refuses_bad_files_and_writes_nothing(tiny_checkpoint, tmp_path, capsys) -> None:
    path, _ = tiny_checkpoint
    state = torch.load(path, weights_only=True)
    del state["head.fc.bias"]
    broken = tmp_path / "broken.pt"
    torch.save({"model": state, "epoch": 3}, broken)  # their training-checkpoint layout
    out = tmp_path / "out"
    assert main(["import-weights", str(broken), "--arch", "dualtrack_tusrec2024_tiny", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "broken.pt" in err and "head.linear.bias" in err and not out.exists()
    (tmp_path / "notes.pt").write_bytes(b"not a checkpoint")
    assert (
        main(
            [
                "import-weights",
                str(tmp_path / "notes.pt"),
                "--arch",
                "dualtrack_tusrec2024_tiny",
                "-o",
                str(out),
            ]
        )
        == 1
    )
    assert "weights_only" in capsys.readouterr().err and not out.exists()
    with pytest.raises(SystemExit) as exc:  # argparse: not one of the authors' architectures
        main(["import-weights", str(path), "--arch", "dualtrack_tiny", "-o", str(out)])
    assert exc.value.code == 2


def test_training_checkpoints_and_ddp_prefixes_are_unwrapped(tiny_checkpoint, tmp_path) -> None:
    path, _ = tiny_checkpoint
    state = torch.load(path, weights_only=True)
    wrapped = tmp_path / "train.pt"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "optimizer": {}, "epoch": 1}, wrapped)
    assert read_authors_checkpoint(wrapped).keys() == state.keys()


def test_relative_key_attention_matches_the_definition() -> None:
    """Scores ``(q.k + q.E[l-r]) / sqrt(d)`` (Shaw et al., as Hugging Face's ``relative_key``),
    computed here the direct way over the full distance table."""
    torch.manual_seed(0)
    attn = Attention(16, 2, max_positions=20).eval()
    x = torch.randn(2, 11, 16)
    with torch.no_grad():

        def heads(t):
            return t.unflatten(-1, (2, 8)).transpose(1, 2)

        q, k, v = heads(attn.query(x)), heads(attn.key(x)), heads(attn.value(x))
        pos = torch.arange(11)
        table = attn.distance(pos[:, None] - pos[None, :] + 19)  # (L, R, d)
        scores = (q @ k.transpose(-1, -2) + torch.einsum("bhld,lrd->bhlr", q, table)) / math.sqrt(8)
        expected = attn.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 11, 16))
        np.testing.assert_allclose(attn(x).numpy(), expected.numpy(), atol=1e-6)
        with pytest.raises(ValueError, match="longer than the 20 positions"):
            attn(torch.randn(1, 21, 16))


def test_predict_and_reconstruct_run_on_an_imported_checkpoint(
    tiny_checkpoint, tiny_dataset, tmp_path
) -> None:
    """The command-line path a user takes: import, predict a scan, reconstruct it into a volume."""
    path, _ = tiny_checkpoint
    weights = tmp_path / "imported"
    assert main(["import-weights", str(path), "--arch", "dualtrack_tusrec2024_tiny", "-o", str(weights)]) == 0
    scan = tiny_dataset / "frames_transfs" / "000" / "LH_Par_C_DtP.h5"
    assert main(["predict", str(scan), "--weights", str(weights), "-o", str(tmp_path / "pred")]) == 0
    trajectory = tmp_path / "pred" / "trajectory.h5"
    assert trajectory.is_file()
    volume = tmp_path / "vol.nrrd"
    assert (
        main(["reconstruct", str(scan), "--poses", str(trajectory), "-o", str(volume), "--spacing", "0.5"])
        == 0
    )
    assert volume.stat().st_size > 1000


def test_the_tusrec_adapter_runs_an_imported_checkpoint(tiny_checkpoint, tiny_dataset, tmp_path) -> None:
    """`predict_ddfs` (the challenge's entry point) on an imported export gives the DDFs of the
    predictor's own trajectory."""
    import h5py

    from dualtrack.data import TusRecDataset, read_calibration
    from dualtrack.evaluation.submission import ddfs_from_poses, make_predict_ddfs, model_predictor

    path, _ = tiny_checkpoint
    weights = tmp_path / "imported"
    assert main(["import-weights", str(path), "--arch", "dualtrack_tusrec2024_tiny", "-o", str(weights)]) == 0
    calib_path = tiny_dataset / "calib_matrix.csv"
    with h5py.File(tiny_dataset / "frames_transfs" / "000" / "LH_Par_C_DtP.h5") as f:
        frames = f["frames"][()]
    landmarks = np.array([[1, 5, 5], [len(frames) - 1, 20, 10]])
    ddfs = make_predict_ddfs(model_predictor(weights, precision="fp32"))(
        frames, landmarks, str(calib_path), "cpu"
    )
    sweep = TusRecDataset(tiny_dataset).load("000", "LH_Par_C_DtP")
    poses = Predictor.from_export(weights, precision="fp32").predict(sweep).global_
    expected = ddfs_from_poses(poses, frames.shape[1:], read_calibration(calib_path).scale, landmarks, "cpu")
    for a, b in zip(ddfs, expected, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_fine_tuning_starts_from_an_import_and_refuses_windows_beyond_the_tables(
    tiny_checkpoint, tiny_dataset, tmp_path
) -> None:
    """Training's init_from takes the imported export (here with the 3D CNN and the pooling frozen,
    as the authors fine-tune); a sweep window longer than the position tables is a configuration
    error before anything trains."""
    from dualtrack.training.config import ConfigError
    from dualtrack.training.loop import prepare_run, train

    path, model = tiny_checkpoint
    weights = tmp_path / "imported"
    assert main(["import-weights", str(path), "--arch", "dualtrack_tusrec2024_tiny", "-o", str(weights)]) == 0
    common = [f"data.root={tiny_dataset}", "runtime.device=cpu", "runtime.tensorboard=false",
              "model.name=dualtrack_tusrec2024_tiny", "model.kwargs={}", f"stage.init_from={weights}",
              "stage.local_from=null", "stage.global_from=null", "stage.freeze=[local_cnn, local_pool]",
              "data.local_crop=[32, 32]", "optim.epochs=1", "runtime.progress=false", "data.num_workers=0"]
    with pytest.raises(ConfigError, match="accepts at most 64 frames"):
        train(prepare_run("fusion", [*common, "sampling.max_length=100"])[0], tmp_path / "too_long")
    result = train(prepare_run("fusion", [*common, "sampling.max_length=24"])[0], tmp_path / "finetune")
    tuned = load_bundle(result.run_dir).model
    assert tuned.model_name == "dualtrack_tusrec2024_tiny"
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(v, model.state_dict()[k])]
    assert any(k.startswith("fusion.decoder") for k in changed)
    assert not any(k.startswith("local_encoder.cnn") and k.endswith("weight") for k in changed)
