"""ONNX import of issue 14's ops and the patterns exporters write for them: each built with
onnx.helper at the opsets it exists in (11, 13, 17 and onnx's newest, or from the opset that
introduced it), imported, run on the OpenCL device and compared with onnxruntime (1e-4
relative); the spec it becomes names convgraph's ops; every unsupported variant is refused in
one paragraph, with its name, op type, opset and why; and the export -> import round trip over
the activation, squeeze-and-excitation and encoder-decoder networks."""

from __future__ import annotations

import math

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import helper as h  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from convgraph.onnx.importer import OnnxImportError, import_onnx  # noqa: E402

from .test_onnx_import import (  # noqa: E402
    assert_runs_like_onnxruntime,
    ints,
    program,
    save,
    tensor,
)

NEWEST = onnx.defs.onnx_opset_version()
OPSETS = (11, 13, 17, NEWEST)
RESIZE_OPSETS = (11, 13, 18, 19, NEWEST)  # Resize's forms: 13 optional roi, 18 axes, 19 modes


def floats(name: str, values):
    return numpy_helper.from_array(np.asarray(values, np.float32), name)


def number(name: str, value: float):
    """A scalar Constant node, as torch.onnx writes the numbers of a formula."""
    return h.make_node("Constant", [], [name], name=f"const_{name}",
                       value=numpy_helper.from_array(np.asarray(value, np.float32), name))


def stem(depth: int = 4):
    """A 3x3 conv (pad 1) from x to 'c', so each op reads a computed volume."""
    return [h.make_node("Conv", ["x", "stem_w"], ["c"], name="stem", pads=[1, 1, 1, 1])], \
        [tensor("stem_w", depth, 3, 3, 3)]


def after_stem(*nodes, inits=(), input_shape=(3, 7, 6), output_shape=("?", "?", "?"),
               depth=4):
    """A model of the stem and ``nodes`` (reading 'c', writing 'y')."""
    def build(tmp_path, opset):
        first, weights = stem(depth)
        made = [node(opset) if callable(node) else node for node in nodes]
        flat = [n for item in made for n in (item if isinstance(item, list) else [item])]
        return save(tmp_path, first + flat, weights + [i(opset) if callable(i) else i
                                                        for i in inits],
                    input_shape, output_shape, opset)
    return build


# --------------------------------------------------------------------- the op models

def convtranspose(**attrs):
    groups = attrs.get("group", 1)
    kernel = attrs.get("kernel_shape", [3, 3])
    return after_stem(h.make_node("ConvTranspose", ["c", "tw", "tb"], ["y"], name="up",
                                  **attrs),
                      inits=[tensor("tw", 4, 6 // groups, *kernel), tensor("tb", 6)])


def resize(mode: str, factor=(2, 2), by: str = "scales", **attrs):
    def node(opset):
        roi = "roi" if opset < 13 else ""
        if by == "axes":  # opset 18: scales of the axes named only
            return h.make_node("Resize", ["c", "", "hw_scales"], ["y"], name="resize",
                               mode=mode, axes=[2, 3], **attrs)
        if by == "scales":
            return h.make_node("Resize", ["c", roi, "scales"], ["y"], name="resize", mode=mode,
                               **attrs)
        return h.make_node("Resize", ["c", roi, "roi" if opset < 13 else "", "sizes"], ["y"],
                           name="resize", mode=mode, **attrs)  # opset 11: empty scales
    inits = [floats("roi", []), floats("scales", [1, 1, *factor]), floats("hw_scales", factor),
             ints("sizes", [2, 4, 7 * factor[0], 6 * factor[1]])]
    return after_stem(node, inits=inits)


def clip(low, high, constants: bool = False):
    inputs = ["c", "low" if low is not None else "", "high" if high is not None else ""]
    while inputs[-1] == "":
        inputs.pop()
    nodes = [h.make_node("Clip", inputs, ["y"], name="clip")]
    inits = []
    for name, value in (("low", low), ("high", high)):
        if value is not None:
            if constants:
                nodes.insert(0, number(name, value))
            else:
                inits.append(floats(name, value))
    return after_stem(*nodes, inits=inits)


def unary(op_type: str, **attrs):
    return after_stem(h.make_node(op_type, ["c"], ["y"], name="act", **attrs))


def erf_gelu(order: str):
    """x * 0.5 * (1 + Erf(x / sqrt(2))) in the orders exporters write it."""
    if order == "torch":  # torch.onnx: Div, Erf, Add, Mul by x, Mul by 0.5
        nodes = [number("sqrt2", math.sqrt(2.0)), number("one", 1.0), number("half", 0.5),
                 h.make_node("Div", ["c", "sqrt2"], ["d"], name="gelu/Div"),
                 h.make_node("Erf", ["d"], ["e"], name="gelu/Erf"),
                 h.make_node("Add", ["e", "one"], ["a"], name="gelu/Add"),
                 h.make_node("Mul", ["c", "a"], ["m"], name="gelu/Mul"),
                 h.make_node("Mul", ["m", "half"], ["y"], name="gelu/Mul_1")]
    else:  # the half first, a product by 1/sqrt(2), constants on the left
        nodes = [number("rsqrt2", 1 / math.sqrt(2.0)), number("one", 1.0),
                 number("half", 0.5),
                 h.make_node("Mul", ["half", "c"], ["hx"], name="g1"),
                 h.make_node("Mul", ["rsqrt2", "c"], ["d"], name="g2"),
                 h.make_node("Erf", ["d"], ["e"], name="g3"),
                 h.make_node("Add", ["one", "e"], ["a"], name="g4"),
                 h.make_node("Mul", ["a", "hx"], ["y"], name="g5")]
    return after_stem(*nodes)


def tanh_gelu(order: str):
    """0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 x^3)))."""
    k = math.sqrt(2.0 / math.pi)
    if order == "torch":  # Pow 3, as torch.onnx writes approximate='tanh'
        cube = [number("three", 3.0), h.make_node("Pow", ["c", "three"], ["x3"], name="t/Pow")]
    else:  # x * x * x
        cube = [h.make_node("Mul", ["c", "c"], ["x2"], name="t/Mul_sq"),
                h.make_node("Mul", ["x2", "c"], ["x3"], name="t/Mul_cube")]
    nodes = [*cube, number("coef", 0.044715), number("k", k), number("one", 1.0),
             number("half", 0.5),
             h.make_node("Mul", ["x3", "coef"], ["cx3"], name="t/Mul_c"),
             h.make_node("Add", ["c", "cx3"], ["inner"], name="t/Add"),
             h.make_node("Mul", ["k", "inner"], ["scaled"], name="t/Mul_k"),
             h.make_node("Tanh", ["scaled"], ["th"], name="t/Tanh"),
             h.make_node("Add", ["th", "one"], ["a"], name="t/Add_1"),
             h.make_node("Mul", ["c", "half"], ["hx"], name="t/Mul_half"),
             h.make_node("Mul", ["hx", "a"], ["y"], name="t/Mul_out")]
    return after_stem(*nodes)


def hardswish_pattern(form: str):
    if form == "hardsigmoid":  # older exporters: x * HardSigmoid(x), alpha 1/6
        nodes = [h.make_node("HardSigmoid", ["c"], ["g"], name="hs/HardSigmoid",
                             alpha=1 / 6, beta=0.5),
                 h.make_node("Mul", ["c", "g"], ["y"], name="hs/Mul")]
    else:  # x * relu6(x + 3) / 6, as Keras' MobileNetV3 writes it
        nodes = [number("three", 3.0), number("zero", 0.0), number("six", 6.0),
                 h.make_node("Add", ["c", "three"], ["a"], name="hs/Add"),
                 h.make_node("Clip", ["a", "zero", "six"], ["r"], name="hs/Clip"),
                 h.make_node("Mul", ["r", "c"], ["m"], name="hs/Mul"),
                 h.make_node("Div", ["m", "six"], ["y"], name="hs/Div")]
    return after_stem(*nodes)


def silu_pattern():
    return after_stem(h.make_node("Sigmoid", ["c"], ["s"], name="silu/Sigmoid"),
                      h.make_node("Mul", ["c", "s"], ["y"], name="silu/Mul"))


def mul_model(form: str):
    if form == "volumes":  # two branches of one shape
        return after_stem(h.make_node("Relu", ["c"], ["r"], name="relu"),
                          h.make_node("Mul", ["r", "c"], ["y"], name="mul"))
    if form == "se-gate":  # squeeze-and-excitation: x * sigmoid(conv(relu(conv(gap(x)))))
        return after_stem(
            h.make_node("GlobalAveragePool", ["c"], ["g"], name="se/pool"),
            h.make_node("Conv", ["g", "w1", "b1"], ["s1"], name="se/reduce"),
            h.make_node("Relu", ["s1"], ["r1"], name="se/relu"),
            h.make_node("Conv", ["r1", "w2", "b2"], ["s2"], name="se/expand"),
            h.make_node("Sigmoid", ["s2"], ["gate"], name="se/gate"),
            h.make_node("Mul", ["gate", "c"], ["y"], name="se/scale"),
            inits=[tensor("w1", 2, 4, 1, 1), tensor("b1", 2), tensor("w2", 4, 2, 1, 1),
                   tensor("b2", 4)])
    if form == "per-channel":  # layer scale: (1, C, 1, 1) and (C, 1, 1) factors
        return after_stem(h.make_node("Mul", ["c", "gamma"], ["m"], name="gamma"),
                          h.make_node("Mul", ["beta", "m"], ["y"], name="beta"),
                          inits=[tensor("gamma", 1, 4, 1, 1), tensor("beta", 4, 1, 1)])
    # one Constant number feeding two Muls: each its own scale, sharing the value
    return after_stem(number("k", 0.5),
                      h.make_node("Mul", ["c", "k"], ["m"], name="first"),
                      h.make_node("Relu", ["m"], ["r"], name="relu"),
                      h.make_node("Mul", ["r", "k"], ["y"], name="second"))


def reduce_mean(keepdims: int = 1):
    def node(opset):
        if opset >= 18:
            return h.make_node("ReduceMean", ["c", "axes"], ["y"], name="mean",
                               keepdims=keepdims)
        return h.make_node("ReduceMean", ["c"], ["y"], name="mean", axes=[2, 3],
                           keepdims=keepdims)
    return after_stem(node, inits=[ints("axes", [2, 3])])


def layernorm_channels_last(opset_form: str):
    """Transpose to NHWC, LayerNormalization axis -1 (or its decomposition over axis -1 before
    opset 17), Transpose back: ConvNeXt's channels-last norm."""
    def nodes(opset):
        into = h.make_node("Transpose", ["c"], ["t"], name="ln/Transpose", perm=[0, 2, 3, 1])
        back = h.make_node("Transpose", ["n"], ["y"], name="ln/Transpose_1", perm=[0, 3, 1, 2])
        if opset_form == "node" and opset >= 17:
            norm = [h.make_node("LayerNormalization", ["t", "lw", "lb"], ["n"], name="ln/norm",
                                axis=-1, epsilon=1e-6)]
        else:
            norm = decomposed("t", "n", -1, opset, prefix="ln")
        return [into, *norm, back]
    return after_stem(nodes, inits=[tensor("lw", 4), tensor("lb", 4)], depth=4)


def decomposed(source: str, out: str, axis: int, opset: int, prefix: str, weights=("lw", "lb"),
               weight_first: bool = False):
    """(x - mean) / sqrt(var + eps) * w + b over ``axis``, as torch.onnx decomposes it."""
    def mean(of, to, name):
        if opset >= 18:
            return h.make_node("ReduceMean", [of, f"{prefix}_axes"], [to], name=name)
        return h.make_node("ReduceMean", [of], [to], name=name, axes=[axis])
    scaled = ["lw_", "normed"] if weight_first else ["normed", "lw_"]
    return [h.make_node("Constant", [], [f"{prefix}_axes"], name=f"{prefix}/axes",
                        value=numpy_helper.from_array(np.asarray([axis], np.int64))),
            number(f"{prefix}_two", 2.0), number(f"{prefix}_eps", 1e-6),
            mean(source, "mu", f"{prefix}/ReduceMean"),
            h.make_node("Sub", [source, "mu"], ["centred"], name=f"{prefix}/Sub"),
            h.make_node("Pow", ["centred", f"{prefix}_two"], ["sq"], name=f"{prefix}/Pow"),
            mean("sq", "var", f"{prefix}/ReduceMean_1"),
            h.make_node("Add", ["var", f"{prefix}_eps"], ["ve"], name=f"{prefix}/Add"),
            h.make_node("Sqrt", ["ve"], ["sd"], name=f"{prefix}/Sqrt"),
            h.make_node("Div", ["centred", "sd"], ["normed"], name=f"{prefix}/Div"),
            h.make_node("Identity", [weights[0]], ["lw_"], name=f"{prefix}/w"),
            h.make_node("Mul", scaled, ["sc"], name=f"{prefix}/Mul"),
            h.make_node("Add", ["sc", weights[1]], [out], name=f"{prefix}/Add_1")]


def channels_last_block():
    """ConvNeXt's official block between its Transposes: LayerNormalization, Linear layers
    (MatMul by a (C, K) constant, Add of a (K,) bias), GELU and the (C,) layer scale, all on
    NHWC values."""
    def nodes(opset):
        norm = [h.make_node("LayerNormalization", ["t", "lw", "lb"], ["n"], name="blk/norm",
                            axis=-1, epsilon=1e-6)] if opset >= 17 else \
            decomposed("t", "n", -1, opset, prefix="blk")
        return [h.make_node("Transpose", ["c"], ["t"], name="blk/Transpose", perm=[0, 2, 3, 1]),
                *norm,
                h.make_node("MatMul", ["n", "w1"], ["m1"], name="blk/pwconv1/MatMul"),
                h.make_node("Add", ["m1", "b1"], ["a1"], name="blk/pwconv1/Add"),
                h.make_node("Relu", ["a1"], ["r"], name="blk/act"),
                h.make_node("MatMul", ["r", "w2"], ["m2"], name="blk/pwconv2/MatMul"),
                h.make_node("Add", ["b2", "m2"], ["a2"], name="blk/pwconv2/Add"),
                h.make_node("Mul", ["gamma", "a2"], ["g"], name="blk/gamma"),
                h.make_node("Transpose", ["g"], ["back"], name="blk/Transpose_1",
                            perm=[0, 3, 1, 2]),
                h.make_node("Add", ["c", "back"], ["y"], name="blk/residual")]
    return after_stem(nodes, inits=[tensor("lw", 4), tensor("lb", 4), tensor("w1", 4, 12),
                                    tensor("b1", 12), tensor("w2", 12, 4), tensor("b2", 4),
                                    tensor("gamma", 4)])


def convnext_head(form: str):
    """ConvNeXt's head: the mean over space (keepdims 0), LayerNormalization over the (N, C)
    channels (or its decomposition), a classifier."""
    def nodes(opset):
        mean = h.make_node("ReduceMean", ["c", "hw"], ["g"], name="head/mean", keepdims=0) \
            if opset >= 18 else h.make_node("ReduceMean", ["c"], ["g"], name="head/mean",
                                            axes=[2, 3], keepdims=0)
        norm = [h.make_node("LayerNormalization", ["g", "lw", "lb"], ["n"], name="head/norm",
                            epsilon=1e-6)] if form == "node" and opset >= 17 else \
            decomposed("g", "n", -1, opset, prefix="head")
        return [mean, *norm, h.make_node("Gemm", ["n", "fw", "fb"], ["y"], name="head/fc",
                                         transB=1)]
    return after_stem(nodes, inits=[ints("hw", [2, 3]), tensor("lw", 4), tensor("lb", 4),
                                    tensor("fw", 5, 4), tensor("fb", 5)], output_shape=(5,))


def layernorm_channels_first():
    """ConvNeXt's channels-first LayerNorm: the decomposition over axis 1, weight[:, None,
    None] * x + bias[:, None, None]."""
    return after_stem(lambda opset: decomposed("c", "y", 1, opset, prefix="cf",
                                               weight_first=True),
                      inits=[tensor("lw", 4, 1, 1), tensor("lb", 4, 1, 1)])


def pad_layer(reader: str):
    """A zero Pad no reader can take as its padding: a pad layer of its own."""
    if reader == "maxpool":
        return after_stem(h.make_node("Pad", ["c", "pads"], ["p"], name="pad"),
                          h.make_node("MaxPool", ["p"], ["y"], name="pool",
                                      kernel_shape=[2, 2], strides=[2, 2]),
                          inits=[ints("pads", [0, 0, 1, 0, 0, 0, 0, 1])])
    return after_stem(h.make_node("Pad", ["c", "pads"], ["p"], name="pad"),
                      h.make_node("Conv", ["x", "w2"], ["wide"], name="wide", pads=[2, 2, 2, 2]),
                      h.make_node("Add", ["p", "wide"], ["y"], name="join"),
                      inits=[ints("pads", [0, 0, 1, 1, 0, 0, 1, 1]), tensor("w2", 4, 3, 3, 3)])


# (builder, the convgraph ops the spec must name, the first opset the ONNX op exists in)
OP_MODELS = {
    "convtranspose-stride2-output-padding": (convtranspose(
        strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]), ["deconv"], 11),
    "convtranspose-asymmetric-pads": (convtranspose(
        strides=[2, 2], pads=[1, 0, 0, 0], kernel_shape=[3, 2]), ["deconv"], 11),
    "convtranspose-groups-dilation": (convtranspose(group=2, dilations=[2, 1]), ["deconv"], 11),
    "convtranspose-output-shape": (convtranspose(strides=[2, 2], output_shape=[14, 12]),
                                   ["deconv"], 11),
    "convtranspose-same-lower": (convtranspose(strides=[2, 2], auto_pad="SAME_LOWER"),
                                 ["deconv"], 11),
    "convtranspose-same-upper-even": (convtranspose(strides=[2, 2], auto_pad="SAME_UPPER",
                                                    kernel_shape=[4, 4]), ["deconv"], 11),
    "resize-nearest-asymmetric-floor": (resize(
        "nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        ["upsample"], 11),
    "resize-nearest-defaults-3x2": (resize("nearest", factor=(3, 2)), ["upsample"], 11),
    "resize-nearest-tf-half-pixel": (resize(
        "nearest", coordinate_transformation_mode="tf_half_pixel_for_nn", nearest_mode="floor"),
        ["upsample"], 11),
    "resize-linear-half-pixel-sizes": (resize("linear", by="sizes"), ["upsample"], 11),
    "resize-linear-pytorch-half-pixel": (resize(
        "linear", factor=(2, 3), coordinate_transformation_mode="pytorch_half_pixel"),
        ["upsample"], 11),
    "resize-linear-align-corners": (resize(
        "linear", coordinate_transformation_mode="align_corners"), ["upsample"], 11),
    "resize-linear-axes": (resize("linear", by="axes"), ["upsample"], 18),
    "resize-linear-half-pixel-symmetric": (resize(
        "linear", factor=(3, 2), coordinate_transformation_mode="half_pixel_symmetric"),
        ["upsample"], 19),
    "resize-nearest-antialias-0-stretch": (resize(
        "nearest", antialias=0, keep_aspect_ratio_policy="stretch"), ["upsample"], 18),
    "lrn": (unary("LRN", size=3, alpha=0.3, beta=0.6, bias=1.5), ["lrn"], 11),
    "clip-0-6-relu6": (clip(0.0, 6.0), ["relu6"], 11),
    "clip-constants": (clip(-0.5, 1.5, constants=True), ["clip"], 11),
    "clip-min-only-relu": (clip(0.0, None), ["relu"], 11),
    "clip-max-only": (clip(None, 0.5), ["clip"], 11),
    "clip-0-to-infinity-relu": (clip(0.0, float("inf")), ["relu"], 11),
    "hardsigmoid": (unary("HardSigmoid", alpha=0.3, beta=0.4), ["hardsigmoid"], 11),
    "hardswish": (unary("HardSwish"), ["hardswish"], 14),
    "hardswish-hardsigmoid-mul": (hardswish_pattern("hardsigmoid"), ["hardswish"], 11),
    "hardswish-add-clip-mul-div": (hardswish_pattern("clip"), ["hardswish"], 11),
    "elu": (unary("Elu", alpha=0.7), ["elu"], 11),
    "gelu": (unary("Gelu"), ["gelu"], 20),
    "gelu-tanh": (unary("Gelu", approximate="tanh"), ["gelu"], 20),
    "gelu-erf-torch-order": (erf_gelu("torch"), ["gelu"], 11),
    "gelu-erf-other-order": (erf_gelu("other"), ["gelu"], 11),
    "gelu-tanh-torch-order": (tanh_gelu("torch"), ["gelu"], 11),
    "gelu-tanh-cubed-by-mul": (tanh_gelu("mul"), ["gelu"], 11),
    "silu-sigmoid-mul": (silu_pattern(), ["silu"], 11),
    "mul-volumes": (mul_model("volumes"), ["relu", "mul"], 11),
    "mul-se-gate": (mul_model("se-gate"), ["gap", "conv", "relu", "conv", "sigmoid", "mul"],
                    11),
    "mul-per-channel-constant": (mul_model("per-channel"), ["scale", "scale"], 11),
    "mul-one-constant-twice": (mul_model("shared"), ["scale", "relu", "scale"], 11),
    "div-by-number": (after_stem(number("six", 6.0),
                                 h.make_node("Div", ["c", "six"], ["y"], name="div")),
                      ["scale"], 11),
    "div-per-channel": (after_stem(h.make_node("Div", ["c", "std"], ["y"], name="div"),
                                   inits=[tensor("std", 1, 4, 1, 1, positive=True)]),
                        ["scale"], 11),
    "mul-scores-per-class": (after_stem(
        h.make_node("GlobalAveragePool", ["c"], ["g"], name="gap"),
        h.make_node("Flatten", ["g"], ["f"], name="flatten"),
        h.make_node("Gemm", ["f", "fw"], ["z"], name="fc", transB=1),
        h.make_node("Mul", ["z", "temperature"], ["y"], name="temperature"),
        inits=[tensor("fw", 5, 4), tensor("temperature", 5)], output_shape=(5,)),
        ["gap", "flatten", "fc", "scale"], 11),
    "globalmaxpool": (unary("GlobalMaxPool"), ["globalmaxpool"], 11),
    "reducemean-keepdims": (reduce_mean(1), ["gap"], 11),
    "layernorm-channels-last": (layernorm_channels_last("node"), ["layernorm"], 11),
    "layernorm-channels-last-decomposed": (layernorm_channels_last("decomposed"), ["layernorm"],
                                           11),
    "layernorm-channels-first-decomposed": (layernorm_channels_first(), ["layernorm"], 11),
    "channels-last-block": (channels_last_block(), ["layernorm", "conv", "relu", "conv",
                                                    "scale", "add"], 11),
    "convnext-head": (convnext_head("node"), ["gap", "layernorm", "fc"], 11),
    "convnext-head-decomposed": (convnext_head("decomposed"), ["gap", "layernorm", "fc"], 11),
    "pad-before-maxpool": (pad_layer("maxpool"), ["pad", "pool"], 11),
    "pad-before-add": (pad_layer("add"), ["conv", "pad", "add"], 11),
}


def _opset_params():
    """Every case at each opset it exists in; the default tier runs each at one of them, in
    turn (so every opset is met there), the slow tier at all."""
    params = []
    for index, (case, (_, _, first)) in enumerate(OP_MODELS.items()):
        opsets = sorted({max(opset, first) for opset in
                         (RESIZE_OPSETS if case.startswith("resize") else OPSETS)})
        default = opsets[index % len(opsets)]
        params += [pytest.param(case, opset, id=f"{case}-{opset}",
                                marks=[] if opset == default else [pytest.mark.slow])
                   for opset in opsets]
    return params


@pytest.mark.parametrize(("case", "opset"), _opset_params())
def test_each_new_op_and_pattern_runs_like_onnxruntime(case, opset, tmp_path, cl_device):
    """Against onnxruntime on the device; the spec names convgraph's ops, in order."""
    build, ops, _ = OP_MODELS[case]
    imported = assert_runs_like_onnxruntime(build(tmp_path, opset), cl_device)
    assert [node["op"] for node in imported.spec["nodes"].values()] == ["conv", *ops]


def test_a_pattern_is_named_by_what_its_nodes_names_share(tmp_path):
    """'gelu/Div', 'gelu/Erf', ... become one node 'gelu'; the epsilon of a LayerNormalization
    reads as written (1e-06 is convgraph's default, so left out); a chain without shared
    names is named by the ONNX op it computes."""
    for build, name in ((erf_gelu("torch"), "gelu"), (layernorm_channels_last("node"), "ln"),
                        (erf_gelu("other"), "g")):
        imported = import_onnx(build(tmp_path, 17))
        assert list(imported.spec["nodes"]) == ["stem", name]
        assert imported.spec_text().splitlines()[-1] == (
            f"  {name}: {{op: {imported.spec['nodes'][name]['op']}, inputs: [stem]}}")
    nodes = [h.make_node("Sigmoid", ["c"], ["s"], name="a"),
             h.make_node("Mul", ["s", "c"], ["y"], name="b")]
    imported = import_onnx(after_stem(*nodes)(tmp_path, 13))
    assert list(imported.spec["nodes"]) == ["stem", "Swish"]


def test_swish_of_opset_24_is_silu(tmp_path, cl_device):
    """onnxruntime has no Swish kernel yet: onnx's reference evaluator is the judge."""
    from onnx.reference import ReferenceEvaluator

    import convgraph

    path = unary("Swish")(tmp_path, max(24, NEWEST))
    imported = import_onnx(path)
    assert [node["op"] for node in imported.spec["nodes"].values()] == ["conv", "silu"]
    model = convgraph.compile(imported.spec, device=cl_device, batch=2)
    model.set_params(imported.weights)
    x = np.random.default_rng(5).standard_normal((2, 3, 7, 6)).astype(np.float32)
    want = ReferenceEvaluator(str(path)).run(None, {"x": x})[0]
    np.testing.assert_allclose(model.forward(x), want, rtol=1e-4,
                               atol=1e-4 * float(np.abs(want).max()))


# ---------------------------------------------------------------- what is refused, and why

def test_every_unsupported_variant_is_refused_at_once_with_why(tmp_path):
    """Each variant reads the stem on its own branch; all are reported in one paragraph (and
    through the command line, exit status 2), each with its name, op type, opset and why."""
    refused = {
        "cubic": (h.make_node("Resize", ["c", "", "two"], ["r1"], name="cubic", mode="cubic"),
                  "mode 'cubic'"),
        "corners": (h.make_node("Resize", ["c", "", "three"], ["r2"], name="corners",
                                coordinate_transformation_mode="align_corners"),
                    "nearest with align_corners/round_prefer_floor reads other pixels"),
        "asymmetric": (h.make_node("Resize", ["c", "", "two"], ["r3"], name="asymmetric",
                                   mode="linear", coordinate_transformation_mode="asymmetric"),
                       "linear with asymmetric reads other pixels"),
        "fraction": (h.make_node("Resize", ["c", "", "half_again"], ["r4"], name="fraction"),
                     "7 to 10 is no whole factor"),
        "even_lrn": (h.make_node("LRN", ["c"], ["l"], name="even_lrn", size=4), "size 4"),
        "lone_ln": (h.make_node("LayerNormalization", ["c", "lw"], ["n"], name="lone_ln"),
                    "convgraph normalises each pixel over its channels"),
        "plane": (h.make_node("Mul", ["c", "plane_k"], ["m"], name="plane"),
                  "its constant 'plane_k' of shape [1, 1, 7, 6]"),
        "crop_after": (h.make_node("ConvTranspose", ["c", "tw"], ["t"], name="crop_after",
                                   strides=[2, 2], pads=[0, 0, 1, 1]),
                       "pads 0 before and 1 after along H"),
        "elu": (h.make_node("Elu", ["c"], ["e"], name="elu", alpha=-1.0), "alpha -1"),
        "depth_mean": (h.make_node("ReduceMean", ["c", "axis1"], ["dm"], name="depth_mean"),
                       "axes [1]"),
        "reflect": (h.make_node("Pad", ["c", "pads"], ["p"], name="reflect", mode="reflect"),
                    "mode 'reflect'"),
        "swish2": (h.make_node("Swish", ["c"], ["s"], name="swish2", alpha=2.0), "alpha 2"),
        "ratio": (h.make_node("Div", ["c", "c"], ["q"], name="ratio"),
                  "convgraph divides a volume by constants only"),
    }
    first, weights = stem()
    readers = [h.make_node("Relu", [node.output[0]], [f"{name}_read"], name=f"{name}_read")
               for name, (node, _) in refused.items()]  # not reported: their cause is
    nodes = [*first, *(node for node, _ in refused.values()), *readers,
             h.make_node("Relu", ["c"], ["y"], name="fine")]
    inits = [*weights, floats("two", [1, 1, 2, 2]), floats("three", [1, 1, 3, 3]),
             floats("half_again", [1, 1, 1.5, 1.5]),
             tensor("lw", 6), tensor("plane_k", 1, 1, 7, 6), tensor("tw", 4, 2, 3, 3),
             ints("axis1", [1]), ints("pads", [0, 0, 1, 1, 0, 0, 1, 1])]
    path = save(tmp_path, nodes, inits, (3, 7, 6), (4, 7, 6), NEWEST)
    with pytest.raises(OnnxImportError) as caught:
        import_onnx(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {len(refused)} nodes convgraph cannot import: ")
    for name, (node, why) in refused.items():
        assert f"'{name}' ({node.op_type}, opset {NEWEST}): " in message, name
        assert why in message, why
    done = program("import", path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert f"{len(refused)} nodes convgraph cannot import" in done.stderr


def test_the_old_upsample_op_is_refused_by_onnx_itself_with_the_node_named(tmp_path):
    """ONNX deprecated Upsample at opset 10; its checker refuses it at the opsets convgraph
    imports, and the error names the node."""
    first, weights = stem()
    path = save(tmp_path, [*first, h.make_node("Upsample", ["c", "s"], ["y"], name="old_up")],
                [*weights, floats("s", [1, 1, 2, 2])], (3, 7, 6), (4, 14, 12), 11)
    with pytest.raises(OnnxImportError, match="Upsample is deprecated .* old_up|old_up.*Upsample"):
        import_onnx(path)


# ------------------------------------------------------------ export, then import again

ROUND_TRIPS = {
    "activations": ("activations.yaml", {"relu6", "elu", "hardswish", "silu", "hardsigmoid",
                                         "gelu", "clip"}),
    "se_block": ("se_block.yaml", {"mul", "scale", "globalmaxpool", "sigmoid"}),
    "encoder_decoder": (None, {"deconv", "upsample", "concat"}),
}


@pytest.mark.parametrize("network", ROUND_TRIPS)
@pytest.mark.parametrize("opset", [13, 17])
def test_export_then_import_gives_the_same_network_and_outputs(network, opset, tmp_path):
    """The issue 14 networks exported and imported again compute the same (float64 reference,
    1e-6), with the ops their exports decompose (hardswish, silu, gelu, layer scale) read
    back as themselves; the se_block's explicit pad becomes the padding of the conv it
    feeds."""
    from convgraph.onnx.export import export_graph
    from convgraph.ops.deconv import TINY_UNET
    from convgraph.pipeline import analyse
    from convgraph.reference import reference_forward

    from .conftest import SPECS
    from .test_onnx_export import input_batch, random_params, relative_error

    file, expected_ops = ROUND_TRIPS[network]
    spec = SPECS.parent / "tests" / "specs" / file if file else {
        "name": "tiny_unet", "input": "8x6x3", "nodes": TINY_UNET}
    graph = analyse(spec)
    params = random_params(graph)
    export_graph(graph, params, tmp_path / "m.onnx", opset=opset)
    imported = import_onnx(tmp_path / "m.onnx")
    again = analyse(imported.spec)
    ops = {node["op"] for node in imported.spec["nodes"].values()}
    assert expected_ops <= ops
    assert ops <= {graph.nodes[n]["op"] for n in graph.nodes} | {"flatten"}
    x = input_batch(graph, images=2)
    assert relative_error(reference_forward(again, imported.weights, x),
                          reference_forward(graph, params, x)) <= 1e-6


def test_a_damaged_constant_node_is_one_paragraph_naming_it(tmp_path):
    """A Constant's tensor of an element type ONNX does not know (a byte changed in copying):
    exit status 2 and the node's name, not a KeyError from numpy_helper."""
    first, weights = stem()
    scale = number("k", 0.5)
    scale.attribute[0].t.data_type = 99
    path = save(tmp_path, [*first, scale, h.make_node("Mul", ["c", "k"], ["y"], name="m")],
                weights, (3, 7, 6), (4, 7, 6), 13)
    done = program("import", path)
    assert done.returncode == 2, done.stderr
    assert "Constant node 'const_k' cannot be read" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
