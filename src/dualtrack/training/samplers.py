"""Which frames make a training item, and which items each process sees in each epoch.

Frame selection (pure functions of a ``torch.Generator``):

* :func:`clip_indices`: a contiguous clip (local encoder; the paper samples one 16-frame clip
  per scan per epoch), optionally temporally sub-sampled;
* :func:`subset_indices`: a random sorted subset of a whole sweep (global encoder);
* :func:`window_indices`: a whole sweep, or a random window of it when it is longer than the
  memory allows (fusion and sequence models).

Item order: :class:`EpochSampler` yields ``(item, seed)`` pairs. The permutation depends only on
``(seed, epoch)``, each process takes its own shard (DistributedSampler-style padding so every
process runs the same number of steps), and each item carries its own seed derived from
``(seed, epoch, position)``. Data loading is therefore independent of worker count and process
RNG state, which makes ``--resume`` exact: a resumed epoch skips the batches already done.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["clip_span", "clip_indices", "subset_indices", "window_indices", "item_seed", "EpochSampler"]


def clip_span(length: int, stride: int) -> int:
    """Number of consecutive frames covered by ``length`` frames taken every ``stride``."""
    return (length - 1) * stride + 1


def _randint(high: int, gen: torch.Generator) -> int:
    return int(torch.randint(high, (1,), generator=gen)) if high > 1 else 0


def clip_indices(num_frames: int, length: int, stride: int, gen: torch.Generator) -> np.ndarray:
    """Random contiguous span of ``clip_span(length, stride)`` frames.

    Returns:
        ``(clip_span,)`` int64 consecutive frame indices (sub-sample with ``[::stride]``).

    Raises:
        ValueError: the sweep is shorter than the span.
    """
    span = clip_span(length, stride)
    if num_frames < span:
        raise ValueError(f"a sweep of {num_frames} frames is shorter than a clip span of {span}")
    start = _randint(num_frames - span + 1, gen)
    return np.arange(start, start + span, dtype=np.int64)


def subset_indices(num_frames: int, size: int, gen: torch.Generator) -> np.ndarray:
    """``min(size, num_frames)`` distinct frame indices drawn uniformly, sorted ascending."""
    size = min(size, num_frames)
    perm = torch.randperm(num_frames, generator=gen)[:size]
    return np.sort(perm.numpy()).astype(np.int64)


def window_indices(num_frames: int, max_length: int | None, stride: int, gen: torch.Generator) -> np.ndarray:
    """Whole sweep, or a random contiguous window whose sub-sampled length is ``max_length``.

    Returns:
        consecutive frame indices covering the window (sub-sample with ``[::stride]``); the span
        is trimmed so that ``(span - 1) % stride == 0``.
    """
    span = num_frames if max_length is None else min(num_frames, clip_span(max_length, stride))
    span = (span - 1) // stride * stride + 1
    start = _randint(num_frames - span + 1, gen)
    return np.arange(start, start + span, dtype=np.int64)


def item_seed(seed: int, epoch: int, position: int) -> int:
    """Seed of one item: a hash of the run seed, the epoch and the item's position in it."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1, dtype=np.uint64)[0] >> 1)


class EpochSampler(Sampler):
    """Shuffled, sharded epochs over ``num_items`` items, yielding ``(item, item_seed)``.

    Args:
        num_items: items per epoch (scans x clips per scan).
        seed: run seed.
        rank, world_size: this process and the number of processes (1 without DDP).
        shuffle: shuffle per epoch (validation / statistics use ``False``).
    """

    def __init__(self, num_items: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if num_items < 1:
            raise ValueError("the training set has no usable item")
        self.num_items = num_items
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0

    @property
    def per_rank(self) -> int:
        """Items each process handles per epoch (padded by repetition)."""
        return math.ceil(self.num_items / self.world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch and skip its first ``start`` items of this rank (resume)."""
        self.epoch = epoch
        self.start = start

    def order(self) -> list[int]:
        """All positions of this epoch, before sharding (padded to a multiple of world size)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(
                int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
            )
            order = torch.randperm(self.num_items, generator=g).tolist()
        else:
            order = list(range(self.num_items))
        total = self.per_rank * self.world_size
        return (order * math.ceil(total / len(order)))[:total]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.order()
        for pos in range(self.rank + self.start * self.world_size, len(order), self.world_size):
            yield order[pos], item_seed(self.seed, self.epoch, pos)

    def __len__(self) -> int:
        return self.per_rank - self.start
