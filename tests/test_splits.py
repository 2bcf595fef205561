"""Subject-level splits: determinism, disjointness, JSON round trip, the organisers' folds."""

from __future__ import annotations

import random

import pytest

from dualtrack.data.splits import (
    Splits,
    load_splits,
    make_splits,
    save_splits,
    tusrec_baseline_folds,
    tusrec_baseline_splits,
)

SUBJECTS = [f"{i:03d}" for i in range(50)]


def test_make_splits_is_deterministic_and_disjoint():
    a = make_splits(SUBJECTS, val=5, test=0.2, seed=3)
    b = make_splits(list(reversed(SUBJECTS)), val=5, test=0.2, seed=3)
    assert a == b
    assert (len(a.train), len(a.val), len(a.test)) == (35, 5, 10)
    assert not set(a.train) & set(a.val) and not set(a.train) & set(a.test) and not set(a.val) & set(a.test)
    assert a.all == SUBJECTS
    assert a.train == sorted(a.train)
    c = make_splits(SUBJECTS, val=5, test=0.2, seed=4)
    assert c.val != a.val or c.test != a.test
    assert (
        a.split_of(a.val[0]) == "val" and a.split_of(int(a.test[0])) == "test" and a.split_of("999") is None
    )


def test_make_splits_accepts_int_ids_and_zero_sizes():
    s = make_splits(range(4), val=1, test=0, seed=0)
    assert s.test == [] and len(s.val) == 1 and s.all == ["000", "001", "002", "003"]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"subjects": ["000", "001"], "val": 1, "test": 1}, "leave any for training"),
        ({"subjects": ["000", "000", "001"]}, "duplicates"),
        ({"subjects": SUBJECTS, "val": 1.5}, "fraction"),
        ({"subjects": SUBJECTS, "val": -1}, ">= 0"),
        ({"subjects": ["abc"]}, "subject"),
    ],
)
def test_make_splits_errors(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        make_splits(**kwargs)


def test_splits_validation():
    with pytest.raises(ValueError, match="overlap"):
        Splits(train=["000", "001"], val=["001"], test=[])
    with pytest.raises(ValueError, match="empty"):
        Splits(train=[], val=["001"], test=["002"])
    with pytest.raises(ValueError, match="more than once"):
        Splits(train=["000", "000"], val=[], test=[])


def test_save_load_round_trip(tmp_path):
    s = make_splits(SUBJECTS, val=0.1, test=0.1, seed=9)
    path = save_splits(tmp_path / "sub" / "splits.json", s)
    back = load_splits(path)
    assert back == s and back.meta == {"method": "random", "seed": 9}
    assert not [p for p in path.parent.iterdir() if p.name != "splits.json"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "not a valid JSON"),
        ('{"train": ["000"], "val": []}', "'test'"),
        ('{"train": ["000"], "val": ["000"], "test": []}', "overlap"),
    ],
)
def test_load_splits_errors_name_the_file(tmp_path, text, needle):
    path = tmp_path / "splits.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=needle) as err:
        load_splits(path)
    assert str(path) in str(err.value)
    with pytest.raises(FileNotFoundError):
        load_splits(tmp_path / "missing.json")


def test_tusrec_baseline_folds_match_organisers_shuffle():
    folds = tusrec_baseline_folds()
    order = list(range(50))
    random.Random(4).shuffle(order)
    assert folds == [sorted(f"{i:03d}" for i in order[k * 10 : (k + 1) * 10]) for k in range(5)]
    assert sorted(s for f in folds for s in f) == SUBJECTS
    s = tusrec_baseline_splits()
    assert (len(s.train), len(s.val), len(s.test)) == (30, 10, 10)
    assert s.val == folds[3] and s.test == folds[4] and "016" in s.train
    with pytest.raises(ValueError, match="fold indices"):
        tusrec_baseline_splits(train_folds=(0, 5))


def test_a_fraction_above_zero_holds_out_at_least_one_subject():
    s = make_splits(["000", "001"], val=0.2, test=0.0, seed=0)
    assert len(s.val) == 1 and len(s.train) == 1 and s.test == []
    assert make_splits(["000", "001"], val=0.0, test=0.0).val == []
    with pytest.raises(ValueError, match="val/test 0 is allowed"):
        make_splits(["000"], val=0.2, test=0.0)
