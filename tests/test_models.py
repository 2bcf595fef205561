"""Every registered model (tiny variants): forward contract, gradients, tiny overfit, config
validation, state_dict round trip. Then DualTrack-family specifics: backbones, receptive field,
parameter groups, freezing, loading sub-module weights, global backbones."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from conftest import model_inputs
from dualtrack.models import GlobalEncoderConfig, InputSpec, create_model, list_models
from dualtrack.models.global_encoder import GlobalEncoder, build_global_backbone
from dualtrack.models.resnet import ResNet2d, resnet18_2d, resnet18_3d

TINY = [name for name in list_models() if name.endswith("_tiny")]
FAMILY = ["dualtrack_tiny", "local_only_tiny", "global_only_tiny", "coupled_tiny"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def structured_clip(
    b: int = 1, t: int = 8, size: int = 32, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random texture seen through a window moving by known per-frame shifts.

    Returns frames ``(b, t, size, size)`` in ``[0, 1]`` and targets ``(b, t-1, 6)`` that are fixed
    functions of the shifts (learnable from the images, not constants).
    """
    g = torch.Generator().manual_seed(seed)
    big = size + 4 * t
    tex = torch.rand(b, 1, big, big, generator=g)
    tex = nn.functional.avg_pool2d(tex, 5, 1, 2)
    tex = (tex - tex.amin()) / (tex.amax() - tex.amin())
    shifts = torch.randint(0, 4, (b, t, 2), generator=g).cumsum(1)
    frames = torch.stack(
        [
            torch.stack([tex[i, 0, s[0] : s[0] + size, s[1] : s[1] + size] for s in shifts[i]])
            for i in range(b)
        ]
    )
    d = (shifts[:, 1:] - shifts[:, :-1]).float() - 1.5
    target = torch.stack(
        [d[..., 0], d[..., 1], d.sum(-1) / 2, d[..., 0] - d[..., 1], -d[..., 0], d[..., 1]], -1
    )
    return frames, target


# ---------------------------------------------------------------- every registered model


def test_every_architecture_has_a_tiny_variant() -> None:
    names = set(list_models())
    assert set(FAMILY) <= names
    full = [n for n in names if not n.endswith("_tiny")]
    assert full and all(f"{n}_tiny" in names for n in full)


@pytest.mark.parametrize("name", TINY)
def test_forward_contract(name: str) -> None:
    model = create_model(name)
    frames, _ = structured_clip(b=2, t=8)
    out = model(frames, **model_inputs(model, frames))
    assert out.shape == (2, 7, 6)
    assert torch.isfinite(out).all()
    index = torch.arange(0, 16, 2).expand(2, 8)  # sub-sampled frames, true indices
    assert model(frames, **model_inputs(model, frames, index)).shape == (2, 7, 6)
    assert model(frames[:, :5], **model_inputs(model, frames[:, :5])).shape == (2, 4, 6)


@pytest.mark.parametrize("name", TINY)
def test_every_parameter_gets_a_finite_gradient(name: str) -> None:
    model = create_model(name).train()
    frames, target = structured_clip(b=2, t=8)
    loss = model.loss(model(frames, **model_inputs(model, frames)), target)
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad[:5]}"
    zero = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.any()]
    assert len(zero) <= 0.05 * len(list(model.parameters())), f"all-zero gradients: {zero}"


@pytest.mark.parametrize("name", TINY)
def test_tiny_overfit(name: str) -> None:
    model = create_model(name).train()
    frames, target = structured_clip(b=1, t=8, seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(30):
        loss = model.loss(model(frames, **model_inputs(model, frames)), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-5:]) < 0.25 * losses[0], f"{name}: loss {losses[0]:.3f} -> {losses[-5:]}"


@pytest.mark.parametrize("name", TINY)
def test_create_model_rejects_unknown_keys(name: str) -> None:
    with pytest.raises(TypeError, match="not_a_key"):
        create_model(name, not_a_key=1)


@pytest.mark.parametrize("name", TINY)
def test_state_dict_round_trip(name: str) -> None:
    src = create_model(name)
    src.set_target_stats(torch.arange(6.0), torch.arange(1.0, 7.0))
    torch.manual_seed(1)
    dst = create_model(name)
    frames, _ = structured_clip(b=1, t=6)
    src.eval(), dst.eval()
    with torch.no_grad():
        extra = model_inputs(src, frames)
        assert not torch.allclose(src(frames, **extra), dst(frames, **extra))
        dst.load_state_dict(src.state_dict(), strict=True)
        assert torch.equal(src(frames, **extra), dst(frames, **extra))
    assert torch.equal(dst.target_std, torch.arange(1.0, 7.0))


def test_list_models_cli_prints_parameter_counts(capsys) -> None:
    from dualtrack.cli import main

    assert main(["list-models", "--filter", "only_tiny"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split()[0] for line in lines] == ["global_only_tiny", "local_only_tiny"]
    n = sum(p.numel() for p in create_model("local_only_tiny").parameters())
    assert lines[1].split()[1] == f"{n:,d}"
    assert main(["list-models", "--filter", "no_such_model"]) == 1


# ---------------------------------------------------------------- backbones


def test_full_size_backbones_match_resnet18_layout() -> None:
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    with torch.device("meta"):
        big3d, small3d, r2d = resnet18_3d(), resnet18_3d(small_window=True), resnet18_2d()
    # the 3D CNN of the reference implementation: 33.15 M (legacy) and 11.47 M (small window)
    assert count(big3d) / 1e6 == pytest.approx(33.15, abs=0.01)
    assert count(small3d) / 1e6 == pytest.approx(11.47, abs=0.01)
    assert count(r2d) / 1e6 == pytest.approx(11.17, abs=0.01)  # ResNet-18 minus its classifier
    assert big3d.temporal_receptive_field == 17 and small3d.temporal_receptive_field == 5
    assert resnet18_3d(temporal_kernel=5, width=4, layers=(1, 1, 1, 1)).temporal_receptive_field == 2 + 4 * 4


@pytest.mark.parametrize("small_window", [False, True])
def test_3d_resnet_receptive_field_is_exact_and_tight(small_window: bool) -> None:
    net = resnet18_3d(width=4, layers=(1, 1, 1, 1), small_window=small_window)
    net.train()
    x = torch.rand(1, 1, 24, 32, 32)
    with torch.no_grad():
        net(x)  # BatchNorm running statistics of this input
    net.eval()
    r = net.temporal_receptive_field
    with torch.no_grad():
        full = net(x)
        assert full.shape == (1, 32, 24, 2, 2)  # temporal stride 1, spatial /16
        window = net(x[:, :, 10 - r : 14 + r])[:, :, r : r + 4]
        assert torch.allclose(window, full[:, :, 10:14], atol=1e-6)
        short = net(x[:, :, 10 - r + 1 : 14 + r - 1])[:, :, r - 1 : r + 3]
        assert (short - full[:, :, 10:14]).abs().max() > 1e-4


def test_2d_resnet_shapes() -> None:
    net = ResNet2d(width=4, layers=(1, 1, 1, 1))
    x = torch.rand(3, 1, 64, 48)
    assert net.forward_features(x).shape == (3, 32, 4, 3)
    assert torch.allclose(net(x), net.forward_features(x).mean((-2, -1)))
    assert ResNet2d(width=4, layers=(1, 1, 1, 1), stem_pool=True).forward_features(x).shape == (3, 32, 2, 2)
    with pytest.raises(ValueError, match="layers"):
        ResNet2d(layers=(2, 2))


# ---------------------------------------------------------------- DualTrack family


def test_full_size_dualtrack_configuration() -> None:
    with torch.device("meta"):
        model = create_model("dualtrack")
    sizes = {k: sum(p.numel() for p in v) / 1e6 for k, v in model.parameter_groups().items()}
    assert sizes["local_pool"] == pytest.approx(0.216, abs=0.001)  # patch embedding 512x64x2x2 + 4 layers
    assert sizes["local_temporal"] == pytest.approx(0.084, abs=0.001)  # 4 layers of width 64, FFN 32
    assert 27 < sizes["global"] < 30  # ResNet-18 + projection + 8 x (512, FFN 1024) layers
    # the paper's "small temporal windows" by default: +-5 frames, 11.47 M parameters
    assert sizes["local_cnn"] == pytest.approx(11.47, abs=0.01)
    assert model.input_spec.halo == 5 and model.input_spec.global_stride == 8
    assert model.input_spec.global_size == (224, 224)
    assert len(model.fusion.decoder.layers.layers) == 8
    with torch.device("meta"):
        legacy = create_model("dualtrack", local_encoder={"small_window": False})
    legacy_cnn = sum(p.numel() for p in legacy.parameter_groups()["local_cnn"]) / 1e6
    assert legacy_cnn == pytest.approx(33.15, abs=0.01)
    assert legacy.input_spec.halo == 17


def test_global_resnet_has_the_standard_stem_by_default_and_the_authors_as_an_option() -> None:
    frames = torch.rand(1, 2, 224, 224)
    tiny = dict(width=4, layers=(1, 1, 1, 1), dim=16, num_layers=1, heads=2, ffn=16)
    std = GlobalEncoder(GlobalEncoderConfig(**tiny))
    authors = GlobalEncoder(GlobalEncoderConfig(**tiny, stem_pool=False))
    x = std.resize(frames)
    assert std.backbone.forward_features(x).shape[-2:] == (7, 7)
    assert authors.backbone.forward_features(x).shape[-2:] == (14, 14)


@pytest.mark.parametrize("name", FAMILY)
def test_parameter_groups_partition_the_parameters(name: str) -> None:
    model = create_model(name)
    grouped = [id(p) for ps in model.parameter_groups().values() for p in ps]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("name", TINY)
def test_two_step_forward_equals_forward(name: str) -> None:
    model = create_model(name).eval()
    frames, _ = structured_clip(b=2, t=9)
    extra = model_inputs(model, frames, torch.arange(9).expand(2, 9))
    with torch.no_grad():
        two_step = model.decode(model.encode(frames), **extra)
        assert torch.allclose(two_step, model(frames, **extra), atol=1e-6)


@pytest.mark.parametrize("name", TINY)
def test_every_model_declares_its_input_spec(name: str) -> None:
    """The contract: a spec from creation, halo matching the per-frame part, the global branch
    exactly when the model has a global encoder fed separately."""
    model = create_model(name)
    spec = model.input_spec
    assert spec.min_frames >= 2 and spec.intensity_divisor == 255.0
    # the authors' layouts come with their crop and spacing (a learned pooling grid fixes the crop)
    authors = name.startswith("dualtrack_tusrec")
    assert (spec.local_crop is None) != authors
    assert (spec.max_frames is None) != authors
    assert spec.has_global_branch == name.startswith("dualtrack")
    assert (spec.sparse_frames is not None) == name.startswith("global_only")
    assert InputSpec.from_dict(spec.to_dict()) == spec
    model.configure_input(local_crop=(32, 48), pixel_spacing=(0.2, 0.2))
    assert model.input_spec.local_crop == (32, 48)
    with pytest.raises(ValueError, match="belong to the architecture"):
        model.configure_input(halo=0)
    with pytest.raises(ValueError, match="unknown input spec keys"):
        InputSpec.from_dict({**spec.to_dict(), "crop": [1, 2]})


def test_global_input_is_explicit() -> None:
    """DualTrack never derives its global input from the (cropped) local frames."""
    model = create_model("dualtrack_tiny").eval()
    frames, _ = structured_clip(b=1, t=8)
    with pytest.raises(ValueError, match="global branch needs global_frames"):
        model(frames)
    with pytest.raises(ValueError, match="has no global branch"):
        create_model("local_only_tiny")(frames, global_frames=frames[:, ::4],
                                        global_index=torch.arange(2)[None])


def test_freeze_keeps_groups_fixed_and_in_eval_mode() -> None:
    model = create_model("dualtrack_tiny")
    model.freeze(["local_cnn", "local_pool"])
    model.train()
    assert not model.local_encoder.cnn.training and not model.local_encoder.pool.training
    assert model.local_encoder.temporal.training and model.global_encoder.training
    bn = model.local_encoder.cnn.stem[1]
    stats = bn.running_mean.clone()
    frames, target = structured_clip(b=1, t=8)
    model.loss(model(frames, **model_inputs(model, frames)), target).backward()
    assert torch.equal(bn.running_mean, stats)  # eval-mode BatchNorm: statistics untouched
    assert all(p.grad is None for p in model.local_encoder.cnn.parameters())
    assert all(p.grad is not None for p in model.fusion.parameters())
    assert model.global_encoder.backbone.stem[1].num_batches_tracked > 0
    model.unfreeze(["local_cnn"])
    assert model.local_encoder.cnn.training and all(
        p.requires_grad for p in model.local_encoder.cnn.parameters()
    )
    with pytest.raises(KeyError, match="unknown parameter groups"):
        model.freeze(["local_cnnn"])


def test_init_from_stage_checkpoints() -> None:
    local = create_model("local_only_tiny").eval()
    glob = create_model("global_only_tiny").eval()
    dual = create_model("dualtrack_tiny").eval()
    frames, _ = structured_clip(b=1, t=8)
    index = torch.arange(8)[None]
    with torch.no_grad():
        assert not torch.allclose(dual.local_encoder(frames, index), local.local_encoder(frames, index))
        dual.init_from(local.state_dict(), ["local_encoder"])
        dual.init_from(glob.state_dict(), ["global_encoder"])
        assert torch.equal(dual.local_encoder(frames, index), local.local_encoder(frames, index))
        assert torch.equal(dual.global_encoder(frames, index), glob.global_encoder(frames, index))
    with pytest.raises(KeyError, match="no entries"):
        dual.init_from(local.state_dict(), ["global_encoder"])
    wider = create_model("local_only_tiny", local_encoder={"dim": 32})
    with pytest.raises(RuntimeError, match="size mismatch"):
        dual.init_from(wider.state_dict(), ["local_encoder"])
    coupled = create_model("coupled_tiny")
    coupled.init_from(local.state_dict(), coupled.stage_sources()["local_from"].modules)
    assert dual.stage_sources()["local_from"].freeze == ("local_cnn", "local_pool")
    assert dual.stage_sources()["global_from"].freeze == ()


def test_dualtrack_uses_the_global_frames() -> None:
    model = create_model("dualtrack_tiny").eval()
    frames, _ = structured_clip(b=1, t=12)
    index = torch.arange(12)[None]
    gidx = index[:, ::4]
    with torch.no_grad():
        derived = model(frames, global_frames=frames[:, ::4], global_index=gidx)
        other = model(frames, global_frames=frames[:, ::4].flip(-1), global_index=gidx)
        assert (other - derived).abs().max() > 1e-5
        # the global frames may come at another resolution; the encoder resizes them itself
        hi_res = nn.functional.interpolate(frames[:, ::4], scale_factor=2.0, mode="nearest")
        assert model(frames, global_frames=hi_res, global_index=gidx).shape == (1, 11, 6)
    with pytest.raises(ValueError, match="do not match"):
        model(frames, index=index, global_frames=frames[:, ::4], global_index=index)


def test_bad_inputs_give_clear_errors() -> None:
    model = create_model("local_only_tiny")
    with pytest.raises(ValueError, match=r"\(B, T, H, W\)"):
        model(torch.rand(8, 32, 32))
    with pytest.raises(ValueError, match="at least 2 frames"):
        model(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="index"):
        model(torch.rand(1, 4, 32, 32), index=torch.arange(3)[None])
    with pytest.raises(ValueError, match="divisible"):
        create_model("dualtrack_tiny", fusion={"heads": 3})
    with pytest.raises(TypeError, match=r"FusionConfig: unknown keys \['hidden'\]"):
        create_model("dualtrack_tiny", fusion={"hidden": 3})


# ---------------------------------------------------------------- global backbones


def test_resnet_backbone_weights_from_a_local_file(tmp_path) -> None:
    source = ResNet2d(width=4, layers=(1, 1, 1, 1))
    path = tmp_path / "backbone.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    tiny = dict(size=32, dim=16, num_layers=1, heads=2, ffn=16, stem_pool=False)
    enc = GlobalEncoder(GlobalEncoderConfig(width=4, layers=(1, 1, 1, 1), weights=str(path), **tiny))
    for key, value in source.state_dict().items():
        assert torch.equal(enc.backbone.state_dict()[key], value)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        build_global_backbone("resnet18", weights=tmp_path / "nope.pt")
    with pytest.raises(ValueError, match="do not fit"):
        build_global_backbone("resnet18", width=8, layers=(1, 1, 1, 1), weights=path)
    with pytest.raises(KeyError, match="unknown global backbone"):
        build_global_backbone("resnet19")


def test_timm_backbone_without_timm_raises_a_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ImportError, match="optional package timm"):
        create_model("global_only_tiny", global_encoder={"backbone": "timm:resnet18"})


class _FakeTimmNet(nn.Module):
    def __init__(self, in_chans: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, 8, 3, 2, 1)
        self.num_features = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((-2, -1))


def test_timm_backbone_plumbing_and_grayscale_weights(monkeypatch, tmp_path) -> None:
    calls = {}

    def create(name, pretrained, in_chans, num_classes):
        calls.update(name=name, pretrained=pretrained, in_chans=in_chans, num_classes=num_classes)
        return _FakeTimmNet(in_chans)

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create))
    rgb = _FakeTimmNet(3)
    path = tmp_path / "rgb.pt"
    torch.save(rgb.state_dict(), path)
    model = create_model("global_only_tiny",
                         global_encoder={"backbone": "timm:fake_net", "weights": str(path)})
    assert calls == {"name": "fake_net", "pretrained": False, "in_chans": 1, "num_classes": 0}
    weight = model.global_encoder.backbone.conv.weight
    assert torch.allclose(weight, rgb.conv.weight.sum(1, keepdim=True))
    frames, _ = structured_clip(b=1, t=5)
    assert model(frames).shape == (1, 4, 6)


@pytest.mark.parametrize("dims", [2, 3])
def test_batchnorm_is_folded_in_eval_mode_with_the_same_result(dims):
    from dualtrack.models.resnet import conv_bn

    torch.manual_seed(0)
    conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(3, 8, 3, padding=1, bias=dims == 3)
    bn = (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(8)
    x = torch.randn(2, 3, *([6] * dims))
    bn.train()
    bn(conv(x))  # update the running statistics away from their defaults
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1.0, 1.0)
    train_out = conv_bn(conv, bn, x)
    assert torch.allclose(train_out, nn.functional.batch_norm(
        conv(x), None, None, bn.weight, bn.bias, training=True, eps=bn.eps), atol=1e-5)
    bn.eval()
    with torch.no_grad():
        folded, plain = conv_bn(conv, bn, x), bn(conv(x))
    assert torch.allclose(folded, plain, atol=1e-5)


def test_3d_cnn_keeps_channels_last_weights_through_loading():
    net = resnet18_3d(width=4, layers=(1, 1, 1, 1))
    conv = net.stem[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last_3d)
    other = resnet18_3d(width=4, layers=(1, 1, 1, 1))
    other.load_state_dict(net.state_dict())
    assert other.stem[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    out = net.eval()(torch.rand(1, 1, 5, 32, 32))
    assert out.shape == (1, 32, 5, 2, 2)
