"""Helpers shared by the benchmark scripts: peak memory, CPU/device names, timing, JSON output.

The scripts import this module as ``_common``: Python puts a script's own folder first on
``sys.path`` when it is run as ``python benchmarks/<script>.py``.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dualtrack.utils import atomic_write, cpu_name


def proc_status_kb(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (e.g. ``VmRSS``, ``VmHWM``); None where unreadable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the process's peak resident set size (``VmHWM``) through ``/proc/self/clear_refs``.

    Returns False where the kernel does not allow it (the peak then keeps its old value).
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def device_name(dev: torch.device) -> str:
    """The GPU name of a CUDA device, else the CPU name."""
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()


def sync(dev: torch.device) -> None:
    """Wait for the queued CUDA work of ``dev`` (nothing to do on the CPU)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn: Callable[[], Any], dev: torch.device) -> float:
    """Wall seconds of ``fn()``, device work included."""
    sync(dev)
    start = time.perf_counter()
    fn()
    sync(dev)
    return time.perf_counter() - start


class PeakMemory:
    """Peak extra memory from construction until :meth:`peak_bytes`.

    On CUDA ``torch.cuda.max_memory_allocated`` above the memory allocated at construction; on
    the CPU the rise of the process's peak resident set size (``VmHWM`` above ``VmRSS`` after a
    ``/proc/self/clear_refs`` reset where allowed, else the rise of ``ru_maxrss``, in kB on Linux).
    ``method`` says which of these was used.
    """

    def __init__(self, dev: torch.device) -> None:
        self.dev = dev
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            self._base = torch.cuda.memory_allocated(dev)
            self.method = "torch.cuda.max_memory_allocated - memory_allocated before"
        else:
            self._reset = reset_peak_rss()
            self._base = self._cpu_kb("VmRSS")
            self.method = "VmHWM - VmRSS before (clear_refs reset)" if self._reset else "ru_maxrss rise"

    def _cpu_kb(self, field: str) -> int:
        if self._reset:
            return proc_status_kb(field)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def peak_bytes(self) -> int:
        """Bytes of the peak above the memory held at construction (never negative on the CPU)."""
        if self.dev.type == "cuda":
            return torch.cuda.max_memory_allocated(self.dev) - self._base
        return max(0, self._cpu_kb("VmHWM") - self._base) * 1024


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (non-JSON values as ``str``), atomically, parents created."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")
