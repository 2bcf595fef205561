"""Full-sweep inference: chunked == unchunked for every tiny model, pose chaining and conventions,
uint8 / Sweep / crop input paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import model_inputs, predict
from dualtrack import geometry
from dualtrack.data.sweep import Sweep
from dualtrack.geometry import centre_to_corner, chain_local, image_centre_mm, params_to_matrix
from dualtrack.inference import (
    auto_chunk_size,
    centre_crop_box,
    plan_chunks,
    recompute_share,
    sparse_frame_indices,
)
from dualtrack.models import TrajectoryModel, create_model, list_models

TINY = [name for name in list_models() if name.endswith("_tiny")]
FAMILY = ["dualtrack_tiny", "local_only_tiny", "global_only_tiny", "coupled_tiny"]
SPACING = (0.2, 0.25)


def _frames(n: int = 30, h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    """``(n, h, w)`` uint8: a smooth texture drifting by one pixel per frame, plus noise."""
    rng = np.random.default_rng(seed)
    tex = rng.random((h, w + n))
    tex = (tex + np.roll(tex, 1, 0) + np.roll(tex, 1, 1) + np.roll(tex, (1, 1), (0, 1))) / 4
    frames = np.stack([tex[:, i : i + w] for i in range(n)]) + 0.2 * rng.random((n, h, w))
    return (255 * frames / frames.max()).astype(np.uint8)


def _trained_state(model: TrajectoryModel, frames: np.ndarray) -> TrajectoryModel:
    """BatchNorm statistics from ``frames`` and non-trivial output statistics, then eval mode.

    Untrained running statistics make deep nets nearly constant in eval mode, which would hide
    chunking errors."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    x = torch.from_numpy(frames[:16]).float()[None] / 255
    with torch.no_grad():
        model(x, **model_inputs(model, x))
    model.set_target_stats(torch.tensor([0.1, -0.2, 0.3, 0.5, -0.4, 0.2]), torch.tensor([3.0, 2, 4, 5, 3, 4]))
    return model.eval()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("name", [n for n in TINY if n != "global_only_tiny"])
def test_chunked_inference_equals_unchunked(name: str) -> None:
    frames = _frames()
    model = _trained_state(create_model(name), frames)
    x = torch.from_numpy(frames).float()[None] / 255
    with torch.no_grad():
        full = model.denormalise(model(x, **model_inputs(model, x)))[0].double().numpy()
    assert np.abs(full).max() > 0.1  # outputs are far from trivial at this scale
    for chunk in (1, 4, 13, 64):
        pred = predict(model, frames, spacing=SPACING, chunk_size=chunk, precision="fp32")
        assert pred.params.shape == (29, 6)
        np.testing.assert_allclose(pred.params, full, rtol=1e-4, atol=1e-4, err_msg=f"chunk_size={chunk}")


def test_sparse_model_runs_on_evenly_spaced_frames_and_interpolates() -> None:
    """global_only sees ``inference_frames`` evenly spaced frames (as in its subset training);
    the per-frame poses chain back exactly to its predictions between the selected frames."""
    frames = _frames()
    model = _trained_state(create_model("global_only_tiny", inference_frames=7), frames)
    selected = sparse_frame_indices(len(frames), 7)
    assert selected[0] == 0 and selected[-1] == len(frames) - 1 and len(selected) == 7
    with torch.no_grad():
        x = torch.from_numpy(frames[selected]).float()[None] / 255
        out = model.denormalise(model(x, index=torch.from_numpy(selected)[None]))[0].double().numpy()
    centre = image_centre_mm(SPACING, frames.shape[1:])
    expected = chain_local(centre_to_corner(params_to_matrix(out), centre))
    for chunk in (1, 64):
        pred = predict(model, frames, spacing=SPACING, chunk_size=chunk, precision="fp32")
        assert pred.local.shape == (len(frames) - 1, 4, 4) and pred.params.shape == (len(frames) - 1, 6)
        np.testing.assert_allclose(pred.global_[selected], expected, atol=1e-6)
        # frames between two selected ones move in equal steps
        a, b = selected[1], selected[2]
        np.testing.assert_allclose(pred.params[a:b - 1], pred.params[a + 1:b], atol=1e-9)


@pytest.mark.parametrize("name", [n for n in TINY if n != "global_only_tiny"])
def test_halo_is_needed_and_sufficient(name: str) -> None:
    """Chunks with the spec's halo give the unchunked result; one frame less of halo does not."""
    frames = _frames()
    model = _trained_state(create_model(name), frames)
    r = model.input_spec.halo
    assert r > 0
    full = predict(model, frames, spacing=SPACING, precision="fp32", chunk_size=30).params
    exact = predict(model, frames, spacing=SPACING, precision="fp32", chunk_size=5).params
    model.input_spec = model.input_spec.replace(halo=r - 1)
    short = predict(model, frames, spacing=SPACING, precision="fp32", chunk_size=5).params
    np.testing.assert_allclose(exact, full, atol=1e-4)
    if name != "dclnet_tiny":  # DCL-Net's halo is a conservative bound (see its docstring)
        assert np.abs(short - full).max() > 1e-4


def test_global_poses_chain_the_local_poses() -> None:
    frames = _frames(n=12)
    model = _trained_state(create_model("dualtrack_tiny"), frames)
    pred = predict(model, frames, spacing=SPACING, chunk_size=5, precision="fp32")
    assert pred.local.shape == (11, 4, 4) and pred.global_.shape == (12, 4, 4)
    np.testing.assert_allclose(pred.global_[0], np.eye(4), atol=1e-12)
    for i in range(1, 12):
        np.testing.assert_allclose(pred.global_[i], pred.global_[i - 1] @ pred.local[i - 1], atol=1e-9)
    assert geometry.is_rigid(pred.global_).all()
    centre = geometry.image_centre_mm(SPACING, (32, 32))
    expected = geometry.centre_to_corner(geometry.params_to_matrix(pred.params), centre)
    np.testing.assert_allclose(pred.local, expected, atol=1e-12)


class _ConstantModel(TrajectoryModel):
    """Predicts the same normalised output for every transition (no chunking interface)."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = torch.nn.Parameter(value)

    def decode(self, features, *, index, global_frames=None, global_index=None) -> torch.Tensor:
        b, t = features.shape[:2]
        return self.value.expand(b, t - 1, 6)


def test_centre_origin_rotation_keeps_the_image_centre_fixed() -> None:
    # 3 degrees about the image-plane normal through the image centre, in normalised units
    model = _ConstantModel(torch.tensor([0.0, 0, 0, 0, 0, 1.5]))
    model.set_target_stats(torch.zeros(6), torch.full((6,), 2.0))
    frames = _frames(n=5, h=24, w=40)
    pred = predict(model, frames, spacing=SPACING)
    np.testing.assert_allclose(pred.params[:, 5], 3.0)
    centre = geometry.image_centre_mm(SPACING, (24, 40))
    moved = geometry.transform_points(pred.global_, centre[None])[:, 0]
    np.testing.assert_allclose(moved, np.broadcast_to(centre, moved.shape), atol=1e-9)
    np.testing.assert_allclose(geometry.rotation_angle_deg(pred.global_[4]), 12.0, atol=1e-9)
    corner = geometry.transform_points(pred.global_[1], np.zeros((1, 3)))[0]
    assert np.linalg.norm(corner - centre) == pytest.approx(np.linalg.norm(centre))
    assert np.linalg.norm(corner) > 0.1  # the corner origin itself moves


def test_uint8_float_and_sweep_inputs_agree() -> None:
    frames = _frames(n=10, h=32, w=40)
    model = _trained_state(create_model("dualtrack_tiny"), frames)
    from_uint8 = predict(model, frames, spacing=SPACING, chunk_size=4, precision="fp32")
    as_torch = predict(model, torch.from_numpy(frames), spacing=SPACING, precision="fp32")
    np.testing.assert_allclose(from_uint8.params, as_torch.params, atol=1e-5)
    with pytest.raises(ValueError, match="frames must be uint8"):
        predict(model, frames.astype(np.float32) / 255, spacing=SPACING)
    sweep = Sweep.from_arrays(frames)
    from_sweep = predict(model, sweep, chunk_size=4, precision="fp32")
    np.testing.assert_allclose(from_sweep.params, from_uint8.params, atol=1e-6)
    centre = geometry.image_centre_mm(sweep.spacing, (32, 40))
    expected = geometry.centre_to_corner(geometry.params_to_matrix(from_sweep.params), centre)
    np.testing.assert_allclose(from_sweep.local, expected, atol=1e-12)
    with pytest.raises(ValueError, match="spacing"):
        predict(model, frames)


def test_centre_crop_feeds_the_local_branch_and_full_frames_the_global_branch() -> None:
    frames = _frames(n=9, h=40, w=48)
    model = _trained_state(create_model("dualtrack_tiny"), frames)
    assert centre_crop_box((40, 48), (32, 32)) == (4, 8, 32, 32)
    assert centre_crop_box((40, 48), None) == (0, 0, 40, 48)
    pred = predict(model, frames, spacing=SPACING, crop=(32, 32), chunk_size=3, precision="fp32")
    x = torch.from_numpy(frames).float()[None] / 255
    index = torch.arange(9)[None]
    with torch.no_grad():
        direct = model(x[:, :, 4:36, 8:40], index=index, global_frames=x[:, ::4], global_index=index[:, ::4])
    np.testing.assert_allclose(pred.params, model.denormalise(direct)[0].double().numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="does not fit"):
        predict(model, frames, spacing=SPACING, crop=(64, 32))


def test_bf16_and_training_mode_restored() -> None:
    frames = _frames(n=8)
    model = _trained_state(create_model("local_only_tiny"), frames).train()
    ref = predict(model, frames, spacing=SPACING, precision="fp32")
    assert model.training
    low = predict(model, frames, spacing=SPACING, precision="bf16")
    assert np.isfinite(low.params).all()
    assert np.abs(low.params - ref.params).max() < 0.05 * np.abs(ref.params).max() + 1e-2


@pytest.mark.parametrize("halo", [5, 17])
def test_chunk_plan_reencodes_under_ten_percent_at_every_length(halo: int) -> None:
    """The automatic plan: one pass when the sweep fits the budget, else chunks that re-encode
    fewer than 10 % of the frames (the old fixed 64-frame chunks with a 17-frame halo: 50 % at 546 frames)."""
    frame_bytes = 1000
    for n in [*range(64, 800, 37), 546, 1500, 4000]:
        for budget_frames in (8, 100, 400, 1000, 10_000):
            size = auto_chunk_size(n, halo, frame_bytes, budget_frames * frame_bytes)
            plan = plan_chunks(n, halo, size, balance=True)
            assert plan[0].start == 0 and plan[-1].stop == n
            assert all(a.stop == b.start for a, b in zip(plan, plan[1:], strict=False))
            assert all(c.lo == max(0, c.start - halo) and c.hi == min(n, c.stop + halo) for c in plan)
            assert recompute_share(plan) < 0.1, (n, budget_frames, size)
            if n <= budget_frames:
                assert len(plan) == 1
    old = plan_chunks(546, 17, 64)
    assert recompute_share(old) > 0.45  # the old fixed plan re-encoded half the frames again


def test_default_plan_is_one_pass_and_a_tight_budget_chunks_exactly(monkeypatch) -> None:
    frames = _frames(n=30)
    model = _trained_state(create_model("dualtrack_tiny"), frames)
    calls = []
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda x: calls.append(x.shape[1]) or encode(x))
    one = predict(model, frames, spacing=SPACING, precision="fp32")
    assert calls == [30]
    calls.clear()
    r = model.input_spec.halo
    per_frame = model.frame_memory_bytes(32, 32, 4)
    budget_gb = (2 * r + 21 * r + 2) * per_frame / 1e9  # room for one chunk of about 21 r frames
    tight = predict(model, _frames(n=30 * r), spacing=SPACING, precision="fp32",
                               memory_budget_gb=budget_gb)
    assert len(calls) >= 2 and sum(calls) < 1.1 * 30 * r
    full = predict(model, _frames(n=30 * r), spacing=SPACING, precision="fp32", chunk_size=30 * r)
    np.testing.assert_allclose(tight.params, full.params, atol=1e-4)
    assert one.params.shape == (29, 6)


def test_precision_names_are_checked() -> None:
    frames = _frames(n=6)
    model = _trained_state(create_model("local_only_tiny"), frames)
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        predict(model, frames, spacing=SPACING, precision="half")
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        predict(model, frames, spacing=SPACING, precision="fp16", device="cpu")


def test_spacing_other_than_the_training_spacing_is_refused_or_resampled() -> None:
    """A model trained at 0.2 x 0.25 mm pixels refuses 0.1 x 0.125 mm frames with a message naming
    both, and with ``resample=True`` predicts them resampled to its spacing (same as frames given at
    that spacing)."""
    frames = _frames(n=10, h=32, w=32)
    model = _trained_state(create_model("local_only_tiny"), frames)
    model.configure_input(pixel_spacing=SPACING)
    ref = predict(model, frames, spacing=SPACING, precision="fp32")
    fine = np.repeat(np.repeat(frames, 2, axis=1), 2, axis=2)  # the same field at half the spacing
    half = (SPACING[0] / 2, SPACING[1] / 2)
    with pytest.raises(ValueError, match=r"pixel spacing \(0.1, 0.125\) mm differs from the \(0.2, 0.25\)"):
        predict(model, fine, spacing=half)
    res = predict(model, fine, spacing=half, precision="fp32", resample=True)
    assert res.params.shape == ref.params.shape
    model.configure_input(pixel_spacing=None)
    unresampled = predict(model, fine, spacing=half, precision="fp32")
    assert np.abs(res.params - ref.params).mean() < 0.5 * np.abs(unresampled.params - ref.params).mean()
    assert predict(model, frames, spacing=(0.201, 0.251), precision="fp32").params.shape == (9, 6)


def test_predictor_needs_the_models_minimum_frames() -> None:
    model = create_model("dclnet_tiny").eval()
    need = model.input_spec.min_frames
    assert need == model.clip_length > 2
    with pytest.raises(ValueError, match=f"needs frames \\(N >= {need}"):
        predict(model, _frames(n=need - 1), spacing=SPACING)
