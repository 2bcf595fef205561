"""One CLI convention for every command: exit codes, the device default, messages, progress."""

from __future__ import annotations

import io
import logging

import pytest

from dualtrack.cli import build_parser, main
from dualtrack.utils import DEFAULT_DEVICE, LogProgress, UsageError, progress_bar, resolve_device


def _subparsers():
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices


def test_every_device_flag_defaults_to_auto_and_says_so():
    with_device = []
    for name, sub in _subparsers().items():
        for action in sub._actions:
            if "--device" in action.option_strings:
                with_device.append(name)
                if name != "train":  # train's flag overrides runtime.device, whose default is auto
                    assert action.default == DEFAULT_DEVICE == "auto", name
                assert "auto" in action.help, name
    assert set(with_device) >= {"simulate", "evaluate", "predict", "reconstruct", "demo", "train"}


def test_simulate_help_shows_defaults_and_the_presets_real_sizes(capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default 2024)" in text and "train (frames_transfs/, default)" in text
    assert "128x160 px" in text and "200 / 400 frames" in text  # generated from the preset


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(UsageError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["train", "tiny_local", "optim.lrr=1"], 2, "command-line override 'optim.lrr=1'"),
        (["train", "tiny_local", "sampling.batch_size=1.5"], 2, "expected an integer"),
        (["train"], 2, "CONFIG is required"),
        (["evaluate"], 2, "RUN_OR_WEIGHTS is required"),
        (["simulate", "OUT", "--subjects", "0"], 2, "--subjects must be >= 1"),
        (["simulate", "OUT", "--device", "gpu0"], 2, "unknown device 'gpu0'"),
        (["export", "{tmp}/no_such_run"], 1, "no_such_run"),
        (["evaluate", "{tmp}/no_such_run", "--data", "{tmp}"], 1, "no_such_run"),
        (["reconstruct", "{tmp}/missing.h5", "--ground-truth", "-o", "{tmp}/v.nrrd"], 1, "missing.h5"),
        (["reconstruct", "{tmp}/missing.h5", "--ground-truth", "-o", "{tmp}/v.nrrd", "--max-gb", "nan"], 2,
         "--max-gb must be a positive number"),
        (["reconstruct", "{tmp}/missing.h5", "--ground-truth", "-o", "{tmp}/v.nrrd", "--max-gb", "-1"], 2,
         "--max-gb must be a positive number"),
        (["predict", "{tmp}/missing.h5", "--weights", "{tmp}", "-o", "{tmp}/o"], 1, "missing.h5"),
        (["verify-data", "{tmp}/nothing_here"], 1, ""),
    ],
)
def test_exit_codes_are_one_convention(argv, code, needle, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == code
    captured = capsys.readouterr()
    err = captured.err + captured.out
    assert needle in err
    assert "Traceback" not in err


def test_verbose_adds_the_traceback(tmp_path, capsys, caplog):
    with caplog.at_level(logging.ERROR):
        assert main(["-v", "export", str(tmp_path / "no_such_run")]) == 1
    assert "Traceback" in caplog.text


def test_progress_off_a_terminal_is_a_few_log_lines(caplog):
    stream = io.StringIO()  # not a terminal
    with caplog.at_level(logging.INFO, logger="dualtrack.progress"):
        bar = progress_bar(total=1000, desc="phase", unit="step", stream=stream)
        assert isinstance(bar, LogProgress)
        for _ in range(1000):
            bar.update(1)
            bar.set_postfix(loss="0.5")
        bar.close()
        items = list(progress_bar(range(7), desc="scans", stream=stream))
    lines = [r.getMessage() for r in caplog.records]
    assert items == list(range(7))
    assert stream.getvalue() == ""  # nothing drawn, no carriage returns
    phase = [m for m in lines if m.startswith("phase:")]
    assert 9 <= len(phase) <= 11 and "1000/1000 step (100%)" in phase[-1] and "loss=0.5" in phase[-1]
    assert any(m.startswith("scans: 7/7") for m in lines)


def test_disabled_progress_reports_nothing(caplog):
    with caplog.at_level(logging.INFO, logger="dualtrack.progress"):
        assert list(progress_bar(range(50), desc="quiet", enabled=False)) == list(range(50))
    assert "quiet" not in caplog.text
