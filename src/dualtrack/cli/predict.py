"""`dualtrack predict` (not built yet)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("predict", help="(not built yet)")
    p.set_defaults(func=run)


def run(args) -> int:
    log.error("'dualtrack predict' is not built yet")
    return 1
