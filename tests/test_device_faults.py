"""Device faults as users meet them: a network too big for the device, an allocation the device
refuses or cannot serve, an unknown device. Each must end in one paragraph that says what
happened, with the numbers, and what to try (a smaller batch, another device), exit status 4 and
no traceback. (A kernel the device compiler rejects: tests/test_runtime.py.)

Nothing here imitates OpenCL: the failures are the devices' own. PoCL refuses a buffer larger
than its largest allocation (CL_INVALID_BUFFER_SIZE), and, since its device memory is the
process's memory, fails to allocate (CL_OUT_OF_HOST_MEMORY) in a process whose address space is
limited (RLIMIT_AS) to less than a batch needs, as when other programs hold the memory; Oclgrind
simulates a device with as little global memory as it is told.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import convgraph
from convgraph.codegen.plan import plan_forward
from convgraph.codegen.profile import profile_for
from convgraph.codegen.training import plan_training
from convgraph.errors import DeviceError
from convgraph.params import device_param_bytes
from convgraph.pipeline import analyse
from convgraph.runtime.devices import select_device
from convgraph.runtime.executor import memory_needed

from .conftest import SPECS

pytestmark = [pytest.mark.device, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parent.parent
HUGE = 65536  # the largest batch a spec may ask for: VGG-16 then needs terabytes


def convgraph_cli(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    """The real command in a process of its own, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "convgraph.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=dict(os.environ, **(env or {})))


def assert_one_paragraph(done, status: int = 4) -> str:
    """Exit ``status``, nothing but one line on stderr: 'convgraph: error: ... Fix: ...'."""
    err = done.stderr
    assert done.returncode == status, (done.returncode, err[-3000:])
    assert "Traceback" not in err and "internal error" not in err, err[-3000:]
    assert err.startswith("convgraph: error: ") and err.count("\n") == 1, err
    assert " Fix: " in err, err
    return err


# ---------------------------------------------------------------------------- memory refusal

class Spy:
    """Counts calls of a pyopencl constructor and passes each one on unchanged."""

    def __init__(self, monkeypatch, name: str):
        import pyopencl as cl

        self.calls = 0
        real = getattr(cl, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(cl, name, counted)


@pytest.mark.parametrize("command", [("compile",), ("run", "--verify")],
                         ids=["compile", "run-verify"])
def test_a_network_too_big_for_the_device_is_refused_with_the_estimate(command):
    """VGG-16 at batch 65,536: refused with the bytes it needs (exactly the plan's figure),
    the bytes the device has and a batch that fits, before any kernel is built."""
    info, _ = select_device()
    done = convgraph_cli(command[0], SPECS / "vgg16.yaml", *command[1:], "--batch", HUGE)
    err = assert_one_paragraph(done)
    graph = analyse(SPECS / "vgg16.yaml")
    plan = plan_forward(graph, profile_for(info), share_buffers=command[1:] != ("--verify",))
    total, _ = memory_needed(plan, HUGE, device_param_bytes(graph, plan.layout_of))
    assert f"batch {HUGE} needs an estimated {total:,} bytes" in err, err
    assert f"({info.global_memory:,} bytes" in err and info.label in err, err
    assert "use a batch of at most" in err and "--batch" in err and "--device" in err, err
    assert "refused before allocating anything" in err


def test_training_too_big_for_the_device_is_refused_with_the_estimate(tmp_path):
    """`convgraph run` (training) of VGG-16 at batch 65,536, on two images of real data."""
    info, _ = select_device()
    data = tmp_path / "two.npz"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (2, 3, 224, 224), dtype=np.uint8)
    np.savez(data, x=images, y=np.array([3, 999]), x_test=images, y_test=np.array([3, 999]))
    done = convgraph_cli("run", SPECS / "vgg16.yaml", "--dataset", "npz", "--data", data,
                         "--batch", HUGE, "--epochs", 1)
    err = assert_one_paragraph(done)
    graph = analyse(SPECS / "vgg16.yaml", [f"train.batch={HUGE}"])
    train = graph.graph["train"]
    plan = plan_training(graph, profile_for(info), train["optimizer"], train)
    total, _ = memory_needed(plan, HUGE, sum(plan.fixed_sizes().values()))
    assert f"batch {HUGE} needs an estimated {total:,} bytes" in err, err
    assert f"({info.global_memory:,} bytes" in err and "--batch" in err and "--device" in err


def test_the_refusal_comes_before_any_context_program_or_buffer(monkeypatch):
    """Counting pyopencl's constructors as they are called: none for the refused network; the
    same count, done the same way, sees those of a network that fits."""
    spies = [Spy(monkeypatch, name) for name in ("Context", "Program", "Buffer")]
    with pytest.raises(DeviceError, match="refused before allocating anything"):
        convgraph.compile(SPECS / "vgg16.yaml", batch=HUGE)
    assert [spy.calls for spy in spies] == [0, 0, 0]
    convgraph.compile(SPECS / "seed.yaml", batch=2).forward(np.zeros((2, 3, 32, 32), np.float32))
    assert all(spy.calls > 0 for spy in spies), [spy.calls for spy in spies]


def test_a_small_device_refuses_what_a_large_one_runs(tmp_path):
    """Oclgrind simulating a device with 16 MiB of global memory: VGG-CIFAR at batch 64 (about
    45 MiB of activations) is refused there, with that device's figures."""
    from .test_oclgrind import ICD, run_under_oclgrind

    if not ICD.exists():
        pytest.skip("oclgrind is not installed (apt-get install oclgrind)")
    argv = [sys.executable, "-m", "convgraph.cli", "compile", str(SPECS / "vgg_cifar.yaml"),
            "--batch", "64"]
    done, reports = run_under_oclgrind(tmp_path, argv, {"OCLGRIND_GLOBAL_MEM_SIZE": str(2**24)})
    err = assert_one_paragraph(done)
    assert "Oclgrind" in err and "(16,777,216 bytes (16.0 MiB))" in err, err
    assert "use a batch of at most" in err and reports == []


# ---------------------------------------------------------------------------- allocation failures

# a 4x4x1 input and its 1x1 conv to 256 channels: 64 bytes and 16 KiB per image, so one buffer
# reaches any size at a batch where the other stays small
WIDENING = {"name": "widening", "input": "4x4x1", "pattern": "[INPUT-CONV(256, 1)]"}


def test_a_buffer_the_device_refuses_is_a_device_error_and_the_model_survives():
    """The check is bypassed (as a driver that over-reports its limits would have it) and the
    device itself refuses a buffer over its largest allocation; the model then still runs."""
    model = convgraph.compile(WIDENING, batch=2)
    batch = model.info.max_alloc // 16384 + 1
    with pytest.raises(DeviceError) as caught:
        model.executor.allocate(batch)  # what forward() does after the check passes
    message = str(caught.value)
    assert f"allocating {sum(model.plan.buffer_sizes(batch).values()):,} bytes" in message
    assert f"for batch {batch} on {model.info.label} failed: " in message, message
    assert "Fix: use a smaller batch (--batch), or another device" in message
    assert model.executor.buffers == {}  # what was allocated before the failure is released
    x = np.random.default_rng(0).normal(size=(2, 1, 4, 4)).astype(np.float32)
    weight = model.params["conv1.weight"][:, 0, 0, 0]
    np.testing.assert_allclose(model.forward(x), weight[None, :, None, None] * x, atol=1e-5)


LIMITED = """
import re, resource, sys
import pyopencl as cl
from convgraph.cli import main
from convgraph.runtime.devices import select_device

cl.Context([select_device()[1]])  # the platform and its compiler loaded; then the limit
used = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (used + int(sys.argv[1]), resource.RLIM_INFINITY))
sys.exit(main(sys.argv[2:]))
"""


def test_running_out_of_device_memory_is_a_device_error(tmp_path):
    """PoCL's device memory is the process's: with 1.5 GiB of address space left, a batch whose
    buffers take 1 GiB (passing the check against the 12 GiB the device reports) cannot be
    allocated, and PoCL's own error reaches the user with the hint."""
    info, _ = select_device()
    if "portable computing language" not in info.platform.lower():
        pytest.skip("the device's memory is not the process's own (PoCL's is)")
    spec = tmp_path / "widening.yaml"
    spec.write_text(json.dumps(WIDENING))
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 4, 4), np.float32))
    batch = 2**16  # 1 GiB of conv output
    done = subprocess.run([sys.executable, "-c", LIMITED, str(3 * 2**29), "run", str(spec),
                           "--predict", str(tmp_path / "x.npy"), "--random-weights",
                           "--batch", str(batch)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    err = assert_one_paragraph(done)
    assert f"of buffers for batch {batch} on {info.label} failed: create_buffer failed: " in err
    assert "OUT_OF_HOST_MEMORY" in err or "MEM_OBJECT_ALLOCATION_FAILURE" in err, err
    assert "Fix: use a smaller batch (--batch), or another device" in err


# ---------------------------------------------------------------------------- unknown devices

@pytest.mark.parametrize("how", ["flag", "environment"])
def test_an_unknown_device_lists_the_devices_there_are(how):
    info, _ = select_device()
    args = ["run", SPECS / "seed.yaml", "--verify"]
    if how == "flag":
        done = convgraph_cli(*args, "--device", "tpu-v9")
    else:
        done = convgraph_cli(*args, env={"CONVGRAPH_DEVICE": "tpu-v9"})
    err = assert_one_paragraph(done)
    assert "no OpenCL device matches 'tpu-v9'" in err and info.label in err, err
    assert "--device P:D" in err and "convgraph devices" in err
