"""Elementwise activations and softmax: the output volume equals the input volume."""

from __future__ import annotations

import math

import numpy as np

from convgraph.ops import values as v
from convgraph.ops.base import OnnxLayer, OnnxUnsupported, Op, Param, register
from convgraph.ops.cases import Case


class Elementwise(Op):
    """An activation: elementwise.cl's ACTIVATION_FORWARD/_BACKWARD with its ``activation_code``
    (which also lets it run fused as the epilogue of a conv, fc or batchnorm before it)."""

    flops_per_element = 1
    kernels = ("elementwise",)
    onnx_op: str | None = None  # the ONNX operator computing it (onnx_attributes: its settings)
    # f never decreases (for every allowed setting), so max(f(a), f(b)) = f(max(a, b)): a max
    # pool folded into the conv before takes the max first and activates once; silu, gelu and
    # hardswish dip below 0, so there the conv activates every pixel before the max
    never_decreasing = False
    # its settings in the order the kernels take them, each (param, ONNX attribute, ONNX's
    # default): one reaches the kernels as a float, two as SETTING_A and SETTING_B of one
    # float2 (common.cl); from_onnx, onnx_attributes and epilogue_args read them from here
    settings: tuple[tuple[str, str, float], ...] = ()

    def commutes_with_max(self, node) -> bool:
        return self.never_decreasing

    def epilogue_args(self, node):
        values = [float(node.attrs[param]) for param, _, _ in self.settings]
        if len(values) == 2:
            return self.activation_code, _settings(*values)
        return self.activation_code, values[0] if values else 0.0

    def onnx_attributes(self, node) -> dict:
        return {attribute: float(node.attrs[param]) for param, attribute, _ in self.settings}

    def onnx_export(self, node, onnx):
        if self.onnx_op is None:
            super().onnx_export(node, onnx)
            return
        onnx.add(self.onnx_op, onnx.inputs, output=onnx.output, **self.onnx_attributes(node))

    def infer(self, node):
        return node.input_volumes[0], {}

    def from_onnx(self, node):
        return OnnxLayer({param: float(node.attr(attribute, default))
                          for param, attribute, default in self.settings})

    def flops(self, node):
        return self.flops_per_element * node.output.elements

    def lower(self, ctx) -> None:
        code, slope = self.epilogue_args(ctx.node)
        ctx.pixel_launch(
            "elementwise",
            "ACTIVATION_FORWARD",
            {"X": ctx.input_layout(), "Y": ctx.output_layout},
            [ctx.input_tensor(), ctx.output_tensor],
            {"ACTIVATION": code, "SLOPE": slope},
            ctx.node.flops,
            shapes_at_run_time=True,
        )

    def reference(self, node, inputs, params):
        return self.function(np.asarray(inputs[0], np.float64), **node.attrs)

    def lower_backward(self, ctx) -> None:
        grad, accumulate = ctx.input_grad()
        code, slope = self.epilogue_args(ctx.node)
        defines = {"ACTIVATION": code, "SLOPE": slope, "ACCUMULATE": accumulate}
        source = ctx.output_tensor
        if self.derivative_from == "input":
            defines["FROM_INPUT"] = 1
            source = ctx.input_tensor()
        ctx.pixel_launch(
            "elementwise",
            "ACTIVATION_BACKWARD",
            {"Y": ctx.output_layout, "X": ctx.input_layout()},
            [source, ctx.output_grad, grad],
            defines,
            shapes_at_run_time=True,
        )

    def reference_backward(self, node, inputs, output, grad, params, seed):
        at = inputs[0] if self.derivative_from == "input" else output
        return [grad * self.derivative(at, **node.attrs)], {}


def _clip_between(low: float, high: float) -> dict:
    """A graph-form case of clip (the pattern form writes no negative numbers)."""
    return {"clip": {"op": "clip", "min": low, "max": high, "inputs": ["input"]}}


def _settings(a: float, b: float) -> str:
    """Two settings as the one constant the ACTIVATE macros take (common.cl: SETTING_A/_B)."""
    return f"(float2)({float(a)!r}f, {float(b)!r}f)"


def _plain(class_name: str, summary: str, flops_per_element: int, function, derivative,
           cases: tuple[Case, ...]) -> type[Elementwise]:
    """The registered op class of an activation with no settings that never decreases, is
    differentiated from its output and is the ONNX operator of its class's name: its op name,
    ACT_* code and ONNX type follow from that name. ``function(x)``: the numpy forward;
    ``derivative(y)``: the slope from the output, as the kernels compute it."""
    name = class_name.lower()
    return register(type(class_name, (Elementwise,), {
        "__module__": __name__, "__qualname__": class_name, "__doc__": summary,
        "name": name, "summary": summary, "flops_per_element": flops_per_element,
        "activation_code": f"ACT_{name.upper()}", "never_decreasing": True,
        "onnx_op": class_name, "onnx_types": (class_name,), "cases": cases,
        "function": lambda self, x: function(x),
        "derivative": lambda self, y: derivative(y),
    }))


# relu, sigmoid and tanh differ only in these constants: one row each of _plain's arguments
# (cases: ops/cases.py, read by every harness through the registry)
Relu, Sigmoid, Tanh = (_plain(*row) for row in (
    ("Relu", "max(0, x).", 1, lambda x: np.maximum(x, 0.0),
     lambda y: (y > 0).astype(np.float64),
     (Case("8x6x5", "RELU", output="8x6x5", params=0, macs=0),
      Case("4x3x2", "RELU", grad=True, kinks=True),
      Case("13x9x17", "RELU", batch=7))),
    ("Sigmoid", "1 / (1 + exp(-x)).", 4, lambda x: 1.0 / (1.0 + np.exp(-x)),
     lambda y: y * (1.0 - y),
     (Case("8x6x5", "SIGMOID", output="8x6x5", params=0, macs=0),
      Case("4x3x2", "SIGMOID", grad=True),
      Case("7x3x20", "SIGMOID", batch=7))),
    ("Tanh", "tanh(x).", 4, np.tanh,
     lambda y: 1.0 - y * y,
     (Case("8x6x5", "TANH", output="8x6x5", params=0, macs=0),
      Case("4x3x2", "TANH", grad=True),
      Case("6x6x5", "TANH", batch=1),
      Case("9x4x1", "TANH", batch=7, other_profile=True))),
))


@register
class LeakyRelu(Elementwise):
    name = "leakyrelu"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        Case("8x6x5", "LEAKYRELU(0.1)", output="8x6x5", params=0, macs=0),
        Case("4x3x2", "LEAKYRELU(0.2)", grad=True, kinks=True),
        Case("5x5x3", "LEAKYRELU(0.2)", batch=1),
        Case("7x3x20", "LEAKYRELU", batch=7),
    )
    aliases = ("leaky_relu", "lrelu")
    summary = "x if x > 0 else slope * x."
    positional = ("slope",)
    onnx_types = ("LeakyRelu",)
    onnx_notes = "alpha from 0 to 1 becomes the slope"
    params = {"slope": Param(v.number(0.0, 1.0), default=0.01, doc="slope for x < 0")}
    settings = (("slope", "alpha", 0.01),)
    flops_per_element = 2
    activation_code = "ACT_LEAKY_RELU"
    never_decreasing = True
    onnx_op = "LeakyRelu"

    def commutes_with_max(self, node) -> bool:
        return node.attrs["slope"] >= 0  # (the schema allows 0 to 1 today)

    def function(self, x, slope):
        return np.where(x > 0, x, x * slope)

    def derivative(self, y, slope):
        return np.where(y > 0, 1.0, slope)


@register
class Clip(Elementwise):
    name = "clip"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        Case("8x6x5", "CLIP(1, 2)", output="8x6x5", params=0, macs=0),
        Case("4x3x2", _clip_between(-0.5, 0.75), grad=True, kinks=True, label="clip-both"),
        Case("13x9x17", _clip_between(-0.5, 0.5), batch=7, label="clip-both"),
        Case("9x5x3", "CONV(6, 3, pad=1)-CLIP(0.25, 1.5)", batch=1, other_profile=True),
    )
    summary = "min(max(x, min), max) (PyTorch's hardtanh, ONNX Clip)."
    aliases = ("hardtanh",)
    presets = {"hardtanh": {"min": -1.0, "max": 1.0}}  # PyTorch's defaults
    positional = ("min", "max")
    params = {
        "min": Param(v.number(-1e30, 1e30), doc="the lowest output", expects="a number"),
        "max": Param(v.number(-1e30, 1e30), doc="the highest output; above min",
                     expects="a number"),
    }
    flops_per_element = 2
    activation_code = "ACT_CLIP"
    never_decreasing = True
    onnx_types = ("Clip",)
    onnx_notes = ("min and max as constant inputs (either may be left out or infinite: -/+1e30); "
                  "Clip(0, 6) becomes `relu6`, Clip(0) `relu`")

    def from_onnx(self, node):
        low, high = (float(np.asarray(node.constant(i, what)).reshape(-1)[0])
                     if node.has_input(i) else None for i, what in ((1, "min"), (2, "max")))
        low, high = (None if v is not None and math.isinf(v) else v for v in (low, high))
        if (low, high) == (0.0, 6.0):
            return OnnxLayer({}, op="relu6")
        if low == 0.0 and high is None:
            return OnnxLayer({}, op="relu")
        low, high = -1e30 if low is None else low, 1e30 if high is None else high
        if not low < high:
            raise OnnxUnsupported(f"min {low:g} is not below max {high:g}")
        return OnnxLayer({"min": low, "max": high})

    def infer(self, node):
        low, high = self.bounds(node.attrs)
        if not low < high:
            raise node.error(f"clip needs min below max, got min={low:g} max={high:g}.",
                             attr="max", hint="give clip(min, max) with min < max, e.g. "
                                              "clip(0, 6).")
        return super().infer(node)

    def bounds(self, attrs) -> tuple[float, float]:
        return attrs["min"], attrs["max"]

    def kinks(self, node):
        return self.bounds(node.attrs)

    def onnx_export(self, node, onnx):  # ONNX Clip (opset 11 on) takes its bounds as inputs
        low, high = self.bounds(node.attrs)
        onnx.add("Clip", [onnx.inputs[0], onnx.constant("min", low), onnx.constant("max", high)],
                 output=onnx.output)

    def epilogue_args(self, node):
        return self.activation_code, _settings(*self.bounds(node.attrs))

    def function(self, x, **attrs):
        return np.clip(x, *self.bounds(attrs))

    def derivative(self, y, **attrs):
        low, high = self.bounds(attrs)
        return ((y > low) & (y < high)).astype(np.float64)


@register
class Relu6(Clip):
    name = "relu6"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        Case("8x6x5", "RELU6", output="8x6x5", params=0, macs=0),
        Case("4x3x2", "RELU6", grad=True, kinks=True),
        Case("7x3x20", "RELU6", batch=7),
        Case("1x1x20", "FC(33)-RELU6", batch=3),
    )
    summary = "min(max(x, 0), 6) (MobileNet)."
    aliases = ()
    presets = {}
    positional = ()
    params = {}
    onnx_types = ()  # ONNX's Clip(0, 6): clip's from_onnx hands it over

    def bounds(self, attrs):
        return 0.0, 6.0


@register
class HardSigmoid(Elementwise):
    name = "hardsigmoid"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        Case("8x6x5", "HARDSIGMOID", output="8x6x5", params=0, macs=0),
        Case("4x3x2", "HARDSIGMOID", grad=True, kinks=True),
        Case("4x3x2", "HARDSIGMOID(0.5, 0.25)", grad=True, kinks=True),
        Case("7x3x20", "HARDSIGMOID(0.2, 0.5)", batch=7),
        Case("9x5x3", "BATCHNORM-HARDSIGMOID", batch=1, other_profile=True),
    )
    aliases = ("hard_sigmoid",)
    summary = "min(max(alpha x + beta, 0), 1); the defaults are PyTorch's, relu6(x + 3) / 6."
    positional = ("alpha", "beta")
    params = {
        "alpha": Param(v.number(0.0, 1e30, exclusive_min=True), default=1.0 / 6.0,
                       doc="the slope (ONNX's default: 0.2)"),
        "beta": Param(v.number(-1e30, 1e30), default=0.5, doc="the offset"),
    }
    settings = (("alpha", "alpha", 0.2), ("beta", "beta", 0.5))
    flops_per_element = 3
    activation_code = "ACT_HARDSIGMOID"
    never_decreasing = True
    onnx_op = "HardSigmoid"
    onnx_types = ("HardSigmoid",)
    onnx_notes = "alpha (ONNX's default 0.2) and beta kept"

    def kinks(self, node):
        alpha, beta = node.attrs["alpha"], node.attrs["beta"]
        return (-beta / alpha, (1.0 - beta) / alpha)

    def function(self, x, alpha, beta):
        return np.clip(alpha * x + beta, 0.0, 1.0)

    def derivative(self, y, alpha, beta):
        return np.where((y > 0) & (y < 1), alpha, 0.0)


@register
class HardSwish(Elementwise):
    name = "hardswish"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        Case("8x6x5", "HARDSWISH", output="8x6x5", params=0, macs=0),
        Case("4x3x2", "HARDSWISH", grad=True, kinks=True),
        Case("7x3x20", "HARDSWISH", batch=7),
        Case("9x5x3", "CONV(6, 3, pad=1)-HARDSWISH", batch=1, other_profile=True),
    )
    aliases = ("hard_swish",)
    summary = "x relu6(x + 3) / 6 (MobileNetV3)."
    flops_per_element = 4
    activation_code = "ACT_HARDSWISH"
    derivative_from = "input"
    onnx_types = ("HardSwish",)
    onnx_notes = ("opset 14 on; before it the `x * HardSigmoid(x)` (alpha 1/6) and "
                  "`x * Clip(x + 3, 0, 6) / 6` patterns, in any order")

    def kinks(self, node):
        return (-3.0, 3.0)

    def onnx_export(self, node, onnx):  # x HardSigmoid(x): ONNX's HardSwish needs opset 14
        (x,) = onnx.inputs
        gate = onnx.add("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)
        onnx.add("Mul", [x, gate], output=onnx.output)

    def function(self, x):
        return x * np.clip(x / 6.0 + 0.5, 0.0, 1.0)

    def derivative(self, x):  # from the input: the output does not fix the slope
        return np.where(x < -3.0, 0.0, np.where(x > 3.0, 1.0, x / 3.0 + 0.5))


@register
class Silu(Elementwise):
    name = "silu"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        Case("8x6x5", "SILU", output="8x6x5", params=0, macs=0),
        Case("4x3x2", "SILU", grad=True),
        Case("7x3x20", "SWISH", batch=7),
        Case("6x6x5", "SILU", batch=1, other_profile=True),
        Case("1x1x20", "FC(33)-SILU", batch=17),
    )
    aliases = ("swish",)
    summary = "x sigmoid(x) (swish; EfficientNet)."
    flops_per_element = 5
    activation_code = "ACT_SILU"
    derivative_from = "input"
    onnx_types = ("Swish",)
    onnx_notes = "opset 24 on, alpha 1; before it `x * Sigmoid(x)`, as torch.onnx writes it"

    def from_onnx(self, node):
        if float(node.attr("alpha", 1.0)) != 1.0:
            raise OnnxUnsupported(f"alpha {node.attr('alpha'):g}: convgraph's silu is "
                                  "x sigmoid(x) (alpha 1)")
        return OnnxLayer({})

    def onnx_export(self, node, onnx):  # x Sigmoid(x), as torch.onnx writes it
        (x,) = onnx.inputs
        onnx.add("Mul", [x, onnx.add("Sigmoid", [x])], output=onnx.output)

    def function(self, x):
        return x / (1.0 + np.exp(-x))

    def derivative(self, x):
        s = 1.0 / (1.0 + np.exp(-x))
        return s * (1.0 + x * (1.0 - s))


@register
class Gelu(Elementwise):
    name = "gelu"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        Case("8x6x5", "GELU", output="8x6x5", params=0, macs=0),
        Case("4x3x2", "GELU", grad=True),
        Case("4x3x2", "GELU(tanh)", grad=True),
        Case("7x3x20", "GELU", batch=7),
        Case("7x3x20", "GELU(tanh)", batch=1, other_profile=True),
        Case("9x5x3", "BATCHNORM-GELU", batch=3),
    )
    summary = "x Phi(x), Phi the normal CDF (approximate=tanh: PyTorch's tanh form)."
    positional = ("approximate",)
    params = {"approximate": Param(v.choice("none", "tanh"), default="none",
                                   doc="none: the exact erf form; tanh: the tanh approximation")}
    flops_per_element = 8
    activation_code = "ACT_GELU"
    derivative_from = "input"
    onnx_types = ("Gelu",)
    onnx_notes = ("opset 20 on (approximate none or tanh); before it the erf pattern "
                  "`x * 0.5 * (1 + Erf(x / sqrt(2)))` and the tanh pattern "
                  "`0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 x^3)))`, in any order")

    def from_onnx(self, node):
        approximate = node.attr("approximate", "none")
        approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
        return OnnxLayer({"approximate": approximate})

    def epilogue_args(self, node):
        return ("ACT_GELU_TANH" if node.attrs["approximate"] == "tanh" else "ACT_GELU"), 0.0

    def onnx_export(self, node, onnx):
        """The Erf or Tanh pattern torch.onnx writes before opset 20 (which has Gelu)."""
        (x,) = onnx.inputs
        if node.attrs["approximate"] == "tanh":  # 0.5 x (1 + tanh(k (x + 0.044715 x^3)))
            cube = onnx.add("Mul", [onnx.add("Mul", [x, x]), x])
            inner = onnx.add("Add", [x, onnx.add("Mul", [cube, onnx.constant("c", 0.044715)])])
            curve = onnx.add("Tanh", [onnx.add("Mul", [inner, onnx.constant("k", _GELU_K)])])
        else:  # 0.5 x (1 + erf(x / sqrt 2))
            curve = onnx.add("Erf", [onnx.add("Div", [x, onnx.constant("sqrt2",
                                                                        math.sqrt(2.0))])])
        half = onnx.add("Mul", [x, onnx.constant("half", 0.5)])
        onnx.add("Mul", [half, onnx.add("Add", [curve, onnx.constant("one", 1.0)])],
                 output=onnx.output)

    def function(self, x, approximate):
        if approximate == "tanh":
            return 0.5 * x * (1.0 + np.tanh(_GELU_K * (x + 0.044715 * x**3)))
        return x * _normal_cdf(x)

    def derivative(self, x, approximate):
        if approximate == "tanh":
            t = np.tanh(_GELU_K * (x + 0.044715 * x**3))
            return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _GELU_K * (
                1.0 + 3 * 0.044715 * x * x)
        return _normal_cdf(x) + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


_GELU_K = math.sqrt(2.0 / math.pi)


def _normal_cdf(x):
    return 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))


_erf = np.vectorize(math.erf, otypes=[np.float64])  # numpy has no erf; math's is exact


@register
class Elu(Elementwise):
    name = "elu"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        Case("8x6x5", "ELU", output="8x6x5", params=0, macs=0),
        Case("4x3x2", "ELU(0.5)", grad=True, kinks=True),
        Case("7x3x20", "ELU", batch=7),
        Case("9x5x3", "CONV(6, 3, pad=1)-ELU(0.5)", batch=1, other_profile=True),
    )
    summary = "x if x > 0 else alpha (exp(x) - 1)."
    positional = ("alpha",)
    params = {"alpha": Param(v.number(0.0, 1e30, exclusive_min=True), default=1.0,
                             doc="the value approached as x -> -inf is -alpha")}
    settings = (("alpha", "alpha", 1.0),)
    flops_per_element = 4
    activation_code = "ACT_ELU"
    never_decreasing = True
    onnx_op = "Elu"
    onnx_types = ("Elu",)
    onnx_notes = "alpha above 0"

    def from_onnx(self, node):
        layer = super().from_onnx(node)
        if layer.attrs["alpha"] <= 0:
            raise OnnxUnsupported(f"alpha {layer.attrs['alpha']:g}: convgraph's elu needs "
                                  "alpha above 0")
        return layer

    def function(self, x, alpha):
        return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))

    def derivative(self, y, alpha):  # from the output: y + alpha = alpha exp(x) where x <= 0
        return np.where(y > 0, 1.0, y + alpha)


@register
class Softmax(Elementwise):
    name = "softmax"
    cases = (  # test cases (ops/cases.py), read by every harness through the registry
        Case("1x1x10", "SOFTMAX", output="1x1x10", params=0, macs=0),
        Case("3x2x5", "SOFTMAX", grad=True),
        Case("1x1x10", "SOFTMAX", batch=7),
        Case("3x2x7", "SOFTMAX", batch=1, other_profile=True),
        Case("1x1x20", "FC(33)-SOFTMAX", batch=17),  # more images than fc's tile of rows
    )
    summary = "exp(x) / sum(exp(x)) along depth, at each (x, y)."
    flops_per_element = 4  # subtract max, exp, sum, divide
    kernels = ("reduction",)
    loss_reads_input = True  # the cross-entropy kernel applies its own softmax
    onnx_op = "Softmax"  # opset 13 on: along the one axis given, as here

    def onnx_attributes(self, node):
        return {"axis": 1}

    onnx_types = ("Softmax",)
    onnx_notes = ("over the channels: axis 1 (before opset 13, over C*H*W: only where "
                  "H = W = 1)")

    def from_onnx(self, node):
        shape = node.input_shapes[0] or ()
        axis = node.attr("axis", 1 if node.opset < 13 else -1)
        axis = axis + len(shape) if axis < 0 else axis
        spatial_ones = all(str(n) == "1" for n in shape[2:])
        if axis != 1 or (node.opset < 13 and not spatial_ones) or (
                len(shape) == 4 and node.opset >= 13 and node.attr("axis") is None):
            raise OnnxUnsupported(f"axis {node.attr('axis')} of shape {list(shape)}: convgraph "
                                  "takes the softmax over the channels")
        return OnnxLayer({})

    def lower(self, ctx) -> None:
        self._pixel_launch(ctx, "SOFTMAX_FORWARD", [ctx.input_tensor(), ctx.output_tensor], {},
                           flops=ctx.node.flops, moved=8 * ctx.node.output.elements)

    def _pixel_launch(self, ctx, selector: str, args: list, defines: dict, **options) -> None:
        """A reduction.cl SOFTMAX_* kernel: a work-item per pixel, over its channels."""
        x, y = ctx.input_layout(), ctx.output_layout
        volume = x.volume
        shape = {"HEIGHT": volume.height, "WIDTH": volume.width, "CHANNELS": volume.depth}
        ctx.launch("reduction", selector, {**shape, **defines, **x.defines("X"), **y.defines("Y")},
                   (volume.width, volume.height), args, batch_axis=1, **options)

    def function(self, x):
        shifted = np.exp(x - x.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def lower_backward(self, ctx) -> None:
        grad, accumulate = ctx.input_grad()
        self._pixel_launch(ctx, "SOFTMAX_BACKWARD", [ctx.output_tensor, ctx.output_grad, grad],
                           {"ACCUMULATE": accumulate})

    def reference_backward(self, node, inputs, output, grad, params, seed):
        return [output * (grad - (grad * output).sum(axis=1, keepdims=True))], {}
