"""layernorm and lrn: their float64 references (the oracle every harness holds the kernels to)
against the definitions in PyTorch's documentation, written here independently, and a small
ConvNeXt-style network that compiles, passes --verify and trains.

The ops' own cases (convgraph/ops/layernorm.py, lrn.py) put them through the shape, finite-
difference, device and Oclgrind harnesses; this file checks what those cannot: that the
reference computes what PyTorch does.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import convgraph
from convgraph.errors import SpecError
from convgraph.ops.base import REGISTRY
from convgraph.pipeline import analyse

from .conftest import tiny_images


def _node(pattern: str, volume: str):
    graph = analyse({"name": "norms", "input": volume, "pattern": f"[INPUT-{pattern}]"})
    name = next(n for n in graph if n != "input")
    return graph.nodes[name]


def torch_layer_norm_channels(x, weight, bias, eps):
    """ConvNeXt's LayerNorm(channels_first) as PyTorch defines F.layer_norm over the last axis,
    y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias, the biased variance, one pixel at a
    time: x (N, C, H, W)."""
    n, c, h, w = x.shape
    y = np.empty_like(x)
    for i in range(n):
        for row in range(h):
            for col in range(w):
                pixel = x[i, :, row, col]
                mean = sum(pixel) / c
                variance = sum((v - mean) ** 2 for v in pixel) / c
                y[i, :, row, col] = (pixel - mean) / np.sqrt(variance + eps) * weight + bias
    return y


def torch_local_response_norm(x, size, alpha, beta, k):
    """torch.nn.functional.local_response_norm as PyTorch computes it: the squares padded with
    size // 2 zero channels before and (size - 1) // 2 after, averaged over size channels
    (zeros counted), then b = a / (k + alpha * average) ** beta; x (N, C, H, W)."""
    n, c, h, w = x.shape
    squares = np.concatenate([np.zeros((n, size // 2, h, w)), x * x,
                              np.zeros((n, (size - 1) // 2, h, w))], axis=1)
    average = np.stack([squares[:, j:j + size].sum(axis=1) / size for j in range(c)], axis=1)
    return x / (k + alpha * average) ** beta


def test_layernorm_normalises_each_pixel_over_its_channels():
    """One pixel worked by hand: channels 1, 2, 3 have mean 2 and variance 2/3."""
    node = _node("LAYERNORM(eps=1e-6)", "1x1x3")
    x = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)
    params = {"weight": np.array([1.0, 2.0, -1.0]), "bias": np.array([0.0, 0.5, 1.0])}
    xhat = np.array([-1.0, 0.0, 1.0]) / np.sqrt(2.0 / 3.0 + 1e-6)
    expected = xhat * params["weight"] + params["bias"]
    got = REGISTRY["layernorm"].reference(node, [x], params)
    np.testing.assert_allclose(got.ravel(), expected, rtol=1e-12)
    assert got[0, 0, 0, 0] == pytest.approx(-1.2247439, abs=1e-6)


@pytest.mark.parametrize(("volume", "eps"), [("5x3x7", 1e-6), ("2x4x1", 1e-5), ("3x1x16", 0.1)])
def test_layernorm_reference_is_pytorchs(volume, eps):
    node = _node(f"LAYERNORM(eps={eps})", volume)
    rng = np.random.default_rng(3)
    w, h, d = (int(v) for v in volume.split("x"))
    x = rng.normal(2.0, 3.0, (2, d, h, w))
    params = {"weight": rng.normal(size=d), "bias": rng.normal(size=d)}
    np.testing.assert_allclose(REGISTRY["layernorm"].reference(node, [x], params),
                               torch_layer_norm_channels(x, params["weight"], params["bias"], eps),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.device
def test_layernorm_statistics_on_the_device_survive_a_large_mean():
    """Channels 1e4 + (-1.5, -0.5, 0.5, 1.5), exact in float32: E[x^2] - E[x]^2 in float32
    loses the variance (1.25) to the rounding of 1e8 (float32 spacing 8 there); the kernel's
    two passes, the second over deviations, keep it exactly."""
    x = np.float32(1e4) + np.array([-1.5, -0.5, 0.5, 1.5], np.float32)
    squares = (x * x).astype(np.float32)
    one_pass = np.float32(squares.sum() / 4) - np.float32(x.sum() / 4) ** 2
    assert abs(one_pass - 1.25) > 0.5  # the cancellation this guards against
    model = convgraph.compile({"name": "norms", "input": "3x2x4", "pattern": "[INPUT-LAYERNORM]"},
                              batch=2)
    images = np.broadcast_to(x.reshape(1, 4, 1, 1), (2, 4, 2, 3)).astype(np.float32)
    got = model.forward(images)
    expected = np.array([-3.0, -1.0, 1.0, 3.0]) / np.sqrt(5.0)
    np.testing.assert_allclose(got, np.broadcast_to(expected.reshape(1, 4, 1, 1), got.shape),
                               rtol=1e-5, atol=1e-5)


def test_lrn_divides_by_the_windows_squares():
    """One pixel worked by hand: size 3, alpha / size = 1, beta 1, k 1 over channels 1, 2, 3:
    the window sums of squares are 1+4, 1+4+9 and 4+9 (cut at both ends)."""
    node = _node("LRN(3, alpha=3, beta=1, k=1)", "1x1x3")
    x = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)
    got = REGISTRY["lrn"].reference(node, [x], {})
    np.testing.assert_allclose(got.ravel(), [1 / 6, 2 / 15, 3 / 14], rtol=1e-12)


@pytest.mark.parametrize(("volume", "settings"), [
    ("4x3x7", "5"),  # AlexNet's size with PyTorch's defaults
    ("3x3x17", "5, alpha=0.01, beta=0.75, k=2"),  # AlexNet's settings
    ("2x2x3", "7, alpha=0.5, beta=0.6, k=1.5"),  # a window wider than the channels
    ("3x2x1", "3, alpha=0.2"),
    ("3x3x6", "1, alpha=0.3, beta=1.2"),
])
def test_lrn_reference_is_pytorchs(volume, settings):
    node = _node(f"LRN({settings})", volume)
    rng = np.random.default_rng(5)
    w, h, d = (int(v) for v in volume.split("x"))
    x = rng.normal(0.0, 2.0, (2, d, h, w))
    attrs = node.attrs
    np.testing.assert_allclose(
        REGISTRY["lrn"].reference(node, [x], {}),
        torch_local_response_norm(x, attrs["size"], attrs["alpha"], attrs["beta"], attrs["k"]),
        rtol=1e-12)


@pytest.mark.parametrize(("pattern", "word"), [
    ("LRN(4)", "odd"), ("LRN", "size"), ("LRN(5, k=0)", "'k'"), ("LAYERNORM(eps=0)", "'eps'")])
def test_bad_settings_are_refused_clearly(pattern, word):
    with pytest.raises(SpecError) as caught:
        analyse({"name": "norms", "input": "4x4x8", "pattern": f"[INPUT-{pattern}]"})
    assert word in str(caught.value) and "Traceback" not in str(caught.value)


def test_an_even_lrn_window_exits_2_on_the_command_line(tmp_path):
    spec = tmp_path / "even.yaml"
    spec.write_text('input: 4x4x8\npattern: "[INPUT-LRN(4)-GAP-FC(2)]"\n')
    done = subprocess.run([sys.executable, "-m", "convgraph.cli", "check", str(spec)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "odd whole number" in done.stderr and "Traceback" not in done.stderr


# A ConvNeXt block (Liu et al. 2022) at toy size: depthwise 7x7 -> layernorm -> 1x1 conv to 4x
# the width -> activation (relu here; ConvNeXt's gelu is another op) -> 1x1 conv back -> residual
# add; a patchify stem with its layernorm, and ConvNeXt's head (gap -> layernorm -> fc).
CONVNEXT_BLOCK = """\
name: convnext_block
input: 8x8x1
blocks:
  convnext:
    params: {dim: null}
    inputs: [in]
    nodes:
      dwconv: {op: conv, filters: $dim, size: 7, pad: 3, groups: depthwise, inputs: [in]}
      norm: layernorm
      pwconv1: {op: conv, filters: $dim * 4, size: 1}
      act: relu
      pwconv2: {op: conv, filters: $dim, size: 1}
      add: {op: add, inputs: [pwconv2, in]}
nodes:
  stem: {op: conv, filters: 8, size: 2, stride: 2, inputs: [input]}
  stem_norm: layernorm
  stage1: {block: convnext, dim: 8}
  stage2: {block: convnext, dim: 8}
  pool: gap
  head_norm: layernorm
  fc: {op: fc, units: 4}
train: {epochs: 1, batch: 8, lr: 0.05, seed: 3}
"""


@pytest.fixture
def convnext_spec(tmp_path):
    path = tmp_path / "convnext_block.yaml"
    path.write_text(CONVNEXT_BLOCK)
    return path


@pytest.mark.device
@pytest.mark.timeout(600)
def test_a_convnext_block_passes_verify(convnext_spec):
    done = subprocess.run([sys.executable, "-m", "convgraph.cli", "run", str(convnext_spec),
                           "--verify", "--json"], capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["failed"] == 0 and report["passed"] > 40
    checked = {check["layer"] for check in report["checks"] if check["op"] == "layernorm"}
    # every layernorm, forward and in both gradients of its backward: its parameters' and its
    # input's (judged layer by layer, so named by the input)
    for name, source in (("stem_norm", "stem"), ("stage1/norm", "stage1/dwconv"),
                         ("stage2/norm", "stage2/dwconv"), ("head_norm", "pool")):
        assert {name, f"d {source}", f"d {name}.weight", f"d {name}.bias"} <= checked, checked
    # a residual's input gradient is the sum of its readers' parts, and judged as one
    assert {"d stem_norm", "d stage1/add"} <= {check["layer"] for check in report["checks"]}


@pytest.mark.device
@pytest.mark.timeout(600)
def test_a_convnext_block_trains_a_step(convnext_spec):
    model = convgraph.compile(convnext_spec)
    before = model.params
    x, y = tiny_images(0, 8)
    model.fit((x, y), epochs=1)  # 8 images, batch 8: one step
    after = model.params
    for key in ("stem_norm.weight", "stage1/norm.bias", "head_norm.weight", "head_norm.bias"):
        assert np.isfinite(after[key]).all() and not np.array_equal(before[key], after[key]), key
    assert np.isfinite(model.predict(x.astype(np.float32))).all()


@pytest.mark.device
@pytest.mark.timeout(600)
def test_a_convnext_block_step_matches_numpy(convnext_spec):
    """One SGD step (forward, loss, backward, update) on the device against the float64
    reference: the loss, and every parameter after the step (first step: the momentum buffer
    is the gradient, so w <- w - lr * (dL/dw + decay * w))."""
    from convgraph.reference import reference_gradients
    from convgraph.train.session import TrainingSession
    from convgraph.verify import random_params, relative_error

    graph = analyse(str(convnext_spec), ["weight_decay=0.01"])
    session = TrainingSession(graph, batch=5)
    params = {k: v.astype(np.float64) for k, v in random_params(session, 7).items()}
    session.set_params(params)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(5, 1, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 4, 5)
    losses, _, _, _, grads = reference_gradients(graph, params, x, labels, 0, 0.0)
    result = session.step(x, labels, 0.05)
    assert result.loss == pytest.approx(losses.sum(), rel=1e-4)
    device = session.params
    for key, value in params.items():
        expected = value - 0.05 * (grads[key] + 0.01 * value)
        assert relative_error(device[key], expected) < 1e-4, key


@pytest.mark.slow  # about 9 s: a training program's cold compile
@pytest.mark.device
def test_batchnorm_parameter_gradients_over_many_pixels_keep_float32_precision():
    """dbeta sums dy over 2 x 56 x 56 pixels; after a global average pool each channel's dy is
    one value per image, so 6,272 terms of one sign, which one running float32 sum drifted
    from by 3.4e-5 to 9.4e-5 (seeds 0-3), near the kernel tests' 1e-4 (DenseNet-121's dense
    block 1 read 1.08e-4 in --verify). norm.cl adds up each image row, then the rows: 56 + 112
    roundings instead of 6,272, and 4.7e-7 to 1.7e-6 here. The bound between them says which."""
    from convgraph.verify import verify_training

    graph = analyse({"name": "bn-sums", "input": "56x56x16",
                     "pattern": "[INPUT-BN-GAP-FC(10)]"})
    for seed in (0, 1):
        errors = {check.node: check.error for check in verify_training(graph, seed=seed)}
        for key in ("d batchnorm1.weight", "d batchnorm1.bias"):
            assert errors[key] < 1e-5, (seed, key, errors[key])
