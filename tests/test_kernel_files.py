"""Every kernel file compiles on its own, as README "Code generation and the runtime" says: with
no defines prepended, its ``#ifndef KERNEL_NAME`` block of defaults specialises it to one
kernel, which builds after common.cl (the file every program starts with).

The compiler always prepends a kernel's own defines, which skip that block, so nothing else
builds the files this way (a reader, an editor's OpenCL checker or a standalone compiler run
does): without this check the defaults could fall behind the kernels unseen.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyopencl as cl
import pytest

from convgraph.runtime.devices import select_device

KERNELS = Path(__file__).resolve().parent.parent / "kernels"
FILES = sorted(path.name for path in KERNELS.glob("*.cl") if path.name != "common.cl")
# the block and the kernel it names: '#ifndef KERNEL_NAME ...' then '#define KERNEL_NAME name'
DEFAULTS = re.compile(r"^#ifndef KERNEL_NAME\b[^\n]*\n#define KERNEL_NAME (\w+)\n(.*?)^#endif",
                      re.M | re.S)


def defaults_of(name: str) -> tuple[str, str]:
    """(the default kernel's name, the rest of the block) of kernels/``name``."""
    found = DEFAULTS.search((KERNELS / name).read_text())
    assert found, f"kernels/{name} has no '#ifndef KERNEL_NAME' block of defaults"
    return found.group(1), found.group(2)


@pytest.mark.parametrize("name", FILES)
def test_every_kernel_file_opens_with_defaults_for_one_of_its_kernels(name):
    """The block names a kernel and selects one of the file's sections (its ``#if
    defined(SELECTOR)``), which the compiler's defines would select instead."""
    text = (KERNELS / name).read_text()
    kernel, block = defaults_of(name)
    selectors = set(re.findall(r"^#(?:el)?if defined\((\w+)\)", text, re.M))
    chosen = [s for s in re.findall(r"^#define (\w+) 1$", block, re.M) if s in selectors]
    assert len(chosen) == 1, (name, kernel, chosen)
    assert DEFAULTS.search(text).start() < text.find("__kernel"), f"{name}: defaults come first"


def on_its_own(name: str) -> str:
    """kernels/``name`` as it compiles alone, then an ``#undef`` of every macro it defines, so
    that the next file again starts from nothing but common.cl (as source.kernel_instance
    ends each kernel)."""
    text = (KERNELS / name).read_text()
    names = dict.fromkeys(re.findall(r"^\s*#\s*define\s+(\w+)", text, re.M))
    return "\n".join([f"/* ===== {name} ===== */", text.rstrip(), *(f"#undef {n}" for n in names)])


@pytest.mark.device
def test_every_kernel_file_builds_on_its_own():
    """All in one program after common.cl (one build: a cold PoCL build per file took 0.55 s,
    about 11 s in all); where it fails, the file that does not build alone is named."""
    context = cl.Context([select_device()[1]])
    common = (KERNELS / "common.cl").read_text()
    try:
        program = cl.Program(context, "\n".join([common, *map(on_its_own, FILES)])).build()
    except cl.RuntimeError:
        for name in FILES:
            try:
                cl.Program(context, common + "\n" + on_its_own(name)).build()
            except cl.RuntimeError as error:
                pytest.fail(f"kernels/{name} does not build on its own: {error}")
        raise
    built = sorted(kernel.function_name for kernel in program.all_kernels())
    assert built == sorted(defaults_of(name)[0] for name in FILES)
