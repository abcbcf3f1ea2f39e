"""Every op's forward kernel against its independent numpy reference, on every OpenCL device.

The harness walks the op registry (``convgraph.ops.base.REGISTRY``): CASES holds, for every op,
small networks that exercise it over many shapes (kernel sizes, strides, paddings, dilation,
groups, rounding, odd widths that leave a partial pixel tile, channel counts that are not a
multiple of the vector width, fused epilogues, batches larger than a tile). Each case is compiled
for each device of $CONVGRAPH_TEST_DEVICES (comma-separated ``--device`` fragments such as
``pocl`` or ``0:0``; unset: every device found, see conftest.py) with ``share_buffers=False``,
given random parameters with non-trivial biases and batchnorm statistics, and run on a random
batch after every activation buffer's interior has been filled with NaN (halos stay zero), so an
output element no kernel writes shows up as NaN.

The check is the one ``convgraph run --verify`` uses (``runtime.inspect.relative_error``)::

    max |device - reference| / max |reference|  <=  1e-4

where ``reference`` is ``reference.reference_forward``, the float64 numpy forward of the same
graph with the same parameters, and any non-finite device value counts as an infinite error. The
output shape is compared too.

Every case's backward kernels are checked the same way (test_op_backward): the case is made
trainable (``backward_spec``), one training step's forward and backward passes run on the device
(``TrainingSession.gradients``), and the gradient of every node's output and of every parameter
is held to the same tolerance against ``reference.reference_gradients``, the float64 numpy
forward and backward pass with the same parameters, batch, labels and dropout seed.

Besides the cases: a selection of them with the other device family's code-generation profile
(GPU tiles and work-groups on a CPU, and the reverse), partial batches, shared against separate
buffers, and every network in specs/ as a whole against the same reference.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import convgraph
from convgraph.codegen import profile as profiles
from convgraph.graph import ordered
from convgraph.ops.base import REGISTRY
from convgraph.pipeline import analyse
from convgraph.reference import reference_forward, reference_gradients
from convgraph.runtime.devices import select_device
from convgraph.runtime.inspect import TOLERANCE, random_params, relative_error
from convgraph.spec.expand import expanded
from convgraph.train.session import TrainingSession

SPECS = Path(__file__).resolve().parent.parent / "specs"


def on_devices(test):
    """A device test: run per selected device (its ``cl_device`` argument), failed if hung. The
    thread method, because a hung kernel blocks inside an OpenCL call, where the signal method's
    alarm is never handled; it ends the session after dumping every thread's stack."""
    return pytest.mark.device(pytest.mark.timeout(120, method="thread")(test))


# more images than one work-item's tile of rows in fc, on every profile
FC_BATCH = max(profiles.CPU.dense_tile_rows, profiles.GPU.dense_tile_rows) + 1

# ---------------------------------------------------------------------------- the cases
#
# op -> [(input volume, layers, batch)]. ``layers`` is either what follows INPUT in a pattern
# (``"CONV(8, 3, pad=1)-RELU"`` -> ``[INPUT-CONV(8, 3, pad=1)-RELU]``), or a graph-form ``nodes:``
# mapping reading ``input``. For add and concat the volume may be a list: the op then joins the
# input (the first volume) and a 1x1 conv of it to each further volume. Each case runs with batch
# 1 and, when its batch is larger, with that batch as well.

# Graph-form cases: the same tensor read twice, and joins whose inputs and outputs have halos.
ADD_SAME_TWICE = {
    "conv": {"op": "conv", "filters": 5, "size": 3, "pad": 1, "inputs": ["input"]},
    "add": {"op": "add", "inputs": ["conv", "conv"]},
}
ADD_INPUT_TWICE = {"add": {"op": "add", "inputs": ["input", "input"]}}
ADD_HALOS = {  # the input has a halo of 1 (read by a pad-1 conv), add's output a halo of 2
    "wide": {"op": "conv", "filters": 4, "size": 3, "pad": 1, "inputs": ["input"]},
    "narrow": {"op": "conv", "filters": 4, "size": 1, "inputs": ["input"]},
    "add": {"op": "add", "inputs": ["wide", "narrow", "input"]},
    "out": {"op": "conv", "filters": 6, "size": 5, "pad": 2, "inputs": ["add"]},
}
CONCAT_HALOS = {  # inputs with and without a halo, concatenated into a tensor with a halo
    "a": {"op": "conv", "filters": 5, "size": 3, "pad": 1, "inputs": ["input"]},
    "b": {"op": "pool", "size": 3, "stride": 1, "pad": 1, "inputs": ["input"]},
    "cat": {"op": "concat", "inputs": ["b", "a", "input", "a"]},
    "out": {"op": "conv", "filters": 7, "size": 3, "pad": 1, "inputs": ["cat"]},
}
FC_HALO = {  # fc reading (through an elided flatten) a volume with a halo of 1
    "fc": {"op": "fc", "units": 10, "inputs": ["input"]},
    "conv": {"op": "conv", "filters": 10, "size": "7x5", "pad": 1, "inputs": ["input"]},
    "add": {"op": "add", "inputs": ["fc", "conv"]},
}
DROPOUT_BRANCH = {  # dropout feeding two readers: both read the conv's tensor
    "conv": {"op": "conv", "filters": 6, "size": 3, "pad": 1, "inputs": ["input"]},
    "drop": {"op": "dropout", "rate": 0.3},
    "relu": {"op": "relu", "inputs": ["drop"]},
    "add": {"op": "add", "inputs": ["relu", "drop"]},
}

CASES: dict[str, list[tuple]] = {
    "input": [
        ("7x5x3", "", 7),
    ],
    "conv": [
        ("8x8x3", "CONV(16, 1)", 7),  # 1x1
        ("13x9x3", "CONV(12, 3, pad=1)", 7),  # odd width: the last pixel tile is partial
        ("31x5x1", "CONV(3, 3, pad=1)", 1),  # depth 1, 3 filters, width 31
        ("12x10x17", "CONV(20, 5, pad=2)", 7),  # depth 17, 20 filters, 5x5
        ("15x15x3", "CONV(8, 7, stride=2, pad=3)", 1),  # 7x7, stride 2
        ("9x9x2", "CONV(4, 7)", 1),  # 7x7 valid
        ("15x9x4", "CONV(6, 3, stride=3, pad=valid)", 7),  # stride 3
        ("13x9x3", "CONV(8, 4, stride=2, pad=same)", 1),  # same: odd extra bottom/right
        ("13x10x5", "CONV(4, 2, pad=same)", 1),  # same, stride 1: all extra bottom/right
        ("13x9x3", "CONV(6, 5x3, pad=2x1)", 7),  # non-square kernel and input, WxH pad
        ("13x9x3", "CONV(4, 3, stride=2x1, pad=1)", 1),  # WxH stride
        ("11x11x4", "CONV(8, 3, pad=2, dilation=2)", 7),  # dilation 2
        ("14x9x3", "CONV(5, 3x2, dilation=2x3, pad=1x0)", 1),  # WxH dilation
        ("10x10x8", "CONV(12, 3, pad=1, groups=2)", 7),  # groups 2, 6 filters per group
        ("9x7x16", "CONV(16, 3, pad=1, groups=4)", 1),  # groups 4
        ("12x6x12", "CONV(20, 1, groups=4)", 1),  # groups 4, 5 filters per group
        ("13x9x17", "CONV(17, 3, pad=1, groups=depthwise)", 7),  # depthwise
        ("9x9x6", "CONV(12, 3, stride=2, pad=1, groups=depthwise)", 1),  # depthwise x 2
        ("31x3x3", "CONV(12, 3, pad=same, groups=depthwise)", 1),  # depthwise x 4, width 31
        ("12x12x3", "CONV(4, 3, stride=2, rounding=floor)", 7),  # floor drops the last column
        ("12x12x3", "CONV(4, 3, stride=2, rounding=ceil)", 1),  # ceil: overhang of 1
        ("13x10x3", "CONV(5, 3, stride=2, pad=1, rounding=ceil)", 7),  # overhang past the pad
        ("31x9x3", "CONV(20, 5, stride=2, pad=2)", 1),
        ("16x4x3", "CONV(48, 3, pad=1)", 1),  # 3 filter vectors, full pixel tiles
        ("6x6x3", "CONV(8, 3, pad=1, bias=false)", 1),
        ("13x9x3", "CONV(12, 3, pad=1)-RELU", 7),  # fused epilogues
        ("13x9x3", "CONV(8, 3, pad=1)-LEAKYRELU(0.2)", 1),
        ("9x9x3", "CONV(8, 1)-SIGMOID", 1),
        ("9x7x3", "CONV(20, 3, pad=same)-TANH", 1),
        ("10x10x3", "CONV(8, 3, pad=1)-CONV(12, 5, pad=2)", 7),  # conv writing into a halo
    ],
    "pool": [
        ("8x8x3", "POOL(2)", 7),  # max 2
        ("9x9x5", "POOL(3)", 1),  # max 3
        ("8x6x20", "AVGPOOL(2)", 7),  # avg 2
        ("9x9x5", "AVGPOOL(3, 2, pad=1)", 1),  # avg 3, pad 1
        ("11x8x5", "POOL(2, 3)", 7),  # stride > size
        ("11x8x5", "AVGPOOL(2, 3)", 1),
        ("13x9x20", "POOL(2, pad=same)", 1),  # same: extra bottom/right
        ("13x10x5", "AVGPOOL(3, 2, pad=same)", 1),
        ("9x9x20", "POOL(3, 2, pad=1)", 7),  # depth 20, pad 1
        ("9x9x5", "AVGPOOL(3, 2, pad=1, count_pad=true)", 1),
        ("10x10x5", "AVGPOOL(3, 2, pad=1, count_pad=true, rounding=ceil)", 7),  # ceil overhang
        ("10x7x5", "POOL(3, 2, rounding=ceil)", 1),
        ("10x7x5", "AVGPOOL(3, 2, rounding=ceil)", 1),
        ("11x8x20", "POOL(2, rounding=floor)", 1),
        ("12x9x5", "POOL(3x2, 3x1)", 1),  # non-square windows
        ("13x9x20", "AVGPOOL(2x3, 1x2, rounding=floor)", 1),
        ("10x10x3", "POOL(2)-CONV(4, 3, pad=1)", 1),  # pool writing into a halo
    ],
    "gap": [
        ("7x5x20", "GAP", 7),
        ("1x1x3", "GAP", 1),
        ("13x9x5", "CONV(17, 3, pad=1)-GAP", 1),
    ],
    "fc": [
        ("1x1x20", "FC(10)", FC_BATCH),  # more images than a tile of rows
        ("1x1x20", "FC(10)", 9),  # a partial second tile on the GPU profile
        ("5x3x7", "FC(33)", 7),  # from a volume: flatten elided
        ("5x3x7", "FC(1)", 1),
        ("1x1x64", "FC(1, bias=false)", 1),
        ("4x4x3", "FC(10, bias=false)", 1),
        ("1x1x3", "FC(33)", FC_BATCH),
        ("1x1x17", "FC(12)-RELU", 7),  # fused epilogue
        ("6x6x3", "CONV(5, 3)-FC(20)-TANH", 1),
        ("5x3x7", FC_HALO, 7),
    ],
    "flatten": [
        ("5x3x7", "FLATTEN", 7),
        ("4x2x3", "FLATTEN-RELU", 1),
        ("6x6x17", "CONV(3, 3, pad=1)-FLATTEN-SIGMOID", 1),
    ],
    "relu": [
        ("13x9x17", "RELU", 7),
    ],
    "leakyrelu": [
        ("5x5x3", "LEAKYRELU(0.2)", 1),
        ("7x3x20", "LEAKYRELU", 7),
    ],
    "sigmoid": [
        ("7x3x20", "SIGMOID", 7),
    ],
    "tanh": [
        ("6x6x5", "TANH", 1),
        ("9x4x1", "TANH", 7),
    ],
    "softmax": [
        ("1x1x10", "SOFTMAX", 7),
        ("3x2x7", "SOFTMAX", 1),
        ("1x1x20", "FC(33)-SOFTMAX", FC_BATCH),
    ],
    "batchnorm": [
        ("5x7x3", "BN", 7),
        ("4x4x20", "BN", 1),
        ("4x4x20", "BN-RELU", 1),  # fused epilogue
        ("9x7x3", "CONV(12, 3, pad=1, bias=false)-BN-LEAKYRELU(0.2)", 7),
    ],
    "dropout": [
        ("6x6x3", "DROPOUT", 1),  # the network is its input
        ("8x8x3", "CONV(4, 3, pad=1)-DROPOUT(0.3)-RELU", 7),  # relu reads the conv's tensor
        ("7x7x3", DROPOUT_BRANCH, 1),
    ],
    "add": [
        (["9x7x4", "9x7x4"], "ADD", 7),
        (["13x5x20", "13x5x20", "13x5x20"], "ADD", 1),
        ("9x7x3", ADD_SAME_TWICE, 1),  # add(x, x)
        ("9x7x3", ADD_INPUT_TWICE, 7),
        ("9x7x4", ADD_HALOS, 1),
    ],
    "concat": [
        (["11x7x3", "11x7x5", "11x7x17"], "CONCAT", 7),
        (["5x5x16", "5x5x1"], "CONCAT", 1),
        ("9x7x3", CONCAT_HALOS, 1),
    ],
}


def case_spec(volume, layers, name: str = "case") -> dict:
    """The spec (as a dict) of one case: pattern form, or graph form for dicts and joins."""
    if isinstance(layers, dict):
        return {"name": name, "input": volume, "nodes": layers}
    if isinstance(volume, list):  # join the input and 1x1 convs of it to the other volumes
        nodes, inputs = {}, ["input"]
        for index, other in enumerate(volume[1:], 1):
            nodes[f"branch{index}"] = {"op": "conv", "size": 1, "inputs": ["input"],
                                       "filters": int(other.split("x")[2])}
            inputs.append(f"branch{index}")
        nodes["join"] = {"op": layers.lower(), "inputs": inputs}
        return {"name": name, "input": volume[0], "nodes": nodes}
    return {"name": name, "input": volume, "pattern": f"[INPUT-{layers}]" if layers else "[INPUT]"}


def _case_id(op: str, index: int, volume, layers, batch: int) -> str:
    if isinstance(layers, dict):
        text = "graph-" + "-".join(layers)
    else:
        text = layers or "input"
    volume = "+".join(volume) if isinstance(volume, list) else volume
    text = re.sub(r"[^A-Za-z0-9=.]+", "_", f"{volume}_{text}").strip("_")
    return f"{op}{index}-{text}-b{batch}"


CASE_PARAMS = [
    pytest.param(op, volume, layers, batch, index, id=_case_id(op, index, volume, layers, batch))
    for op, cases in CASES.items()
    for index, (volume, layers, case_batch) in enumerate(cases)
    for batch in sorted({1, case_batch})
]


# ---------------------------------------------------------------------------- helpers

def poison(model) -> None:
    """Fill the interior of every activation tensor but the input with NaN (halos and padding
    channels stay zero), so an element no kernel writes reaches the output as NaN."""
    import pyopencl as cl

    executor, plan = model.executor, model.plan
    executor.allocate(model.batch)
    for storage, layout in plan.layouts.items():
        if storage == plan.input:
            continue
        volume = layout.volume
        nan = np.full((model.batch, volume.depth, volume.height, volume.width), np.nan, np.float32)
        # the whole buffer, zeros after the tensor (a shared buffer may be larger): after a
        # write to part of a buffer, Oclgrind 21.10 reports every later read of the rest as
        # uninitialised, even once a kernel has written it (three-kernel reproduction in
        # tests/test_oclgrind.py)
        buffer = executor.tensor_buffer(storage)
        whole = np.zeros(buffer.size // 4, np.float32)
        packed = layout.pack(nan).reshape(-1)
        whole[:packed.size] = packed
        cl.enqueue_copy(model.queue, buffer, whole)
    model.queue.finish()


def input_batch(model, batch: int, seed: int) -> np.ndarray:
    volume = model.graph.nodes[ordered(model.graph)[0]]["output"]
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, volume.depth, volume.height, volume.width)).astype(np.float32)


def expected_shape(model, batch: int) -> tuple[int, ...]:
    """What ``forward`` returns: (batch, classes) for a 1x1xD output, else (batch, D, H, W)."""
    volume = model.graph.nodes[model.graph.graph["output"]]["output"]
    if volume.width == volume.height == 1:
        return (batch, volume.depth)
    return (batch, volume.depth, volume.height, volume.width)


def check_forward(model, params: dict, x: np.ndarray, tolerance: float = TOLERANCE,
                  what: str = "") -> np.ndarray:
    """Run ``x`` on the (poisoned) model and compare it with the numpy reference."""
    out = model.forward(x)
    shape = expected_shape(model, x.shape[0])
    assert out.shape == shape, f"{what}: output shape {out.shape}, expected {shape}"
    reference = reference_forward(model.graph, params, x).reshape(shape)
    error = relative_error(out, reference)
    if error > tolerance:
        bad = np.argwhere(~np.isclose(out, reference, rtol=0, atol=tolerance * max(
            float(np.abs(reference).max()), 1e-30)) | ~np.isfinite(out))
        first = tuple(int(i) for i in bad[0]) if len(bad) else None
        pytest.fail(f"{what}: relative error {error:.3g} > {tolerance:g}; "
                    f"{len(bad)} of {out.size} values off, first at {first}: "
                    f"{out[first] if first else ''} vs {reference[first] if first else ''}"
                    f"\nkernels: {sorted(model.plan.kernels)}")
    return out


def prepared(spec, device: str, batch: int, seed: int = 0, share_buffers: bool = False):
    """Compile, set random parameters and poison: (model, params)."""
    model = convgraph.compile(spec, device=device, batch=batch, share_buffers=share_buffers)
    params = random_params(model, seed)
    model.set_params(params)
    poison(model)
    return model, params


# ---------------------------------------------------------------------------- the tests

def test_every_registered_op_has_cases():
    """A new op cannot go untested: add its cases to CASES."""
    missing = sorted(set(REGISTRY) - set(CASES))
    assert not missing, f"ops with no kernel cases in tests/test_kernels.py: {missing}"
    unknown = sorted(set(CASES) - set(REGISTRY))
    assert not unknown, f"CASES names ops that are not registered: {unknown}"
    assert all(CASES.values()), "every op needs at least one case"


def test_every_case_uses_its_op():
    """Each case's network really contains the op it is filed under (shape inference only)."""
    from convgraph.pipeline import analyse

    for op, cases in CASES.items():
        for volume, layers, _ in cases:
            graph = analyse(case_spec(volume, layers))
            ops = {data["op"] for _, data in graph.nodes(data=True)}
            assert op in ops, f"case {volume} {layers} under '{op}' has only {sorted(ops)}"


@on_devices
@pytest.mark.parametrize(("op", "volume", "layers", "batch", "index"), CASE_PARAMS)
def test_op_kernel(cl_device, op, volume, layers, batch, index):
    spec = case_spec(volume, layers, name=f"{op}{index}")
    model, params = prepared(spec, cl_device, batch, seed=index)
    x = input_batch(model, batch, seed=100 + index)
    check_forward(model, params, x, what=f"{op} case {volume} {layers} batch {batch}")


HEAD_UNITS = 5  # classes of the fc head given to cases that do not end in class scores


def backward_spec(volume, layers, name: str = "case") -> dict:
    """The case made trainable, in graph form, so that every backward kernel of its op runs:

    - its input becomes ``stem = add(input, input)``: no gradient is computed for the network's
      input, so the op's input gradient (a conv's transposed convolution, a pool's scatter, ...)
      runs only when it reads another tensor; an add fuses with nothing, so the case's
      activations stay unfused, and ``d stem`` is compared like every other gradient;
    - a network that does not end in class scores (a volume, a single score, or a softmax,
      whose input the loss would read) gets ``head``, an fc of HEAD_UNITS units; fc flattens a
      volume in its own kernels, as it does after any volume."""
    case = analyse(case_spec(volume, layers, name))
    spec = expanded(case.graph["spec"])
    nodes = {"stem": {"op": "add", "inputs": ["input", "input"]}}
    for node_name, node in spec["nodes"].items():
        nodes[node_name] = {**node, "inputs": ["stem" if source == "input" else source
                                               for source in node["inputs"]]}
    spec["nodes"] = nodes
    output = case.graph["output"]
    data = case.nodes[output]
    volume = data["output"]
    if (volume.width, volume.height) != (1, 1) or volume.depth < 2 or data["op"] in (
            "softmax", "input"):
        nodes["head"] = {"op": "fc", "units": HEAD_UNITS,
                         "inputs": ["stem" if output == "input" else output]}
        spec["output"] = "head"
    elif "output" in spec:
        spec["output"] = "stem" if spec["output"] == "input" else spec["output"]
    return spec


def least_likely(graph, params: dict, x: np.ndarray) -> np.ndarray:
    """Each image's least likely class as its label, so that the loss gradient softmax - label
    is large: a confident right answer makes it p - 1 for p near 1, which float32 cannot tell
    apart from float64 to 1e-4 (seen with random labels), whatever the kernels do."""
    scores = reference_forward(graph, params, x)
    return scores.reshape(x.shape[0], -1).argmin(axis=1)


def check_gradients(session, params: dict, x: np.ndarray, labels: np.ndarray,
                    what: str = "") -> dict[str, float]:
    """One forward and backward pass on the device against numpy float64: the gradient of every
    node's output and of every trainable parameter within TOLERANCE. Returns the errors."""
    graph = session.graph
    grads, param_grads = session.gradients(x, labels)
    _, _, _, expected, expected_params = reference_gradients(
        graph, params, x, labels, session.dropout_seed(), graph.graph["train"]["label_smoothing"])
    errors = {f"d {node}": relative_error(grad, expected[node]) for node, grad in grads.items()}
    errors.update({f"d {key}": relative_error(grad, expected_params[key])
                   for key, grad in param_grads.items()})
    failed = {key: error for key, error in errors.items() if not error <= TOLERANCE}
    if failed:
        pytest.fail(f"{what}: gradients off (relative error > {TOLERANCE:g}): "
                    + ", ".join(f"{key} {error:.3g}" for key, error in failed.items())
                    + f"\nkernels: {sorted(session.plan.kernels)}")
    return errors


@on_devices
@pytest.mark.parametrize(("op", "volume", "layers", "batch", "index"), CASE_PARAMS)
def test_op_backward(cl_device, op, volume, layers, batch, index):
    graph = analyse(backward_spec(volume, layers, name=f"{op}{index}"))
    session = TrainingSession(graph, device=cl_device, batch=batch)
    params = random_params(session, seed=index)
    session.set_params(params)
    x = input_batch(session, batch, seed=200 + index)
    errors = check_gradients(session, params, x, least_likely(graph, params, x),
                             what=f"{op} case {volume} {layers} batch {batch}")
    # the op's own backward kernels ran and were checked: a gradient reached its input, and a
    # node of the op (or the layer it is fused into) had its output gradient compared
    if op != "input":
        assert "d stem" in errors
        owners = {graph.nodes[name].get("fused_into", name) for name in graph
                  if graph.nodes[name]["op"] == op}
        assert {f"d {name}" for name in owners} & set(errors), (owners, sorted(errors))


# Cases also run with the other device family's code-generation profile (tile sizes, vector
# widths, work-group shapes), so a CPU-only machine checks what a GPU would run and vice versa:
# odd heights (work-groups that do not divide the rows), partial pixel tiles, width-1 vectors.
OTHER_PROFILE_CASES = [("conv", 1), ("conv", 2), ("conv", 7), ("conv", 13), ("conv", 16),
                       ("conv", 21), ("conv", 29), ("pool", 3), ("pool", 10), ("pool", 16),
                       ("gap", 0), ("fc", 0), ("fc", 9), ("flatten", 2), ("tanh", 1),
                       ("softmax", 1), ("batchnorm", 3), ("add", 4), ("concat", 2)]


@on_devices
@pytest.mark.parametrize(("op", "index"), OTHER_PROFILE_CASES,
                         ids=[f"{op}{index}" for op, index in OTHER_PROFILE_CASES])
@pytest.mark.parametrize("batch", [1, 5])
def test_op_kernel_other_profile(cl_device, op, index, batch, monkeypatch):
    import convgraph.model

    own = convgraph.model.profile_for(select_device(cl_device)[0])
    # the other family's tiles and work-groups with this device's own build options: Oclgrind
    # needs unoptimised code (the optimiser's 'freeze' stops its uninitialised-value checker)
    other = replace(profiles.CPU if own.family == "gpu" else profiles.GPU,
                    build_options=own.build_options)
    monkeypatch.setattr(convgraph.model, "profile_for", lambda info: other)
    volume, layers, _ = CASES[op][index]
    model, params = prepared(case_spec(volume, layers, name=f"{op}{index}"), cl_device, batch,
                             seed=index)
    assert model.profile == other
    x = input_batch(model, batch, seed=100 + index)
    check_forward(model, params, x, what=f"{op} case {volume} {layers} batch {batch}, "
                                         f"{other.family} profile")


@on_devices
def test_poison_reaches_every_activation(cl_device):
    """The harness itself: after poisoning, every activation reads back as NaN, the input not."""
    model, _ = prepared(case_spec("9x7x3", CONCAT_HALOS), cl_device, 2)
    plan = model.plan
    for storage in plan.layouts:
        values = model.executor.read_tensor(storage, model.batch)
        if storage == plan.input:
            assert not np.isnan(values).any()
        else:
            assert np.isnan(values).all(), storage
    haloed = [layout for layout in plan.layouts.values() if any(layout.halo)]
    assert haloed, "the case should give some tensor a halo"


SMALL_NET = ("[INPUT-CONV(12, 3, pad=1)-BN-RELU-POOL(2)-CONV(20, 3, pad=1, groups=4)-RELU"
             "-AVGPOOL(3, 2, pad=1)-FC(33)-RELU-FC(10)-SOFTMAX]")


@on_devices
def test_partial_batches(cl_device):
    """A model planned for 8 images runs 5 (a partial batch) and 13 (a full and a partial pass)
    and gives the same results as the reference and as each other."""
    model, params = prepared({"name": "partial", "input": "14x10x3", "pattern": SMALL_NET},
                             cl_device, 8)
    x = input_batch(model, 13, seed=7)
    five = check_forward(model, params, x[:5], what="5 images of 8")
    thirteen = check_forward(model, params, x, what="13 images of 8")
    assert relative_error(thirteen[:5], five) <= 1e-6
    again = check_forward(model, params, x[8:], what="5 images after a full pass")
    assert relative_error(thirteen[8:], again) <= 1e-6


@on_devices
@pytest.mark.parametrize("name", ["resnet8", "vgg_cifar"])
def test_shared_and_separate_buffers_agree(cl_device, name):
    spec = str(SPECS / f"{name}.yaml")
    shared, params = prepared(spec, cl_device, 2, share_buffers=True)
    separate, _ = prepared(spec, cl_device, 2, share_buffers=False)
    separate.set_params(params)
    assert len(shared.plan.buffer_elements) < len(separate.plan.buffer_elements)
    x = input_batch(shared, 2, seed=3)
    a = check_forward(shared, params, x, what=f"{name} shared buffers")
    b = check_forward(separate, params, x, what=f"{name} separate buffers")
    assert relative_error(a, b) <= 1e-6


BIG = {"vgg16", "resnet18"}


@on_devices
@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.stem)
def test_whole_model(cl_device, path):
    batch = 1 if path.stem in BIG else 2
    model, params = prepared(str(path), cl_device, batch)
    x = input_batch(model, batch, seed=11)
    check_forward(model, params, x, what=path.stem)
