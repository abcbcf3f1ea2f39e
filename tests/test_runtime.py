"""The runtime as users meet it: devices, the build cache, build failures, the Python API and the
`devices` / `compile` / `run` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import convgraph
from convgraph.errors import DataError, DeviceError, KernelBuildError
from convgraph.runtime.devices import list_devices, select_device
from convgraph.runtime.program import build_program

from .conftest import SPECS

pytestmark = [pytest.mark.device, pytest.mark.timeout(300)]


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty convgraph cache, with binaries stored even for PoCL (which has its own)."""
    monkeypatch.setenv("CONVGRAPH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CONVGRAPH_BINARY_CACHE", "1")
    return tmp_path / "cache"


def test_device_selection_by_index_name_and_type():
    found = list_devices()
    assert found, "the test machine has an OpenCL device (PoCL)"
    info, _ = found[0]
    assert select_device(info.index)[0] == info
    assert select_device(info.type.upper())[0].type == info.type
    assert select_device(info.platform.split()[0].lower())[0].platform == info.platform


def test_device_from_environment(monkeypatch):
    info, _ = list_devices()[0]
    monkeypatch.setenv("CONVGRAPH_DEVICE", info.index)
    assert select_device()[0] == info


def test_unknown_device_lists_what_is_there():
    with pytest.raises(DeviceError) as caught:
        select_device("no-such-accelerator")
    message = str(caught.value)
    assert "no OpenCL device matches 'no-such-accelerator'" in message
    assert list_devices()[0][0].name in message and "convgraph devices" in message


def test_no_platform_says_how_to_install_one(tmp_path):
    empty = tmp_path / "vendors"
    empty.mkdir()
    env = dict(os.environ, OCL_ICD_VENDORS=str(empty))
    done = subprocess.run([sys.executable, "-m", "convgraph.cli", "devices"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 4 and "Traceback" not in done.stderr
    assert "no OpenCL platform" in done.stderr and "pocl-opencl-icd" in done.stderr


def test_second_compile_hits_the_cache(fresh_cache):
    first = convgraph.compile(SPECS / "lenet5.yaml", batch=4)
    second = convgraph.compile(SPECS / "lenet5.yaml", batch=4)
    assert (first.build.cache_hit, second.build.cache_hit) == (False, True)
    assert first.build.key == second.build.key
    assert len(list((fresh_cache / "programs").glob("*.bin"))) == 1
    x = np.random.default_rng(0).normal(size=(3, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(first.forward(x), second.forward(x))


def test_pocl_keeps_its_own_cache(fresh_cache, monkeypatch):
    """Asking PoCL for a binary compiles every kernel once more; its own cache serves instead."""
    monkeypatch.delenv("CONVGRAPH_BINARY_CACHE")
    model = convgraph.compile(SPECS / "seed.yaml", batch=2)
    stored = list((fresh_cache / "programs").glob("*.bin"))
    if model.info.platform == "Portable Computing Language":
        assert stored == [] and model.build.cache_hit is False
    else:
        assert len(stored) == 1


def test_cache_key_changes_with_the_source(fresh_cache):
    convgraph.compile(SPECS / "lenet5.yaml", batch=4)
    other = convgraph.compile(SPECS / "lenet5.yaml", batch=4, overrides=["rounding=floor"])
    assert other.build.cache_hit is True  # the same kernels: rounding changes no shape here
    third = convgraph.compile(SPECS / "seed.yaml", batch=4)
    assert third.build.cache_hit is False


def test_corrupt_cache_entry_is_rebuilt(fresh_cache):
    convgraph.compile(SPECS / "seed.yaml", batch=2)
    (entry,) = (fresh_cache / "programs").glob("*.bin")
    entry.write_bytes(b"not a binary")
    again = convgraph.compile(SPECS / "seed.yaml", batch=2)
    assert again.build.cache_hit is False
    assert again.forward(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 10)


def test_build_failure_is_saved_and_explained(fresh_cache):
    import pyopencl as cl

    info, device = select_device()
    context = cl.Context([device])
    source = ("/* ===== k_conv7_conv_forward: conv.cl CONV_FORWARD, for layer(s) conv7 ===== */\n"
              "__kernel void k(__global float *x) { x[0] = undefined_thing; }\n")
    with pytest.raises(KernelBuildError) as caught:
        build_program(context, device, info, source, [])
    message = str(caught.value)
    assert "rejected the generated kernels" in message and "conv7" in message
    saved = list((fresh_cache / "failures").glob("*.cl"))
    assert len(saved) == 1 and saved[0].read_text() == source
    assert "undefined_thing" in saved[0].with_suffix(".log").read_text()


def test_api_conventions_match_pytorch():
    model = convgraph.compile(SPECS / "resnet8.yaml", batch=2)
    params = model.params
    assert params["conv1.weight"].shape == (16, 3, 3, 3)
    assert params["res2/proj.weight"].shape == (32, 16, 1, 1)
    assert params["fc.weight"].shape == (10, 64) and params["fc.bias"].shape == (10,)
    assert {"bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"} <= set(params)
    out = model.forward(np.zeros((3, 3, 32, 32), np.float32))
    assert out.shape == (3, 10) and out.dtype == np.float32


def test_same_seed_same_initial_weights():
    first = convgraph.compile(SPECS / "seed.yaml", batch=2).params
    second = convgraph.compile(SPECS / "seed.yaml", batch=2).params
    other = convgraph.compile(SPECS / "seed.yaml", batch=2, overrides=["seed=7"]).params
    np.testing.assert_array_equal(first["conv1.weight"], second["conv1.weight"])
    assert not np.array_equal(first["conv1.weight"], other["conv1.weight"])


def test_set_params_checks_names_and_shapes():
    model = convgraph.compile(SPECS / "seed.yaml", batch=2)
    params = model.params
    with pytest.raises(DataError, match="missing conv1.bias"):
        model.set_params({k: v for k, v in params.items() if k != "conv1.bias"})
    with pytest.raises(DataError, match=r"'fc1.weight' has shape \(3, 3\)"):
        model.set_params({**params, "fc1.weight": np.zeros((3, 3))})
    with pytest.raises(DataError, match="NaN"):
        model.set_params({**params, "fc1.bias": np.full(10, np.nan)})
    with pytest.raises(DataError, match=r"takes \(batch, 3, 32, 32\)"):
        model.forward(np.zeros((2, 32, 32, 3), np.float32))


def test_weights_from_a_file_change_the_output(tmp_path):
    model = convgraph.compile(SPECS / "seed.yaml", batch=4)
    x = np.random.default_rng(1).normal(size=(2, 3, 32, 32)).astype(np.float32)
    before = model.forward(x)
    params = model.params
    params["fc1.bias"] = np.arange(10, dtype=np.float32)
    model.set_params(params)
    np.testing.assert_allclose(model.forward(x) - before, np.tile(np.arange(10), (2, 1)),
                               atol=1e-4)


def test_activations_share_buffers_by_liveness():
    shared = convgraph.compile(SPECS / "vgg_cifar.yaml", batch=8)
    separate = convgraph.compile(SPECS / "vgg_cifar.yaml", batch=8, share_buffers=False)
    assert len(shared.plan.buffer_elements) < len(separate.plan.buffer_elements)
    assert shared.device_memory() < separate.device_memory()


def test_refuses_what_the_device_cannot_hold():
    model = convgraph.compile(SPECS / "seed.yaml", batch=2)
    with pytest.raises(DeviceError, match="more than"):
        model.executor.check_memory(10**9, 0)


# ---------------------------------------------------------------------------- the commands

def test_devices_command(cli):
    status, out, _ = cli("devices", "--json")
    listing = json.loads(out)
    assert status == 0 and listing["devices"]
    first = listing["devices"][0]
    assert {"index", "platform", "name", "type", "compute_units", "global_memory",
            "local_memory", "max_work_group_size", "opencl_version", "fp64"} <= set(first)
    assert listing["default"] == select_device()[0].index
    status, out, _ = cli("devices")
    assert status == 0 and first["index"] in out


def test_compile_json_lists_kernels(cli):
    status, out, _ = cli("compile", SPECS / "seed.yaml", "--json", "--batch", "16")
    summary = json.loads(out)
    assert status == 0 and summary["batch"] == 16
    nodes = {k["node"] for k in summary["kernels"]}
    # relu1 is fused, pool1 folded into conv1's epilogue, the flatten is read by fc1
    assert {"conv1", "fc1"} == nodes
    for kernel in summary["kernels"]:
        assert {"name", "node", "global_size", "local_size"} <= set(kernel)
    assert summary["peak_device_memory"] > 0 and summary["device"]["index"]


def test_compile_writes_readable_source_and_plan(cli, tmp_path):
    target = tmp_path / "out"
    status, out, _ = cli("compile", SPECS / "resnet8.yaml", "-o", target)
    assert status == 0
    source = (target / "kernels.cl").read_text()
    assert "for layer(s) res2/conv1" in source
    assert "#define KERNEL_NAME k_res2_conv1_conv_forward" in source
    assert "double" not in source.replace("/*", "").split("*/")[-1]
    plan = (target / "plan.txt").read_text()
    assert "## launches, in order" in plan and "res3/add" in plan
    assert "res3/bn2: folded into res3/conv2" in plan


def test_run_accepts_a_compiled_directory(cli, tmp_path):
    target = tmp_path / "compiled"
    assert cli("compile", SPECS / "seed.yaml", "-o", target)[0] == 0
    status, out, _ = cli("run", target, "--verify")
    assert status == 0 and "0 failed" in out


def test_run_predict_prints_scores(cli, tmp_path):
    model = convgraph.compile(SPECS / "seed.yaml", batch=4)
    weights = tmp_path / "w.npz"
    np.savez(weights, **model.params)
    x = np.random.default_rng(2).normal(size=(3, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    status, out, err = cli("run", SPECS / "seed.yaml", "--weights", weights, "--predict",
                           tmp_path / "x.npy", "--output", tmp_path / "scores.npy")
    assert status == 0, err
    scores = np.load(tmp_path / "scores.npy")
    np.testing.assert_allclose(scores, model.forward(x), rtol=1e-5, atol=1e-5)
    assert "class scores (3 images)" in out
    assert f"{int(np.argmax(scores[0]))}: " in out


@pytest.mark.parametrize(("problem", "expected"), [
    ("missing", "does not exist"),
    ("corrupt", "not a readable .npz"),
    ("pickled", "not a readable .npz"),
])
def test_run_rejects_bad_weight_files(cli, tmp_path, problem, expected):
    weights = tmp_path / "w.npz"
    if problem == "corrupt":
        weights.write_bytes(b"PK\x03\x04 truncated")
    elif problem == "pickled":
        np.savez(weights, conv1=np.array([{"a": 1}], dtype=object))
    status, _, err = cli("run", SPECS / "seed.yaml", "--weights", weights, "--verify")
    assert status == 5 and expected in err and "Traceback" not in err


def test_run_profile_table(cli):
    status, out, _ = cli("run", SPECS / "seed.yaml", "--profile", "--batch", "8")
    assert status == 0
    assert "conv1" in out and "GFLOP/s" in out and "images/s" in out


def test_unknown_device_on_the_command_line(cli):
    status, _, err = cli("compile", SPECS / "seed.yaml", "--device", "quantum")
    assert status == 4 and "no OpenCL device matches 'quantum'" in err


def test_cpu_work_groups_do_not_depend_on_the_batch():
    """PoCL compiles a kernel once per work-group shape: a shape that followed the batch cost a
    recompile of every kernel at each new batch size (a last partial batch, evaluation)."""
    from dataclasses import replace

    from convgraph.codegen.profile import CPU
    from convgraph.codegen.training import plan_training
    from convgraph.pipeline import analyse

    graph = analyse(SPECS / "resnet8.yaml")
    plan = plan_training(graph, replace(CPU))
    launches = [launch for group in plan.groups.values() for launch in group]
    batched = [launch for launch in launches if launch.batch_axis is not None]
    assert all(launch.local_size is not None for launch in batched)
    for launch in launches:
        shapes = {launch.sizes(batch)[1] for batch in (1, 7, 64, 100)}
        assert len(shapes) == 1, (launch.kernel, shapes)
        if launch.local_size is not None:
            for batch in (1, 7, 64, 100):
                global_size, local = launch.sizes(batch)
                assert all(g % w == 0 for g, w in zip(global_size, local)), launch.kernel
