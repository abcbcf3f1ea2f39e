"""Host memory: what this process can still allocate, and refusing what it cannot hold.

Every large host allocation convgraph makes from a spec's shapes (the parameters, their
re-laid copies for the device, optimizer state, the embedded data set's images) is estimated
from the shapes first and compared with the memory available here: the smallest of the
kernel's ``MemAvailable``, the cgroup's limit (a container's ``--memory``) and the
address-space limit (``ulimit -v``), less a margin for everything else the process holds. What
does not fit is refused with the numbers before anything is allocated, as a DeviceError (exit
status 4, the status of the device's own memory check: the machine, not the input, is too
small), so a spec that would need terabytes costs a second instead of the machine's memory.

>>> check_host(10**15, "the parameters of 'big'", [("fc1.weight", 10**15)])  # doctest: +SKIP
DeviceError: the parameters of 'big' would take an estimated 1,000,000,000,000,000 bytes ...
"""

from __future__ import annotations

import os
import resource

from convgraph.errors import DeviceError

MARGIN = 0.9  # of the available memory an estimate may take: the rest is the process's own


def size_text(n: int) -> str:
    """Bytes as people read them: '527.9 MiB', '4.65 GiB', '1.02 TiB'."""
    if n >= 2**40:
        return f"{n / 2**40:,.2f} TiB"
    if n >= 2**30:
        return f"{n / 2**30:,.2f} GiB"
    return f"{n / 2**20:,.1f} MiB"


def bytes_text(n: int) -> str:
    """'16,777,216 bytes (16.0 MiB)': the exact count, then size_text."""
    return f"{n:,} bytes ({size_text(n)})"


def _kib_field(path: str, field: str) -> int | None:
    """Bytes of a ``Field:   N kB`` line of a /proc file (meminfo, self/status), or None."""
    try:
        with open(path, encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _meminfo(field: str) -> int | None:
    return _kib_field("/proc/meminfo", field)


def _own_status(field: str) -> int | None:
    return _kib_field("/proc/self/status", field)


def _cgroup_left() -> int | None:
    """Bytes left under this process's cgroup v2 memory limit, or None (no limit, no cgroup)."""
    try:
        with open("/proc/self/cgroup", encoding="ascii") as handle:
            line = next((entry for entry in handle if entry.startswith("0::")), None)
        if line is None:
            return None
        folder = "/sys/fs/cgroup" + line.strip()[3:]
        with open(os.path.join(folder, "memory.max"), encoding="ascii") as handle:
            limit = handle.read().strip()
        if limit == "max":
            return None
        with open(os.path.join(folder, "memory.current"), encoding="ascii") as handle:
            current = int(handle.read().strip())
        return max(0, int(limit) - current)
    except (OSError, ValueError, StopIteration):
        return None


def host_available() -> tuple[int, str]:
    """(bytes this process can still allocate, a phrase saying which limit that is).

    >>> host_available()  # doctest: +SKIP
    (23812603904, 'available on this machine (MemAvailable)')
    """
    candidates = []
    available = _meminfo("MemAvailable")
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            available = None
    if available is not None:
        candidates.append((available, "available on this machine (MemAvailable)"))
    left = _cgroup_left()
    if left is not None:
        candidates.append((left, "left under this container's memory limit (cgroup memory.max)"))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        used = _own_status("VmSize") or 0
        candidates.append((max(0, soft - used),
                           f"left of this process's address-space limit (ulimit -v, "
                           f"{size_text(soft)}, {size_text(used)} in use)"))
    if not candidates:  # nothing says: do not refuse on a guess
        return 2**62, "(unknown)"
    return min(candidates)


def host_fits(needed: int) -> bool:
    available, _ = host_available()
    return needed <= available * MARGIN


def check_host(needed: int, what: str, parts: list[tuple[str, int]], hint: str | None = None
               ) -> int:
    """Refuse ``needed`` bytes of host memory for ``what`` when this process cannot have them:
    DeviceError with the estimate, its largest ``parts`` (label, bytes) and what is available.
    Returns ``needed``."""
    available, source = host_available()
    if needed <= available * MARGIN:
        return needed
    parts = sorted(parts, key=lambda part: -part[1])
    shown = [part for part in parts[:3] if part[1] * 100 >= needed] or parts[:1]
    listed = ", ".join(f"{label} {size_text(size)}" for label, size in shown)
    more = f", and {len(parts) - len(shown)} smaller" if len(parts) > len(shown) else ""
    raise DeviceError(
        f"{what} would take an estimated {bytes_text(needed)} of host memory ({listed}{more}), "
        f"more than the {size_text(int(available * MARGIN))} this process may take "
        f"({MARGIN:.0%} of the {size_text(available)} {source}); refused before allocating "
        "anything.",
        hint=hint or "use a smaller network or input, or a machine with more memory.")
