"""Finding and choosing an OpenCL device, and describing what it can do.

``--device`` (or ``CONVGRAPH_DEVICE``) takes ``P:D`` (platform and device index) or a
case-insensitive fragment of the platform or device name or type (``pocl``, ``nvidia``, ``gpu``,
``cpu``). Without one, the first GPU is used, else the first CPU. Nothing ever falls back silently
to another device than the one asked for.
"""

from __future__ import annotations

import os
import re

from convgraph.core import DeviceInfo
from convgraph.errors import DeviceError

INSTALL_HINT = (
    "install an OpenCL platform: on Debian/Ubuntu 'apt-get install pocl-opencl-icd' runs on the "
    "CPU; for a GPU install the vendor's OpenCL ICD (NVIDIA's driver ships libnvidia-opencl.so.1, "
    "registered in /etc/OpenCL/vendors/nvidia.icd)."
)


def _type_name(cl, device_type: int) -> str:
    if device_type & cl.device_type.GPU:
        return "gpu"
    if device_type & cl.device_type.CPU:
        return "cpu"
    if device_type & cl.device_type.ACCELERATOR:
        return "accelerator"
    return "other"


def _c_version(text: str) -> tuple[int, int]:
    match = re.search(r"(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else (1, 2)


def _architecture(cl, device, extensions: list[str]) -> str:
    """NVIDIA's compute capability as "sm_XY" (cl_nv_device_attribute_query), AMD's GPU
    target ("gfx90a": ROCm names its devices so), else "" (the vendor rows of
    codegen/profile.py then match by name)."""
    if "cl_nv_device_attribute_query" in extensions:
        try:
            return f"sm_{device.compute_capability_major_nv}{device.compute_capability_minor_nv}"
        except (AttributeError, cl.Error):
            return ""
    match = re.match(r"gfx[0-9a-f]+", device.name.strip())
    return match.group(0) if match else ""


def _describe(cl, p: int, d: int, platform, device) -> DeviceInfo:
    extensions = device.extensions.split()
    return DeviceInfo(
        index=f"{p}:{d}",
        platform=platform.name.strip(),
        name=device.name.strip(),
        type=_type_name(cl, device.type),
        vendor=device.vendor.strip(),
        driver_version=device.driver_version.strip(),
        opencl_version=device.version.strip(),
        opencl_c_version=_c_version(device.opencl_c_version),
        compute_units=device.max_compute_units,
        global_memory=device.global_mem_size,
        max_alloc=device.max_mem_alloc_size,
        local_memory=device.local_mem_size,
        max_work_group_size=device.max_work_group_size,
        max_work_item_sizes=tuple(device.max_work_item_sizes),
        fp64="cl_khr_fp64" in extensions or device.double_fp_config != 0,
        fp16="cl_khr_fp16" in extensions,
        image_support=bool(device.image_support),
        architecture=_architecture(cl, device, extensions),
    )


def _platforms():
    from convgraph import signals

    # the process's first pyopencl import (every device is found here first): a stopping
    # signal raised inside nanobind's module set-up aborts the interpreter ("Critical nanobind
    # error"), so it is held until the import is done and raised then
    with signals.deferred():
        import pyopencl as cl

    try:
        platforms = cl.get_platforms()
    except cl.Error:  # the ICD loader reports "no platforms" as an error
        platforms = []
    return cl, platforms


def _icd_folder() -> str:
    return os.environ.get("OCL_ICD_VENDORS") or "/etc/OpenCL/vendors"


def pocl_cache_problem() -> str | None:
    """Why PoCL, where its ICD is registered, cannot start for lack of a kernel cache (a
    sentence naming the folder), or None. PoCL keeps its cache in $POCL_CACHE_DIR, else
    $XDG_CACHE_HOME/pocl, else $HOME/.cache/pocl, and gives no platform at all when that folder
    cannot be created or written: an unusable HOME looked like PoCL was not installed."""
    folder = _icd_folder()
    try:
        registered = any("pocl" in entry.lower() for entry in os.listdir(folder)) if (
            os.path.isdir(folder)) else "pocl" in os.path.basename(folder).lower()
    except OSError:
        return None
    if not registered:
        return None
    if os.environ.get("POCL_CACHE_DIR"):
        cache, source = os.environ["POCL_CACHE_DIR"], "POCL_CACHE_DIR"
    elif os.environ.get("XDG_CACHE_HOME"):
        cache, source = os.path.join(os.environ["XDG_CACHE_HOME"], "pocl"), "XDG_CACHE_HOME"
    elif os.environ.get("HOME"):
        cache, source = os.path.join(os.environ["HOME"], ".cache", "pocl"), "HOME"
    else:
        return None  # PoCL falls back to a folder of its own choosing
    existing = cache
    while not os.path.lexists(existing):  # the nearest part of the path that exists
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        why = f"{existing} is not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        why = f"{existing} is not writable"
    else:
        return None
    from convgraph.display import shown

    return (f"its kernel cache folder {shown(cache)} (from ${source}) cannot be created or "
            f"written ({shown(why)})")


def list_devices() -> list[tuple[DeviceInfo, object]]:
    """Every (description, pyopencl device) on every platform, in P:D order."""
    cl, platforms = _platforms()
    found = []
    for p, platform in enumerate(platforms):
        try:
            devices = platform.get_devices()
        except cl.Error:
            continue
        for d, device in enumerate(devices):
            found.append((_describe(cl, p, d, platform, device), device))
    return found


def select_device(request: str | None = None) -> tuple[DeviceInfo, object]:
    """The device a user asked for (argument, else CONVGRAPH_DEVICE, else the default).

    >>> info, device = select_device("cpu")  # doctest: +SKIP
    """
    request = request if request is not None else os.environ.get("CONVGRAPH_DEVICE") or None
    found = list_devices()
    if not found:
        problem = pocl_cache_problem()
        if problem:  # PoCL is installed but refuses to start: say why, not "install it"
            raise DeviceError(
                f"no OpenCL platform started: PoCL is installed, but {problem}, and PoCL does "
                "not start without a writable kernel cache.",
                hint="set POCL_CACHE_DIR to a folder you can write (e.g. "
                     "POCL_CACHE_DIR=/tmp/pocl-cache), or HOME to a writable home folder.")
        raise DeviceError("no OpenCL platform or device was found.", hint=INSTALL_HINT)
    if request is None:
        for wanted in ("gpu", "cpu"):
            for info, device in found:
                if info.type == wanted:
                    return info, device
        return found[0]
    text = request.strip().lower()
    if re.fullmatch(r"\d+:\d+", text):
        matches = [pair for pair in found if pair[0].index == text]
    elif text.isdigit():
        matches = [found[int(text)]] if int(text) < len(found) else []
    else:
        matches = [
            pair for pair in found
            if text == pair[0].type or text in pair[0].name.lower()
            or text in pair[0].platform.lower() or text in pair[0].vendor.lower()
            # PoCL names itself only in its version strings ("OpenCL 3.0 PoCL 3.1 ...")
            or text in pair[0].opencl_version.lower() or text in pair[0].driver_version.lower()
        ]
    if not matches:
        available = "; ".join(info.label + f" [{info.type}]" for info, _ in found)
        raise DeviceError(
            f"no OpenCL device matches '{request}'. Available: {available}.",
            hint="pass --device P:D or a part of a name shown by 'convgraph devices'.",
        )
    return matches[0]


# --device keywords naming every device of a type, for data-parallel training in one process
ALL_OF_TYPE = {"all-gpus": "gpu", "all-cpus": "cpu"}


def device_selectors(request: str | None) -> list[str | None]:
    """The device selectors a ``--device`` value names: one (``P:D``, a fragment, None for the
    default), several separated by commas (``0:0,0:1``), or every device of a type
    (``all-gpus``, ``all-cpus``, as ``P:D`` indices). Each is resolved by select_device later;
    a list that names one device twice is refused (two sessions on one device would only
    share its compute units).

    >>> device_selectors("0:0,0:1")
    ['0:0', '0:1']
    """
    if request is None or ("," not in request and request.strip().lower() not in ALL_OF_TYPE):
        return [request]
    keyword = request.strip().lower()
    if keyword in ALL_OF_TYPE:
        wanted = ALL_OF_TYPE[keyword]
        found = [info.index for info, _ in list_devices() if info.type == wanted]
        if not found:
            raise DeviceError(f"--device {request}: no OpenCL {wanted.upper()} was found.",
                              hint="see 'convgraph devices' for the devices there are.")
        return found
    parts = [part.strip() for part in request.split(",")]
    if any(not part for part in parts):
        raise DeviceError(f"--device '{request}' has an empty entry between its commas.",
                          hint="name each device once, e.g. --device 0:0,0:1.")
    indices = [select_device(part)[0].index for part in parts]
    repeated = sorted({index for index in indices if indices.count(index) > 1})
    if repeated:
        raise DeviceError(f"--device '{request}' names device {', '.join(repeated)} more than "
                          "once.", hint="name each device once; on PoCL, "
                                        "POCL_DEVICES='pthread pthread' gives two CPU devices.")
    return parts
