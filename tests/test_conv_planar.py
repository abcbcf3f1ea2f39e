"""The planar first layer (kernels/conv_planar.cl, ops/conv.py's planar lowering,
codegen/layout.py's PlanarLayout): a first conv of 1-4 channels, stride 1, the network input's
only reader, reads the input planar, (N, C, H + halo, W + halo), so packing a batch is a copy,
not a transpose.

Checked against the float64 numpy reference on NaN-poisoned buffers (forward, folded 2x2 max
pool, the weight gradient of a network whose first conv reads the input planar), at odd widths
that are not a multiple of 16, batch 1, pad 0-2, 1-4 channels and 1-23 filters (16 and 33 stay
NHWC: the plan test); a training step against the same network's NHWC plan (the profile's
``conv_planar_input`` off); the plan's choice (only the sole reader, only on the CPU profile);
the layout's pack/unpack and the compiled artifact's record; every setting of the site's tuning
space, both bodies (slow tier), and Oclgrind (slow tier).
"""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest

import convgraph
from convgraph.artifact import plan_from_record, plan_record
from convgraph.codegen.layout import Layout, PlanarLayout
from convgraph.codegen.plan import plan_forward
from convgraph.codegen.profile import CPU, GPU, OCLGRIND
from convgraph.codegen.training import plan_training
from convgraph.core import Volume
from convgraph.pipeline import analyse
from convgraph.runtime.devices import select_device
from convgraph.train.session import TrainingSession
from convgraph.verify import random_params

from .test_kernels import (
    check_forward,
    check_gradients,
    input_batch,
    least_likely,
    on_devices,
    prepared,
)
from .test_oclgrind import ICD, run_under_oclgrind


def spec_of(volume: str, layers: str, name: str = "planar") -> dict:
    return {"name": name, "input": volume, "pattern": f"[INPUT-{layers}]"}


def planar_site(plan) -> list:
    return [spec for spec in plan.kernels.values() if spec.selector == "CONV_PLANAR_FORWARD"]


# ------------------------------------------------------------------- the layout and the plan

def test_pack_is_a_copy_into_the_halo_and_unpack_inverts_it():
    layout = PlanarLayout(Volume(5, 3, 2), 2, (1, 2, 1, 12))
    x = np.arange(2 * 2 * 3 * 5, dtype=np.float32).reshape(2, 2, 3, 5) + 1
    packed = layout.pack(x)
    assert packed.shape == (2, 2, 6, 18)
    assert np.array_equal(packed[:, :, 1:4, 1:6], x)
    assert packed.sum() == x.sum()  # the halo is zero
    again = layout.pack(x * 2, packed)  # reused, its halo still zero
    assert np.shares_memory(again, packed) and again.sum() == 2 * x.sum()
    assert np.array_equal(layout.unpack(again.reshape(-1), 2), x * 2)
    assert layout.with_halo((2, 0, 0, 0)).planar
    assert layout.defines("X")["X_PLANAR"] == 1 and not Layout(Volume(5, 3, 2), 2).planar


@pytest.mark.parametrize(("volume", "layers", "planar"), [
    ("32x32x3", "CONV(12, 3, pad=1)-RELU-POOL(2)-FC(10)", True),  # M1
    ("13x9x4", "CONV(20, 5, pad=2)", True),
    ("13x9x1", "CONV(1, 3)", True),
    ("13x9x3", "CONV(16, 3, pad=1)", False),  # whole vectors of filters: NHWC measured faster
    ("13x9x3", "CONV(33, 3, pad=1)", False),  # more than a work-item's filters
    ("13x9x5", "CONV(8, 3, pad=1)", False),  # 5 channels: NHWC
    ("13x9x3", "CONV(8, 3, stride=2, pad=1)", False),  # stride 2: the direct kernel
    ("13x9x4", "CONV(8, 3, pad=1, groups=2)", False),
    ("12x8x3", "POOL(2)-CONV(8, 3, pad=1)", False),  # not a conv first
])
def test_the_plan_reads_the_input_planar_where_a_first_conv_allows(volume, layers, planar):
    graph = analyse(spec_of(volume, layers))
    for plan in (plan_forward(graph, CPU), plan_training(graph, CPU)):
        assert plan.layouts[plan.input].planar == planar
        assert bool(planar_site(plan)) == planar
    gpu = plan_forward(graph, GPU)
    assert not gpu.layouts[gpu.input].planar and not planar_site(gpu)


def test_an_input_read_twice_stays_nhwc():
    spec = {"name": "twice", "input": "12x10x3", "nodes": {
        "a": {"op": "conv", "filters": 8, "size": 3, "pad": 1, "inputs": ["input"]},
        "b": {"op": "conv", "filters": 8, "size": 3, "pad": 1, "inputs": ["input"]},
        "sum": {"op": "add", "inputs": ["a", "b"]}}}
    plan = plan_forward(analyse(spec), CPU)
    assert not plan.layouts[plan.input].planar and not planar_site(plan)


def test_a_compiled_artifact_keeps_the_planar_input():
    graph = analyse(spec_of("13x9x3", "CONV(12, 3, pad=1)-RELU"))
    plan = plan_forward(graph, CPU)
    again = plan_from_record(plan_record(plan), graph, "here")
    assert again.layouts[again.input] == plan.layouts[plan.input]
    assert again.layouts[again.input].planar


def test_the_space_holds_every_filter_tile_and_fits_the_registers():
    from convgraph.ops.conv import _planar_forward_space

    space = _planar_forward_space(CPU, 12, 16, 32, pooled=False)
    assert space[0] == {"VECTOR_WIDTH": 16, "TILE_VECTORS": 2, "TILE_ROWS": 1,
                        "FILTERS_PER_ITEM": 12, "STORE_TRANSPOSED": 1}  # M1: the whole row
    assert {k["FILTERS_PER_ITEM"] for k in space} == {12, 6, 4, 3, 2, 1}
    for knobs in space:
        pixels = knobs["TILE_ROWS"] * knobs["TILE_VECTORS"]
        assert pixels * (knobs["FILTERS_PER_ITEM"] + 1) + 1 <= 32
    pooled = _planar_forward_space(CPU, 33, 48, 13, pooled=True)
    assert {k["TILE_ROWS"] for k in pooled} == {2}
    assert all(-(-33 // k["FILTERS_PER_ITEM"]) * k["FILTERS_PER_ITEM"] <= 48 for k in pooled)


# ------------------------------------------------------------------- the kernels against numpy

# (input, layers, batch): odd widths, pads 0-2, 1-4 channels, 1-23 filters. The default tier
# runs one (test_kernels.py's conv cases of first layers, 3-12 filters, run the planar kernels
# there too); the slow tier the rest
FORWARD = [
    ("9x7x4", "CONV(23, 5, pad=2)-SIGMOID", 2),  # two transposed blocks; padding ACT(0)
]
SLOW_FORWARD = [
    ("13x9x3", "CONV(12, 3, pad=1)-RELU", 3),  # a partial vector
    ("37x5x1", "CONV(1, 3, pad=2)", 1),  # 3 vectors, one filter
    ("20x11x2", "CONV(5, 3x2, dilation=2)-LEAKYRELU(0.2)", 1),  # pad 0, dilation, odd height
    ("32x32x3", "CONV(12, 3, pad=1)-RELU", 2),
    ("33x3x3", "CONV(15, 3, pad=1, bias=false)", 1),
    ("17x17x3", "CONV(10, 3, pad=1)-TANH", 2),
    ("16x6x2", "CONV(20, 7, pad=3)", 1),
    ("5x5x4", "CONV(3, 1)", 3),
]


@on_devices
@pytest.mark.parametrize(("volume", "layers", "batch"), [
    *FORWARD, *(pytest.param(*case, marks=pytest.mark.slow) for case in SLOW_FORWARD)])
def test_the_planar_forward_matches_float64(cl_device, volume, layers, batch):
    model, params = prepared(spec_of(volume, layers), cl_device, batch)
    if model.profile.conv_planar_input:  # (a GPU keeps NHWC: the case still runs)
        assert planar_site(model.plan)
    check_forward(model, params, input_batch(model, batch, 7), what=f"{volume} {layers}")


POOLED = [  # a folded 2x2 max pool (test_folding.py's default tier folds M1-like ones too):
    # odd sizes floor, an activation that may decrease
    pytest.param("13x9x3", "CONV(12, 3, pad=1)-RELU-POOL(2, rounding=floor)-FC(10)", 3,
                 marks=pytest.mark.slow),
    pytest.param("34x6x2", "CONV(7, 3, pad=1)-SILU-POOL(2)", 1, marks=pytest.mark.slow),
]


@on_devices
@pytest.mark.parametrize(("volume", "layers", "batch"), POOLED)
def test_the_planar_forward_writes_a_folded_pool(cl_device, volume, layers, batch):
    model, params = prepared(spec_of(volume, layers), cl_device, batch, share_buffers=True)
    if model.profile.conv_planar_input:
        assert planar_site(model.plan) and model.plan.folded_layers()
    check_forward(model, params, input_batch(model, batch, 8), what=f"{volume} {layers}")


GRADIENTS = [  # the network's first conv reads the input planar: its weight gradient
    ("14x10x3", "CONV(12, 3, pad=1)-FC(4)", 3),
    pytest.param("19x5x4", "CONV(21, 3, pad=2)-FC(3)", 1, marks=pytest.mark.slow),
    pytest.param("11x7x1", "CONV(6, 5)-FC(3)", 2, marks=pytest.mark.slow),
]


@on_devices
@pytest.mark.parametrize(("volume", "layers", "batch"), GRADIENTS)
def test_the_planar_weight_gradient_matches_float64(cl_device, volume, layers, batch):
    graph = analyse(spec_of(volume, layers))
    session = TrainingSession(graph, device=cl_device, batch=batch)
    params = random_params(session, seed=3)
    session.set_params(params)
    x = input_batch(session, batch, seed=9)
    errors = check_gradients(session, params, x, least_likely(graph, params, x),
                             what=f"{volume} {layers}")
    assert "d conv1.weight" in errors, sorted(errors)


@pytest.mark.slow  # (two training programs: 25 s cold at load 9)
@on_devices
def test_a_training_step_equals_the_nhwc_plans(cl_device, monkeypatch):
    """Two SGD steps of a small network, planar first layer against the same network planned
    NHWC (the profile's conv_planar_input off): the same parameters after them."""
    spec = {**spec_of("18x10x3", "CONV(12, 3, pad=1)-RELU-POOL(2)-CONV(8, 3, pad=1)-FC(4)"),
            "train": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch": 5}}
    graph = analyse(spec)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(5, 3, 10, 18)).astype(np.float32)
    labels = rng.integers(0, 4, size=5)
    own = convgraph.runtime.target.profile_for(select_device(cl_device)[0])
    results = {}
    for planar in (True, False):
        profile = replace(own, conv_planar_input=planar)
        monkeypatch.setattr(convgraph.runtime.target, "profile_for", lambda info, p=profile: p)
        session = TrainingSession(graph, device=cl_device, batch=5)
        session.set_params(random_params(session, seed=1))
        assert session.plan.layouts[session.plan.input].planar == (
            planar and own.conv_planar_input)
        for _ in range(2):
            session.step(x, labels, 0.05)
        results[planar] = session.params
    assert results[True].keys() == results[False].keys()
    for name, array in results[True].items():
        other = results[False][name]
        assert np.allclose(array, other, rtol=1e-4, atol=1e-5 * np.abs(other).max()), name


# ------------------------------------------------------------------- the tuning space and Oclgrind

@pytest.mark.slow
@pytest.mark.device
@pytest.mark.timeout(1800, method="thread")  # 95 settings, a build each
def test_every_setting_of_the_planar_site_matches_float64(cl_device):
    from convgraph.codegen.tuning import Tuning

    spec = spec_of("21x7x3", "CONV(12, 3, pad=1)-RELU")
    graph = analyse(spec)
    (site,) = [s for s in plan_forward(graph, CPU).sites.values()
               if s.selector == "CONV_PLANAR_FORWARD"]
    own = convgraph.runtime.target.profile_for(select_device(cl_device)[0])
    if not own.conv_planar_input:
        pytest.skip("this device's profile keeps the input NHWC")
    for knobs in site.space:
        tuning = Tuning(entries={site.key: {"knobs": knobs}})
        profile = replace(own, tuning=tuning)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(convgraph.runtime.target, "profile_for",
                          lambda info, chosen=profile: chosen)
            model, params = prepared(spec, cl_device, 2)
        (launch,) = [launch for launch in model.plan.launches if launch.site == site.key]
        defines = model.plan.kernels[launch.kernel].defines
        assert all(defines[k] == v for k, v in knobs.items() if k not in ("BODY", "LOCAL"))
        check_forward(model, params, input_batch(model, 2, 1), what=str(knobs))


OCLGRIND_SCRIPT = """
import sys
import numpy as np
from dataclasses import replace
import convgraph
from convgraph.codegen import profile as profiles
from convgraph.verify import random_params, relative_error
from convgraph.reference import reference_forward
from convgraph.train.session import TrainingSession
from convgraph.pipeline import analyse
# the Oclgrind profile's 4-wide vectors (the private-tile store), and 16 (the transposed one);
# no fc in training at 16 wide (Oclgrind's false report on hsum16: tests/test_oclgrind.py)
planar = replace(profiles.OCLGRIND, conv_planar_input=True, max_vector=int(sys.argv[1]))
convgraph.runtime.target.profile_for = lambda info: planar
spec = {"name": "p", "input": "20x6x3", "pattern": "[INPUT-CONV(5, 3, pad=1)-RELU-POOL(2)]"}
model = convgraph.compile(spec, batch=2)
assert model.plan.layouts[model.plan.input].planar
params = random_params(model, 0)
model.set_params(params)
x = np.random.default_rng(0).normal(size=(2, 3, 6, 20)).astype(np.float32)
error = relative_error(model.forward(x), reference_forward(model.graph, params, x))
assert error < 1e-4, error
session = TrainingSession(analyse({**spec, "pattern": "[INPUT-CONV(5, 3, pad=1)-GAP]"}),
                          batch=2)
assert session.plan.layouts[session.plan.input].planar
session.set_params(random_params(session, 0))
session.gradients(x, np.array([0, 2]))
print("PLANAR-OK", sorted(session.plan.kernels))
"""


@pytest.mark.slow
def test_the_planar_kernels_are_clean_under_oclgrind(tmp_path):
    if not ICD.exists():
        pytest.skip("oclgrind is not installed")
    for width in ("4", "16"):
        done, reports = run_under_oclgrind(tmp_path, [sys.executable, "-c", OCLGRIND_SCRIPT,
                                                      width])
        assert done.returncode == 0, done.stdout + done.stderr[-4000:]
        assert "PLANAR-OK" in done.stdout and "planar_backward_weights" in done.stdout
        assert reports == [], done.stderr[:4000]


def test_the_oclgrind_profile_keeps_nhwc_unless_asked():
    assert not OCLGRIND.conv_planar_input and not GPU.conv_planar_input and CPU.conv_planar_input
