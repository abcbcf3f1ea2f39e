"""Per-device tuning: the tile sizes of each kernel site, chosen by timing them on the device.

An op's lowering asks ``ctx.tuned(selector, shape, space)`` for the knobs of one kernel site (a
kernel specialised to one layer's shapes): ``space`` lists every setting the kernel supports
there, the device profile's default first. The answer is the device's tuned choice when the
tuning table holds one that is still in the space, else the setting nearest the shipped default
of the device's vendor row (codegen/profile.py's GPU_VENDORS: partial settings derived from
published facts, each for the sites that offer its ALGORITHM), else the profile's default.
Every setting in a space is a legal kernel, and tests/test_tuning.py checks each against numpy,
so a tuning table can only change speed.

``convgraph tune SPEC`` (runtime/tune.py) times the candidates and stores the fastest per site
in a JSON file per device, keyed by platform, device, vendor, driver and OpenCL version, under
the cache directory. A device with no table of its own borrows the closest tuned one (the
same device under another driver, else the same vendor and type, else the same type); with
none, the profile's defaults apply.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from convgraph.core import DeviceInfo
from convgraph.files import atomic_write, tuning_dir

FORMAT = 1


def site_key(selector: str, shape: dict) -> str:
    """A kernel site's identity: its kernel and every define that is not a tuning knob."""
    material = json.dumps([selector, sorted(shape.items())], default=str)
    return f"{selector}:{hashlib.sha256(material.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class Site:
    """A tunable kernel site of a plan: where it is and which settings it may take."""

    key: str
    node: str
    selector: str
    space: tuple[dict, ...]  # the default first

    @property
    def default(self) -> dict:
        return self.space[0]


@dataclass(frozen=True)
class Tuning:
    """The chosen knobs by site key for one device, and where they came from."""

    entries: dict = field(default_factory=dict)  # key -> {"knobs": {...}, ...}
    source: str = "defaults"
    # the device's shipped defaults (profile.VendorRow.shipped): partial settings, each for
    # the sites offering its ALGORITHM; a site takes the first its space offers
    shipped: tuple[dict, ...] = ()

    def choice(self, key: str, space: tuple[dict, ...]) -> dict:
        entry = self.entries.get(key)
        if entry is not None and entry.get("knobs") in space:
            return entry["knobs"]
        # untuned, or tuned for kernels that have since changed
        return self.shipped_choice(space)

    def shipped_choice(self, space: tuple[dict, ...]) -> dict:
        """The setting of ``space`` nearest the first shipped default whose ALGORITHM it
        offers (the profile's default where none is shipped for it)."""
        for wanted in self.shipped:
            offered = [knobs for knobs in space
                       if knobs.get("ALGORITHM") == wanted.get("ALGORITHM")]
            if offered:
                return nearest(offered, wanted)
        return space[0]

    def __len__(self) -> int:
        return len(self.entries)

    def with_choice(self, key: str, knobs: dict) -> Tuning:
        return Tuning({**self.entries, key: {"knobs": knobs}}, self.source, self.shipped)


def nearest(space, wanted: dict) -> dict:
    """The setting of ``space`` nearest ``wanted`` (a partial setting), its knobs in order of
    importance: agreeing on the first knob beats agreeing on all the later ones; ties go to
    the earliest setting, i.e. the one nearest the default.

    >>> space = [{"A": 1, "B": 1}, {"A": 2, "B": 1}, {"A": 2, "B": 2}, {"A": 1, "B": 3}]
    >>> nearest(space, {"A": 2, "B": 3})
    {'A': 2, 'B': 1}
    """
    return max(space, key=lambda knobs: tuple(knobs.get(name) == value
                                              for name, value in wanted.items()))


# ---------------------------------------------------------------------------- persistence

def device_key(info: DeviceInfo) -> dict:
    return {"platform": info.platform, "name": info.name, "vendor": info.vendor,
            "type": info.type, "driver_version": info.driver_version,
            "opencl_version": info.opencl_version}


def tuning_file(info: DeviceInfo) -> Path:
    key = device_key(info)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    slug = "".join(ch if ch.isalnum() else "-" for ch in info.name.lower()).strip("-")[:40]
    return tuning_dir() / f"{slug}-{digest}.json"


MAX_TABLE = 16 << 20  # bytes: a table of every site of every example network is ~100 KiB


def warn(message: str) -> None:
    """One line on stderr, once per process: a tuning table is an optimisation, never an
    error."""
    if message not in _warned:
        _warned.add(message)
        print(f"convgraph: warning: {message}", file=sys.stderr)


_warned: set[str] = set()


def _read_text(path: Path) -> str | None:
    """The text of the regular file ``path`` (at most MAX_TABLE bytes), None when it is absent,
    and None with a warning when it is unusable. Opened without blocking and checked on the
    open descriptor, so a FIFO, a device (a symlink to /dev/zero) or a folder put there is
    refused at once, never read."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        if isinstance(exc, IsADirectoryError):
            warn(f"the tuning table {path} is a folder, not a file; ignored (defaults used).")
        else:
            warn(f"the tuning table {path} cannot be read ({exc.strerror or exc}); ignored "
                 "(defaults used).")
        return None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            warn(f"the tuning table {path} is not a regular file; ignored (defaults used).")
            return None
        if info.st_size > MAX_TABLE:
            warn(f"the tuning table {path} is {info.st_size:,} bytes, larger than any tuning "
                 "table; ignored (defaults used).")
            return None
        with os.fdopen(descriptor, "rb", closefd=False) as handle:
            data = handle.read(MAX_TABLE + 1)
    except OSError as exc:
        warn(f"the tuning table {path} cannot be read ({exc.strerror or exc}); ignored "
             "(defaults used).")
        return None
    finally:
        os.close(descriptor)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        warn(f"the tuning table {path} is not UTF-8 text; ignored (defaults used).")
        return None


def _valid_entries(entries: dict) -> dict:
    """The entries of the form tuning writes (site key -> {"knobs": {name: value}}); any other
    is dropped, so a hand-edited table can only lose entries, never stop a build."""
    return {key: entry for key, entry in entries.items()
            if isinstance(key, str) and isinstance(entry, dict)
            and isinstance(entry.get("knobs"), dict)
            and all(isinstance(name, str) for name in entry["knobs"])}


def _read(path: Path) -> dict | None:
    """A tuning file's contents, or None when it is absent, unusable or of another format (a
    tuning table is only an optimisation: a bad one is a one-line warning, never fatal)."""
    text = _read_text(path)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        warn(f"the tuning table {path} is not valid JSON; ignored (defaults used; "
             "'convgraph tune' rewrites it).")
        return None
    if (not isinstance(data, dict) or data.get("format") != FORMAT
            or not isinstance(data.get("entries"), dict)
            or not isinstance(data.get("device"), dict)):
        warn(f"the tuning table {path} is not a convgraph tuning table of format {FORMAT}; "
             "ignored (defaults used; 'convgraph tune' rewrites it).")
        return None
    entries = _valid_entries(data["entries"])
    if len(entries) != len(data["entries"]):
        warn(f"the tuning table {path} has {len(data['entries']) - len(entries)} malformed "
             "entries; those sites use their defaults.")
    return {**data, "entries": entries}


def closeness(mine: dict, theirs: dict) -> int:
    """How well another device's tuning fits this one: 3 same device, other driver; 2 same
    vendor and type; 1 same type; 0 not at all."""
    if mine["type"] != theirs.get("type"):
        return 0
    if all(mine[k] == theirs.get(k) for k in ("platform", "name", "vendor")):
        return 3
    return 2 if mine["vendor"] == theirs.get("vendor") else 1


def load_tuning(info: DeviceInfo) -> Tuning:
    """This device's tuning table, else the closest tuned device's, else none."""
    own = _read(tuning_file(info))
    if own is not None:
        return Tuning(own["entries"], "tuned on this device")
    mine = device_key(info)
    best, best_score = None, 0
    try:
        tables = sorted(tuning_dir().glob("*.json")) if tuning_dir().is_dir() else []
    except OSError as exc:
        warn(f"the tuning folder {tuning_dir()} cannot be listed ({exc.strerror or exc}); "
             "defaults used.")
        tables = []
    for path in tables:
        data = _read(path)
        score = closeness(mine, data["device"]) if data else 0
        if score > best_score:
            best, best_score = data, score
    if best is None:
        return Tuning()
    return Tuning(best["entries"], f"borrowed from {best['device'].get('name', '?')} "
                                   f"({best['device'].get('platform', '?')})")


def save_tuning(info: DeviceInfo, entries: dict) -> Path:
    """Merge ``entries`` into this device's tuning file, atomically."""
    path = tuning_file(info)
    current = _read(path)
    merged = {**(current["entries"] if current else {}), **entries}
    data = {"format": FORMAT, "device": device_key(info), "entries": merged}
    text = json.dumps(data, indent=1, sort_keys=True)
    atomic_write(path, lambda handle: handle.write(text.encode()))
    return path


def forget_tuning(info: DeviceInfo) -> bool:
    """Remove this device's tuning table (True if there was one); what cannot be removed is a
    warning (``tune`` then writes a new table over it, or says it cannot)."""
    path = tuning_file(info)
    try:
        if path.is_symlink() or path.is_file():
            path.unlink()
            return True
        if path.exists():
            warn(f"the tuning table {path} is not a file; left as it is.")
    except OSError as exc:
        warn(f"could not remove the tuning table {path} ({exc.strerror or exc}).")
    return False
