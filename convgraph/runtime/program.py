"""Building a model's OpenCL program once, with an on-disk cache of device binaries.

The cache key covers the source, the build options, the platform, the device, its driver and
OpenCL versions and pyopencl's version, so a change to any of them rebuilds. PoCL is left to
its own cache (see _caches_itself). A build failure
saves the source, the options and the compiler log, and names the layer and kernel at fault.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from convgraph.codegen.source import kernel_at_line
from convgraph.core import DeviceInfo
from convgraph.errors import KernelBuildError
from convgraph.files import atomic_write, failures_dir, programs_dir

os.environ.setdefault("PYOPENCL_NO_CACHE", "1")  # we keep our own cache, keyed as above


@dataclass
class BuildResult:
    program: object
    cache_hit: bool
    seconds: float
    key: str


def build_key(source: str, options: list[str], info: DeviceInfo) -> str:
    import pyopencl

    material = "\0".join([source, " ".join(options), info.platform, info.name, info.vendor,
                          info.driver_version, info.opencl_version, pyopencl.VERSION_TEXT])
    return hashlib.sha256(material.encode()).hexdigest()


def build_program(context, device, info: DeviceInfo, source: str, options: list[str]
                  ) -> BuildResult:
    """Build (or load from the cache) the program for one device."""
    import pyopencl as cl

    start = time.perf_counter()
    key = build_key(source, options, info)
    if _caches_itself(info):
        program = cl.Program(context, source)
        try:
            program.build(options=options, devices=[device])
        except cl.Error as exc:
            raise _build_failure(program, device, info, source, options, exc, key) from None
        return BuildResult(program, False, time.perf_counter() - start, key)
    cached = programs_dir() / f"{key}.bin"
    binary = _load(cached, key)
    if binary is not None:
        try:
            program = cl.Program(context, [device], [binary])
            program.build(options=options, devices=[device])
            return BuildResult(program, True, time.perf_counter() - start, key)
        except cl.Error:  # the driver refuses its own old binary: rebuild below
            _discard(cached)
    program = cl.Program(context, source)
    try:
        program.build(options=options, devices=[device])
    except cl.Error as exc:
        raise _build_failure(program, device, info, source, options, exc, key) from None
    _store(cached, program, key)
    return BuildResult(program, False, time.perf_counter() - start, key)


def _caches_itself(info: DeviceInfo) -> bool:
    """PoCL keeps its own cache of builds and compiled kernels (POCL_CACHE_DIR), and asking it
    for a binary compiles every kernel for a guessed work-group shape first: for VGG-CIFAR 4 s
    on top of the 4 s its first launches take anyway. So PoCL programs are not stored here,
    unless CONVGRAPH_BINARY_CACHE=1 (the tests of this cache use it)."""
    return (info.platform == "Portable Computing Language"
            and os.environ.get("CONVGRAPH_BINARY_CACHE") != "1")


# A cached binary is the driver's own format, which drivers do not check: a truncated or
# flipped one crashes the process inside clBuildProgram (segfault, abort). So each is stored
# behind a header holding its build key, length and SHA-256, checked before the bytes reach the
# driver: a valid binary of another program (copied or renamed onto this key) would load and
# then lack this program's kernels.
MAGIC = b"convgraph-binary 2\n"
MAX_BINARY = 1 << 30  # no program binary is near 1 GiB; a larger file is not one of ours


def warn(message: str) -> None:
    """One line on stderr, once per process: a cache is an optimisation, never an error."""
    if message not in _warned:
        _warned.add(message)
        print(f"convgraph: warning: {message}", file=sys.stderr)


_warned: set[str] = set()


def _load(path: Path, key: str) -> bytes | None:
    """The verified binary of build ``key`` at ``path``, or None (absent, unusable, corrupt or
    another program's: a one-line warning, except when simply absent). Never blocks: only a
    regular file is opened."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        warn(f"the program cache {path} cannot be read ({exc.strerror or exc}); rebuilding.")
        return None
    if not stat.S_ISREG(info.st_mode):
        warn(f"the program cache entry {path} is not a regular file; rebuilding without it.")
        return None
    if info.st_size > MAX_BINARY + 256:
        warn(f"the cached program binary {path} is {info.st_size:,} bytes, not a binary "
             "convgraph wrote; rebuilding.")
        _discard(path)
        return None
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BINARY + 256)
    except OSError as exc:
        warn(f"the program cache {path} cannot be read ({exc.strerror or exc}); rebuilding.")
        return None
    binary = _verified(data, key)
    if binary is None:
        why = ("is another program's (its header names another build key)"
               if _verified(data, None) is not None
               else "is corrupt (truncated or changed: its length or checksum does not match)"
               if data.startswith(MAGIC) else "has no checksum (written by an older convgraph, "
               "or not a program binary at all), so it is not given to the driver")
        warn(f"the cached program binary {path} {why}; rebuilding it.")
        _discard(path)
    return binary


def _verified(data: bytes, key: str | None) -> bytes | None:
    """The binary inside a cache file's bytes, if its header, length and checksum hold and it
    was stored for build ``key`` (None: any key)."""
    if not data.startswith(MAGIC):
        return None
    header, _, binary = data[len(MAGIC):].partition(b"\n")
    try:
        stored_key, length, digest = header.decode("ascii").split(" ")
        length = int(length)
    except (UnicodeDecodeError, ValueError):
        return None
    if length != len(binary) or length == 0 or key not in (None, stored_key):
        return None
    return binary if hashlib.sha256(binary).hexdigest() == digest else None


def _framed(binary: bytes, key: str) -> bytes:
    digest = hashlib.sha256(binary).hexdigest()
    return MAGIC + f"{key} {len(binary)} {digest}\n".encode() + binary


def _discard(path: Path) -> None:
    try:
        if path.is_file() and not path.is_symlink():
            path.unlink()
    except OSError:
        pass  # the next store replaces it


def _store(path: Path, program, key: str) -> None:
    """Write the binary atomically behind its checksum; a cache that cannot be written costs a
    rebuild next time and a one-line warning now."""
    try:
        (binary,) = program.get_info(__import__("pyopencl").program_info.BINARIES)
    except (ValueError, __import__("pyopencl").Error):
        return
    if not binary:
        return
    try:
        atomic_write(path, lambda handle: handle.write(_framed(bytes(binary), key)))
    except OSError as exc:
        warn(f"could not store the program binary in the cache {path.parent} "
             f"({exc.strerror or exc}); the next run builds it again.")


def _build_failure(program, device, info, source, options, exc, key) -> KernelBuildError:
    try:
        log = program.get_build_info(device, __import__("pyopencl").program_build_info.LOG)
    except Exception:  # noqa: BLE001 - the log is a courtesy; the failure is what matters
        log = str(exc)
    folder = failures_dir()
    saved = ""
    try:  # atomic writes: a FIFO or a folder in the way never blocks or stops the report
        stem = folder / f"build-{key[:12]}"
        text = (f"device: {info.label}\ndriver: {info.driver_version}\noptions: "
                f"{' '.join(options)}\n\n{log}")
        atomic_write(stem.with_suffix(".cl"), lambda handle: handle.write(source.encode()))
        atomic_write(stem.with_suffix(".log"), lambda handle: handle.write(text.encode()))
        saved = f" The source, options and compiler log are saved in {stem}.cl and {stem}.log."
    except OSError as exc:
        warn(f"could not save the failed build under {folder} ({exc.strerror or exc}).")
    culprit = ""
    match = re.search(r"\.cl:(\d+):\d+:", log or "") or re.search(r":(\d+):\d+: error",
                                                                    log or "")
    if match:
        banner = kernel_at_line(source, int(match.group(1)))
        if banner:
            culprit = " The first error is in " + banner.strip("/* =").strip() + "."
    first_error = next((line.strip() for line in (log or "").splitlines() if "error" in line),
                       str(exc).strip().splitlines()[0] if str(exc).strip() else "")
    return KernelBuildError(
        f"the OpenCL compiler of {info.label} rejected the generated kernels: "
        f"{first_error}.{culprit}{saved}",
        hint="this is a bug in convgraph's code generation or in the device's compiler; "
             "report it with those files, or try another device with --device.",
    )


class SubPlan:
    """Part of a plan as a plan of its own (the ExecutablePlan protocol of codegen/launches.py):
    some of its launches, by group, with only the kernels they run and the buffers they touch,
    each sized as in the whole plan. Everything else (layouts, storage_of, input, ...) is the
    whole plan's, so a program built from it reads and writes tensors as the whole plan does.

    Evaluation runs a training plan's 'evaluate' group this way (a program without backward or
    optimizer kernels); the tuner runs one kernel site's launches.

    >>> evaluation = SubPlan(training_plan, {"evaluate": training_plan.groups["evaluate"]})
    ... # doctest: +SKIP
    """

    def __init__(self, plan, groups: dict, fixed_sizes: dict[str, int] | None = None):
        self.whole = plan
        self.groups = groups
        launches = [launch for group in groups.values() for launch in group]
        self.kernels = {launch.kernel: plan.kernels[launch.kernel] for launch in launches}
        self.used = {plan.buffer_name(arg) for launch in launches for arg in launch.args} - {None}
        if fixed_sizes is None:
            fixed_sizes = plan.fixed_sizes()
        self._fixed = {name: size for name, size in fixed_sizes.items() if name in self.used}

    def __getattr__(self, name: str):
        if name == "whole":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.whole, name)

    def launch_groups(self) -> dict:
        return self.groups

    def buffer_sizes(self, batch: int) -> dict[str, int]:
        return {name: size for name, size in self.whole.buffer_sizes(batch).items()
                if name in self.used}

    def fixed_sizes(self) -> dict[str, int]:
        return dict(self._fixed)

    def buffer_name(self, arg) -> str | None:
        return self.whole.buffer_name(arg)
