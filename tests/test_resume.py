"""`--resume` continues exactly: an interrupted run and an uninterrupted one are identical (CPU)."""

from __future__ import annotations

import csv

import torch

from dualtrack.cli import main
from dualtrack.training.loop import prepare_run, train

COMMON = (
    "runtime.device=cpu",
    "runtime.tensorboard=false",
    "stage.phases.0.epochs=2",  # 4 training scans, batch 2: 2 steps per epoch, 8 steps in all
    "stage.phases.1.epochs=2",
    "stage.phases.2.epochs=0",  # the whole-sweep phase is resumed like the others
    "model.local_encoder.dropout=0.2",  # dropout draws from the global RNG: restored on resume
    "sampling.strides=[1, 2]",
)


def _rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [{k: v for k, v in r.items() if k != "items_per_s"} for r in csv.DictReader(fh)]


def test_interrupted_run_continues_exactly(tiny_dataset, tmp_path):
    overrides = [f"data.root={tiny_dataset}", *COMMON]
    full = tmp_path / "full"
    done = train(prepare_run("tiny_local", overrides)[0], full)
    assert done.finished and done.state.step == 8

    # stop mid-epoch in phase 1, then at the start of phase 2, then run to the end (via the CLI)
    part = tmp_path / "part"
    first = train(prepare_run("tiny_local", [*overrides, "runtime.stop_after_steps=3"])[0], part)
    assert not first.finished and first.state.step == 3
    cfg, _ = prepare_run(None, ["runtime.stop_after_steps=5"], part, resume=True)
    second = train(cfg, part, resume=True)
    assert not second.finished and second.state.step == 5 and second.state.phase == 1
    assert main(["train", "--resume", "--run-dir", str(part)]) == 0

    rows_full, rows_part = _rows(full), _rows(part)
    assert len([r for r in rows_full if r["train_loss"]]) == 8
    assert rows_part == rows_full  # same steps, learning rates, losses and validation metrics
    a = torch.load(full / "last.pt", weights_only=True)
    b = torch.load(part / "last.pt", weights_only=True)
    assert a["state"] == b["state"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert "resumed" in (part / "command.txt").read_text()


def test_killed_during_the_save_after_a_validation_resumes_without_a_duplicate_row(tiny_dataset, tmp_path,
                                                                                 monkeypatch):
    """runtime.checkpoint_every=1, and the process dies while writing the checkpoint that follows an
    epoch-end validation: the resumed run's metrics.csv equals an uninterrupted run's."""
    from dualtrack.training import loop

    overrides = [f"data.root={tiny_dataset}", *COMMON, "runtime.checkpoint_every=1"]
    full = tmp_path / "full"
    train(prepare_run("tiny_local", overrides)[0], full)

    part = tmp_path / "part"
    save = loop._Trainer._save
    seen = {"validations": 0}
    validate = loop._Trainer._validate

    def counting_validate(self, *args, **kwargs):
        seen["validations"] += 1
        return validate(self, *args, **kwargs)

    def dying_save(self, name, *args, **kwargs):
        if name == "last.pt" and seen["validations"] == 1:
            raise KeyboardInterrupt  # the kill: the atomic write leaves the previous last.pt
        return save(self, name, *args, **kwargs)

    monkeypatch.setattr(loop._Trainer, "_validate", counting_validate)
    monkeypatch.setattr(loop._Trainer, "_save", dying_save)
    try:
        train(prepare_run("tiny_local", overrides)[0], part)
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    assert main(["train", "--resume", "--run-dir", str(part)]) == 0
    assert _rows(part) == _rows(full)
