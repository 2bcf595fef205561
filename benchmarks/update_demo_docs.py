"""Regenerate the demo's measured figures in the docs from a finished ``dualtrack demo`` run.

    python benchmarks/update_demo_docs.py demo_output

copies ``demo_output/summary.json`` to ``docs/demo_results.json`` (the recorded run) and rewrites
the generated parts of ``docs/demo.md`` (between ``<!-- demo-results:begin -->`` and
``<!-- demo-results:end -->``) and ``README.md`` (``<!-- demo-duration:... -->``) with
:func:`dualtrack.demo.results_markdown` and :func:`dualtrack.demo.demo_duration_line`.
``tests/test_docs.py`` fails when those parts differ from what the recorded run generates, or when
the recorded run is of another plan than the demo runs today.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

from dualtrack.demo import PLANS, demo_duration_line, results_markdown
from dualtrack.utils import atomic_write

REPO = Path(__file__).resolve().parents[1]


def replace_between(path: Path, begin: str, end: str, body: str) -> None:
    """Replace the text between the marker lines ``begin`` and ``end`` of ``path`` (atomically)."""
    text = path.read_text(encoding="utf-8")
    if text.count(begin) != 1 or text.count(end) != 1:
        raise SystemExit(f"{path}: expected exactly one {begin} ... {end} pair")
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    with atomic_write(path) as tmp:
        tmp.write_text(f"{head}{begin}\n{body.strip()}\n{end}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("demo_output", type=Path, help="output folder of a finished `dualtrack demo`")
    args = parser.parse_args(argv)
    source = args.demo_output / "summary.json"
    if not source.is_file():
        print(f"error: {source} not found; run `dualtrack demo` first", file=sys.stderr)
        return 1
    summary = json.loads(source.read_text(encoding="utf-8"))
    if summary["plan"]["name"] != "cpu":
        print(f"error: {source} is a {summary['plan']['name']!r} run; the docs record the default cpu plan",
              file=sys.stderr)
        return 1
    if summary["plan"] != json.loads(json.dumps(dataclasses.asdict(PLANS["cpu"]))):
        print(f"warning: {source} was made with another cpu plan than the current code's", file=sys.stderr)
    with atomic_write(REPO / "docs" / "demo_results.json") as tmp:
        shutil.copyfile(source, tmp)
    replace_between(REPO / "docs" / "demo.md", "<!-- demo-results:begin -->", "<!-- demo-results:end -->",
                    results_markdown(summary))
    replace_between(REPO / "README.md", "<!-- demo-duration:begin -->", "<!-- demo-duration:end -->",
                    demo_duration_line(summary))
    print(f"updated docs/demo_results.json, docs/demo.md and README.md from {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
