"""The host's part of a pass: the input checks, packing into the device's input buffer (mapped or
copied), the read-back and unpacking, and a training step's batch and metrics, on the CPU device
against the float64 reference (README "The host's share")."""

from __future__ import annotations

import numpy as np
import pytest

import convgraph
from convgraph.codegen.launches import tensor
from convgraph.codegen.layout import Layout
from convgraph.core import Volume
from convgraph.data.arrays import all_finite
from convgraph.errors import DataError
from convgraph.reference import reference_forward, softmax_cross_entropy
from convgraph.train.session import EvaluationSession, TrainingSession

# 3 channels, a halo of 1 for the conv, odd and non-square, a pool that floors, and a
# classifier output (1x1x5, whose unpacked view would be contiguous). Its first conv reads the
# input planar on the CPU profile (4 filters: codegen/layout.py PlanarLayout); NHWC_SPEC's 16
# filters keep the NHWC input (3 channels stored as 4, the fourth zero)
SPEC = {"input": "9x7x3", "pattern": "[INPUT-CONV(4, 3, pad=1)-RELU-POOL(rounding=floor)-FC(5)]",
        "train": {"batch": 4, "seed": 3}}
NHWC_SPEC = {**SPEC, "pattern": "[INPUT-CONV(16, 3, pad=1)-RELU-POOL(rounding=floor)-FC(5)]"}
BATCH = 4

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def model():
    return convgraph.compile(SPEC, device="cpu", batch=BATCH)


@pytest.fixture(scope="module")
def nhwc_model():
    return convgraph.compile(NHWC_SPEC, device="cpu", batch=BATCH)


@pytest.fixture
def mapping(model, request):
    """The model with its input buffer mapped (PoCL's CPU device) or copied (other devices'
    path, forced), restored afterwards."""
    executor = model.executor
    kept = executor.maps_input
    executor.release_input()
    executor.maps_input = request.param
    yield model
    executor.release_input()
    executor.maps_input = kept


def images(count: int, seed: int = 0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, 3, 7, 9)).astype(dtype)


def reference(model, x: np.ndarray) -> np.ndarray:
    return reference_forward(model.graph, model.params, x).reshape(x.shape[0], -1)


def message_of(call, *args) -> str:
    with pytest.raises(DataError) as caught:
        call(*args)
    return str(caught.value)


# ---------------------------------------------------------------------------- pure Python

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_all_finite_finds_a_non_finite_value_wherever_it_is(dtype):
    x = np.random.default_rng(0).normal(size=(5, 3, 7, 9)).astype(dtype)
    assert all_finite(x) and all_finite(x[:, :, ::2]) and all_finite(x[:0])
    # BLAS works in vectors with a scalar tail: the first, vector-boundary and last positions
    for position in (0, 1, 15, 16, 17, 31, x.size // 2, x.size - 17, x.size - 2, x.size - 1):
        for value in (np.nan, np.inf, -np.inf):
            bad = x.copy()
            bad.reshape(-1)[position] = value
            assert not all_finite(bad), (position, value)
            in_every_other_column = position % 9 % 2 == 0  # a non-contiguous view of it
            assert all_finite(bad[:, :, :, ::2]) != in_every_other_column, (position, value)


def test_all_finite_keeps_huge_finite_values_and_integers():
    x = np.full((2, 3, 4), 3e38, np.float32)  # its squares overflow: the exact search decides
    assert all_finite(x) and all_finite(-x)
    assert all_finite(np.full(10, 255, np.uint8)) and all_finite(np.ones(4, bool))
    assert all_finite(np.float32(1.0)) and not all_finite(np.float64("nan"))


def test_unpack_returns_a_new_array_even_where_the_view_is_contiguous():
    layout = Layout(Volume(1, 1, 8), 8)  # 1x1x8, no halo: the transposed slice is contiguous
    data = np.arange(3 * 8, dtype=np.float32)
    out = layout.unpack(data, 3)
    assert out.shape == (3, 8, 1, 1) and not np.shares_memory(out, data)
    np.testing.assert_array_equal(out.reshape(3, 8), data.reshape(3, 8))


def test_pack_fills_part_of_a_larger_array_and_keeps_its_zeros():
    layout = Layout(Volume(9, 7, 3), 4, (1, 1, 2, 1))
    x = images(3)
    packed = layout.pack(x)
    expected = np.zeros((3, 9, 12, 4), np.float32)
    expected[:, 1:8, 2:11, :3] = x.transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(packed, expected)
    larger = layout.pack(images(5, seed=1))
    part = layout.pack(x, larger)
    assert part.shape == (3, 9, 12, 4) and np.shares_memory(part, larger)
    np.testing.assert_array_equal(part, expected)
    np.testing.assert_array_equal(larger[3:], layout.pack(images(5, seed=1))[3:])


# ---------------------------------------------------------------------------- on the device

@pytest.mark.device
@pytest.mark.parametrize("mapping", [True, False], ids=["mapped", "copied"], indirect=True)
def test_batches_of_every_size_in_turn_match_the_reference(mapping):
    """Full, single, odd and split batches (9 images: 4 + 4 + 1) in an order where each one is
    smaller or larger than the one before, so a stale image of the last call would show."""
    model = mapping
    for index, count in enumerate((4, 1, 3, 9, 4, 2)):
        x = images(count, seed=index)
        out = model.forward(x)
        assert out.shape == (count, 5)
        np.testing.assert_allclose(out, reference(model, x), rtol=1e-4, atol=1e-4)


@pytest.mark.device
@pytest.mark.parametrize("mapping", [True, False], ids=["mapped", "copied"], indirect=True)
def test_a_returned_output_does_not_change_on_the_next_call(mapping):
    model = mapping
    first = model.forward(images(4, seed=1))
    kept = first.copy()
    second = model.forward(images(4, seed=2))
    np.testing.assert_array_equal(first, kept)
    assert not np.shares_memory(first, second)
    single = model.forward(images(1, seed=3))  # a smaller batch reads into the same host array
    np.testing.assert_array_equal(first, kept)
    assert not np.shares_memory(single, second)


@pytest.mark.device
@pytest.mark.parametrize("value, text", [(np.nan, "NaN"), (np.inf, "+inf"),
                                         (-np.inf, "-inf")])
def test_a_non_finite_input_is_named_exactly_wherever_it_is(model, value, text):
    # first value, last value, inside, in the second batch of a split call (image 6 of 9)
    for where in ((0, 0, 0, 0), (8, 2, 6, 8), (2, 1, 3, 4), (6, 0, 5, 1)):
        x = images(9)
        x[8, 2, 6, 8] = np.nan  # the last value: where it is not alone, the first is named
        x[where] = value
        message = message_of(model.forward, x)
        image, channel, row, column = where
        assert f"holds {text} at image {image} (channel {channel}, row {row}, column {column})" \
            in message, message
    # finite in float64, infinite in float32: named as such, at its image
    x = images(5, dtype=np.float64)
    x[3, 1, 2, 2] = -1e300
    message = message_of(model.forward, x)
    assert "image 3 (channel 1, row 2, column 2) becomes -inf as float32" in message, message
    huge = images(2) * np.float32(1e37)  # squares overflow; values are finite: accepted
    assert model.forward(huge).shape == (2, 5)


@pytest.mark.device
def test_normalisation_prepares_inputs_as_in_training_and_leaves_them_alone(model):
    mean, std = np.array([0.2, 0.5, 0.3], np.float32), np.array([0.25, 0.5, 2.0], np.float32)
    model.normalization = (mean, std)
    try:
        pixels = np.random.default_rng(4).integers(0, 256, (3, 3, 7, 9)).astype(np.uint8)
        floats = images(5)
        for x, unit in ((pixels, pixels / 255.0), (floats, floats.astype(np.float64))):
            before = x.copy()
            expected = reference(model, (unit - mean[None, :, None, None])
                                 / std[None, :, None, None])
            np.testing.assert_allclose(model.forward(x), expected, rtol=1e-4, atol=1e-4)
            np.testing.assert_array_equal(x, before)  # the caller's array is not touched
        model.normalization = (mean, np.array([0.25, 0.0, 2.0], np.float32))
        x = images(2)
        x[:, 1] = 0.9  # (0.9 - 0.5) / 0 in every value of channel 1: the first is named
        message = message_of(model.forward, x)
        assert "image 0 (channel 1, row 0, column 0) becomes +inf as float32 after " \
               "normalisation" in message, message
    finally:
        model.normalization = None


@pytest.mark.device
@pytest.mark.parametrize("compiled", ["model", "nhwc_model"], ids=["planar", "nhwc"])
def test_the_input_buffers_halo_and_padding_channel_stay_zero(compiled, request):
    """What lets the host pack only the images' interiors into the mapped buffer: nothing
    writes the rest after allocate's zeros (planar input, and NHWC with a padding channel)."""
    model = request.getfixturevalue(compiled)
    executor, plan = model.executor, model.plan
    assert plan.layouts[plan.input].planar == (compiled == "model")
    model.forward(images(4, seed=5))
    model.forward(images(3, seed=6))
    layout = plan.layouts[plan.input]
    name = plan.buffer_name(tensor(plan.input))
    stored = executor.read(name, np.empty(BATCH * layout.image_elements, np.float32))
    stored = stored.reshape(layout.host_shape(BATCH))
    expected = layout.pack(np.concatenate([images(3, seed=6), images(4, seed=5)[3:]]))
    np.testing.assert_array_equal(stored, expected)
    np.testing.assert_allclose(model.forward(images(2, seed=7)),
                               reference(model, images(2, seed=7)), rtol=1e-4, atol=1e-4)


def _losses_of_batches_of_every_size(session, graph, params) -> None:
    labels = np.array([0, 4, 2, 1])
    for index, count in enumerate((4, 3, 1, 4)):
        x = images(count, seed=10 + index)
        result = session.evaluate_batch(x, labels[:count])
        logits = reference_forward(graph, params, x).reshape(count, -1)
        losses = softmax_cross_entropy(logits, labels[:count])[0]
        assert result.count == count
        np.testing.assert_allclose(result.loss, losses.sum(), rtol=1e-4)
        assert result.correct == float((logits.argmax(axis=1) == labels[:count]).sum())


@pytest.mark.slow  # 2-4 s of compiling (the training tests cover these paths by the way)
@pytest.mark.device
def test_an_evaluation_session_reads_the_loss_of_batches_of_every_size(model):
    """The batch path a training step shares (the input packed into the mapped buffer of a
    sub-plan, the labels, the losses and correct counts read with one wait), on a network of
    one fc layer."""
    graph = convgraph.analyse({**SPEC, "pattern": "[INPUT-FC(5)]"})
    session = EvaluationSession(graph, model.target, BATCH)
    _losses_of_batches_of_every_size(session, graph, session_params(session, graph))


def session_params(session, graph) -> dict:
    from convgraph.params import initial_params

    train = graph.graph["train"]
    return initial_params(graph, train["init"], train["seed"])


@pytest.mark.slow
@pytest.mark.device
def test_a_training_session_steps_and_reads_the_loss_of_batches_of_every_size(model):
    session = TrainingSession(model.graph, model.target, BATCH, params=model.params)
    _losses_of_batches_of_every_size(session, model.graph, model.params)
    labels = np.array([0, 4, 2, 1])
    step = session.step(images(3, seed=20), labels[:3], 0.0)  # lr 0: the parameters stay
    assert step.count == 3 and np.isfinite(step.loss)
    after = session.evaluate_batch(images(4, seed=10), labels)
    np.testing.assert_allclose(after.loss, softmax_cross_entropy(
        reference(model, images(4, seed=10)), labels)[0].sum(), rtol=1e-4)


UNDER_OCLGRIND = """
import numpy as np, convgraph
from convgraph.reference import reference_forward
from convgraph.train.session import TrainingSession
spec = {"input": "5x4x3", "pattern": "[INPUT-CONV(2, 3, pad=1)-RELU-FC(3)]",
        "train": {"batch": 2, "seed": 1}}
model = convgraph.compile(spec, batch=2)
model.executor.maps_input = True  # Oclgrind does not say it shares the host's memory
for count in (2, 1, 3):
    x = np.random.default_rng(count).normal(size=(count, 3, 4, 5)).astype(np.float32)
    expected = reference_forward(model.graph, model.params, x).reshape(count, -1)
    assert np.abs(model.forward(x) - expected).max() < 1e-4
session = TrainingSession(model.graph, model.target, 2, params=model.params)
session.executor.maps_input = True
for count in (2, 1):
    x = np.random.default_rng(count).normal(size=(count, 3, 4, 5)).astype(np.float32)
    assert np.isfinite(session.step(x, np.arange(count), 0.01).loss)
    assert np.isfinite(session.evaluate_batch(x, np.arange(count)).loss)
print("OK")
"""


@pytest.mark.slow
def test_the_mapped_input_runs_clean_under_oclgrind(tmp_path):
    """Mapping, packing into, unmapping and re-mapping the input buffer around the launches, as
    on PoCL's CPU device, forced on Oclgrind's: no race, no uninitialised read."""
    import sys

    from tests.test_oclgrind import ICD, run_under_oclgrind

    if not ICD.exists():
        pytest.skip("oclgrind is not installed (apt-get install oclgrind)")
    done, reports = run_under_oclgrind(tmp_path, [sys.executable, "-c", UNDER_OCLGRIND])
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-3000:]
    assert not reports, reports
