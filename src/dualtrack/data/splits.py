"""Subject-level train / validation / test splits (a subject's scans never straddle two splits)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dualtrack.data.tusrec import normalise_subject
from dualtrack.utils import atomic_write

__all__ = [
    "Splits",
    "make_splits",
    "save_splits",
    "load_splits",
    "tusrec_baseline_folds",
    "tusrec_baseline_splits",
    "TUSREC_BASELINE_FOLDS",
]

TUSREC_BASELINE_FOLDS: tuple[tuple[int, ...], ...] = (
    (16, 21, 22, 37, 38, 40, 41, 44, 48, 49),
    (2, 7, 10, 12, 13, 29, 31, 32, 34, 39),
    (0, 8, 20, 24, 27, 28, 36, 42, 43, 47),
    (3, 11, 14, 17, 18, 23, 26, 33, 35, 45),
    (1, 4, 5, 6, 9, 15, 19, 25, 30, 46),
)
"""The organisers' 5 subject folds of the 50 TUS-REC training subjects (``random.Random(4)``
shuffle of the sorted ids, cut into 5 folds of 10). Their baseline trains on folds 0-2,
validates on fold 3 and tests internally on fold 4."""


@dataclass(frozen=True)
class Splits:
    """Disjoint lists of subject ids.

    Attributes:
        train, val, test: sorted subject ids (``"000"`` style); ``train`` is never empty.
        meta: free-form provenance (e.g. ``{"seed": 0}``), saved with the splits.
    """

    train: list[str]
    val: list[str]
    test: list[str]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("train", "val", "test"):
            ids = [normalise_subject(s) for s in getattr(self, name)]
            if len(set(ids)) != len(ids):
                dup = sorted({s for s in ids if ids.count(s) > 1})
                raise ValueError(f"split {name!r} lists subjects more than once: {dup}")
            object.__setattr__(self, name, sorted(ids))
        if not self.train:
            raise ValueError("the train split is empty")
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            common = sorted(set(getattr(self, a)) & set(getattr(self, b)))
            if common:
                raise ValueError(
                    f"splits {a!r} and {b!r} overlap (subjects {common}); splits must be disjoint"
                )

    @property
    def all(self) -> list[str]:
        """Every subject of the three splits, sorted."""
        return sorted(self.train + self.val + self.test)

    def split_of(self, subject: str | int) -> str | None:
        """``"train"``, ``"val"``, ``"test"`` or ``None`` for a subject id."""
        sid = normalise_subject(subject)
        for name in ("train", "val", "test"):
            if sid in getattr(self, name):
                return name
        return None

    def to_dict(self) -> dict:
        return {"train": self.train, "val": self.val, "test": self.test, "meta": self.meta}


def _count(value: int | float, n: int, name: str) -> int:
    """Subjects for a count or fraction; a fraction > 0 gives at least one subject."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a count (int) or a fraction (float in [0, 1)), got {value!r}")
    if isinstance(value, (float, np.floating)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} fraction must be in [0, 1), got {value}")
        return max(int(round(value * n)), 1 if value > 0 else 0)
    if value < 0:
        raise ValueError(f"{name} count must be >= 0, got {value}")
    return int(value)


def make_splits(
    subjects: Iterable[str | int],
    val: int | float = 0.1,
    test: int | float = 0.1,
    seed: int = 0,
) -> Splits:
    """Random subject-level split, deterministic for a given ``seed`` and subject set.

    Args:
        subjects: subject ids (order does not matter; they are sorted first).
        val, test: number of subjects (int) or fraction of subjects (float, rounded; a fraction
            above 0 holds out at least one subject, so ``val=0.2`` of 2 subjects is 1, not 0).
        seed: seed of the permutation (``numpy.random.default_rng``).

    Returns:
        :class:`Splits` with at least one training subject.

    Raises:
        ValueError: duplicate ids, bad sizes, or no subject left for training.
    """
    ids = [normalise_subject(s) for s in subjects]
    if len(set(ids)) != len(ids):
        raise ValueError("subject list contains duplicates")
    ids = sorted(ids)
    n = len(ids)
    n_val, n_test = _count(val, n, "val"), _count(test, n, "test")
    if n_val + n_test >= n:
        raise ValueError(
            f"cannot split {n} subject(s) into {n_val} validation + {n_test} test and leave any for "
            f"training; use fewer held-out subjects (val/test 0 is allowed) or a dataset with more subjects"
        )
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [ids[i] for i in order]
    return Splits(
        train=shuffled[n_val + n_test :],
        val=shuffled[:n_val],
        test=shuffled[n_val : n_val + n_test],
        meta={"method": "random", "seed": int(seed)},
    )


def tusrec_baseline_folds() -> list[list[str]]:
    """The organisers' 5 subject folds (see :data:`TUSREC_BASELINE_FOLDS`) as ``"000"`` ids."""
    return [[normalise_subject(s) for s in fold] for fold in TUSREC_BASELINE_FOLDS]


def tusrec_baseline_splits(
    train_folds: Sequence[int] = (0, 1, 2), val_folds: Sequence[int] = (3,), test_folds: Sequence[int] = (4,)
) -> Splits:
    """Splits built from the organisers' folds (default: their baseline's 30 / 10 / 10 subjects)."""
    folds = tusrec_baseline_folds()

    def pick(which: Sequence[int]) -> list[str]:
        bad = [k for k in which if not 0 <= k < len(folds)]
        if bad:
            raise ValueError(f"fold indices must be in 0..{len(folds) - 1}, got {bad}")
        return [s for k in which for s in folds[k]]

    return Splits(
        train=pick(train_folds),
        val=pick(val_folds),
        test=pick(test_folds),
        meta={
            "method": "tusrec_baseline_folds",
            "train_folds": list(train_folds),
            "val_folds": list(val_folds),
            "test_folds": list(test_folds),
        },
    )


def save_splits(path: str | os.PathLike, splits: Splits) -> Path:
    """Write ``splits`` as JSON (atomically). Returns the path."""
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(splits.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def load_splits(path: str | os.PathLike) -> Splits:
    """Read splits written by :func:`save_splits`.

    Raises:
        FileNotFoundError: missing file.
        ValueError: not JSON, missing keys, overlapping or empty train split (message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"splits file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a valid JSON splits file ({exc})") from None
    if not isinstance(data, dict) or any(not isinstance(data.get(k), list) for k in ("train", "val", "test")):
        raise ValueError(f"{path}: expected a JSON object with lists 'train', 'val' and 'test'")
    try:
        return Splits(train=data["train"], val=data["val"], test=data["test"], meta=data.get("meta") or {})
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
