"""How much memory reading one batch file may take, and how much there is.

A file too large for the memory left would abort the process inside Arrow
(an out-of-memory abort cannot be caught), so each file's need is estimated
before it is read and compared with a budget: ``watch.max_memory_mb``, or by
default a share of the memory available at that moment (the least of the
system's available memory, the cgroup's headroom and the address space left
under ``ulimit -v``).
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

MEMORY_SHARE = 0.5  # of the available memory, when watch.max_memory_mb is not set
MB = 1 << 20


def available_bytes() -> int | None:
    """The memory this process can still take, in bytes; None where it cannot be told (not Linux)."""
    limits = [limit for limit in (_system_available(), _cgroup_headroom(), _address_space_left()) if limit is not None]
    return min(limits) if limits else None


def budget_bytes(max_memory_mb: float | None) -> tuple[int | None, str]:
    """The bytes a file's read may take, and where that figure comes from (for the reason given)."""
    if max_memory_mb is not None:
        return int(max_memory_mb * MB), "watch.max_memory_mb"
    available = available_bytes()
    if available is None:
        return None, ""
    return int(available * MEMORY_SHARE), (f"{MEMORY_SHARE:.0%} of the {available / MB:,.0f} MB available;"
                                           " set watch.max_memory_mb to change it")


def _system_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom() -> int | None:
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int((root / "memory.current").read_text()), 0)
    except (OSError, ValueError):
        return None


def _address_space_left() -> int | None:
    """What ``ulimit -v`` (RLIMIT_AS) leaves of this process's address space."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return max(soft - int(line.split()[1]) * 1024, 0)
    except (OSError, ValueError, IndexError):
        pass
    return None
