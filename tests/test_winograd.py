"""Winograd F(2x2, 3x3) and F(4x4, 3x3) (ops/winograd.py, kernels/winograd.cl) against float64
numpy: each algorithm forced on every 3x3 stride-1 site of small networks (odd heights and
widths that leave partial tiles, channel counts that are no multiple of any vector width, fused
epilogues, batch 1 and more), forward and backward (the input gradient is a Winograd conv too,
gated by the activation before it), with the tolerance of the kernel tests (``run --verify``'s
1e-4). The tuner's tested space (tests/test_tuning.py) and the Oclgrind sweep
(tests/test_oclgrind.py) reach the same kernels through the ALGORITHM knob."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import convgraph
import convgraph.runtime.target
from convgraph.codegen.launches import work
from convgraph.codegen.plan import plan_forward
from convgraph.codegen.profile import profile_for
from convgraph.codegen.training import plan_training
from convgraph.codegen.tuning import Tuning
from convgraph.errors import SpecError
from convgraph.ops import winograd
from convgraph.params import initial_params
from convgraph.pipeline import analyse
from convgraph.reference import reference_gradients
from convgraph.runtime.devices import select_device
from convgraph.train.session import TrainingSession
from convgraph.verify import TOLERANCE, relative_error
from tests.test_kernels import check_forward, input_batch, poison, random_params

pytestmark = pytest.mark.device

# (input, pattern, batch): partial tiles of both sizes, a 3-channel first layer, 17 channels
# (vectors of 1), padding 0 and 2, epilogues, a gated input gradient (RELU before a conv)
CASES = [
    ("13x9x3", "[INPUT-CONV(12, 3, pad=1)-RELU-CONV(20, 3, pad=1)-FC(3)]", 1),
    ("7x11x17", "[INPUT-CONV(20, 3, pad=1)-SIGMOID-CONV(16, 3)-FC(4)]", 3),
    ("6x6x8", "[INPUT-CONV(16, 3, pad=2)-LEAKYRELU(0.2)-CONV(8, 3, pad=1, bias=false)-FC(2)]",
     2),
    # 11x11 outputs: F(4x4) has 9 tiles an image, which no tile of 4-8 rows divides, so its
    # GEMM takes the unaligned rows' path (a partial row group)
    ("11x11x5", "[INPUT-CONV(16, 3, pad=1)-RELU-CONV(16, 3, pad=1)-FC(3)]", 3),
]
IDS = [f"{i}-{c[0]}" for i, c in enumerate(CASES)]


def forced(graph, algorithm: str, base=None):
    """The untuned profile with every site offering ``algorithm`` set to it (the default
    tiles), as a tuning table would set it."""
    base = base or profile_for(select_device()[0], tuned=False)
    sites = dict(plan_forward(graph, base).sites)
    try:
        sites.update(plan_training(graph, base).sites)
    except SpecError:  # no class scores: an inference-only network
        pass
    entries = {}
    for key, site in sites.items():
        # (weight-gradient sites have no fused form: they keep their defaults)
        if any(knobs.get("ALGORITHM") == algorithm for knobs in site.space):
            knobs = winograd.first_of(site.space, algorithm)  # the algorithm's default tile
            entries[key] = {"knobs": knobs}
    assert entries, "no Winograd site"
    return replace(base, tuning=Tuning(entries, "tuned on this device"))


def gemm_of(algorithm: str) -> str:
    """The kernel that holds an algorithm's GEMMs: the fused kernel holds all three steps."""
    return "WINOGRAD_FUSED" if algorithm in winograd.FUSED else "WINOGRAD_GEMM"


def run_case(monkeypatch, spec: dict, batch: int, algorithm: str, seed: int = 0) -> tuple:
    """Forward and gradients of ``spec`` with ``algorithm`` forced: their worst relative errors
    against numpy (asserting the plan really uses it)."""
    graph = analyse(spec)
    profile = forced(graph, algorithm)
    monkeypatch.setattr(convgraph.runtime.target, "profile_for", lambda info: profile)
    model = convgraph.compile(spec, batch=batch, share_buffers=False)
    selectors = {spec_.selector for spec_ in model.plan.kernels.values()}
    assert gemm_of(algorithm) in selectors
    params = random_params(model, seed)
    model.set_params(params)
    poison(model)
    x = input_batch(model, batch, seed)
    out = check_forward(model, params, x, what=f"{algorithm} {spec}")
    from convgraph.reference import reference_forward
    forward_error = relative_error(out, reference_forward(graph, params, x).reshape(out.shape))

    session = TrainingSession(graph, batch=batch)
    assert gemm_of(algorithm) in {k.selector for k in session.plan.kernels.values()}
    session.set_params(params)
    y = np.random.default_rng(seed).integers(0, session.plan.classes, batch)
    grads, param_grads = session.gradients(x, y)
    *_, expected, expected_params = reference_gradients(
        graph, params, x, y, session.dropout_seed(), graph.graph["train"]["label_smoothing"])
    errors = [relative_error(grad, expected[node]) for node, grad in grads.items()]
    errors += [relative_error(grad, expected_params[key]) for key, grad in param_grads.items()]
    return forward_error, max(errors)


@pytest.mark.slow  # 7-11 s each; the default tier meets both algorithms in tests/test_tuning.py
@pytest.mark.parametrize("algorithm", ["winograd2", "winograd4", *winograd.FUSED])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_winograd_computes_what_numpy_does(monkeypatch, case, algorithm):
    volume, pattern, batch = case
    forward_error, backward_error = run_case(monkeypatch, {"input": volume, "pattern": pattern},
                                             batch, algorithm)
    assert forward_error <= TOLERANCE
    assert backward_error <= TOLERANCE


# a fused layer with its relu: partial tiles of both sizes (9x7), 17 channels (one channel a
# vector), a partial group of images (3 of up to 8 a work-item) and batch 1
FUSED_FORWARD = {"input": "9x7x17", "pattern": "[INPUT-CONV(20, 3, pad=1)-RELU]"}


@pytest.mark.parametrize("algorithm", ["winograd4_fused",
                                       pytest.param("winograd2_fused", marks=pytest.mark.slow)])
def test_the_fused_kernel_computes_what_numpy_does(monkeypatch, algorithm):
    """The fused kernel's inference forward against numpy at batch 3 and 1 (its gradients, a
    training compile each, in the slow tier's test above; F(2x2) there too: ~4 s cold)."""
    graph = analyse(FUSED_FORWARD)
    profile = forced(graph, algorithm)
    monkeypatch.setattr(convgraph.runtime.target, "profile_for", lambda info: profile)
    model = convgraph.compile(FUSED_FORWARD, batch=3, share_buffers=False)
    launched = [model.plan.kernels[launch.kernel].selector for launch in model.plan.launches]
    assert launched.count("WINOGRAD_FUSED") == 1 and "WINOGRAD_GEMM" not in launched
    params = random_params(model, 0)
    model.set_params(params)
    for batch in (3, 1):
        poison(model)
        check_forward(model, params, input_batch(model, batch, batch),
                      what=f"{algorithm} batch {batch}")


def test_a_fused_work_item_holds_whole_register_tiles_within_its_scratch():
    """The fused kernel's tiles per work-item: whole images where they fit the scratch (then
    several), a divisor of an image's tiles where they do not, rows of the register tile
    dividing them."""
    knobs = {"TILE_PIXELS": 8, "VECTOR_WIDTH": 16, "FILTER_VECTORS": 2}
    for size, channels in ((8, 64), (16, 64), (32, 32), (8, 128), (11, 5), (56, 64)):
        shape = {"OUT_H": size, "OUT_W": size, "IN_CHANNELS": channels}
        for out_tile in (2, 4):
            item = winograd.fused_rows(shape, out_tile, knobs)
            rows = item["ITEM_IMAGES"] * item["ITEM_TILES"]
            assert rows % item["ROW_TILES"] == 0 and item["ROW_TILES"] <= 8
            image_tiles = (-(-size // out_tile)) ** 2
            assert image_tiles % item["ITEM_TILES"] == 0
            assert item["ITEM_IMAGES"] == 1 or item["ITEM_TILES"] == image_tiles
            scratch = 4 * (out_tile + 2) ** 2 * rows * max(channels, 32)
            assert scratch <= winograd.FUSED_SCRATCH_BYTES or rows == 1


def test_the_fused_forms_are_offered_where_their_filters_fit_the_cache():
    """Each fused work-item reads all of a block's transformed filters: offered up to
    FUSED_MAX_FILTER_BYTES of them, and a fused default falls back to its three-kernel form
    where they do not fit (weight gradients have no fused form)."""
    space = [{"TILE_PIXELS": 8}]
    small = winograd.with_algorithms(space, "winograd4_fused", 64, 64)
    assert [k["ALGORITHM"] for k in small] == ["winograd4_fused", "direct", "winograd2",
                                               "winograd4", "winograd2_fused"]
    large = winograd.with_algorithms(space, "winograd4_fused", 128, 128)
    assert [k["ALGORITHM"] for k in large] == ["winograd4", "direct", "winograd2",
                                               "winograd2_fused"]
    assert 36 * 128 * 128 * 4 > winograd.FUSED_MAX_FILTER_BYTES >= 16 * 128 * 128 * 4
    weights = winograd.with_weight_algorithms(space, "winograd4")
    assert [k["ALGORITHM"] for k in weights] == ["winograd4", "direct", "winograd2"]


def test_only_3x3_stride_1_ungrouped_sites_offer_winograd():
    graph = analyse({"input": "12x12x8", "pattern": "[INPUT-CONV(8, 3, pad=1)"
                     "-CONV(8, 3, stride=2, pad=same)-CONV(8, 3, pad=1, groups=2)"
                     "-CONV(8, 3, dilation=2, pad=2)-CONV(8, 5, pad=2)-FC(2)]"})
    base = profile_for(select_device()[0], tuned=False)
    sites = plan_forward(graph, base).sites.values()
    offering = [site.node for site in sites if site.selector == "CONV_FORWARD"
                and any(k.get("ALGORITHM") == "winograd4" for k in site.space)]
    assert offering == ["conv1"]


def test_the_default_algorithm_follows_the_profile():
    base = profile_for(select_device()[0], tuned=False)
    none = replace(base, winograd_rules=())
    assert winograd.default_algorithm(none, 64, 64, 8, 8) == "direct"
    rules = replace(base, winograd_rules=((64, 8, 16, "winograd4"), (64, 1, 7, "winograd2")))
    assert winograd.default_algorithm(rules, 64, 128, 16, 16) == "winograd4"
    assert winograd.default_algorithm(rules, 512, 512, 7, 7) == "winograd2"
    assert winograd.default_algorithm(rules, 32, 64, 16, 16) == "direct"  # too few channels
    assert winograd.default_algorithm(rules, 64, 64, 32, 16) == "direct"  # too wide


OCLGRIND_CHILD = """
import json, sys
import convgraph
import convgraph.runtime.target as target
from convgraph.pipeline import analyse
from convgraph.verify import verify_model, verify_training
from tests.test_winograd import forced, gemm_of
failed = 0
for spec in json.loads(sys.argv[1]):
    for algorithm in ("winograd2", "winograd4", "winograd2_fused", "winograd4_fused"):
        profile = forced(analyse(spec), algorithm)
        target.profile_for = lambda info, profile=profile: profile
        model = convgraph.compile(spec, batch=2, share_buffers=False)
        assert "Oclgrind" in model.info.platform, model.info.label
        assert gemm_of(algorithm) in {k.selector for k in model.plan.kernels.values()}
        checks = verify_model(model) + verify_training(model.graph, batch=2)
        failed += sum(not check.passed for check in checks)
        print(algorithm, len(checks), "kernel checks", flush=True)
sys.exit(1 if failed else 0)
"""
# partial tiles of both sizes, 3 and 5 channels (vectors of 1 on Oclgrind's 4-wide profile),
# a gated input gradient, and an input gradient added into a tensor two layers read; 4 and 6
# channels (weight gradients by Winograd: fewer channels keep the all-taps direct kernel)
OCLGRIND_NETWORKS = [
    {"input": "5x6x4", "pattern": "[INPUT-CONV(6, 3, pad=1)-RELU-CONV(4, 3)-FC(2)]"},
    {"input": "5x7x3", "pattern": "[INPUT-CONV(5, 3, pad=1)-RELU-CONV(4, 3, pad=1)-FC(2)]"},
    {"input": "6x5x2", "nodes": {
        "a": {"op": "conv", "filters": 5, "size": 1, "inputs": ["input"]},
        "b": {"op": "conv", "filters": 3, "size": 3, "pad": 1, "inputs": ["a"]},
        "c": {"op": "conv", "filters": 3, "size": 3, "pad": 1, "inputs": ["a"]},
        "s": {"op": "add", "inputs": ["b", "c"]}, "g": "gap", "o": {"op": "fc", "units": 2}}},
]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/lib/oclgrind/liboclgrind-rt-icd.so").exists(),
                    reason="oclgrind is not installed (apt-get install oclgrind)")
def test_winograd_kernels_are_clean_under_oclgrind(tmp_path):
    """Both algorithms' forward and backward kernels, three-kernel and fused, checked against
    numpy under Oclgrind (out-of-bounds accesses, uninitialised reads, races): nothing
    reported."""
    from tests.test_oclgrind import run_under_oclgrind

    done, reports = run_under_oclgrind(
        tmp_path, [sys.executable, "-c", OCLGRIND_CHILD, json.dumps(OCLGRIND_NETWORKS)],
        timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    assert done.stdout.count("kernel checks") == 4 * len(OCLGRIND_NETWORKS), done.stdout
    assert reports == [], done.stderr[:4000]


def test_f4_is_offered_only_within_its_numerical_guard():
    space = [{"TILE_PIXELS": 8}]
    wide = winograd.with_algorithms(space, "winograd4", winograd.F4_MAX_CHANNELS + 1, 16)
    assert [k["ALGORITHM"] for k in wide] == ["direct", "winograd2", "winograd2_fused"]
    within = winograd.with_algorithms(space, "winograd4", winograd.F4_MAX_CHANNELS, 16)
    assert [k["ALGORITHM"] for k in within] == ["winograd4", "direct", "winograd2",
                                                "winograd2_fused", "winograd4_fused"]


# The weight gradient by Winograd: a conv reading the network's input (so no input-gradient
# kernels are built) with odd sizes that leave partial tiles of both sizes, channels that fit no
# vector width, and batches that leave a partial last split of the batch
WEIGHT_CASES = [
    ("9x7x12", "[INPUT-CONV(10, 3, pad=1)-FC(2)]", 3, 2),
    ("6x10x8", "[INPUT-CONV(20, 3, bias=false)-RELU-FC(3)]", 1, 2),
    ("11x5x16", "[INPUT-CONV(16, 3, pad=2)-FC(2)]", 3, 1),
]


def forced_weight_gradients(graph, algorithm: str, images: int):
    """The untuned profile with every Winograd-capable weight-gradient site set to
    ``algorithm`` with ``images`` per split of the batch (the other knobs the defaults)."""
    base = profile_for(select_device()[0], tuned=False)
    entries = {}
    for key, site in plan_training(graph, base).sites.items():
        if site.selector == "CONV_BACKWARD_WEIGHTS" and "ALGORITHM" in site.default:
            knobs = {**site.default, "ALGORITHM": algorithm, "IMAGES_PER_SPLIT": images}
            if knobs not in site.space:  # a default's rows of taps (TAP_COLUMNS) at few splits
                knobs = {**knobs, "TAP_COLUMNS": 1}
            assert knobs in site.space
            entries[key] = {"knobs": knobs}
    assert entries, "no Winograd weight-gradient site"
    return replace(base, tuning=Tuning(entries, "tuned on this device"))


def winograd_weight_gradients(monkeypatch, case, algorithm: str, seed: int = 0):
    """The device's parameter gradients of ``case`` with ``algorithm`` forced on the weight
    gradients, and what they were computed from: (graph, params, x, labels, gradients)."""
    volume, pattern, batch, images = case
    graph = analyse({"input": volume, "pattern": pattern})
    profile = forced_weight_gradients(graph, algorithm, images)
    monkeypatch.setattr(convgraph.runtime.target, "profile_for", lambda info: profile)
    session = TrainingSession(graph, batch=batch)
    selectors = {k.selector for k in session.plan.kernels.values()}
    assert {"WINOGRAD_WEIGHT_GEMM", "WINOGRAD_FILTER_GRAD"} <= selectors
    assert "CONV_BACKWARD_WEIGHTS" not in selectors
    rng = np.random.default_rng(seed)
    params = initial_params(graph, seed=seed)  # He-scaled weights: logits that do not saturate
    params.update({key: rng.normal(0.0, 0.5, value.shape).astype(np.float32)
                   for key, value in params.items() if key.endswith(".bias")})
    session.set_params(params)
    volume = graph.nodes["input"]["output"]
    x = rng.normal(size=(batch, volume.depth, volume.height, volume.width)).astype(np.float32)
    labels = rng.integers(0, session.plan.classes, batch)
    _, param_grads = session.gradients(x, labels)
    return graph, params, x, labels, param_grads


def weight_gradient_error(monkeypatch, case, algorithm: str) -> float:
    """Worst relative error of the parameter gradients with ``algorithm`` forced on the weight
    gradients, against the float64 numpy reference."""
    graph, params, x, labels, param_grads = winograd_weight_gradients(monkeypatch, case,
                                                                      algorithm)
    *_, expected = reference_gradients(graph, params, x, labels)
    return max(relative_error(grad, expected[key]) for key, grad in param_grads.items())


# F(4x4) in the slow tier: the default tier meets it through tests/test_tuning.py's spread
# (the 'plain' case's weight site), and each algorithm's training compile costs ~6-7 s cold
BOTH = ["winograd2", pytest.param("winograd4", marks=pytest.mark.slow)]


@pytest.mark.parametrize("algorithm", BOTH)
def test_winograd_weight_gradients_compute_what_numpy_does(monkeypatch, algorithm):
    """Partial tiles, 12 channels, 10 filters (6 padding ones), batch 3 in splits of 2 (a
    partial last split)."""
    assert weight_gradient_error(monkeypatch, WEIGHT_CASES[0], algorithm) <= TOLERANCE


@pytest.mark.parametrize("algorithm", BOTH)
def test_winograd_weight_gradients_agree_with_finite_differences(monkeypatch, algorithm):
    """The device's Winograd conv weight gradient against central differences of the float64
    reference loss (mean over the batch) at sampled weights."""
    graph, params, x, labels, param_grads = winograd_weight_gradients(
        monkeypatch, WEIGHT_CASES[0], algorithm)
    weights = {key: np.asarray(value, np.float64) for key, value in params.items()}
    rng = np.random.default_rng(1)
    device = param_grads["conv1.weight"]
    scale = np.abs(device).max()
    h = 1e-5
    for index in [tuple(int(rng.integers(0, n)) for n in device.shape) for _ in range(8)]:
        losses = []
        for step in (h, -h):
            moved = {**weights, "conv1.weight": weights["conv1.weight"].copy()}
            moved["conv1.weight"][index] += step
            losses.append(reference_gradients(graph, moved, x, labels)[0].mean())
        numeric = (losses[0] - losses[1]) / (2 * h)
        assert abs(device[index] - numeric) <= TOLERANCE * scale, (index, device[index], numeric)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["winograd2", "winograd4"])
@pytest.mark.parametrize("case", WEIGHT_CASES[1:], ids=["batch1-valid", "pad2-split1"])
def test_winograd_weight_gradients_on_more_shapes(monkeypatch, case, algorithm):
    assert weight_gradient_error(monkeypatch, case, algorithm) <= TOLERANCE


def test_the_weight_gradient_transforms_are_exact_in_float64():
    """The identity the weight-gradient kernels rely on, in float64 numpy with the matrices
    of winograd.cl's 1-D transforms: summed over tiles, G^T [(B^T d B) . (A dY A^T)] G is the
    correlation of the input with the output gradient (no device involved)."""
    rng = np.random.default_rng(0)
    for out_tile, (a_t, g, b_t) in winograd_matrices().items():
        tile = out_tile + 2
        d = rng.normal(size=(tile + out_tile, tile + out_tile))  # 2 x 2 tiles of outputs
        dy = rng.normal(size=(2 * out_tile, 2 * out_tile))
        total = np.zeros((3, 3))
        for ty in range(2):
            for tx in range(2):
                dt = d[ty * out_tile:ty * out_tile + tile, tx * out_tile:tx * out_tile + tile]
                gt = dy[ty * out_tile:(ty + 1) * out_tile, tx * out_tile:(tx + 1) * out_tile]
                total += g.T @ ((b_t @ dt @ b_t.T) * (a_t.T @ gt @ a_t)) @ g
        direct = np.array([[np.sum(d[r:r + 2 * out_tile, s:s + 2 * out_tile] * dy)
                            for s in range(3)] for r in range(3)])
        np.testing.assert_allclose(total, direct, rtol=1e-10, atol=1e-10)


def winograd_matrices() -> dict:
    """A^T, G, B^T of F(2x2, 3x3) and F(4x4, 3x3) as kernels/winograd.cl writes them."""
    f2 = (np.array([[1, 1, 1, 0], [0, 1, -1, -1]], float),
          np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]]),
          np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], float))
    f4 = (np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                    [0, 1, -1, 8, -8, 1]], float),
          np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                    [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
          np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                    [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], float))
    return {2: f2, 4: f4}


# partial tiles; no relu after it, since a planted NaN would come out of it as 0 (fmax)
CACHED = {"input": "10x7x8", "pattern": "[INPUT-CONV(12, 3, pad=1)]"}


def poison_transformed_filters(model) -> None:
    """NaN into every Winograd layer's transformed filters (the inference plan's work buffers)."""
    executor = model.executor
    for node, key in model.plan.work:
        name = model.plan.buffer_name(work(node, key))
        executor.write(name, np.full(executor.buffer(name).size // 4, np.nan, np.float32))
    model.queue.finish()


def test_inference_transforms_the_filters_once_per_change_of_the_weights(monkeypatch, tmp_path):
    """A Winograd inference plan transforms its filters on the first pass after parameters
    reach the device and reuses them (NaN planted in them afterwards reaches the output); new
    weights by set_params or load_weights are transformed again and reach the output."""
    graph = analyse(CACHED)
    profile = forced(graph, "winograd4")
    monkeypatch.setattr(convgraph.runtime.target, "profile_for", lambda info: profile)
    model = convgraph.compile(CACHED, batch=2)
    transforms = [launch for launch in model.plan.launches
                  if model.plan.kernels[launch.kernel].selector == "WINOGRAD_FILTER"]
    assert len(transforms) == 1 and transforms[0].per_params
    x = input_batch(model, 2, 0)
    first = random_params(model, 0)
    model.set_params(first)
    check_forward(model, first, x, what="first weights")
    poison_transformed_filters(model)
    assert np.isnan(model.forward(x)).all()  # the filters were not transformed again

    second = random_params(model, 1)
    model.set_params(second)
    check_forward(model, second, x, what="set_params")
    poison_transformed_filters(model)
    np.savez(tmp_path / "w.npz", **first)
    model.load_weights(tmp_path / "w.npz")
    check_forward(model, first, x, what="load_weights")


@pytest.mark.slow  # a training program's compile: ~6 s cold
def test_weights_trained_by_fit_reach_a_cached_winograd_inference(monkeypatch):
    spec = {"input": "8x8x8", "pattern": "[INPUT-CONV(16, 3, pad=1)-RELU-FC(3)]",
            "train": {"batch": 4, "epochs": 1, "lr": 0.5, "normalize": False}}
    graph = analyse(spec)
    profile = forced(graph, "winograd2")
    monkeypatch.setattr(convgraph.runtime.target, "profile_for", lambda info: profile)
    model = convgraph.compile(spec, batch=4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 8, 8, 8)).astype(np.float32)
    before = model.params
    check_forward(model, before, x[:4], what="before fit")
    model.fit((x, rng.integers(0, 3, 8)), epochs=1)
    after = model.params
    assert not np.allclose(after["conv1.weight"], before["conv1.weight"])
    check_forward(model, after, x[:4], what="after fit")


def test_weight_gradient_sites_default_as_the_profile_says():
    """F(4x4) by default where the CPU profile's weight rules say (8x8 or 16x16, 32 channels on
    both sides), direct elsewhere (here 16 input channels) and with no rules; either way every
    algorithm is in the space."""
    from convgraph.codegen import profile as profiles

    graph = analyse({"input": "8x8x16", "pattern": "[INPUT-CONV(128, 3, pad=1)"
                     "-CONV(128, 3, pad=1)-FC(2)]"})

    def defaults(profile) -> dict:
        sites = plan_training(graph, profile).sites.values()
        found = {}
        for site in sites:
            if site.selector == "CONV_BACKWARD_WEIGHTS":
                found[site.node] = site.default["ALGORITHM"]
                assert {k["ALGORITHM"] for k in site.space} == set(winograd.WEIGHT_ALGORITHMS)
        return found

    assert defaults(profiles.CPU) == {"conv1": "direct", "conv2": "winograd4"}
    assert defaults(replace(profiles.CPU, winograd_weight_rules=())) == {"conv1": "direct",
                                                                         "conv2": "direct"}
