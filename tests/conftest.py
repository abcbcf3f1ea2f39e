"""Shared test helpers: writing specs to real files, running the CLI in-process, and the OpenCL
devices the device tests run on (``cl_device``, narrowed by $CONVGRAPH_TEST_DEVICES)."""

from __future__ import annotations

import functools
import os
import re
import textwrap
from pathlib import Path

import pytest

from convgraph.cli import main

SPECS = Path(__file__).resolve().parent.parent / "specs"


@pytest.fixture
def write_spec(tmp_path):
    """write_spec(text, name='spec.yaml') -> path of a real spec file holding the dedented text."""

    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return write


@pytest.fixture
def cli(capsys):
    """cli('compile', path, ...) -> (exit status, stdout, stderr), run in-process."""

    def run(*args) -> tuple[int, str, str]:
        status = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return status, out, err

    return run



def tiny_images(seed: int = 0, count: int = 96, classes: int = 4):
    """(x, labels): ``count`` 8x8x1 uint8 images of ``classes`` classes that a small network can
    learn in a few epochs (each class brightens its own quadrant)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, count)
    x = rng.integers(0, 60, (count, 1, 8, 8)).astype(np.uint8)
    for c in range(classes):
        rows, cols = divmod(c, 2)
        x[labels == c, 0, rows * 4:rows * 4 + 4, cols * 4:cols * 4 + 4] += 150
    return x, labels


# ---------------------------------------------------------------------------- OpenCL devices

DEVICES_ENV = "CONVGRAPH_TEST_DEVICES"


def _matches(fragment: str, index: int, info) -> bool:
    """``--device`` matching: ``P:D``, a position in the list, or a case-insensitive fragment of
    the type, name, platform or vendor; the OpenCL version string too, where PoCL names itself."""
    text = fragment.strip().lower()
    if re.fullmatch(r"\d+:\d+", text):
        return info.index == text
    if text.isdigit():
        return int(text) == index
    return (text == info.type or text in info.name.lower() or text in info.platform.lower()
            or text in info.vendor.lower() or text in info.opencl_version.lower())


@functools.cache
def selected_devices() -> tuple:
    """The OpenCL devices the device tests run on: every device found, narrowed by the
    comma-separated fragments of $CONVGRAPH_TEST_DEVICES (e.g. ``pocl`` or ``0:0,nvidia``).

    A fragment that matches no device is an error, so a typo never turns into skipped tests."""
    from convgraph.runtime.devices import list_devices

    found = [info for info, _ in list_devices()]
    wanted = [f for f in os.environ.get(DEVICES_ENV, "").split(",") if f.strip()]
    if not wanted:
        return tuple(found)
    chosen = []
    for fragment in wanted:
        hits = [info for index, info in enumerate(found) if _matches(fragment, index, info)]
        if not hits:
            labels = "; ".join(info.label for info in found) or "none"
            raise pytest.UsageError(f"{DEVICES_ENV}: no OpenCL device matches '{fragment}' "
                                    f"(found: {labels}).")
        chosen += [info for info in hits if info not in chosen]
    return tuple(sorted(chosen, key=lambda info: tuple(map(int, info.index.split(":")))))


def device_params() -> list:
    """pytest.param per selected device (its ``P:D`` index, for ``convgraph.compile(device=)``),
    or one skipped param when there is none."""
    infos = selected_devices()
    if not infos:
        return [pytest.param(None, marks=pytest.mark.skip(reason="no OpenCL device found"),
                             id="no-device")]
    return [pytest.param(info.index, id=f"{info.index}-" + re.sub(r"[^a-z0-9]+", "-",
                                                                 info.name.lower())[:24])
            for info in infos]


def pytest_generate_tests(metafunc):
    """Any test taking ``cl_device`` runs once per selected OpenCL device."""
    if "cl_device" in metafunc.fixturenames:
        metafunc.parametrize("cl_device", device_params())


def pytest_collection_modifyitems(config, items):
    """$CONVGRAPH_TEST_TIMEOUT (seconds) replaces every test's timeout: a simulated device
    (Oclgrind, tests/test_oclgrind.py) runs the same kernels hundreds of times slower."""
    seconds = os.environ.get("CONVGRAPH_TEST_TIMEOUT")
    if seconds:
        for item in items:
            item.add_marker(pytest.mark.timeout(int(seconds), method="thread"), append=False)
