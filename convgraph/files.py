"""Where convgraph keeps files, and how it writes them: one cache folder, atomic writes.

Every file convgraph writes that a crash must not leave half-written (checkpoints, program
binaries, tuning tables) goes through ``atomic_write``: a temporary file in the same folder,
flushed to disk, then renamed over the target, so the target is always the old file or the new.
"""

from __future__ import annotations

import errno
import os
import stat
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
    if os.path.exists(target) and not stat.S_ISREG(os.stat(target).st_mode):
        # renaming over a device, FIFO or symlink would replace it (as root: /dev/null with a
        # regular file); the callers check their targets first, this is the last guard
        raise FileExistsError(errno.EEXIST, "not a regular file, so not replaced", str(target))
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


# ----------------------------------------------------------------------------- paths from users
#
# Every path a user or a file names is checked before it is used: an input must be a regular
# file (a FIFO or a device would block the read forever, /dev/zero would never end), an output's
# folder must exist or be creatable and be writable, and both are checked before any work starts,
# so a bad path costs nothing and never loses what a run produced.


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def readable_file(path, what: str) -> Path:
    """``path`` (a regular file that can be read), else DataError naming ``what`` and why.

    >>> readable_file("/dev/zero", "the --predict input")  # doctest: +SKIP
    DataError: the --predict input /dev/zero is a device, not a regular file...
    """
    from convgraph.errors import DataError

    target = Path(path)
    try:
        info = target.stat()
    except FileNotFoundError:
        raise DataError(f"{what} {target} does not exist.") from None
    except OSError as exc:
        raise DataError(f"{what} {target} cannot be read: {exc.strerror or exc}.") from None
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"{what} {target} is {_kind(info.st_mode)}, not a regular file.",
                        hint="give the path of a file (convgraph reads only regular files).")
    if not os.access(target, os.R_OK):
        raise DataError(f"{what} {target} cannot be read: permission denied.")
    return target


def writable_folder(path, what: str) -> Path:
    """``path`` as a folder convgraph can write in, created (with its parents) if missing;
    OutputError naming ``what`` and why otherwise (a file in the way, no permission)."""
    from convgraph.errors import OutputError

    target = Path(path)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{what} {target} is a file, not a folder.",
                          hint="choose a folder (it is created if missing).") from None
    except OSError as exc:
        raise OutputError(f"{what} {target} cannot be created: {exc.strerror or exc}.",
                          hint="choose a folder you can write.") from None
    try:
        folder = target.is_dir()
    except OSError as exc:
        raise OutputError(f"{what} {target} cannot be used: {exc.strerror or exc}.") from None
    if not folder:
        raise OutputError(f"{what} {target} is not a folder.")
    if not os.access(target, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {target} is not writable.",
                          hint="choose a folder you can write.")
    return target


def writable_file(path, what: str) -> Path:
    """``path`` as a file convgraph can (re)write: its folder exists or is created and is
    writable, and the path is not a folder or a special file; OutputError otherwise."""
    from convgraph.errors import OutputError

    if str(path).endswith(("/", os.sep)):
        raise OutputError(f"{what} {path} names a folder (it ends with '/'), not a file.",
                          hint="give the path of a file, e.g. scores.npy inside that folder.")
    target = Path(path)
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:  # a name too long, a symlink loop, a file in the path
        if exc.errno not in (errno.ENOTDIR,):
            raise OutputError(f"{what} {target} cannot be written: {exc.strerror or exc}.",
                              hint="give a shorter path to a file in a folder you can write.") \
                from None
        mode = None  # a file in the path: the folder check below says so
    if mode is not None and not stat.S_ISREG(mode):
        raise OutputError(f"{what} {target} is {_kind(mode)}, not a file it can write.",
                          hint="give the path of a file to (over)write.")
    writable_folder(target.parent if str(target.parent) else Path("."), f"the folder of {what}")
    return target
