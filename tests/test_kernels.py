"""Every op's forward kernel against its independent numpy reference, on every OpenCL device.

The harness walks the op registry (``convgraph.ops.base.REGISTRY``): every op declares, among its
``cases`` (convgraph/ops/cases.py), small networks with a ``batch`` that exercise it over many
shapes (kernel sizes, strides, paddings, dilation, groups, rounding, odd widths that leave a
partial pixel tile, channel counts that are not a multiple of the vector width, fused epilogues,
batches larger than a tile). Each case runs with batch 1 and with its batch. Each case is compiled
for each device of $CONVGRAPH_TEST_DEVICES (comma-separated ``--device`` fragments such as
``pocl`` or ``0:0``; unset: every device found, see conftest.py) with ``share_buffers=False``,
given random parameters with non-trivial biases and batchnorm statistics, and run on a random
batch after every activation buffer's interior has been filled with NaN (halos stay zero), so an
output element no kernel writes shows up as NaN.

The check is the one ``convgraph run --verify`` uses (``convgraph.verify.relative_error``)::

    max |device - reference| / max |reference|  <=  1e-4

where ``reference`` is ``reference.reference_forward``, the float64 numpy forward of the same
graph with the same parameters, and any non-finite device value counts as an infinite error. The
output shape is compared too.

Every case's backward kernels are checked the same way (test_op_backward): the case is made
trainable (``backward_spec``), one training step's forward and backward passes run on the device
(``TrainingSession.gradients``), and the gradient of every node's output and of every parameter
is held to the same tolerance against ``reference.reference_gradients``, the float64 numpy
forward and backward pass with the same parameters, batch, labels and dropout seed.

Besides the cases: those declared ``other_profile=True`` with the other device family's
code-generation profile (GPU tiles and work-groups on a CPU, and the reverse), partial batches,
shared against separate buffers, and every network in specs/ as a whole against the same
reference.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import convgraph
from convgraph.codegen import profile as profiles
from convgraph.graph import ordered
from convgraph.ops.base import REGISTRY
from convgraph.ops.cases import cases_of, kinds_needed
from convgraph.pipeline import analyse
from convgraph.reference import reference_forward, reference_gradients
from convgraph.runtime.devices import select_device
from convgraph.spec.expand import expanded
from convgraph.train.session import TrainingSession
from convgraph.verify import TOLERANCE, random_params, relative_error

from .test_zoo import NETWORKS as ZOO  # checked in tests/test_zoo.py (slow tier)

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
# Every op's device cases: ``Case(input, layers, batch=...)`` in its class (convgraph/ops/), as
# (op, index among the op's device cases, case). Each runs with batch 1 and, when its batch is
# larger, with that batch as well; the index gives its test id and its random seeds.
DEVICE_CASES = cases_of("device")


def _case_id(op: str, index: int, case, batch: int) -> str:
    if isinstance(case.layers, Mapping):
        text = "graph-" + "-".join(case.layers)
    else:
        text = case.layers or "input"
    volume = "+".join(case.input) if case.form == "join" else case.input
    text = re.sub(r"[^A-Za-z0-9=.]+", "_", f"{volume}_{text}").strip("_")
    return f"{op}{index}-{text}-b{batch}"


def _tier(op: str, index: int, case, batch: int, kind: str):
    """Which tier runs a case's forward (``kind`` "forward") or backward check at ``batch``.

    A case declared at a batch above 1 runs at it and at batch 1. The slow tier (and the
    Oclgrind sweep) runs every case both ways at both batches. The default tier keeps every op
    meeting its forward and backward kernels at both batches, with fewer runs: an op of up to
    three cases runs each case both ways at one batch (batch 1 for even-numbered cases, the
    declared batch for odd ones); an op of more runs its even-numbered cases forward and its
    odd-numbered ones backward, the batch alternating by pairs (cases 0, 1: batch 1; 2, 3: the
    declared batch; ...); an op of more than twelve (conv, pool, deconv) runs every fourth case
    forward (0, 4, ...) and every fourth backward (2, 6, ...), those declared at a batch above
    1 at it and at batch 1 by turns."""
    count = CASES_PER_OP[op]
    if count <= 3:
        wanted_batch_1 = index % 2 == 0
        runs = True
    elif count > 12:
        picked = [i for op_, i, c in DEVICE_CASES if op_ == op and c.batch > 1
                  and i % 4 == (0 if kind == "forward" else 2)]
        runs = index % 4 == (0 if kind == "forward" else 2)
        wanted_batch_1 = runs and case.batch > 1 and picked.index(index) % 2 == 1
    else:
        wanted_batch_1 = (index // 2) % 2 == 0
        runs = (index % 2 == 0) == (kind == "forward")
    if runs and (case.batch == 1 or (batch == 1) == wanted_batch_1):
        return ()
    return (pytest.mark.slow,)


CASES_PER_OP = Counter(op for op, _, _ in DEVICE_CASES)


def _case_params(kind: str) -> list:
    return [pytest.param(op, index, case, batch, id=_case_id(op, index, case, batch),
                         marks=_tier(op, index, case, batch, kind))
            for op, index, case in DEVICE_CASES
            for batch in sorted({1, case.batch})]


CASE_PARAMS = _case_params("forward")
BACKWARD_CASE_PARAMS = _case_params("backward")


def described(case) -> str:
    """A case as failure messages name it: its volume and layers."""
    layers = case.layers if isinstance(case.layers, str) else dict(case.layers)
    return f"{case.input} {layers}"


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
    """A new op cannot go untested: declare its ``Case(..., batch=...)`` on its class."""
    covered = {op for op, _, _ in DEVICE_CASES}
    missing = sorted(name for name, op in REGISTRY.items()
                     if "device" in kinds_needed(op) and name not in covered)
    assert not missing, f"ops with no device case (Case(..., batch=...) in their class): {missing}"
    assert len(DEVICE_CASES) >= 88  # as many as when the cases moved onto the ops, or more
    assert sum(case.other_profile for _, _, case in DEVICE_CASES) >= 19


def test_every_case_uses_its_op():
    """Each case's network really contains the op that declares it (shape inference only), and
    a shape or gradient case's subject is that op."""
    for name, op in REGISTRY.items():
        for case in op.cases:
            graph = analyse(case.spec())
            ops = {data["op"] for _, data in graph.nodes(data=True)}
            assert name in ops, f"case {described(case)} of '{name}' has only {sorted(ops)}"
            if case.kinds & {"shape", "gradient"}:
                subject = graph.nodes[case.subject(graph)]["op"]
                assert subject == name, f"case {described(case)} of '{name}' checks a {subject}"


def test_fc_cases_fill_more_than_a_tile_of_rows():
    """fc's cases keep a batch larger than a work-item's tile of rows on every profile (17 when
    they were written), so a second, partial tile runs."""
    batches = [case.batch for op, _, case in DEVICE_CASES if op == "fc"]
    assert max(batches) >= FC_BATCH, (batches, FC_BATCH)


@on_devices
@pytest.mark.parametrize(("op", "index", "case", "batch"), CASE_PARAMS)
def test_op_kernel(cl_device, op, index, case, batch):
    model, params = prepared(case.spec(name=f"{op}{index}"), cl_device, batch, seed=index)
    x = input_batch(model, batch, seed=100 + index)
    check_forward(model, params, x, what=f"{op} case {described(case)} batch {batch}")


HEAD_UNITS = 5  # classes of the fc head given to cases that do not end in class scores


def backward_spec(case, name: str = "case") -> dict:
    """The case made trainable, in graph form, so that every backward kernel of its op runs:

    - its input becomes ``stem = add(input, input)``: no gradient is computed for the network's
      input, so the op's input gradient (a conv's transposed convolution, a pool's scatter, ...)
      runs only when it reads another tensor; an add fuses with nothing, so the case's
      activations stay unfused, and ``d stem`` is compared like every other gradient;
    - a network that does not end in class scores (a volume, a single score, or a softmax,
      whose input the loss would read) gets ``head``, an fc of HEAD_UNITS units; fc flattens a
      volume in its own kernels, as it does after any volume."""
    graph = analyse(case.spec(name))
    spec = expanded(graph.graph["spec"])
    nodes = {"stem": {"op": "add", "inputs": ["input", "input"]}}
    for node_name, node in spec["nodes"].items():
        nodes[node_name] = {**node, "inputs": ["stem" if source == "input" else source
                                               for source in node["inputs"]]}
    spec["nodes"] = nodes
    output = graph.graph["output"]
    data = graph.nodes[output]
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
@pytest.mark.parametrize(("op", "index", "case", "batch"), BACKWARD_CASE_PARAMS)
def test_op_backward(cl_device, op, index, case, batch):
    graph = analyse(backward_spec(case, name=f"{op}{index}"))
    session = TrainingSession(graph, device=cl_device, batch=batch)
    params = random_params(session, seed=index)
    session.set_params(params)
    x = input_batch(session, batch, seed=200 + index)
    errors = check_gradients(session, params, x, least_likely(graph, params, x),
                             what=f"{op} case {described(case)} batch {batch}")
    # the op's own backward kernels ran and were checked: a gradient reached its input, and a
    # node of the op (or the layer it is fused into) had its output gradient compared (a source
    # such as input has no backward)
    if "gradient" in kinds_needed(REGISTRY[op]):
        assert "d stem" in errors
        owners = {graph.nodes[name].get("fused_into", name) for name in graph
                  if graph.nodes[name]["op"] == op}
        assert {f"d {name}" for name in owners} & set(errors), (owners, sorted(errors))


# Cases declared ``other_profile=True`` also run with the other device family's code-generation
# profile (tile sizes, vector widths, work-group shapes), so a CPU-only machine checks what a GPU
# would run and vice versa: odd heights (work-groups that do not divide the rows), partial pixel
# tiles, width-1 vectors.
OTHER_PROFILE_CASES = [(op, index, case) for op, index, case in DEVICE_CASES if case.other_profile]


OTHER_PROFILE_PARAMS = [
    pytest.param(op, index, case, batch, id=f"{batch}-{op}{index}",
                 marks=() if (batch == 1) == (index % 2 == 0) else (pytest.mark.slow,))
    for batch in (1, 5) for op, index, case in OTHER_PROFILE_CASES]


@on_devices
@pytest.mark.parametrize(("op", "index", "case", "batch"), OTHER_PROFILE_PARAMS)
def test_op_kernel_other_profile(cl_device, op, index, case, batch, monkeypatch):
    """(The default tier runs each case at one batch, 1 for even-numbered cases and 5 for odd
    ones; the slow tier and the Oclgrind sweep at both.)"""
    import convgraph.runtime.target

    own = convgraph.runtime.target.profile_for(select_device(cl_device)[0])
    # the other family's tiles and work-groups with this device's own build options: Oclgrind
    # needs unoptimised code (the optimiser's 'freeze' stops its uninitialised-value checker)
    other = replace(profiles.CPU if own.family == "gpu" else profiles.GPU,
                    build_options=own.build_options)
    monkeypatch.setattr(convgraph.runtime.target, "profile_for", lambda info: other)
    model, params = prepared(case.spec(name=f"{op}{index}"), cl_device, batch, seed=index)
    assert model.profile == other
    x = input_batch(model, batch, seed=100 + index)
    check_forward(model, params, x, what=f"{op} case {described(case)} batch {batch}, "
                                         f"{other.family} profile")


@on_devices
def test_poison_reaches_every_activation(cl_device):
    """The harness itself: after poisoning, every activation reads back as NaN, the input not."""
    (halos,) = [case for case in REGISTRY["concat"].cases if case.label == "halos"]
    model, _ = prepared(halos.spec(), cl_device, 2)
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
@pytest.mark.parametrize("path", [
    pytest.param(path, id=path.stem, marks=(pytest.mark.slow,) if path.stem in BIG else ())
    for path in sorted(SPECS.glob("*.yaml")) if path.stem not in ZOO])
def test_whole_model(cl_device, path):
    """(The zoo's forward passes are checked by tests/test_zoo.py's slow tier, through
    --verify: their cold compiles and float64 references took 11 minutes here. VGG-16 and
    ResNet-18, whose layers are VGG-CIFAR's and ResNet-8's kinds at 224, are in the slow tier:
    their float64 references took 26 s of a cold CI run.)"""
    batch = 1 if path.stem in BIG else 2
    model, params = prepared(str(path), cl_device, batch)
    x = input_batch(model, batch, seed=11)
    check_forward(model, params, x, what=path.stem)
