"""upsample and deconv held to their definitions outside convgraph: PyTorch's documented values
for upsampling, and a deconv as the adjoint of the conv with the same settings (what PyTorch's
ConvTranspose2d is: the gradient of Conv2d with respect to its input). Their shape cases,
finite differences and device kernels are in the ops' own cases (convgraph/ops/)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from convgraph.codegen import profile as profiles
from convgraph.codegen.plan import plan_forward
from convgraph.codegen.training import plan_training
from convgraph.errors import ShapeError
from convgraph.ops.base import REGISTRY
from convgraph.pipeline import analyse


def only_layer(input_volume: str, layer: str):
    graph = analyse({"input": input_volume, "pattern": f"[INPUT-{layer}]"})
    (name,) = [n for n in graph if n != "input" and not graph.nodes[n].get("inserted")]
    return graph.nodes[name]


def upsampled(layer: str, image: np.ndarray) -> np.ndarray:
    """One (H, W) image through ``layer``'s numpy reference."""
    height, width = image.shape
    node = only_layer(f"{width}x{height}x1", layer)
    return REGISTRY["upsample"].reference(node, [image[None, None]], {})[0, 0]


IMAGE = np.array([[1.0, 2.0], [3.0, 4.0]])


def test_upsample_nearest_repeats_each_pixel():
    expected = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    np.testing.assert_array_equal(upsampled("UPSAMPLE(2)", IMAGE), expected)


def test_upsample_bilinear_matches_pytorch_documented_values():
    # torch.nn.Upsample's documentation, scale_factor=2, mode='bilinear' (align_corners=False)
    expected = np.array([[1.0, 1.25, 1.75, 2.0], [1.5, 1.75, 2.25, 2.5],
                         [2.5, 2.75, 3.25, 3.5], [3.0, 3.25, 3.75, 4.0]])
    np.testing.assert_allclose(upsampled("UPSAMPLE(2, mode=bilinear)", IMAGE), expected)


def test_upsample_bilinear_align_corners_matches_pytorch_documented_values():
    # the same page, align_corners=True: the corners stay, steps of 1/3 between them
    third = 1.0 / 3.0
    expected = np.array([[1.0, 1 + third, 2 - third, 2.0], [2 - third, 2.0, 2 + third, 3 - third],
                         [2 + third, 3 - third, 3.0, 3 + third], [3.0, 3 + third, 4 - third, 4.0]])
    np.testing.assert_allclose(
        upsampled("UPSAMPLE(2, mode=bilinear, align_corners=true)", IMAGE), expected)


def test_upsample_factors_per_axis():
    out = upsampled("UPSAMPLE(3x1)", IMAGE)  # WxH: width x3, height kept
    np.testing.assert_array_equal(out, [[1, 1, 1, 2, 2, 2], [3, 3, 3, 4, 4, 4]])


def onnx_nearest_half_pixel(size: int, factor: int) -> np.ndarray:
    """ONNX Resize's default nearest source index along one axis: half_pixel coordinates
    (dst + 0.5) / scale - 0.5, rounded with round_prefer_floor, kept inside the input."""
    source = (np.arange(size * factor) + 0.5) / factor - 0.5
    return np.clip(np.ceil(source - 0.5), 0, size - 1).astype(int)


@pytest.mark.parametrize("factor", [1, 2, 3, 4])
def test_upsample_nearest_picks_what_onnx_resize_picks(factor):
    """For whole factors ONNX's default nearest reads the same pixels as floor(dst / factor),
    the asymmetric/floor mode that PyTorch exports."""
    image = np.arange(15.0).reshape(3, 5)
    rows, columns = onnx_nearest_half_pixel(3, factor), onnx_nearest_half_pixel(5, factor)
    np.testing.assert_array_equal(upsampled(f"UPSAMPLE({factor})", image),
                                  image[rows][:, columns])


DECONVS = [
    ("7x5x3", "DECONV(4, 2, stride=2)", "CONV(3, 2, stride=2)"),
    ("4x3x4", "DECONV(6, 3, stride=2, pad=1, output_padding=1)",
     "CONV(4, 3, stride=2, pad=1, rounding=floor)"),
    ("5x5x6", "DECONV(4, 3, groups=2, bias=false)", "CONV(6, 3, groups=2, bias=false)"),
    ("4x4x2", "DECONV(3, 3x2, stride=3x1, dilation=2, pad=1x0, output_padding=2x0)",
     "CONV(2, 3x2, stride=3x1, dilation=2, pad=1x0, rounding=floor)"),
]


@pytest.mark.parametrize(("volume", "deconv", "conv"), DECONVS)
def test_deconv_is_the_adjoint_of_the_conv(volume, deconv, conv):
    """<conv(e), d> = <e, deconv(d)> for the conv from the deconv's output back to its input,
    with the same weights: the definition of a transposed convolution."""
    node = only_layer(volume, deconv)
    out = node.output
    conv_node = only_layer(f"{out.width}x{out.height}x{out.depth}", conv)
    assert conv_node.output == node.input_volumes[0]
    rng = np.random.default_rng(3)
    weight = rng.normal(size=node.param_shapes["weight"])
    d = rng.normal(size=(2, *reversed_shape(node.input_volumes[0])))
    e = rng.normal(size=(2, *reversed_shape(out)))
    # zero biases: the adjoint identity is of the linear part
    through_deconv = REGISTRY["deconv"].reference(
        node, [d], {"weight": weight, "bias": np.zeros(out.depth)})
    through_conv = REGISTRY["conv"].reference(
        conv_node, [e], {"weight": weight, "bias": np.zeros(d.shape[1])})
    np.testing.assert_allclose((through_conv * d).sum(), (e * through_deconv).sum(), rtol=1e-10)


def reversed_shape(volume):
    return volume.depth, volume.height, volume.width


def test_deconv_of_one_pixel_is_the_kernel_plus_bias():
    node = only_layer("1x1x1", "DECONV(1, 3x2)")
    weight = np.arange(6.0).reshape(1, 1, 2, 3)
    out = REGISTRY["deconv"].reference(node, [np.full((1, 1, 1, 1), 2.0)],
                                       {"weight": weight, "bias": np.array([0.5])})
    np.testing.assert_array_equal(out[0, 0], 2.0 * weight[0, 0] + 0.5)


@pytest.mark.parametrize(("volume", "layer", "phrases"), [
    ("4x4x2", "UPSAMPLE(2, align_corners=true)", ("align_corners", "mode: bilinear")),
    ("4x4x2", "DECONV(3, 3, stride=2, output_padding=2)",
     ("output_padding width 2", "use output_padding 1 or less")),
    ("2x2x2", "DECONV(3, 2, pad=2)", ("is below 1", "use pad 1 or less")),
    ("4x4x6", "DECONV(4, 3, groups=4)", ("input depth 6 is not divisible by groups 4",)),
    ("4x4x6", "DECONV(4, 3, groups=3)", ("filters 4 is not divisible by groups 3",)),
])
def test_bad_settings_get_a_located_error_with_a_fix(volume, layer, phrases):
    with pytest.raises(ShapeError) as caught:
        only_layer(volume, layer)
    message = f"{caught.value} {caught.value.hint}"
    assert caught.value.hint
    for phrase in phrases:
        assert phrase in message, message


# A U-Net in miniature: conv down, deconv and bilinear upsampling back up, the skip
# concatenated, a per-pixel 1x1 head. Its 8x8x3 output trains per pixel on masks
# (tests/test_segmentation.py); averaged to one score per class by a gap, it also trains a
# classification step through the deconv's and the upsampling's backward kernels.
TINY_UNET = """\
name: tiny-unet
input: 8x8x3
nodes:
  down1: {op: conv, filters: 4, size: 3, pad: 1, inputs: [input]}
  relu1: relu
  pool: {op: pool, size: 2}
  down2: {op: conv, filters: 8, size: 3, pad: 1}
  relu2: relu
  up: {op: deconv, filters: 4, size: 2, stride: 2}
  side: {op: upsample, factor: 2, mode: bilinear, inputs: [relu2]}
  skip: {op: concat, inputs: [up, relu1, side]}
  fuse: {op: conv, filters: 4, size: 3, pad: 1}
  relu3: relu
  scores: {op: conv, filters: 3, size: 1}
"""


def convgraph(tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convgraph.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)


@pytest.mark.slow  # CI's time: the tiny U-Net's training step stays in the default tier
def test_tiny_unet_verifies_every_kernel_on_the_device(tmp_path):
    spec = tmp_path / "unet.yaml"
    spec.write_text(TINY_UNET)
    done = convgraph(tmp_path, "run", spec, "--verify", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    checked = {check["layer"]: check for check in report["checks"]}
    assert checked["up"]["op"] == "deconv" and checked["side"]["op"] == "upsample"
    assert report["failed"] == 0 and all(check["passed"] for check in checked.values())
    assert report["passed"] == len(checked) >= 8
    assert {"d up", "d side", "d scores.weight"} <= set(checked)  # the per-pixel training step


def test_tiny_unet_per_pixel_output_needs_masks_not_class_labels(tmp_path):
    spec = tmp_path / "unet.yaml"
    spec.write_text(TINY_UNET)
    done = convgraph(tmp_path, "run", spec, "--limit", 16, "--epochs", 1)
    assert done.returncode == 5 and "Traceback" not in done.stderr
    assert "holds one label per image" in done.stderr and "8x8x3" in done.stderr
    assert "needs (N, height, width) masks" in done.stderr and "Fix:" in done.stderr


def test_tiny_unet_with_a_gap_trains_a_step_through_deconv_and_upsample(tmp_path):
    spec = tmp_path / "unet.yaml"
    spec.write_text(TINY_UNET.replace("name: tiny-unet", "name: tiny-unet-gap")
                    + "  classes: gap\n")
    done = convgraph(tmp_path, "run", spec, "--limit", 32, "--epochs", 1)
    assert done.returncode == 0, done.stderr
    loss = float(re.search(r"train loss (\S+),", done.stdout).group(1))
    assert np.isfinite(loss) and loss > 0


def test_deconv_kernels_are_tuning_sites_of_their_own():
    """The conv kernels a deconv runs are timed for the deconv's shapes by `convgraph tune`:
    its forward in inference, and forward, input and weight gradients in training."""
    graph = analyse({"input": "7x5x3", "nodes": {  # a conv first: the deconv's input gradient
        "down": {"op": "conv", "filters": 8, "size": 1, "inputs": ["input"]},
        "up": {"op": "deconv", "filters": 6, "size": 3, "stride": 2, "pad": 1,
               "output_padding": 1},
        "pool": "gap", "fc": {"op": "fc", "units": 3}}})
    inference = {site.selector for site in plan_forward(graph, profiles.CPU).sites.values()
                 if site.node == "up"}
    assert inference == {"CONV_BACKWARD_DATA"}
    training = [site for site in plan_training(graph, profiles.CPU).sites.values()
                if site.node == "up"]
    assert {site.selector for site in training} == {
        "CONV_BACKWARD_DATA", "CONV_FORWARD", "CONV_BACKWARD_WEIGHTS"}
    assert all(len(site.space) > 1 for site in training)
