"""Global-branch check: replacements of the global input, and that the check tells a model whose
prediction depends on the global branch from one whose global branch is disconnected."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import model_inputs, predict
from dualtrack.data.sweep import Sweep
from dualtrack.evaluation.global_check import (
    GLOBAL_MODES,
    global_branch_check,
    predict_with_global_input,
    replace_global_frames,
)
from dualtrack.geometry import chain_local, params_to_matrix
from dualtrack.inference import Predictor
from dualtrack.models import create_model


def _sweep(
    subject: str, seed: int, name: str = "LH_rotation", n: int = 24, h: int = 32, w: int = 40
) -> Sweep:
    """A textured sweep drifting one pixel per frame with a smooth tracked trajectory."""
    rng = np.random.default_rng(seed)
    tex = rng.random((h, w + n))
    frames = np.stack([tex[:, i : i + w] for i in range(n)]) + 0.3 * rng.random((n, h, w))
    frames = (255 * frames / frames.max()).astype(np.uint8)
    steps = rng.normal([0.1, 0.0, 0.3, 0.0, 0.0, 0.0], [0.02, 0.02, 0.05, 0.3, 0.3, 0.3], (n - 1, 6))
    tforms = chain_local(params_to_matrix(steps)).astype(np.float32)
    return Sweep.from_arrays(frames, tforms, subject=subject, name=name)


def _model(global_matters: bool) -> torch.nn.Module:
    """``dualtrack_tiny`` with trained-like BatchNorm statistics and a non-trivial output scale.

    ``global_matters=True`` zeroes the fusion's projection of the local tokens, so the prediction comes
    from the global branch alone (it *must* change with the global input). ``False`` zeroes the
    cross-attention output of every fusion layer, so the global tokens cannot reach the output."""
    torch.manual_seed(0)
    model = create_model("dualtrack_tiny")
    sweep = _sweep("900", 99)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        x = torch.from_numpy(np.asarray(sweep.frames[:16])).float()[None] / 255
        model(x, **model_inputs(model, x))
        if global_matters:
            model.fusion.local_proj.weight.zero_()
        else:
            for layer in model.fusion.decoder.layers.layers:
                layer.multihead_attn.out_proj.weight.zero_()
                layer.multihead_attn.out_proj.bias.zero_()
    model.set_target_stats(
        torch.tensor([0.1, 0.0, 0.3, 0.0, 0.0, 0.0]), torch.tensor([0.5, 0.5, 0.5, 2.0, 2.0, 2.0])
    )
    return model.eval()


def _cpu(model) -> Predictor:
    return Predictor.from_model(model, device="cpu")


SWEEPS = [_sweep("001", 1), _sweep("001", 2, "RH_rotation"), _sweep("002", 3)]


def test_replacements_have_the_right_content() -> None:
    g = torch.rand(1, 6, 8, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(replace_global_frames("zeros", g), torch.zeros_like(g))
    noise = replace_global_frames("noise", g, seed=3)
    assert noise.shape == g.shape and 0.0 <= noise.min() and noise.max() <= 1.0
    assert abs(noise.mean().item() - g.mean().item()) < 0.05
    assert not torch.allclose(noise, g)
    assert torch.equal(noise, replace_global_frames("noise", g, seed=3))  # reproducible
    shuffled = replace_global_frames("shuffle", g, seed=1)
    assert not torch.equal(shuffled, g)
    assert torch.equal(torch.sort(shuffled.flatten())[0], torch.sort(g.flatten())[0])  # same frames
    other = (np.arange(30 * 8 * 10) % 251).astype(np.uint8).reshape(30, 8, 10)
    picked = replace_global_frames("other_sweep", g, other_frames=other, stride=4)
    # 30 frames at stride 4 -> frames 0, 4, ..., 28 (8 of them); 6 picked evenly: 0, 1, 3, 4, 6, 7
    expected = torch.from_numpy(other[::4][[0, 1, 3, 4, 6, 7]]).float() / 255
    torch.testing.assert_close(picked[0], expected)
    with pytest.raises(ValueError, match="unknown global-check mode"):
        replace_global_frames("blur", g)


def test_identity_replacement_equals_plain_inference() -> None:
    model = _model(global_matters=True)
    predictor = Predictor.from_model(model, device="cpu", chunk_size=7)
    plain = predictor.predict(SWEEPS[0])
    same = predictor.predict(SWEEPS[0], replace_global=lambda f, i: f)
    np.testing.assert_allclose(same.global_, plain.global_, atol=1e-9)
    changed = predict_with_global_input(predictor, SWEEPS[0], "zeros")
    assert np.abs(changed.params - plain.params).max() > 1e-3
    with pytest.raises(RuntimeError, match="changed the shape"):
        predictor.predict(SWEEPS[0], replace_global=lambda f, i: f[:, :1])
    with pytest.raises(ValueError, match="no separate global branch"):
        local = Predictor.from_model(create_model("local_only_tiny"))
        local.predict(SWEEPS[0], replace_global=lambda f, i: f)


def test_check_detects_a_global_branch_that_matters() -> None:
    result = global_branch_check(_cpu(_model(global_matters=True)), SWEEPS, label="dt", seed=0)
    assert [r["mode"] for r in result.rows] == ["none", *GLOBAL_MODES]
    none = result.row("none")
    assert none["prediction_change"] == 0.0 and none["n_scans"] == 3
    for mode in GLOBAL_MODES:
        row = result.row(mode)
        assert row["n_scans"] == 3
        assert row["prediction_change"] > 1e-3, mode  # the prediction moved by a measurable amount
        assert math.isfinite(row["GPE"]) and row["GPE"] > 0
        assert row["GPE"] != pytest.approx(none["GPE"], rel=1e-9, abs=1e-12), mode
        assert row["delta_GPE"] == pytest.approx(row["GPE"] - none["GPE"], rel=1e-9)
        assert 0.0 < row["p_value_GPE"] <= 1.0
    # the donor of other_sweep is of another subject whenever one exists
    assert result.donors["sub001__LH_rotation"] == "sub002__LH_rotation"


def test_check_reports_no_effect_when_the_global_branch_is_disconnected() -> None:
    model = _model(global_matters=False)
    plain = {s.key: predict(model, s, device="cpu").global_ for s in SWEEPS}
    result = global_branch_check(_cpu(model), SWEEPS, baseline=plain)
    for mode in GLOBAL_MODES:
        row = result.row(mode)
        assert row["prediction_change"] < 1e-6, mode
        assert abs(row["delta_GPE"]) < 1e-6
        assert row["p_value_GPE"] == 1.0  # all paired differences are (numerically) zero or tiny


def test_check_rejects_models_without_global_branch_and_bad_input() -> None:
    with pytest.raises(ValueError, match="no separate global branch"):
        global_branch_check(_cpu(create_model("local_only_tiny")), SWEEPS)
    with pytest.raises(ValueError, match="at least two"):
        global_branch_check(_cpu(_model(True)), SWEEPS[:1])
    with pytest.raises(ValueError, match="unknown modes"):
        global_branch_check(_cpu(_model(True)), SWEEPS, modes=["zeros", "blur"])
