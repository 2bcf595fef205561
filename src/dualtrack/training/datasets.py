"""Training items drawn from sweeps: frames at model resolution plus true 6-DoF targets.

An item is a dict of tensors:

* ``frames``: ``(T, h, w)`` uint8 (converted to float ``[0, 1]`` on the device, which moves 4x
  fewer bytes than float frames); absent when ``read_frames`` is off (the loop then feeds cached
  per-frame features);
* ``index``: ``(T,)`` long, the frame's position in the (possibly reversed) sweep;
* ``global_frames`` / ``global_index`` (models with a global branch, ``global_stride = s``): the
  **uncropped** input frames ``0, s, 2s, ...`` at the global size ``(Tg, hg, wg)`` uint8 and their
  positions, exactly what :class:`dualtrack.inference.Predictor` feeds at inference;
* ``scan``, ``variant``: the record index of the item's scan and its frame order
  (:func:`feature_variant` of its flip / reversal), the key of cached per-frame features;
* ``target``: ``(T-1, 6)`` float32, row ``k-1`` the 6-DoF ``(tx, ty, tz [mm], rx, ry, rz [deg])``
  of ``T_{k-1<-k}`` between consecutive *input* frames, in centre-origin image mm of the frames
  the network sees (after crop and flip), **not** normalised (the model's buffers hold the
  statistics).

Sampling modes (see :class:`~dualtrack.training.config.SamplingConfig`): ``clip`` (contiguous
clips of the local encoder), ``subset`` (random sorted frames of a sweep at the global size) and
``sweep`` (whole sweeps or long windows). Frames come from a :class:`FrameCache`, never from the
``.h5`` files during training. The local input is a crop of the native frames (random or
centred) as at inference; the global input is the whole frame resized to the global size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from dualtrack import geometry
from dualtrack.data import TusRecDataset
from dualtrack.training import augment
from dualtrack.training.cache import FrameCache
from dualtrack.training.config import DataConfig, SamplingConfig
from dualtrack.training.samplers import EpochSampler, clip_indices, clip_span, subset_indices, window_indices
from dualtrack.utils import progress_bar

__all__ = ["ScanRecord", "SweepItemDataset", "collate_items", "target_statistics", "feature_variant"]

log = logging.getLogger(__name__)


def feature_variant(flip: bool, reverse: bool) -> int:
    """Which of a scan's four frame orders an item shows: ``flip + 2 * reverse`` (the key of the
    training loop's feature cache)."""
    return int(flip) + 2 * int(reverse)


@dataclass(frozen=True)
class ScanRecord:
    """What the dataset keeps in memory per scan (poses are small, frames stay on disk).

    Attributes:
        subject, name: scan identity.
        num_frames: ``N``.
        shape: native ``(H, W)``.
        spacing: native ``(sx, sy)`` mm per pixel.
        global_poses: ``(N, 4, 4)`` float64 ``T_{0<-i}`` in corner-origin image mm.
    """

    subject: str
    name: str
    num_frames: int
    shape: tuple[int, int]
    spacing: tuple[float, float]
    global_poses: np.ndarray


class SweepItemDataset(Dataset):
    """Map-style dataset indexed by ``(item, seed)`` pairs from :class:`EpochSampler`.

    Args:
        dataset: the TUS-REC dataset.
        scans: ``(subject, name)`` pairs of this split (scans too short for ``sampling`` are
            skipped with a warning).
        data: input geometry (``local_crop``).
        sampling: mode, lengths and augmentation probabilities.
        cache: the frame cache (call :meth:`prepare_cache` once before iterating).
        global_size: ``(h, w)`` of global inputs (``None`` = native size).
        global_stride: the model's global sub-sampling (``None`` = no global input in
            ``clip`` / ``sweep`` mode).
        train: draw random crops and augmentations (``False``: centred crop, no augmentation).
    """

    def __init__(
        self,
        dataset: TusRecDataset,
        scans: Sequence[tuple[str, str]],
        data: DataConfig,
        sampling: SamplingConfig,
        cache: FrameCache,
        global_size: tuple[int, int] | None = None,
        global_stride: int | None = None,
        train: bool = True,
    ) -> None:
        self.dataset = dataset
        self.data = data
        self.sampling = sampling
        self.cache = cache
        self.global_size = None if global_size is None else (int(global_size[0]), int(global_size[1]))
        self.global_stride = global_stride if sampling.mode != "subset" else None
        self.train = train
        self.read_frames = True
        """Read the local frames of each item (off while the loop feeds cached per-frame features)."""
        need = self.min_frames()
        records = []
        for subject, name in scans:
            sweep = dataset.load(subject, name)
            if sweep.num_frames < need:
                log.warning(
                    "skipping %s: %d frames < %d needed by the sampling", sweep.key, sweep.num_frames, need
                )
                continue
            records.append(
                ScanRecord(
                    subject, name, sweep.num_frames, sweep.shape, sweep.spacing, sweep.global_transforms()
                )
            )
        if not records:
            raise ValueError(
                f"{dataset.root}: no scan of this split has the {need} frames the sampling needs"
            )
        self.records = records

    # ------------------------------------------------------------------ geometry

    def min_frames(self) -> int:
        """Shortest usable sweep for this sampling mode."""
        if self.sampling.mode == "clip":
            return clip_span(self.sampling.clip_length, max(self.sampling.strides))
        return 2

    def global_resolution(self, record: ScanRecord) -> tuple[int, int]:
        """``(h, w)`` of global inputs: ``global_size`` or the native frame size."""
        return self.global_size if self.global_size is not None else record.shape

    def resolution(self, record: ScanRecord) -> tuple[int, int]:
        """``(h, w)`` of the cached frames ``frames`` are cut from."""
        return self.global_resolution(record) if self.sampling.mode == "subset" else record.shape

    def crop_shape(self, record: ScanRecord) -> tuple[int, int] | None:
        """Local crop ``(h, w)``, or ``None`` (whole frames, or ``subset`` mode).

        Raises:
            ValueError: the crop does not fit in the frames.
        """
        if self.sampling.mode == "subset" or self.data.local_crop is None:
            return None
        h, w = int(self.data.local_crop[0]), int(self.data.local_crop[1])
        if h > record.shape[0] or w > record.shape[1]:
            raise ValueError(
                f"data.local_crop {[h, w]} does not fit in the {list(record.shape)} frames of "
                f"sub{record.subject}__{record.name}"
            )
        return h, w

    def prepare_cache(self, progress: bool = False) -> None:
        """Decode every scan into the frame cache at the resolutions this dataset reads."""
        for rec in progress_bar(self.records, desc="caching frames", unit="scan", enabled=progress):
            sweep = self.dataset.load(rec.subject, rec.name)
            self.cache.build(sweep, self.resolution(rec))
            if self.global_stride:
                self.cache.build(sweep, self.global_resolution(rec))

    # ------------------------------------------------------------------ items

    @property
    def items_per_scan(self) -> int:
        return 1 if self.sampling.mode == "sweep" else self.sampling.clips_per_scan

    def __len__(self) -> int:
        return len(self.records) * self.items_per_scan

    def draw(self, item: int, seed: int) -> tuple[ScanRecord, np.ndarray, augment.Augmentation]:
        """Choose the scan, the frame indices (before sub-sampling) and the augmentation."""
        rec = self.records[item // self.items_per_scan]
        gen = torch.Generator().manual_seed(seed)
        s = self.sampling
        aug = augment.draw_augmentation(
            gen,
            flip=s.flip if self.train else 0.0,
            reverse=s.reverse if self.train else 0.0,
            strides=list(s.strides) if self.train and s.mode != "subset" else [1],
            frame_shape=self.resolution(rec),
            crop_shape=self.crop_shape(rec),
            random_crop=s.random_crop and self.train,
        )
        if s.mode == "clip":
            idx = clip_indices(rec.num_frames, s.clip_length, aug.stride, gen)
        elif s.mode == "subset":
            idx = subset_indices(rec.num_frames, s.subset_size, gen)
        else:
            idx = window_indices(rec.num_frames, s.max_length, aug.stride, gen)
        return rec, idx, aug

    def targets(self, rec: ScanRecord, idx: np.ndarray, aug: augment.Augmentation) -> np.ndarray:
        """6-DoF targets ``(T-1, 6)`` float64 of the augmented item (see the module docstring)."""
        centre = geometry.image_centre_mm(rec.spacing, rec.shape)
        local = geometry.corner_to_centre(geometry.local_from_global(rec.global_poses[idx]), centre)
        if self.sampling.mode != "subset":
            local = augment.subsample_local(local, aug.stride)
        crop = self.crop_shape(rec)
        if crop is not None:
            offset = augment.crop_offset_mm(rec.shape, aug.crop_top, aug.crop_left, crop, rec.spacing)
            local = augment.recentre(local, offset)
        if aug.flip:
            local = augment.flip_transforms(local)
        if aug.reverse:
            local = augment.reverse_transforms(local)
        return geometry.matrix_to_params(local)

    def read(self, rec: ScanRecord, size: tuple[int, int], idx: np.ndarray) -> np.ndarray:
        """Frames ``idx`` of a scan from the frame cache at ``size`` (uint8 ``(len(idx), h, w)``)."""
        arr = self.cache.frames(rec.subject, rec.name, rec.num_frames, size)
        step = int(idx[1] - idx[0]) if len(idx) > 1 else 1
        if step > 0 and np.array_equal(idx, idx[0] + step * np.arange(len(idx))):
            return arr[idx[0] : idx[-1] + 1 : step]
        return arr[idx]

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        item, seed = key
        rec, idx, aug = self.draw(item, seed)
        target = self.targets(rec, idx, aug)
        if self.sampling.mode != "subset":
            idx = idx[:: aug.stride]
        frames = self.read(rec, self.resolution(rec), idx) if self.read_frames else None
        crop = self.crop_shape(rec)
        if frames is not None and crop is not None:
            frames = frames[:, aug.crop_top : aug.crop_top + crop[0], aug.crop_left : aug.crop_left + crop[1]]
        if frames is not None and aug.flip:
            frames = frames[..., ::-1]
        index = idx
        if aug.reverse:
            frames = None if frames is None else frames[::-1]
            index = rec.num_frames - 1 - idx[::-1]
        out = {
            "index": torch.from_numpy(np.ascontiguousarray(index)),
            "target": torch.from_numpy(target.astype(np.float32)),
            "scan": torch.tensor(item // self.items_per_scan),
            "variant": torch.tensor(feature_variant(aug.flip, aug.reverse)),
        }
        if self.read_frames:
            out["frames"] = torch.from_numpy(np.ascontiguousarray(frames))
        if self.global_stride:
            order = idx[::-1] if aug.reverse else idx
            gframes = self.read(rec, self.global_resolution(rec), np.sort(order[:: self.global_stride]))
            if aug.reverse:
                gframes = gframes[::-1]
            if aug.flip:
                gframes = gframes[..., ::-1]
            out["global_frames"] = torch.from_numpy(np.ascontiguousarray(gframes))
            out["global_index"] = out["index"][:: self.global_stride].clone()
        return out


def collate_items(items: list[dict[str, torch.Tensor]], global_stride: int = 1) -> dict[str, torch.Tensor]:
    """Stack items into a batch; sequences of unequal length are cut to the shortest (global
    inputs, taken every ``global_stride`` frames, to the frames that remain)."""
    t = min(len(it["index"]) for it in items)
    out = {
        "index": torch.stack([it["index"][:t] for it in items]),
        "target": torch.stack([it["target"][: t - 1] for it in items]),
        "scan": torch.stack([it["scan"] for it in items]),
        "variant": torch.stack([it["variant"] for it in items]),
    }
    if "frames" in items[0]:
        out["frames"] = torch.stack([it["frames"][:t] for it in items])
    if "global_frames" in items[0]:
        tg = -(-t // global_stride)
        out["global_frames"] = torch.stack([it["global_frames"][:tg] for it in items])
        out["global_index"] = torch.stack([it["global_index"][:tg] for it in items])
    return out


def target_statistics(ds: SweepItemDataset, num_items: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-component mean and std ``(6,)`` of the targets of ``num_items`` training items.

    Only poses are read (no frames). The items are those of a seeded epoch, so the statistics
    are reproducible and identical on every DDP process.
    """
    sampler = EpochSampler(len(ds), seed)
    rows: list[np.ndarray] = []
    epoch = 0
    while len(rows) < num_items:
        sampler.set_epoch(epoch)
        for item, item_seed in list(sampler)[: num_items - len(rows)]:
            rec, idx, aug = ds.draw(item, item_seed)
            rows.append(ds.targets(rec, idx, aug))
        epoch += 1
    allt = np.concatenate(rows)
    return allt.mean(0), allt.std(0)
