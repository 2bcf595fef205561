"""Training: augmentation math, sampling, frame cache, items, the loop, run dirs, stages, export."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import pickle

import h5py
import numpy as np
import pytest
import torch
import yaml

from dualtrack import geometry
from dualtrack.data import LazyFrames, Sweep, TusRecDataset
from dualtrack.data.splits import load_splits
from dualtrack.data.sweep import resize_frames
from dualtrack.models import create_model
from dualtrack.models.weights import export_model, load_bundle, load_model
from dualtrack.training import augment
from dualtrack.training.cache import FrameCache, direct_map
from dualtrack.training.config import ConfigError, load_config
from dualtrack.training.datasets import SweepItemDataset, collate_items, target_statistics
from dualtrack.training.loop import lr_factor, prepare_run, train
from dualtrack.training.samplers import EpochSampler, clip_indices, subset_indices, window_indices

RNG = np.random.default_rng(3)


def random_globals(n: int, seed: int = 0) -> np.ndarray:
    """A smooth random trajectory ``(n, 4, 4)`` with ``G[0] = I`` (corner-origin image mm)."""
    rng = np.random.default_rng(seed)
    steps = np.concatenate([rng.normal(0, 0.4, (n - 1, 3)), rng.normal(0, 1.5, (n - 1, 3))], 1)
    return geometry.chain_local(geometry.params_to_matrix(steps))


def centre_mm(shape, spacing, pixel_rc):
    """Centre-origin mm of a 0-based (row, col) pixel of an image of ``shape``."""
    r, c = pixel_rc
    return np.array(
        [spacing[0] * (c + 1 - (shape[1] + 1) / 2), spacing[1] * (r + 1 - (shape[0] + 1) / 2), 0.0]
    )


# ------------------------------------------------------------------------------ augmentation math


def test_flip_maps_mirrored_pixels_consistently():
    shape, spacing = (6, 9), (0.3, 0.2)
    img = np.zeros(shape, np.uint8)
    img[2, 1] = 255  # a marker at row 2, column 1
    local = geometry.params_to_matrix(np.array([[0.7, -0.4, 1.1, 4.0, -7.0, 12.0]]))
    frames, flipped = augment.flip_horizontal(np.stack([img, img]), local)
    r, c = np.argwhere(frames[1] == 255)[0]
    assert (r, c) == (2, shape[1] - 1 - 1)
    p_orig = centre_mm(shape, spacing, (2, 1))
    p_flip = centre_mm(shape, spacing, (r, c))
    np.testing.assert_allclose(p_flip, augment.FLIP_X[:3, :3] @ p_orig)
    # the point's position in the previous frame, seen in the mirrored images, is the mirror
    # of its position in the original images
    prev_orig = geometry.transform_points(local[0], p_orig[None])[0]
    prev_flip = geometry.transform_points(flipped[0], p_flip[None])[0]
    np.testing.assert_allclose(prev_flip, augment.FLIP_X[:3, :3] @ prev_orig, atol=1e-12)
    assert geometry.is_rigid(flipped).all()
    assert np.linalg.det(flipped[0, :3, :3]) == pytest.approx(1.0)
    np.testing.assert_allclose(augment.flip_transforms(flipped), local, atol=1e-12)


def test_reverse_of_a_single_transition_gives_a_tensor_ready_array():
    motion = geometry.params_to_matrix(np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]))
    rev = augment.reverse_transforms(motion)
    np.testing.assert_allclose(torch.as_tensor(rev).numpy(), geometry.invert(motion), atol=1e-12)


def test_reverse_equals_poses_of_the_reversed_sweep():
    g = random_globals(9, seed=1)
    local = geometry.local_from_global(g)
    rev = augment.reverse_transforms(local)
    g_rev = geometry.invert(g[-1]) @ g[::-1]  # poses of the reversed sweep relative to its first frame
    np.testing.assert_allclose(rev, geometry.local_from_global(g_rev), atol=1e-10)
    frames = RNG.integers(0, 255, (9, 4, 5), dtype=np.uint8)
    f2, l2 = augment.reverse_sweep(frames, local)
    np.testing.assert_array_equal(f2, frames[::-1])
    np.testing.assert_allclose(augment.reverse_transforms(l2), local, atol=1e-10)


def test_crop_recentring_matches_corner_frame_route():
    full, crop, spacing = (40, 60), (16, 24), (0.25, 0.35)
    top, left = 5, 30
    local_corner = geometry.local_from_global(random_globals(6, seed=2))
    ours = augment.recentre(
        geometry.corner_to_centre(local_corner, geometry.image_centre_mm(spacing, full)),
        augment.crop_offset_mm(full, top, left, crop, spacing),
    )
    # independent route: express the corner-origin motions in the crop's own corner frame (its
    # origin is `left` columns and `top` rows further), then move to the crop's centre
    shift = geometry.translation_matrix([left * spacing[0], top * spacing[1], 0.0])
    crop_corner = geometry.invert(shift) @ local_corner @ shift
    expected = geometry.corner_to_centre(crop_corner, geometry.image_centre_mm(spacing, crop))
    np.testing.assert_allclose(ours, expected, atol=1e-10)
    # a centred crop with even margins does not move the centre
    np.testing.assert_allclose(augment.crop_offset_mm(full, 12, 18, crop, spacing), 0.0)


def test_subsampling_composes_transforms():
    g = random_globals(13, seed=4)
    local = geometry.local_from_global(g)
    np.testing.assert_allclose(
        augment.subsample_local(local, 3), geometry.local_from_global(g[::3]), atol=1e-10
    )
    np.testing.assert_allclose(augment.subsample_local(local, 1), local)
    with pytest.raises(ValueError):
        augment.subsample_local(local, 5)


def test_draw_augmentation_is_seeded_and_in_bounds():
    kw = dict(
        flip=0.5, reverse=0.5, strides=[1, 2, 3], frame_shape=(48, 64), crop_shape=(32, 48), random_crop=True
    )
    draws = [augment.draw_augmentation(torch.Generator().manual_seed(s), **kw) for s in range(200)]
    again = [augment.draw_augmentation(torch.Generator().manual_seed(s), **kw) for s in range(200)]
    assert draws == again
    assert {d.stride for d in draws} == {1, 2, 3}
    assert 60 < sum(d.flip for d in draws) < 140 and 60 < sum(d.reverse for d in draws) < 140
    assert all(0 <= d.crop_top <= 16 and 0 <= d.crop_left <= 16 for d in draws)
    assert len({(d.crop_top, d.crop_left) for d in draws}) > 50
    centred = augment.draw_augmentation(torch.Generator().manual_seed(0), **{**kw, "random_crop": False})
    assert (centred.crop_top, centred.crop_left) == (8, 8)


# ------------------------------------------------------------------------------ sampling


def test_frame_selection():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = clip_indices(30, 8, 2, g)
        assert len(idx) == 15 and idx[0] >= 0 and idx[-1] < 30 and np.all(np.diff(idx) == 1)
        sub = subset_indices(30, 12, g)
        assert len(sub) == 12 and np.all(np.diff(sub) > 0) and sub[-1] < 30
        win = window_indices(30, 10, 3, g)
        assert len(win[::3]) == 10 and (len(win) - 1) % 3 == 0 and win[-1] < 30
    assert len(subset_indices(5, 12, g)) == 5
    assert len(window_indices(30, None, 1, g)) == 30
    with pytest.raises(ValueError, match="shorter"):
        clip_indices(10, 16, 1, g)


def test_epoch_sampler_shards_and_resumes():
    one = EpochSampler(11, seed=5)
    one.set_epoch(3)
    order = [i for i, _ in one]
    assert sorted(order) == list(range(11))
    one.set_epoch(4)
    assert [i for i, _ in one] != order
    shards = []
    for rank in range(3):
        s = EpochSampler(11, seed=5, rank=rank, world_size=3)
        s.set_epoch(3)
        shards.append(list(s))
    assert len({len(x) for x in shards}) == 1 and len(shards[0]) == 4  # padded to 12
    assert {i for x in shards for i, _ in x} == set(range(11))
    full = EpochSampler(11, seed=5, rank=1, world_size=3)
    full.set_epoch(3)
    resumed = EpochSampler(11, seed=5, rank=1, world_size=3)
    resumed.set_epoch(3, start=2)
    assert list(resumed) == list(full)[2:] and len(resumed) == 2


def test_lr_schedule():
    assert lr_factor(0, 100, 10, 0.0) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, 0.0) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, 0.0) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, 0.0) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)
    values = [lr_factor(s, 100, 10, 0.0) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


# ------------------------------------------------------------------------------ cache and items


@pytest.mark.parametrize("layout", ["contiguous", "chunked", "gzip"])
def test_cache_maps_uncompressed_h5_in_place_and_resizes(tmp_path, layout):
    t, y, x = np.meshgrid(np.arange(7), np.arange(12), np.arange(16), indexing="ij")
    frames = (5 * x + 3 * y + 7 * t).astype(np.uint8)  # smooth: a resize reproduces the linear ramp
    path = tmp_path / "scan.h5"
    kw = {
        "contiguous": {},
        "chunked": {"chunks": (1, 12, 16)},
        "gzip": {"chunks": (1, 12, 16), "compression": "gzip"},
    }
    with h5py.File(path, "w") as f:
        f.create_dataset("frames", data=frames, **kw[layout])
    lazy = LazyFrames(path)
    assert (direct_map(lazy) is None) == (layout == "gzip")
    sweep = Sweep.from_arrays(frames, name="a")
    sweep.frames = lazy
    cache = FrameCache(tmp_path / "cache", tmp_path)
    cache.build(sweep, (12, 16))
    copies = list((tmp_path / "cache").glob("*.npy")) if (tmp_path / "cache").exists() else []
    assert len(copies) == (1 if layout == "gzip" else 0)
    native = pickle.loads(pickle.dumps(cache)).frames("000", "a", 7, (12, 16))  # as in a worker
    np.testing.assert_array_equal(native[1:6:2], frames[1:6:2])
    np.testing.assert_array_equal(native[np.array([5, 0, 5])], frames[[5, 0, 5]])
    cache.build(sweep, (6, 8))
    small = cache.frames("000", "a", 7, (6, 8))
    assert small.shape == (7, 6, 8) and isinstance(small, np.memmap)
    np.testing.assert_array_equal(small, resize_frames(frames, (6, 8)))
    block = frames.reshape(7, 6, 2, 8, 2).astype(float).mean((2, 4))
    np.testing.assert_allclose(small[:, 1:-1, 1:-1], block[:, 1:-1, 1:-1], atol=1.0)
    with pytest.raises(FileNotFoundError, match="build the cache"):
        cache.frames("000", "a", 7, (3, 4))


def test_rewritten_scan_is_not_served_from_a_stale_cache(tmp_path):
    """Same subject, name and frame count, new content: the cache key follows the file."""
    path = tmp_path / "scan.h5"
    old = np.full((5, 12, 16), 10, np.uint8)
    with h5py.File(path, "w") as f:
        f.create_dataset("frames", data=old, compression="gzip")
    sweep = Sweep.from_arrays(old, name="a")
    sweep.frames = LazyFrames(path)
    cache = FrameCache(tmp_path / "cache", tmp_path)
    cache.build(sweep, (6, 8))
    assert cache.frames("000", "a", 5, (6, 8)).max() == 10
    new = np.full((5, 12, 16), 200, np.uint8)
    with h5py.File(path, "w") as f:
        f.create_dataset("frames", data=new, compression="gzip")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    fresh = FrameCache(tmp_path / "cache", tmp_path)  # a later training run
    fresh.build(sweep, (6, 8))
    assert fresh.frames("000", "a", 5, (6, 8)).min() == 200


def _dataset(root, mode="clip", global_stride=None, **sampling):
    cfg = load_config(
        "tiny_local", [f"sampling.mode={mode}", *(f"sampling.{k}={v}" for k, v in sampling.items())]
    )
    data = TusRecDataset(root)
    cache = FrameCache(root / ".dualtrack_cache", root)
    ds = SweepItemDataset(data, data.scans, cfg.data, cfg.sampling, cache, (32, 32), global_stride)
    ds.prepare_cache()
    return data, ds


def test_items_without_augmentation_are_true_consecutive_motions(tiny_dataset):
    data, ds = _dataset(tiny_dataset, flip=0.0, reverse=0.0, random_crop="false")
    item = ds[(2, 11)]
    rec, idx, _ = ds.draw(2, 11)
    sweep = data.load(rec.subject, rec.name)
    assert item["frames"].shape == (8, 32, 48) and item["frames"].dtype == torch.uint8
    np.testing.assert_array_equal(item["index"].numpy(), idx)
    np.testing.assert_array_equal(item["frames"].numpy(), np.asarray(sweep.frames)[idx][:, 8:40, 8:56])
    local = sweep.local_transforms()[idx[1:] - 1]
    expected = geometry.matrix_to_params(
        geometry.corner_to_centre(local, geometry.image_centre_mm(sweep.spacing, sweep.shape))
    )
    np.testing.assert_allclose(item["target"].numpy(), expected, atol=1e-4)


def test_augmented_items_match_transformed_frames(tiny_dataset):
    data, ds = _dataset(tiny_dataset, flip=1.0, reverse=1.0, random_crop="true", strides="[2]")
    rec, idx, aug = ds.draw(1, 123)
    assert aug.flip and aug.reverse and aug.stride == 2
    item = ds[(1, 123)]
    sweep = data.load(rec.subject, rec.name)
    sel = idx[::2]
    raw = np.asarray(sweep.frames)[sel][
        :, aug.crop_top : aug.crop_top + 32, aug.crop_left : aug.crop_left + 48
    ]
    np.testing.assert_array_equal(item["frames"].numpy(), raw[::-1, :, ::-1])
    np.testing.assert_array_equal(item["index"].numpy(), sweep.num_frames - 1 - sel[::-1])
    # targets: the motion between consecutive input frames of the reversed, mirrored, cropped clip,
    # computed from the global poses directly
    g = sweep.global_transforms()[sel[::-1]]
    local = geometry.local_from_global(geometry.invert(g[0]) @ g)
    offset = augment.crop_offset_mm(sweep.shape, aug.crop_top, aug.crop_left, (32, 48), sweep.spacing)
    local = augment.recentre(
        geometry.corner_to_centre(local, geometry.image_centre_mm(sweep.spacing, sweep.shape)), offset
    )
    expected = geometry.matrix_to_params(augment.FLIP_X @ local @ augment.FLIP_X)
    np.testing.assert_allclose(item["target"].numpy(), expected, atol=1e-4)


def test_subset_and_sweep_items_and_collate(tiny_dataset):
    _, ds = _dataset(tiny_dataset, mode="subset", subset_size=10)
    item = ds[(0, 5)]
    assert item["frames"].shape == (10, 32, 32) and np.all(np.diff(item["index"].numpy()) > 0)
    _, ds = _dataset(tiny_dataset, mode="sweep", global_stride=4, max_length=20)
    items = [ds[(i, 7 + i)] for i in range(2)]
    assert items[0]["frames"].shape == (20, 32, 48)
    assert items[0]["global_frames"].shape == (5, 32, 32)
    np.testing.assert_array_equal(items[0]["global_index"].numpy(), items[0]["index"].numpy()[::4])
    items[1] = {k: v[:-3] if k in ("frames", "index", "target") else v for k, v in items[1].items()}
    batch = collate_items(items, global_stride=4)
    assert batch["frames"].shape == (2, 17, 32, 48) and batch["target"].shape == (2, 16, 6)
    assert batch["global_frames"].shape == (2, 5, 32, 32)


def test_target_statistics_are_reproducible(tiny_dataset):
    _, ds = _dataset(tiny_dataset, flip=0.5)
    mean, std = target_statistics(ds, 20, seed=1)
    mean2, std2 = target_statistics(ds, 20, seed=1)
    np.testing.assert_array_equal(mean, mean2)
    assert mean.shape == (6,) and np.all(std > 0)
    # flips make tx and the rotations about y and z symmetric on average
    assert abs(mean[0]) < std[0]


# ------------------------------------------------------------------------------ the loop and runs


def _cfg(name, root, *overrides):
    return prepare_run(
        name, [f"data.root={root}", "runtime.device=cpu", "runtime.tensorboard=false", *overrides]
    )[0]


def _rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_local_stage_run_directory_and_phases(tiny_dataset, tmp_path):
    run = tmp_path / "local"
    cfg = _cfg("tiny_local", tiny_dataset, "stage.phases.0.epochs=1", "stage.phases.1.epochs=1")
    stop = train(
        _cfg(
            "tiny_local",
            tiny_dataset,
            "stage.phases.0.epochs=1",
            "stage.phases.1.epochs=1",
            "runtime.stop_after_steps=2",
        ),
        run,
    )
    assert not stop.finished and stop.state.step == 2 and stop.state.phase == 0  # end of phase "cnn"
    after_cnn = torch.load(run / "last.pt", weights_only=True)["model"]
    result = train(cfg, run, resume=True)
    n_train_scans = 4  # phase "temporal": one whole sweep per step
    assert result.finished and result.state.step == 4 + n_train_scans
    for name in (
        "config.yaml",
        "command.txt",
        "git.txt",
        "versions.json",
        "splits.json",
        "metrics.csv",
        "target_stats.json",
        "last.pt",
        "best.pt",
    ):
        assert (run / name).is_file(), name
    saved = load_config(run / "config.yaml")
    assert saved.runtime.stop_after_steps == 2 and dataclasses.replace(saved, runtime=cfg.runtime) == cfg
    assert "torch" in json.loads((run / "versions.json").read_text())
    splits = load_splits(run / "splits.json")
    assert len(splits.val) == 1 and len(splits.train) == 2 and not set(splits.val) & set(splits.train)
    rows = _rows(run)
    train_rows = [r for r in rows if r["train_loss"]]
    assert [int(r["step"]) for r in train_rows] == list(range(1, 9))
    phases = ["cnn", "cnn", "pooling", "pooling", *["temporal"] * n_train_scans]
    assert [r["phase"] for r in train_rows] == phases
    assert all(float(r["train_loss"]) > 0 and float(r["items_per_s"]) > 0 for r in train_rows)
    val_rows = [r for r in rows if r["val_GPE"]]
    assert len(val_rows) == 3 and all(float(r["val_GPE"]) > 0 for r in val_rows)
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["state"]["best_gpe"] == pytest.approx(min(float(r["val_GPE"]) for r in val_rows), rel=1e-5)
    final = torch.load(run / "last.pt", weights_only=True)["model"]
    stats = json.loads((run / "target_stats.json").read_text())
    np.testing.assert_allclose(final["target_mean"].numpy(), stats["mean"], rtol=1e-6)
    # the second phase froze the 3D CNN and trained the pooling, the third trained the temporal
    # transformer on whole sweeps with CNN and pooling frozen
    cnn = [k for k in final if k.startswith("local_encoder.cnn.") and final[k].is_floating_point()]
    pool = [k for k in final if k.startswith("local_encoder.pool.")]
    temporal = [k for k in final if k.startswith("local_encoder.temporal.")]
    assert cnn and pool and temporal
    assert all(torch.equal(final[k], after_cnn[k]) for k in cnn)
    assert any(not torch.equal(final[k], after_cnn[k]) for k in pool)
    assert any(not torch.equal(final[k], after_cnn[k]) for k in temporal)


def test_workers_give_identical_training(tiny_dataset, tmp_path):
    losses = []
    for workers in (0, 2):
        run = tmp_path / f"w{workers}"
        train(
            _cfg(
                "tiny_global",
                tiny_dataset,
                "optim.epochs=1",
                f"data.num_workers={workers}",
                "runtime.val_every=0",
                "data.val_fraction=0.0",
            ),
            run,
        )
        losses.append([r["train_loss"] for r in _rows(run) if r["train_loss"]])
    assert losses[0] == losses[1] and len(losses[0]) == 3


@pytest.fixture(scope="module")
def encoder_runs(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    common = ("runtime.val_every=0", "data.val_fraction=0.0")
    train(
        _cfg("tiny_local", tiny_dataset, "stage.phases.0.epochs=1", "stage.phases.1.epochs=0", *common),
        root / "local",
    )
    train(_cfg("tiny_global", tiny_dataset, "optim.epochs=1", *common), root / "global")
    return root


def test_fusion_loads_and_freezes_both_encoders(tiny_dataset, tmp_path, encoder_runs):
    run = tmp_path / "fusion"
    result = train(
        _cfg(
            "tiny_fusion",
            tiny_dataset,
            "optim.epochs=1",
            f"stage.local_from={encoder_runs / 'local'}",
            f"stage.global_from={encoder_runs / 'global'}",
        ),
        run,
    )
    assert result.finished and np.isfinite(result.best_gpe)
    final = torch.load(run / "last.pt", weights_only=True)["model"]
    local = torch.load(encoder_runs / "local" / "last.pt", weights_only=True)["model"]
    glob = torch.load(encoder_runs / "global" / "last.pt", weights_only=True)["model"]
    # the authors' fusion: the 3D CNN and the pooling stay as loaded; the local temporal
    # transformer and the global encoder start from the loaded weights and train on
    for src, prefix in ((local, "local_encoder.cnn."), (local, "local_encoder.pool.")):
        keys = [k for k in src if k.startswith(prefix)]
        assert keys and all(torch.equal(final[k], src[k]) for k in keys), prefix
    for src, prefix in ((local, "local_encoder.temporal."), (glob, "global_encoder.temporal.")):
        keys = [k for k in src if k.startswith(prefix) and src[k].is_floating_point()]
        assert keys and any(not torch.equal(final[k], src[k]) for k in keys), prefix
    torch.manual_seed(0)  # the loop seeds with runtime.seed before building the model
    initial = create_model("dualtrack_tiny").state_dict()
    fusion = [k for k in final if k.startswith(("fusion.", "head.")) and final[k].is_floating_point()]
    assert fusion and any(not torch.equal(final[k], initial[k]) for k in fusion)
    reloaded = load_model(run).state_dict()
    assert all(torch.equal(reloaded[k], final[k]) for k in final)


@pytest.mark.parametrize("aug", [(0.0, 0.0), (1.0, 1.0)], ids=["plain", "flipped_reversed"])
def test_fusion_on_cached_features_equals_fusion_on_frames(tiny_dataset, tmp_path, encoder_runs, monkeypatch,
                                                           aug):
    """With the 3D CNN and the pooling frozen, fusion trains on per-frame features computed once
    per scan and frame order: the same losses as recomputing them every step (fp32, whole sweeps),
    and the CNN runs once per scan instead of once per step."""
    from dualtrack.models.local_encoder import LocalEncoder

    calls = []
    tokens = LocalEncoder.frame_tokens
    monkeypatch.setattr(LocalEncoder, "frame_tokens", lambda self, x: calls.append(1) or tokens(self, x))
    losses, counts = {}, {}
    for cache in (True, False):
        calls.clear()
        run = tmp_path / f"cache_{cache}"
        train(_cfg("tiny_fusion", tiny_dataset, "optim.epochs=2", "runtime.amp=false", "runtime.val_every=0",
                   "data.val_fraction=0.0", "sampling.max_length=null", f"sampling.flip={aug[0]}",
                   f"sampling.reverse={aug[1]}", f"runtime.cache_features={str(cache).lower()}",
                   f"stage.local_from={encoder_runs / 'local'}",
                   f"stage.global_from={encoder_runs / 'global'}"),
              run)
        losses[cache] = [float(r["train_loss"]) for r in _rows(run) if r["train_loss"]]
        counts[cache] = len(calls)
    assert len(losses[True]) == len(losses[False]) == 12  # 6 training scans, 2 epochs
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)
    variants = 4 if aug[0] else 1
    assert counts[True] == 6 * variants and counts[False] == 12


def test_a_sparse_model_sees_a_sweep_as_many_frames_as_it_trained_on(tiny_dataset, tmp_path):
    """``global_only`` trained on subsets of 10 frames predicts a sweep from 10 evenly spaced frames
    (its default, ``inference_frames``, is 12): the frame spacing matches training's."""
    run = tmp_path / "global"
    train(_cfg("tiny_global", tiny_dataset, "optim.epochs=1", "runtime.val_every=0",
               "sampling.subset_size=10"), run)
    model = load_model(run)
    assert create_model("global_only_tiny").input_spec.sparse_frames == 12
    assert model.input_spec.sparse_frames == 10
    with pytest.raises(ValueError, match="sees every frame"):
        create_model("local_only_tiny").configure_input(sparse_frames=10)


def test_stage_chaining_is_checked_before_anything_starts(tiny_dataset, tmp_path, encoder_runs):
    run = tmp_path / "never"
    with pytest.raises(ConfigError, match="does not exist"):
        train(_cfg("tiny_fusion", tiny_dataset, f"stage.local_from={tmp_path / 'missing'}"), run)
    with pytest.raises(ConfigError, match="no checkpoint"):
        (tmp_path / "empty").mkdir()
        train(_cfg("tiny_fusion", tiny_dataset, f"stage.local_from={tmp_path / 'empty'}"), run)
    with pytest.raises(ConfigError, match="global_only_tiny.*does not match"):
        train(
            _cfg(
                "tiny_fusion",
                tiny_dataset,
                f"stage.local_from={encoder_runs / 'global'}",
                f"stage.global_from={encoder_runs / 'global'}",
            ),
            run,
        )
    with pytest.raises(ConfigError, match="does not match"):
        train(_cfg("tiny_global", tiny_dataset, f"stage.init_from={encoder_runs / 'local'}"), run)
    with pytest.raises(ConfigError, match="valid:"):
        train(_cfg("tiny_global", tiny_dataset, "stage.freeze=[local_cnn]"), run)
    with pytest.raises(ConfigError, match="unknown config keys"):
        train(_cfg("tiny_global", tiny_dataset, "model.depth=3"), run)
    assert not run.exists()


def test_export_and_strict_loading(tiny_dataset, tmp_path, encoder_runs):
    out = export_model(encoder_runs / "local", tmp_path / "export")
    meta = json.loads((out / "config.json").read_text())
    assert meta["model_name"] == "local_only_tiny" and meta["input"]["local_crop"] == [32, 48]
    assert meta["input"]["pixel_spacing"] is not None and meta["input"]["halo"] == 3
    assert len(meta["target_mean"]) == 6
    a, b = load_bundle(encoder_runs / "local"), load_bundle(out)
    x = torch.rand(1, 6, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(a.model(x), b.model(x), rtol=0, atol=0)
    assert b.model.input_spec == a.model.input_spec and b.model.input_spec.local_crop == (32, 48)
    meta["model_name"] = "global_only_tiny"
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not fit model 'global_only_tiny'"):
        load_model(out)
    with pytest.raises(ValueError, match="expected 'dualtrack'"):
        load_bundle(encoder_runs / "local", expected="dualtrack")


def test_resume_rules(tiny_dataset, tmp_path, encoder_runs):
    with pytest.raises(ConfigError, match="cannot change optim.lr"):
        prepare_run(None, ["optim.lr=1"], encoder_runs / "local", resume=True)
    with pytest.raises(ConfigError, match="no last.pt"):
        prepare_run(None, [], tmp_path, resume=True)
    cfg, _ = prepare_run(None, ["runtime.device=cpu"], encoder_runs / "local", resume=True)
    assert cfg.model.name == "local_only_tiny"
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg, encoder_runs / "local")
    saved = yaml.safe_load((encoder_runs / "local" / "config.yaml").read_text())
    assert saved["model"]["name"] == "local_only_tiny"


def test_a_run_without_validation_says_so_loudly(tiny_dataset, tmp_path, caplog):
    cfg = _cfg("tiny_local", tiny_dataset, "stage.phases.0.epochs=1", "stage.phases.1.epochs=1",
               "data.val_fraction=0", "runtime.stop_after_steps=1")
    with caplog.at_level("WARNING", logger="dualtrack.training.loop"):
        train(cfg, tmp_path / "noval")
    assert "NO VALIDATION SCANS" in caplog.text and "data.val_fraction=0.2" in caplog.text
    caplog.clear()
    # the default fraction of a small dataset still holds out a subject: no warning
    cfg = _cfg("tiny_local", tiny_dataset, "stage.phases.0.epochs=1", "stage.phases.1.epochs=1",
               "runtime.stop_after_steps=1")
    with caplog.at_level("WARNING", logger="dualtrack.training.loop"):
        train(cfg, tmp_path / "withval")
    assert "NO VALIDATION SCANS" not in caplog.text
    assert len(load_splits(tmp_path / "withval" / "splits.json").val) == 1
