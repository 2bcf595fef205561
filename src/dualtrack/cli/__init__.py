"""The ``dualtrack`` console script: one sub-command per module of this package.

Each command module defines ``register(subparsers)``, which adds its parser and sets
``func`` to a thin wrapper over a typed library function. The wrapper returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from dualtrack import __version__

COMMANDS = (
    "simulate",
    "verify_data",
    "train",
    "evaluate",
    "predict",
    "reconstruct",
    "export",
    "benchmark",
    "demo",
    "list_models",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dualtrack",
        description="Sensorless freehand 3D ultrasound: simulate, verify, train, evaluate, "
        "predict and reconstruct.",
    )
    parser.add_argument("--version", action="version", version=f"dualtrack {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"dualtrack.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        logging.getLogger("dualtrack").error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
