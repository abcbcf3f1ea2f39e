"""Hostile sizes and hostile caches: memory is estimated from shapes and refused before anything
is allocated (host and device), and no cache or tuning table can crash, stop or hang a run.

Every oversized case runs as a real process under an address-space limit (RLIMIT_AS) far below
what it would need: had anything been allocated first, it would die of MemoryError (exit 70)
instead of being refused with the numbers (exit 4) within seconds."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import convgraph
from convgraph.codegen import profile as profiles
from convgraph.codegen.plan import plan_forward
from convgraph.codegen.tuning import tuning_file
from convgraph.errors import DeviceError
from convgraph.ops.base import REGISTRY
from convgraph.params import device_param_elements, expected_shapes, to_device_layouts
from convgraph.pipeline import analyse

from .conftest import SPECS

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 6 << 30  # address space of each oversized case: a fraction of any refused estimate

pytestmark = pytest.mark.timeout(300)

TINY = {"name": "tiny", "input": "8x8x1", "pattern": "[INPUT-CONV(4, 3, pad=1)-RELU-FC(2)]",
        "train": {"batch": 4, "epochs": 1}}
WIDE = {"name": "wide", "input": "100000x100000x3",
        "pattern": "[INPUT-CONV(4, 3, pad=1)-RELU-FC(10)]"}
PADDED = {"name": "padded", "input": "8x8x1",
          "pattern": "[INPUT-CONV(4, 3, pad=200000)-RELU-FC(10)]"}
BROAD = {"name": "broad", "input": "256x256x1",  # 16 MiB of activations per image
         "pattern": "[INPUT-CONV(64, 1)-RELU-POOL(16)-FC(2)]"}
LARGE_IMAGES = {"name": "large", "input": "2000x2000x3",
                "pattern": "[INPUT-CONV(4, 4, pad=1, stride=2)-RELU-POOL(10)-FC(10)]",
                "train": {"batch": 2, "epochs": 1}}


def _limited():
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, resource.RLIM_INFINITY))


def convgraph_cli(*args, env=None, limit=True, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convgraph.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=dict(os.environ, **(env or {})),
                          preexec_fn=_limited if limit else None)


def one_error(done, status: int) -> str:
    err = done.stderr
    assert done.returncode == status, (done.returncode, err[-3000:])
    assert "Traceback" not in err and "internal error" not in err, err[-3000:]
    assert err.startswith("convgraph: error: ") and err.count("\n") == 1, err
    return err


def spec_file(tmp_path, spec: dict) -> Path:
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(json.dumps(spec))
    return path


# ---------------------------------------------------------------------------- sizes from shapes

def _every_network():
    graphs = {path.stem: analyse(str(path)) for path in SPECS.glob("*.yaml")}
    for name, op in REGISTRY.items():
        for index, case in enumerate(op.cases):
            graphs[f"{name}-{index}"] = analyse(case.spec())
    return graphs


@pytest.mark.parametrize("profile", [profiles.CPU, profiles.GPU], ids=["cpu", "gpu"])
def test_declared_device_sizes_equal_the_zero_relayout(profile):
    """Each op's device_param_elements, for every example spec and every op case under both
    profiles, equals the size of what its device_params makes of zero arrays (the old way)."""
    checked = 0
    for name, graph in _every_network().items():
        if sum(np.prod(shape) for shape in expected_shapes(graph).values()) > 20_000_000:
            continue  # vgg16: seconds of zeros, and no op the others lack
        plan = plan_forward(graph, profile)
        zeros = {key: np.zeros(shape, np.float32) for key, shape in expected_shapes(graph).items()}
        relaid = {key: value.size
                  for key, value in to_device_layouts(graph, zeros, plan.layout_of).items()}
        assert device_param_elements(graph, plan.layout_of) == relaid, name
        checked += bool(relaid)
    assert checked > 20


# ---------------------------------------------------------------------------- refused, at once

@pytest.mark.parametrize("spec, command, expected", [
    (WIDE, ("compile",), "of device memory"),
    (WIDE, ("run", "--verify"), "of device memory"),
    (PADDED, ("compile",), "of device memory"),
    (PADDED, ("run", "--verify"), "of device memory"),
    (PADDED, ("run", "--limit", "8"), "the parameters of 'padded'"),
    (WIDE, ("run", "--limit", "8"), "the embedded data set's train split"),
    (LARGE_IMAGES, ("run", "--limit", "8"), "the embedded data set's train split"),
    (LARGE_IMAGES, ("eval", "--weights", "none.npz"), "the embedded data set's test split"),
    (BROAD, ("compile", "--batch", "65536"), "batch 65536 needs an estimated"),
    (BROAD, ("run", "--verify", "--batch", "65536"), "batch 65536 needs an estimated"),
], ids=["wide-compile", "wide-verify", "pad-compile", "pad-verify", "pad-run", "wide-run",
        "2000px-run", "2000px-eval", "batch-compile", "batch-verify"])
def test_oversized_is_refused_before_any_allocation(tmp_path, spec, command, expected):
    """Terabytes of weights or images under a 6 GiB address space: refused in seconds, with the
    estimate, what is available and what fits; exit 4."""
    if "--weights" in command:  # a weights file that exists (its contents are never reached)
        (tmp_path / "none.npz").write_bytes(b"")
        command = tuple(str(tmp_path / c) if c == "none.npz" else c for c in command)
    start = time.monotonic()
    done = convgraph_cli(command[0], spec_file(tmp_path, spec), *command[1:])
    err = one_error(done, 4)
    assert time.monotonic() - start < 60, err
    assert expected in err and "refused before allocating anything" in err, err
    assert "bytes (" in err and " Fix: " in err, err
    if "data set" in expected:
        assert "address-space limit" in err and "an input of at most" in err, err
    if spec is BROAD:
        assert "Fix: use a batch of at most " in err, err
    if spec is WIDE and "device" in expected:
        assert "Fix: even one image does not fit; at batch 64 an input of " in err, err
    if spec is PADDED and "device" in expected:
        assert "nor does any smaller input" in err, err


def test_the_suggested_smaller_input_fits_the_device():
    """The input the refusal of a 100000x100000x3 network names passes the same check (no
    allocation: the check is from shapes), and twice its size does not."""
    from convgraph.params import device_param_bytes
    from convgraph.runtime.executor import check_memory, largest_input
    from convgraph.runtime.target import Target

    target = Target.open()
    graph = analyse(WIDE)
    plan = plan_forward(graph, target.profile)
    volume = largest_input(plan, target.info, 64)
    assert volume is not None and volume.depth == 3 and volume.width < 100_000
    for side, fits in ((volume.width, True), (volume.width * 2, False)):
        smaller = analyse({**WIDE, "input": f"{side}x{side}x3"})
        smaller_plan = plan_forward(smaller, target.profile)
        params = device_param_bytes(smaller, smaller_plan.layout_of)
        if fits:
            check_memory(target.info, smaller_plan, 64, params)
        else:
            with pytest.raises(DeviceError):
                check_memory(target.info, smaller_plan, 64, params)


def test_the_suggested_input_fits(tmp_path):
    """The largest input the refusal names is generated under the same limit."""
    done = convgraph_cli("run", spec_file(tmp_path, LARGE_IMAGES), "--limit", "8")
    err = one_error(done, 4)
    side = int(err.split("an input of at most ")[1].split("x")[0])
    script = ("from convgraph.data.embedded import check_generation; from convgraph.core import "
              f"Volume; check_generation('train', Volume({side}, {side}, 3)); "
              f"check_generation('train', Volume({side + 8}, {side + 8}, 3))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, preexec_fn=_limited)
    assert "DeviceError" in done.stderr and f"{side + 8}x{side + 8}x3" in done.stderr, \
        done.stderr[-2000:]


def test_the_api_refuses_too(tmp_path):
    for spec in (WIDE, PADDED):
        start = time.monotonic()
        with pytest.raises(DeviceError, match="refused before allocating anything"):
            convgraph.compile(spec)
        assert time.monotonic() - start < 30
    model = convgraph.Model(analyse(PADDED))
    with pytest.raises(DeviceError, match="the parameters of 'padded'"):
        model.params  # noqa: B018 - the host copy is what is refused


def test_a_batch_the_host_cannot_stage_is_refused_with_one_that_fits():
    """On a 6 GiB address space a batch of 2**28 8x8 images (16 GiB of float32 input before it
    is packed) is refused by the host check even where the device would take it."""
    script = f"""
import dataclasses, resource, convgraph
from convgraph.errors import DeviceError
resource.setrlimit(resource.RLIMIT_AS, ({LIMIT}, resource.RLIM_INFINITY))
model = convgraph.Model(convgraph.analyse({TINY!r}), batch=2)
from convgraph.runtime.executor import check_memory
from convgraph.codegen.plan import plan_forward
plan = plan_forward(model.graph, model.profile)
info = dataclasses.replace(model.info, global_memory=2**62, max_alloc=2**62)
try:
    check_memory(info, plan, 2**28, 1000)
except DeviceError as exc:
    print(exc)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert "of host memory" in done.stdout and "use a batch of at most" in done.stdout, \
        (done.stdout, done.stderr[-2000:])


def test_the_available_memory_is_the_tightest_limit():
    """Under ulimit -v the address space left is what counts, not the machine's memory."""
    script = f"""
import resource
resource.setrlimit(resource.RLIMIT_AS, ({LIMIT}, resource.RLIM_INFINITY))
from convgraph.memory import host_available
print(*host_available(), sep="|")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    available, source = done.stdout.strip().split("|")
    assert 0 < int(available) < LIMIT and "ulimit -v" in source, done.stdout + done.stderr


# ---------------------------------------------------------------------------- program binaries

def _binary_cache(tmp_path) -> dict:
    return {"CONVGRAPH_CACHE": str(tmp_path / "cache"), "CONVGRAPH_BINARY_CACHE": "1"}


@pytest.mark.parametrize("damage", ["truncated", "bit-flipped", "empty", "headerless"])
def test_a_damaged_program_binary_is_a_warning_and_a_rebuild(tmp_path, damage):
    """Before the checksum, a truncated binary aborted inside PoCL (pocl_binary_deserialize:
    Assertion failed, exit -6)."""
    spec, env = spec_file(tmp_path, TINY), _binary_cache(tmp_path)
    first = convgraph_cli("run", spec, "--verify", env=env, limit=False)
    assert first.returncode == 0, first.stderr
    entries = list((tmp_path / "cache" / "programs").glob("*.bin"))
    assert entries
    for entry in entries:
        data = entry.read_bytes()
        if damage == "truncated":
            entry.write_bytes(data[: len(data) // 2])
        elif damage == "bit-flipped":
            flipped = bytearray(data)
            flipped[len(data) * 3 // 4] ^= 0x04
            entry.write_bytes(bytes(flipped))
        elif damage == "empty":
            entry.write_bytes(b"")
        else:  # the driver's bytes alone, cut short: what an old cache would hold
            entry.write_bytes(data[data.index(b"\n", 20) + 1:][:4096])
    again = convgraph_cli("run", spec, "--verify", env=env, limit=False)
    assert again.returncode == 0, again.stderr[-3000:]
    warnings = [line for line in again.stderr.splitlines() if line]
    assert len(warnings) == len(entries), again.stderr
    assert all(line.startswith("convgraph: warning: the cached program binary ")
               and "rebuilding" in line for line in warnings), again.stderr
    assert again.stdout == first.stdout
    third = convgraph_cli("run", spec, "--verify", env=env, limit=False)
    assert third.returncode == 0 and third.stderr == "", third.stderr  # rebuilt, valid again


@pytest.mark.parametrize("hostile", ["cache-is-a-file", "cache-is-a-fifo", "programs-is-a-file",
                                     "binary-is-a-folder", "binary-is-a-fifo",
                                     "binary-is-dev-zero"])
def test_an_unusable_program_cache_is_a_warning_never_an_error(tmp_path, hostile):
    spec, env = spec_file(tmp_path, TINY), _binary_cache(tmp_path)
    cache = tmp_path / "cache"
    if hostile == "cache-is-a-file":
        cache.write_text("x")
    elif hostile == "cache-is-a-fifo":
        os.mkfifo(cache)
    elif hostile == "programs-is-a-file":
        cache.mkdir()
        (cache / "programs").write_text("x")
    else:
        first = convgraph_cli("compile", spec, env=env, limit=False)
        assert first.returncode == 0, first.stderr
        for entry in (cache / "programs").glob("*.bin"):
            entry.unlink()
            if hostile == "binary-is-a-folder":
                entry.mkdir()
            elif hostile == "binary-is-a-fifo":
                os.mkfifo(entry)
            else:
                entry.symlink_to("/dev/zero")
    done = convgraph_cli("compile", spec, env=env, limit=False, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    assert lines and all(line.startswith("convgraph: warning: ") for line in lines), done.stderr
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------------- tuning tables

HOSTILE_TABLES = {
    "garbage-json": lambda path: path.write_text("{not json"),
    "a-list": lambda path: path.write_text("[1, 2, 3]"),
    "wrong-types-inside": lambda path: path.write_text(json.dumps(
        {"format": 1, "device": {}, "entries": {"a": 3, "b": {"knobs": [1]}, "c": None}})),
    "entries-a-string": lambda path: path.write_text(json.dumps(
        {"format": 1, "device": {}, "entries": "all"})),
    "not-utf8": lambda path: path.write_bytes(b"\xff\xfe{"),
    "deeply-nested": lambda path: path.write_text("[" * 100_000 + "]" * 100_000),
    "huge": lambda path: os.truncate(path.open("w").name, 1 << 40),
    "fifo": lambda path: os.mkfifo(path),
    "dev-zero": lambda path: path.symlink_to("/dev/zero"),
    "a-folder": lambda path: path.mkdir(),
}

def _tuning_file_in(cache: str):
    """The default device's tuning table inside the cache folder ``cache``."""
    from convgraph.runtime.devices import select_device

    info, _ = select_device()
    os.environ["CONVGRAPH_CACHE"] = cache
    try:
        return tuning_file(info)
    finally:
        del os.environ["CONVGRAPH_CACHE"]



@pytest.mark.parametrize("hostile", sorted(HOSTILE_TABLES))
def test_a_hostile_tuning_table_is_a_warning_and_the_defaults(tmp_path, hostile):
    """Each in its own cache folder; compile prints what it prints with no table, plus one
    warning line; a FIFO or /dev/zero is never read (they blocked or never ended before)."""

    spec = spec_file(tmp_path, TINY)
    env = {"CONVGRAPH_CACHE": str(tmp_path / "clean")}
    clean = convgraph_cli("compile", spec, env=env, limit=False)
    assert clean.returncode == 0 and clean.stderr == "", clean.stderr
    env = {"CONVGRAPH_CACHE": str(tmp_path / "cache")}
    table = _tuning_file_in(env["CONVGRAPH_CACHE"])
    table.parent.mkdir(parents=True)
    HOSTILE_TABLES[hostile](table)
    start = time.monotonic()
    done = convgraph_cli("compile", spec, env=env, limit=False, timeout=60)
    assert time.monotonic() - start < 60
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("convgraph: warning: the tuning table "), \
        done.stderr
    assert "defaults" in lines[0]
    strip = [line for line in done.stdout.splitlines() if "built in" not in line]
    assert strip == [line for line in clean.stdout.splitlines() if "built in" not in line]


def test_a_tuning_table_that_cannot_be_written_shows_the_results_then_exits_7(tmp_path):
    """`tune` with the table's place taken by a folder: the timings are printed, then the
    OutputError (the table is never silently lost)."""

    spec = spec_file(tmp_path, TINY)
    env = {"CONVGRAPH_CACHE": str(tmp_path / "cache")}
    table = _tuning_file_in(env["CONVGRAPH_CACHE"])
    table.mkdir(parents=True)
    done = convgraph_cli("tune", spec, "--reset", "--budget", "20", "--mode", "infer", env=env,
                         limit=False)  # --reset cannot remove a folder (it was exit 70): warns
    assert done.returncode == 7, done.stderr[-3000:]
    assert "kernels tuned in" in done.stdout and "saved to (nothing)" in done.stdout
    lines = done.stderr.splitlines()
    assert lines[-1].startswith("convgraph: error: could not write the tuning file"), lines
    assert all(line.startswith(("convgraph: warning: ", "tuning tiny"))  # and the progress
               for line in lines[:-1]), lines
