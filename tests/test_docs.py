"""The documentation is executed, so an example that goes stale fails CI.

Every fenced ``python`` and ``bash`` block of README.md and docs/*.md is tested, in one of three
modes chosen by an HTML comment on the line before the block (see docs/architecture.md, "Docs
that are executed"):

* ``<!-- doc-test: run -->`` (the default for ``python``): executed verbatim in a fresh folder that
  holds ``demo_output/``, the output of ``dualtrack demo --quick`` (the same layout ``make demo``
  leaves), so the paths in the docs are the demo's paths. The blocks of one page share one
  namespace and run in order. In ``bash`` blocks every ``dualtrack ...`` command runs in-process
  and must exit 0.
* ``<!-- doc-test: check -->`` (the default for ``bash``): commands that need real data, a GPU or
  hours are checked, not run: ``dualtrack`` commands are parsed by the real argument parser and
  their training / benchmark configs and ``key=value`` overrides are loaded and type-checked;
  ``python benchmarks/X.py`` commands must name flags that the script's ``--help`` lists;
  ``make X`` must be a Makefile target.
* ``<!-- doc-test: skip (reason) -->`` (``python`` only): the block is a fragment or needs what the
  tests do not have; its import statements still run, so renamed APIs are caught.

Also here: the command examples inside every sub-command's ``--help`` are parsed, and the demo's
measured duration and metrics appear in the docs only as generated from docs/demo_results.json.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from dualtrack.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKER = re.compile(r"<!--\s*doc-test:\s*(run|check|skip)\b(.*?)-->")
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    mode: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def doc_blocks(page: Path) -> list[Block]:
    """The ``python`` / ``bash`` blocks of a Markdown page with their test mode."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(1), i
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        marker = MARKER.search(prev)
        if lang in ("python", "bash"):
            mode = marker.group(1) if marker else ("run" if lang == "python" else "check")
            if lang == "bash" and mode == "skip":
                raise AssertionError(f"{page}:{start + 1}: bash blocks are run or checked, never skipped")
            blocks.append(Block(page, start + 1, lang, mode, "\n".join(lines[start + 1 : j])))
        i = j + 1
    return blocks


def commands(code: str) -> list[list[str]]:
    """Shell commands of a bash block as argv lists (continuations joined, comments dropped)."""
    out, current = [], ""
    for raw in code.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        argv = shlex.split(current, comments=True)
        if argv:
            out.append(argv)
        current = ""
    return out


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture
def doc_cwd(demo_output, tmp_path, monkeypatch) -> Path:
    """A fresh working folder with ``demo_output`` in it."""
    (tmp_path / "demo_output").symlink_to(demo_output, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ------------------------------------------------------------------------------- checking


def _check_dualtrack(argv: list[str], where: str) -> None:
    from dualtrack.evaluation.benchmark import load_benchmark_config
    from dualtrack.training.config import load_config

    try:
        with contextlib.redirect_stderr(sys.stdout):
            args = build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"{where}: `dualtrack {shlex.join(argv)}` does not parse") from exc
    if args.command == "train":
        config, overrides = args.config, list(args.overrides)
        if config is not None and "=" in config:
            config, overrides = None, [config, *overrides]
        load_config(config, overrides)
    elif args.command == "benchmark":
        load_benchmark_config(args.config, args.overrides)


def _script_help(script: Path, command: tuple[str, ...] = ()) -> str:
    """``--help`` of a script, or of its sub-command ``command``."""
    return subprocess.run(
        [sys.executable, str(script), *command, "--help"], capture_output=True, text=True, check=True,
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
    ).stdout


def check_command(argv: list[str], where: str, help_cache: dict[Path, str]) -> None:
    """Parse / validate one documented command without running it (see the module docstring)."""
    while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):  # leading VAR=value
        argv = argv[1:]
    prog = argv[0]
    if prog == "dualtrack":
        _check_dualtrack(argv[1:], where)
    elif prog == "torchrun":
        assert "-m" in argv and argv[argv.index("-m") + 1] == "dualtrack.cli", where
        _check_dualtrack(argv[argv.index("-m") + 2 :], where)
    elif prog == "make":
        targets = re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M)
        assert set(argv[1:]) <= set(targets), f"{where}: make targets {argv[1:]} not in {targets}"
    elif Path(prog).name.startswith("python"):
        script = REPO / argv[1]
        assert script.is_file(), f"{where}: {argv[1]} does not exist"
        if script not in help_cache:
            help_cache[script] = _script_help(script)
        key, text = script, help_cache[script]
        # a sub-command (`script.py compare --out D`): its own help lists its flags
        if len(argv) > 2 and re.search(rf"{{[^}}]*\b{re.escape(argv[2])}\b[^}}]*}}", text):
            key = (script, argv[2])
            if key not in help_cache:
                help_cache[key] = _script_help(script, (argv[2],))
            text = help_cache[key]
        for flag in (a.split("=")[0] for a in argv[2:] if a.startswith("--")):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (
                f"{where}: {' '.join(argv[1:3])} has no flag {flag}"
            )
    elif prog not in ("pip", "cd", "git"):
        raise AssertionError(f"{where}: the doc test does not know how to check {prog!r}")


def run_python(block: Block, namespace: dict) -> None:
    tree = ast.parse(block.code, filename=block.where)
    if block.mode == "skip":
        tree.body = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    try:
        exec(compile(tree, block.where, "exec"), namespace)  # noqa: S102 - the docs are ours
    except Exception as exc:
        raise AssertionError(f"{block.where}: the python block fails: {type(exc).__name__}: {exc}") from exc


# ------------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_page_examples(page, doc_cwd, capsys):
    namespace: dict = {"__name__": "__doc_example__"}
    help_cache: dict[Path, str] = {}
    for block in doc_blocks(page):
        if block.lang == "python":
            run_python(block, namespace)
        elif block.mode == "run":
            for argv in commands(block.code):
                assert argv[0] == "dualtrack", f"{block.where}: run blocks hold dualtrack commands only"
                code = main(argv[1:])
                err = capsys.readouterr().err
                assert code == 0, f"{block.where}: `{shlex.join(argv)}` exited {code}: {err}"
        else:
            for argv in commands(block.code):
                check_command(argv, block.where, help_cache)


def test_readme_python_example_runs_verbatim(doc_cwd):
    """The README's five-line API example, exactly as printed, against what `make demo` leaves."""
    blocks = [b for b in doc_blocks(REPO / "README.md") if b.lang == "python"]
    assert len(blocks) == 1 and blocks[0].mode == "run"
    namespace: dict = {}
    exec(compile(blocks[0].code, "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["pred"].global_.shape == (namespace["sweep"].num_frames, 4, 4)


def test_the_markers_are_recognised(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "<!-- doc-test: skip (a fragment) -->\n```python\nx = y\n```\n\n```bash\ndualtrack list-models\n```\n"
        "<!-- doc-test: run -->\n\n```bash\ndualtrack list-models\n```\n```text\nnot tested\n```\n"
    )
    modes = [(b.lang, b.mode) for b in doc_blocks(page)]
    assert modes == [("python", "skip"), ("bash", "check"), ("bash", "run")]
    with pytest.raises(AssertionError, match="does not parse"):
        check_command(["dualtrack", "predict", "--no-such-flag"], "x", {})
    with pytest.raises(Exception, match="optim.lrr"):
        check_command(["dualtrack", "train", "local", "optim.lrr=1"], "x", {})
    assert commands("dualtrack a \\\n   b  # note\n\n# only a comment\n") == [["dualtrack", "a", "b"]]


def test_examples_in_help_texts_parse():
    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    checked = 0
    for name, sub in subs.items():
        text = (sub.description or "") + "\n" + (sub.epilog or "")
        kept, continued = [], False
        for line in text.splitlines():
            if continued or line.strip().startswith("dualtrack "):
                kept.append(line.split("  # ")[0])
                continued = line.rstrip().endswith("\\")
        for argv in commands("\n".join(kept)):
            check_command(argv, f"dualtrack {name} --help", {})
            checked += 1
    assert checked >= 8


# ------------------------------------------------------------------------------- generated figures

DURATION = re.compile(r"\b\d+(?:\.\d+)?\s*(?:min|minutes|minute|seconds)\b")
BEGIN, END = "<!-- demo-results:begin -->", "<!-- demo-results:end -->"
LINE_BEGIN, LINE_END = "<!-- demo-duration:begin -->", "<!-- demo-duration:end -->"


def _between(text: str, begin: str, end: str) -> str:
    assert text.count(begin) == 1 and text.count(end) == 1, f"expected one {begin} ... {end}"
    return text.split(begin, 1)[1].split(end, 1)[0].strip("\n")


def test_demo_figures_in_the_docs_are_generated():
    from dualtrack.demo import PLANS, demo_duration_line, results_markdown

    summary = json.loads((REPO / "docs" / "demo_results.json").read_text())
    # the recorded run is of the plan the demo runs today
    assert summary["plan"] == json.loads(json.dumps(dataclasses.asdict(PLANS["cpu"])))
    assert _between((REPO / "docs" / "demo.md").read_text(), BEGIN, END) == results_markdown(summary).strip()
    assert _between((REPO / "README.md").read_text(), LINE_BEGIN, LINE_END) == demo_duration_line(summary)


def test_no_hand_typed_demo_duration():
    """A duration next to the word demo appears only inside the generated blocks (docs, README,
    --help texts and the demo's docstrings)."""
    import dualtrack.cli.demo
    import dualtrack.demo

    texts = {p.relative_to(REPO).as_posix(): p.read_text() for p in PAGES}
    texts["dualtrack demo --help"] = dualtrack.cli.demo.EPILOG
    texts["dualtrack.demo"] = dualtrack.demo.__doc__ or ""
    offending = []
    for name, text in texts.items():
        for begin, end in ((BEGIN, END), (LINE_BEGIN, LINE_END)):
            if begin in text:
                text = text.split(begin)[0] + text.split(end, 1)[1]
        for paragraph in re.split(r"\n\s*\n", text):
            if "demo" in paragraph.lower() and DURATION.search(paragraph):
                offending.append(f"{name}: {DURATION.search(paragraph).group(0)!r} in {paragraph[:80]!r}")
    assert not offending, "\n".join(offending)


def test_most_examples_are_executed_not_just_checked():
    blocks = [b for p in PAGES for b in doc_blocks(p)]
    runs = [b for b in blocks if b.mode == "run"]
    assert sum(b.lang == "python" for b in runs) >= 10 and sum(b.lang == "bash" for b in runs) >= 4
    skipped = [b for b in blocks if b.mode == "skip"]
    assert len(skipped) <= 3, [b.where for b in skipped]
