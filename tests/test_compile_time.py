"""Compile time: kernels compiled in parallel worker processes, the binary cache under damage and
concurrency, kernels shared between identical layers, and pixel-wise kernels shared between
layers of every shape (their shapes are run-time arguments). Speed itself is shown by
benchmarks/compile_time.py, never asserted here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

import convgraph
from convgraph.codegen.launches import Ints
from convgraph.codegen.layout import Layout
from convgraph.codegen.plan import plan_forward
from convgraph.codegen.profile import CPU
from convgraph.codegen.source import program_source
from convgraph.codegen.training import plan_training
from convgraph.core import Volume
from convgraph.params import to_device_layouts
from convgraph.runtime import program as program_cache
from convgraph.runtime.parallel import recipe
from convgraph.runtime.target import Target, build

pytestmark = [pytest.mark.device, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parent.parent
POCL = "Portable Computing Language"
# conv2 and conv3 specialise one kernel: 4 kernels for 5 launches (a 3x3 stride-1 pool: a 2x2/2
# one would fold into conv3, making it a kernel of its own)
# conv2 and conv3 are the same kernel (4 -> 4 channels, halos of 1 in and out); conv1 reads the
# network input planar on the CPU profile and conv4 writes a tensor without a halo
REPEATED = {"name": "repeated", "input": "8x8x4",
            "pattern": "[INPUT-CONV(4, 3, pad=1)-RELU-CONV(4, 3, pad=1)-RELU-CONV(4, 3, pad=1)"
                       "-RELU-CONV(4, 3, pad=1)-RELU-POOL(3, stride=1)-FC(3)]"}
# eight small kernels (4 conv, 2 pool, 2 fc): the fewest a cold build starts a worker for
# (3x3 stride-1 pools: a 2x2/2 pool would fold into the conv before it, one kernel fewer)
SMALL = {"name": "small", "input": "16x16x1",
         "pattern": "[INPUT-CONV(4, 3, pad=1)-RELU-POOL(3, stride=1)-CONV(8, 3, pad=1)-RELU"
                    "-POOL(3, stride=1)"
                    "-CONV(8, 1)-RELU-CONV(4, 1)-RELU-FC(6)-RELU-FC(2)]"}
TINY = {"name": "tiny", "input": "8x8x1", "pattern": "[INPUT-CONV(4, 3, pad=1)-RELU-FC(2)]"}
# compile, list what PoCL's cache holds before any launch, then run one batch (_batch's)
CHILD = """
import json, os, sys, numpy as np, convgraph
model = convgraph.compile(json.loads(sys.argv[1]), batch=4)
cache = os.environ.get("POCL_CACHE_DIR", "/nonexistent")
compiled = sorted({os.path.basename(os.path.dirname(os.path.dirname(os.path.join(top, name))))
                   for top, _, names in os.walk(cache) for name in names if name.endswith(".so")})
v = model.plan.layouts[model.plan.input].volume
x = np.random.default_rng(0).normal(size=(3, v.depth, v.height, v.width)).astype(np.float32)
print(json.dumps({"prebuilt": model.build.prebuilt, "compiled": compiled,
                  "kernels": sorted(model.plan.kernels), "cache_hit": model.build.cache_hit,
                  "out": model.forward(x).tolist()}))
"""


def _batch(spec: dict) -> np.ndarray:
    """The child's batch: 3 images of the spec's (one-channel) input."""
    width, height, depth = (int(part) for part in spec["input"].split("x"))
    return np.random.default_rng(0).normal(size=(3, depth, height, width)).astype(np.float32)


def _pocl_only():
    if Target.open().info.platform != POCL:
        pytest.skip("only PoCL compiles kernels at their first launch")


def _child(env: dict, spec: dict = SMALL) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, **env))


def _result(child: subprocess.Popen) -> tuple[dict, str]:
    out, err = child.communicate(timeout=240)
    assert child.returncode == 0, err[-3000:]
    return json.loads(out.splitlines()[-1]), err


def test_a_cold_build_compiles_every_kernel_before_the_first_launch(tmp_path):
    """With a worker, every kernel is in PoCL's (empty) cache when compile() returns, and the
    outputs are bit for bit those of this process, whose kernels compiled at first launch."""
    _pocl_only()
    child = _child({"POCL_CACHE_DIR": str(tmp_path / "pocl"),
                    "CONVGRAPH_CACHE": str(tmp_path / "cache"), "CONVGRAPH_BUILD_WORKERS": "1"})
    here = convgraph.compile(SMALL, batch=4).forward(_batch(SMALL)).tolist()
    parallel, _ = _result(child)
    assert parallel["prebuilt"]["workers"] == 1
    assert parallel["prebuilt"]["kernels"] == len(parallel["kernels"]) == 8
    assert parallel["compiled"] == parallel["kernels"]  # before the first launch
    assert parallel["out"] == here


@pytest.mark.slow  # ~3 s: a process of its own on an empty PoCL cache
def test_a_worker_alone_compiles_every_kernel_of_its_recipe(tmp_path):
    """The worker takes kernels from the end of the list; alone, it takes them all."""
    _pocl_only()
    target = Target.open()
    plan = plan_forward(convgraph.analyse(SMALL), target.profile)
    work = recipe(plan, target.info, program_source(plan, "small"),
                  list(target.profile.build_options))
    path = tmp_path / "work" / "recipe.json"
    (tmp_path / "work" / "claims").mkdir(parents=True)
    path.write_text(json.dumps(work))
    done = subprocess.run([sys.executable, "-m", "convgraph.runtime.parallel", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, POCL_CACHE_DIR=str(tmp_path / "pocl")))
    assert done.returncode == 0, done.stderr[-3000:]
    claimed = sorted(int(claim.name) for claim in (tmp_path / "work" / "claims").iterdir())
    assert claimed == list(range(len(work["launches"])))
    compiled = {shared.parent.parent.name for shared in (tmp_path / "pocl").rglob("*.so")}
    assert compiled == set(plan.kernels)


def test_two_processes_fill_one_binary_cache_at_once(tmp_path, monkeypatch):
    """Both succeed quietly with the same outputs, the cache holds one valid entry, and the
    next compile loads it."""
    env = {"CONVGRAPH_CACHE": str(tmp_path / "cache"), "CONVGRAPH_BINARY_CACHE": "1"}
    first, second = _child(env, TINY), _child(env, TINY)
    (one, one_err), (two, two_err) = _result(first), _result(second)
    assert one_err == two_err == ""
    assert one["out"] == two["out"]
    (entry,) = (tmp_path / "cache" / "programs").glob("*.bin")
    assert program_cache._verified(entry.read_bytes(), entry.stem) is not None
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    third = convgraph.compile(TINY, batch=4)
    assert third.build.cache_hit is True and third.forward(_batch(TINY)).tolist() == one["out"]


TINY_A = "__kernel void k_a(__global float *x) { x[get_global_id(0)] = 1.0f; }\n"
TINY_B = "__kernel void k_b(__global float *x) { x[get_global_id(0)] = 2.0f; }\n"


@pytest.mark.parametrize("damage", ["foreign", "truncated", "old-format"])
def test_a_damaged_or_foreign_binary_is_rebuilt_with_one_warning(tmp_path, monkeypatch, capsys,
                                                                 damage):
    """A valid binary of another program under this key would load and lack this program's
    kernels: its header names its own key, so it is refused before the driver sees it."""
    import pyopencl as cl

    monkeypatch.setenv("CONVGRAPH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CONVGRAPH_BINARY_CACHE", "1")
    target = Target.open()
    info, device, context = target.info, target.device, target.context
    a = program_cache.build_program(context, device, info, TINY_A, [])
    b = program_cache.build_program(context, device, info, TINY_B, [])
    folder = tmp_path / "cache" / "programs"
    entry_a, entry_b = folder / f"{a.key}.bin", folder / f"{b.key}.bin"
    data = entry_a.read_bytes()
    if damage == "foreign":
        shutil.copyfile(entry_a, entry_b)
    elif damage == "truncated":
        entry_b.write_bytes(entry_b.read_bytes()[:-7])
    else:  # a version-1 file: the same bytes behind a header without a key
        entry_b.write_bytes(b"convgraph-binary 1\n" + data[data.index(b"\n", 20) + 1:])
    capsys.readouterr()
    again = program_cache.build_program(context, device, info, TINY_B, [])
    assert again.cache_hit is False
    cl.Kernel(again.program, "k_b")  # this program's kernel, not the foreign one's
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("convgraph: warning: the cached program"), err
    assert "Traceback" not in err
    assert program_cache._verified(entry_b.read_bytes(), b.key) is not None  # stored anew
    assert program_cache.build_program(context, device, info, TINY_B, []).cache_hit is True


def test_shared_kernels_give_the_outputs_of_unshared_ones():
    model = convgraph.compile(REPEATED, batch=2)
    shared = model.plan
    unshared = plan_forward(model.graph, model.target.profile, share_kernels=False)
    assert len(shared.kernels) == 5 and len(unshared.kernels) == 6
    assert any(len(spec.layers) == 2 for spec in shared.kernels.values())
    executor = build(unshared, model.target, "repeated, unshared").executor()
    executor.upload_params(to_device_layouts(model.graph, model._host_params(),
                                             unshared.layout_of))
    x = np.random.default_rng(1).normal(size=(2, 4, 8, 8)).astype(np.float32)
    executor.allocate(2)
    executor.write_input(unshared.layouts[unshared.input].pack(x))
    executor.enqueue(2)
    alone = executor.read_tensor(unshared.output, 2).reshape(2, -1)
    np.testing.assert_array_equal(model.forward(x), alone)


def test_every_kind_of_plan_built_gives_a_recipe_or_no_workers(monkeypatch):
    """build() may prebuild any plan whose build was slow (a loaded machine makes a warm one
    slow): inference, training, evaluation and the tuner's probes give recipes whose buffers
    are all sized; the profiler's peak kernels (no network buffers) start no worker."""
    from convgraph.codegen.training import plan_training
    from convgraph.runtime.inspect import _PeakPlan
    from convgraph.runtime.parallel import prebuild
    from convgraph.runtime.program import SubPlan

    monkeypatch.setenv("CONVGRAPH_BUILD_WORKERS", "1")
    target = Target.open()
    graph = convgraph.analyse(SMALL)
    training = plan_training(graph, target.profile)
    plans = [plan_forward(graph, target.profile), training,
             SubPlan(training, {"evaluate": training.groups["evaluate"]})]
    for plan in plans:
        work = recipe(plan, target.info, "", [])
        assert {launch["kernel"] for launch in work["launches"]} == set(plan.kernels)
        assert all(arg[1] in work["buffers"] for launch in work["launches"]
                   for arg in launch["args"] if arg[0] == "buffer")
    peak = _PeakPlan(4)
    assert prebuild(peak, target, None, "", [])["workers"] == 0


# the kernels that take their shapes at run time, and those among them whose defines choose
# code by layer (a fused activation, accumulating or not): at most two variants each
RUN_TIME_SHAPED = {"ACTIVATION_FORWARD": 1, "ADD_FORWARD": 1, "GRADIENT_COPY": 2,
                   "ACTIVATION_BACKWARD": 2, "BATCHNORM_INFERENCE": 2, "BATCHNORM_TRAIN": 2,
                   "BATCHNORM_SPLIT_STATS": 1, "BATCHNORM_STATS": 1,
                   "BATCHNORM_BACKWARD_REDUCE": 1, "BATCHNORM_BACKWARD_DATA": 2, "SGD_STEP": 1}


def test_pixelwise_kernels_of_every_shape_are_one_compiled_kernel():
    """ResNet-8's activations, adds, batchnorms and optimizer steps come in three shapes (and
    twelve parameter sizes); each kind is one kernel (two where a define chooses code), its
    launches told their shapes by int arguments."""
    graph = convgraph.analyse(ROOT / "specs" / "resnet8.yaml")
    kernels, shapes = defaultdict(set), defaultdict(set)
    for plan in (plan_forward(graph, CPU), plan_training(graph, CPU)):
        for launch in (launch for group in plan.launch_groups().values() for launch in group):
            selector = plan.kernels[launch.kernel].selector
            if selector in RUN_TIME_SHAPED:
                kernels[selector].add(plan.kernels[launch.kernel].identity())
                shapes[selector].add(tuple(arg for arg in launch.args if isinstance(arg, Ints)))
    assert set(kernels) == set(RUN_TIME_SHAPED)
    for selector, most in RUN_TIME_SHAPED.items():
        assert len(shapes[selector]) >= 3, selector
        assert 1 <= len(kernels[selector]) <= most, (selector, kernels[selector])
        assert not {"HEIGHT", "WIDTH", "CHANNEL_VECTORS", "COUNT", "X_ALLOC_W"} & {
            key for identity in kernels[selector] for key, _ in identity[2]}, selector


@pytest.mark.parametrize("spec, family, shapes", [("convnext_tiny", "scale", 4),
                                                   ("efficientnet_b0", "mul", 10)])
def test_layer_scales_and_gates_of_every_shape_are_one_compiled_kernel(spec, family, shapes):
    """ConvNeXt-Tiny's layer scales (4 stage shapes) and EfficientNet-B0's squeeze-and-excitation
    products (10 shapes), forward and backward: one kernel per selector, no shape defines."""
    graph = convgraph.analyse(ROOT / "specs" / f"{spec}.yaml")
    kernels, launched = defaultdict(set), defaultdict(set)
    for plan in (plan_forward(graph, CPU), plan_training(graph, CPU)):
        for launch in (launch for group in plan.launch_groups().values() for launch in group):
            kernel = plan.kernels[launch.kernel]
            if kernel.family == family:
                kernels[kernel.selector].add(kernel.identity())
                launched[kernel.selector].add(
                    tuple(arg for arg in launch.args if isinstance(arg, Ints)))
    assert len(kernels) == 3  # forward, input gradient, weight (or gate) gradient
    for selector, identities in kernels.items():
        assert len(launched[selector]) == shapes and len(identities) == 1, selector
        assert not {"HEIGHT", "WIDTH", "CHANNEL_VECTORS", "X_ALLOC_W", "Y_STRIDE_C"} & {
            key for identity in identities for key, _ in identity[2]}, selector


@pytest.mark.parametrize("halo", [(0, 0, 0, 0), (1, 1, 1, 1), (2, 0, 3, 1)])
def test_run_time_layouts_address_what_pack_places(halo):
    """common.cl's AT_RUN(layout, n, h, w, c) with Ints.layout's four values finds element
    (n, c, h, w) of an array where Layout.pack put it (halo and padding channels included)."""
    layout = Layout(Volume(3, 5, 4), 8, halo)  # 4 channels padded to 8, 5 high, 3 wide
    x = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3) + 1
    packed = layout.pack(x).ravel()
    offset, image, row, pixel = Ints.layout(layout).values
    n, c, h, w = np.meshgrid(*(np.arange(size) for size in x.shape), indexing="ij")
    np.testing.assert_array_equal(packed[offset + n * image + h * row + w * pixel + c], x)
    assert Ints.grid(layout, 4).values == (2, 3, 5, 0)
    assert np.count_nonzero(packed) == x.size  # the rest is halo and padding, zero


# a fresh interpreter: which modules `import convgraph` and a spec's analysis leave loaded
IMPORTS = """
import json, sys
import convgraph
light = sorted(name for name in ("numpy", "networkx", "pyopencl", "yaml", "rich")
               if name in sys.modules)
convgraph.analyse(sys.argv[1])
import convgraph.model  # noqa: F401  (the compiler, as compile() loads it)
print(json.dumps({"light": light, "loaded": sorted(sys.modules)}))
"""


def test_import_convgraph_is_light_and_compiling_loads_no_data_loaders():
    """``import convgraph`` loads no numpy, networkx, pyopencl, YAML or rich (the CLI's signal
    handlers come first; a spec check needs no device); analysing a spec and loading the
    compiler loads none of the data loaders (the dataset names are data/kinds.py's) and no
    subprocess (only a cold build that starts workers needs it)."""
    done = subprocess.run([sys.executable, "-c", IMPORTS, str(ROOT / "specs" / "seed.yaml")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["light"] == []
    loaded = set(found["loaded"])
    assert {"networkx", "yaml", "convgraph.model", "convgraph.data.kinds"} <= loaded  # it ran
    assert not loaded & {"convgraph.data.load", "convgraph.data.idx", "convgraph.data.cifar",
                         "convgraph.data.npz", "convgraph.data.folder", "subprocess"}
