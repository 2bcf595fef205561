"""The ``dualtrack`` console script: one sub-command per module of this package.

Each command module defines ``register(subparsers)``, which adds its parser and sets
``func`` to a thin wrapper over a typed library function. The wrapper returns an exit code or
raises; :func:`main` turns exceptions into one exit-code convention for every command:

* ``0``: success;
* ``1``: a data or runtime problem (missing or corrupt file, refused overwrite, too little memory,
  a failed training run), reported as ``error: <message>`` naming the file or value;
* ``2``: a usage or configuration problem (bad flag value, unknown config key, wrong type:
  :class:`dualtrack.utils.UsageError`, which :class:`~dualtrack.training.config.ConfigError`
  extends; argparse's own errors also exit 2).

No Python traceback is printed for these; ``-v`` adds it for debugging.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from dualtrack import __version__
from dualtrack.utils import UsageError

COMMANDS = (
    "simulate",
    "verify_data",
    "train",
    "evaluate",
    "predict",
    "reconstruct",
    "export",
    "import_weights",
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
    except UsageError as exc:
        return _report(exc, 2, args.verbose)
    except (OSError, ValueError, KeyError, RuntimeError, MemoryError) as exc:
        return _report(exc, 1, args.verbose)


def _report(exc: BaseException, code: int, verbose: bool) -> int:
    """Print ``error: <message>`` (the traceback too with ``-v``) and return ``code``."""
    if verbose:
        logging.getLogger("dualtrack").exception("traceback (-v)")
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    hint = " (add -v for the traceback)" if isinstance(exc, RuntimeError) and not verbose else ""
    print(f"error: {message}{hint}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
