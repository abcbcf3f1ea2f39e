"""Where convgraph keeps files, and how it writes them: one cache folder, atomic writes.

Every file convgraph writes that a crash must not leave half-written (checkpoints, program
binaries, tuning tables) goes through ``atomic_write``: a temporary file in the same folder,
flushed to disk, then renamed over the target, so the target is always the old file or the new.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def cache_dir() -> Path:
    """$CONVGRAPH_CACHE, else $XDG_CACHE_HOME/convgraph, else ~/.cache/convgraph."""
    base = os.environ.get("CONVGRAPH_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "convgraph"


def programs_dir() -> Path:
    """Built program binaries, by build key."""
    return cache_dir() / "programs"


def failures_dir() -> Path:
    """The source, options and log of each failed build."""
    return cache_dir() / "failures"


def tuning_dir() -> Path:
    """One tuning table per device."""
    return cache_dir() / "tuning"


def atomic_write(path, write: Callable[[IO[bytes]], None], temporary_prefix: str | None = None
                 ) -> None:
    """Write ``path`` through ``write(handle)`` on a temporary file beside it, then rename.

    The temporary file is ``<prefix><random>.tmp`` (prefix default ``.<name>.``) and is removed
    if anything fails (a full disk leaves the old file alone); the new file gets the permissions
    a plainly created one would."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = temporary_prefix if temporary_prefix is not None else f".{target.name}."
    handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=prefix, suffix=".tmp",
                                         delete=False)
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(handle.name, 0o666 & ~umask)
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
