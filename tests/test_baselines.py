"""Baseline-specific behaviour: correlation losses, pair independence, DCL-Net windows,
global context of the Hybrid Transformer, causality of MoNet, chunked sweep inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dualtrack.inference import Predictor
from dualtrack.models import create_model
from dualtrack.models.baselines._common import pearson_correlation_loss
from dualtrack.models.baselines.dclnet import window_mean, window_starts


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _calibrated(model: torch.nn.Module, frames: torch.Tensor) -> torch.nn.Module:
    """Set BatchNorm running statistics from ``frames`` (a trained model's eval state), then eval.

    Freshly initialised running statistics make deep untrained nets collapse to near-constant
    outputs in eval mode, which would hide the dependencies these tests look for."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(frames)
    return model.eval()


def _target(b: int = 2, m: int = 9) -> torch.Tensor:
    t = torch.linspace(0, 3, m)
    waves = torch.stack([torch.sin(t * (k + 1) + k) for k in range(6)], -1)  # (m, 6), non-constant
    return waves.expand(b, m, 6) + 0.1 * torch.randn(b, m, 6)


# ---------------------------------------------------------------- correlation loss


def test_correlation_loss_extremes_and_scale_invariance() -> None:
    target = _target()
    assert pearson_correlation_loss(target, target, dim=1) == pytest.approx(0.0, abs=1e-5)
    # an affine, positively scaled copy is still perfectly correlated
    assert pearson_correlation_loss(3.0 * target + 2.0, target, dim=1) == pytest.approx(0.0, abs=1e-5)
    assert pearson_correlation_loss(-target, target, dim=1) == pytest.approx(2.0, abs=1e-5)
    # agrees with numpy's corrcoef on one sequence/DoF
    pred = torch.randn(1, 9, 1)
    r = torch.corrcoef(torch.stack([pred[0, :, 0], target[0, :, 0]]))[0, 1]
    loss = pearson_correlation_loss(pred, target[:1, :, :1], dim=1)
    assert float(loss) == pytest.approx(float(1 - r), abs=1e-5)


def test_correlation_loss_skips_constant_targets() -> None:
    target = _target(1, 9)
    target[..., 2] = 0.7  # constant DoF: correlation undefined
    pred = target.clone()
    pred[..., 2] = torch.randn(9)
    assert pearson_correlation_loss(pred, target, dim=1) == pytest.approx(0.0, abs=1e-5)
    const = torch.ones(1, 1, 6, requires_grad=True)
    loss = pearson_correlation_loss(const, torch.zeros(1, 1, 6), dim=1)
    loss.backward()
    assert float(loss.detach()) == 0.0 and const.grad is not None


def test_monet_loss_adds_correlation_term() -> None:
    model = create_model("monet_tiny")
    target = _target()
    mse = torch.nn.functional.mse_loss
    for pred, extra in [(2 * target, 0.0), (-target, 2.0)]:
        assert float(model.loss(pred, target) - mse(pred, target)) == pytest.approx(extra, abs=1e-4)
    plain = create_model("monet_tiny", corr_weight=0.0)
    assert float(plain.loss(-target, target)) == pytest.approx(float(mse(-target, target)), rel=1e-6)


# ---------------------------------------------------------------- 2-frame CNN


@pytest.mark.parametrize("backbone", ["efficientnet", "resnet18"])
def test_two_frame_output_depends_only_on_its_pair(backbone: str) -> None:
    frames = torch.rand(1, 6, 32, 32)
    model = _calibrated(create_model("two_frame_cnn_tiny", backbone=backbone), frames)
    changed = frames.clone()
    changed[:, 4] = torch.rand(32, 32)  # frame 4 enters transitions 4 (3->4) and 5 (4->5)
    with torch.no_grad():
        a, b = model(frames), model(changed)
        alone = model(frames[:, 1:3])  # just the pair (1, 2) -> transition 2
    assert a.shape == (1, 5, 6)
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert (a[:, 3:] - b[:, 3:]).abs().amax(-1).min() > 1e-6
    torch.testing.assert_close(alone[:, 0], a[:, 1], rtol=1e-4, atol=1e-4)
    assert model.input_spec.halo == 1
    chunked = Predictor.from_model(model, chunk_size=2, precision="fp32").predict(
        (255 * frames[0]).round().to(torch.uint8), spacing=(0.2, 0.2))
    with torch.no_grad():
        ref = model.denormalise(model((255 * frames).round() / 255))[0].double().numpy()
    np.testing.assert_allclose(chunked.params, ref, rtol=1e-4, atol=1e-4)


def test_two_frame_rejects_unknown_backbone_and_bad_input() -> None:
    with pytest.raises(ValueError, match="backbone"):
        create_model("two_frame_cnn_tiny", backbone="vgg")
    model = create_model("two_frame_cnn_tiny")
    with pytest.raises(ValueError, match="at least 2 frames"):
        model(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, T, H, W\)"):
        model(torch.rand(8, 32, 32))


# ---------------------------------------------------------------- DCL-Net


def test_dclnet_window_bookkeeping() -> None:
    assert window_starts(9, 5).tolist() == [0, 0, 1, 2, 3, 4, 4, 4]
    assert window_starts(5, 5).tolist() == [0, 0, 0, 0]
    assert window_starts(3, 5).tolist() == [0, 0]
    target = torch.arange(8, dtype=torch.float32).reshape(1, 8, 1).expand(1, 8, 6)
    means = window_mean(target, 5)[0, :, 0]
    # window starting at s covers transitions s..s+3 (0-based) -> mean s + 1.5
    expected = window_starts(9, 5).float() + 1.5
    torch.testing.assert_close(means, expected)


def test_dclnet_sliding_window_inference_matches_forward_and_clips() -> None:
    model = create_model("dclnet_tiny", clip_length=4).eval()
    frames = torch.rand(1, 11, 32, 32)
    with torch.no_grad():
        full = model(frames)
        clip_means = torch.stack([model(frames[:, s : s + 4])[:, 0] for s in range(8)], dim=1)
    assert full.shape == (1, 10, 6)
    # each transition gets the mean motion of the clip centred on its frame
    torch.testing.assert_close(full, clip_means[:, window_starts(11, 4)])
    # an N-frame clip is one window: the mean is broadcast to its N-1 transitions
    one = model(frames[:, :4])
    torch.testing.assert_close(one, one[:, :1].expand(1, 3, 6))


def test_dclnet_chunked_with_receptive_field_halo_is_exact() -> None:
    model = create_model("dclnet_tiny").eval()
    n, halo = 14, model.input_spec.halo
    frames = torch.rand(1, n, 32, 32)
    with torch.no_grad():
        full = model(frames)
        a, b = 5, 9  # transitions 5..8 from the frames [a-1-halo, b+halo)
        part = model(frames[:, a - 1 - halo : b + halo])
    torch.testing.assert_close(part[:, halo : halo + b - a], full[:, a - 1 : b - 1])


def test_dclnet_loss_uses_window_means_and_correlation() -> None:
    model = create_model("dclnet_tiny", clip_length=4)
    target = _target(2, 9)
    means = window_mean(target, 4)
    assert float(model.loss(means, target)) == pytest.approx(0.0, abs=1e-5)
    anti = -means
    mse = float(torch.nn.functional.mse_loss(anti, means))
    assert float(model.loss(anti, target)) == pytest.approx(mse + 2.0, abs=1e-4)
    # the per-transition target itself is not the objective
    assert float(create_model("dclnet_tiny", corr_weight=0.0).loss(target, target)) > 1e-3


# ---------------------------------------------------------------- sequence models


@pytest.mark.parametrize("encoder", ["video3d", "pair2d"])
def test_hybrid_transformer_uses_distant_frames(encoder: str) -> None:
    frames = torch.rand(1, 16, 32, 32)
    model = _calibrated(create_model("hybrid_transformer_tiny", encoder=encoder), frames)
    changed = frames.clone()
    changed[:, 15] = torch.rand(32, 32)  # far beyond the CNN window of transition 1
    with torch.no_grad():
        a, b = model(frames), model(changed)
        shifted = model(frames, index=torch.arange(16).unsqueeze(0) + 100)
    assert a.shape == (1, 15, 6)
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-6
    assert (a - shifted).abs().max() > 1e-6  # true frame indices feed the position embedding
    with pytest.raises(ValueError, match="max_positions"):
        model(frames, index=torch.arange(16).unsqueeze(0) + 5000)


def test_monet_is_causal() -> None:
    frames = torch.rand(1, 10, 32, 32)
    model = _calibrated(create_model("monet_tiny"), frames)
    changed = frames.clone()
    changed[:, 7] = torch.rand(32, 32)
    with torch.no_grad():
        a, b = model(frames), model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert (a[:, 6:] - b[:, 6:]).abs().amax(-1).min() > 1e-7
    assert model.input_spec.halo == 1  # the pair encoder's; the recurrence sees the whole sequence


@pytest.mark.parametrize(
    ("name", "cfg"),
    [("monet_tiny", {}), ("hybrid_transformer_tiny", {}), ("hybrid_transformer_tiny", {"encoder": "pair2d"})],
)
def test_sequence_baselines_chunk_exactly(name: str, cfg: dict) -> None:
    model = create_model(name, **cfg).eval()
    frames = (255 * torch.rand(17, 32, 32)).to(torch.uint8)
    with torch.no_grad():
        full = model.denormalise(model(frames[None]))[0].double().numpy()
    chunked = Predictor.from_model(model, chunk_size=4, precision="fp32").predict(frames, spacing=(0.2, 0.2))
    np.testing.assert_allclose(chunked.params, full, rtol=1e-4, atol=1e-5)


def test_unknown_options_raise() -> None:
    with pytest.raises(ValueError, match="rnn"):
        create_model("monet_tiny", rnn="transformer")
    with pytest.raises(ValueError, match="encoder"):
        create_model("hybrid_transformer_tiny", encoder="vit")
    with pytest.raises(ValueError, match="clip_length"):
        create_model("dclnet_tiny", clip_length=1)
