"""Per-device tuning: the tile sizes of each kernel site, chosen by timing them on the device.

An op's lowering asks ``ctx.tuned(selector, shape, space)`` for the knobs of one kernel site (a
kernel specialised to one layer's shapes): ``space`` lists every setting the kernel supports
there, the device profile's default first. The answer is the device's tuned choice when the
tuning table holds one that is still in the space, else the default. Every setting in a space
is a legal kernel, and tests/test_tuning.py checks each against numpy, so a tuning table can
only change speed.

``convgraph tune SPEC`` (runtime/tune.py) times the candidates and stores the fastest per site
in a JSON file per device, keyed by platform, device, vendor, driver and OpenCL version, under
the cache directory. A device with no table of its own borrows the closest tuned one (the
same device under another driver, else the same vendor and type, else the same type); with
none, the profile's defaults apply.
"""

from __future__ import annotations

import hashlib
import json
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

    def choice(self, key: str, space: tuple[dict, ...]) -> dict:
        entry = self.entries.get(key)
        if entry is not None and entry.get("knobs") in space:
            return entry["knobs"]
        return space[0]  # untuned, or tuned for kernels that have since changed

    def __len__(self) -> int:
        return len(self.entries)

    def with_choice(self, key: str, knobs: dict) -> Tuning:
        return Tuning({**self.entries, key: {"knobs": knobs}}, self.source)


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


def _read(path: Path) -> dict | None:
    """A tuning file's contents, or None when it is unreadable or of another format (a tuning
    table is only an optimisation: a bad one is ignored, never fatal)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    if not isinstance(data.get("entries"), dict) or not isinstance(data.get("device"), dict):
        return None
    return data


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
    folder = tuning_dir()
    if folder.is_dir():
        for path in sorted(folder.glob("*.json")):
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
    path = tuning_file(info)
    if path.exists():
        path.unlink()
        return True
    return False
