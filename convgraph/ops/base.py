"""The op contract and registry: everything convgraph knows about a layer type lives in its Op.

An op declares its parameter schema (types, defaults, ranges, defaults derived from other
attributes), how many inputs it takes, its pure shape rule, its weights (shape, trainable, how
each starts), its FLOPs, its numpy reference forward and backward, its lowerings and the kernel
files they use, what the graph passes may do with it (fuse it as an epilogue, take one, read a
volume through an implicit flatten, let the loss read its input), and how the summary and the
drawing show it. Every Op method gets one view of its node, a ``Node``. The spec parser, shape
inference, passes, planners, reference, initialisation, summary, drawing and tests all read the
registry, so adding an op means adding one class in ``ops/`` (and its kernels in kernels/).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convgraph.core import Volume
from convgraph.errors import Location, ShapeError, SpecError, suggest  # noqa: F401

REQUIRED = object()  # marks a parameter with no default


class NotExportable(Exception):
    """A node ONNX cannot express (its op has no mapping, or these settings none): raised by
    ``Op.onnx_export``; the exporter gathers every one and reports them together."""


@dataclass
class Param:
    """One hyperparameter of an op: how to read it from YAML, its default and what it means."""

    parse: Callable[[Any], Any]  # raw YAML value -> normalised value, raises ValueError(why)
    default: Any = REQUIRED
    doc: str = ""
    expects: str = ""  # what a valid value looks like, for error messages

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass
class LayerDef:
    """One layer as written in a spec, before graph passes: op, normalised attrs, inputs, places."""

    name: str
    op: str
    attrs: dict
    inputs: list[str]
    location: Location
    attr_locations: dict[str, Location] = field(default_factory=dict)
    input_locations: list[Location] = field(default_factory=list)
    context: str = ""  # e.g. "in block 'basic' used as 'res2'", appended to messages

    def where(self, attr: str | None = None) -> Location:
        if attr is not None and attr in self.attr_locations:
            return self.attr_locations[attr]
        return self.location

    def error(
        self,
        message: str,
        *,
        attr: str | None = None,
        hint: str | None = None,
        kind: type[SpecError] = ShapeError,
    ) -> SpecError:
        """A located error about this layer (pointing at ``attr``'s value when given)."""
        if self.context:
            message = f"{message} ({self.context})"
        return kind(f"({self.op}) {message}", location=self.where(attr), layer=self.name, hint=hint)


class FromInput:
    """A setting known only once the layer's input volume is: a spec's ``$in.depth // 2``
    (spec/expr.py) or an op's derived default (a depthwise conv's ``filters``). Shape inference
    replaces it by ``value(input volume)``, read by the setting's Param, before ``infer``;
    ``str()`` is how a spec writes it."""

    def value(self, volume: Volume) -> int:
        raise NotImplementedError


class InputExtent(FromInput):
    """One extent of the layer's input volume (``$in.depth``) as a derived default."""

    def __init__(self, extent: str):
        self.extent = extent

    def value(self, volume: Volume) -> int:
        return getattr(volume, self.extent)

    def __str__(self) -> str:
        return f"$in.{self.extent}"

    def __eq__(self, other) -> bool:
        return isinstance(other, InputExtent) and other.extent == self.extent

    def __hash__(self) -> int:
        return hash(self.extent)


class Node(dict):
    """One node of the graph, as every Op method sees it: ``node.attrs``, ``node.output``...

    networkx keeps each node's data in a dict (``graph.nodes[name]``); the graph convgraph
    builds (graph.py) makes that dict a Node, so the data passes add stay where networkx keeps
    them and each Op method gets one view of its node, whichever stage calls it. Keys: ``op``,
    ``attrs``, ``inputs``, ``layer``, ``order``; shape inference adds ``input_volumes``,
    ``output``, ``derived``, ``weights``, ``param_shapes``, ``flops``...; passes add
    ``epilogue`` and ``fused_into``. Before shape inference reaches a node, ``output`` is None
    and ``derived`` empty (what ``infer`` computes).
    """

    @property
    def name(self) -> str:
        return self["layer"].name

    @property
    def op(self) -> str:  # the registered name; REGISTRY[node.op] is the Op
        return self["op"]

    @property
    def attrs(self) -> dict:
        return self["attrs"]

    @property
    def derived(self) -> dict:
        return self.get("derived", {})

    @property
    def inputs(self) -> list[str]:
        """The names of the nodes this one reads, in order (``add(x, x)`` reads x twice)."""
        return self["inputs"]

    @property
    def input_volumes(self) -> list[Volume]:
        return self["input_volumes"]

    @property
    def output(self) -> Volume | None:
        return self.get("output")

    @property
    def weights(self) -> dict[str, Weight]:
        return self.get("weights", {})

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return self.get("param_shapes", {})

    @property
    def flops(self) -> int:
        return self.get("flops", 0)

    @property
    def order(self) -> float:
        return self["order"]

    @property
    def layer(self) -> LayerDef:
        return self["layer"]

    @property
    def epilogue(self) -> str | None:
        """The activation node fused into this node's kernel (passes.mark_fusions)."""
        return self.get("epilogue")

    @property
    def fused_into(self) -> str | None:
        """The node whose kernel does this node's work (a fused activation or flatten)."""
        return self.get("fused_into")

    def error(self, message: str, **kwargs) -> SpecError:
        """A located error about this node (see LayerDef.error: ``attr``, ``hint``, ``kind``)."""
        return self.layer.error(message, **kwargs)


class OnnxUnsupported(Exception):
    """An Op's ``from_onnx`` refusing an ONNX node it cannot hold; ``why`` says what. The
    importer (convgraph/onnx/importer.py) gathers every one and reports them together."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


@dataclass
class OnnxNode:
    """One ONNX node as an Op's ``from_onnx`` sees it: attributes as Python values, each
    input's and output's shape from ONNX shape inference ((N, C, H, W) or (N, C); the batch
    axis may be a name), and each input's value where it is a constant or an initializer."""

    name: str
    op_type: str
    opset: int
    attributes: dict
    input_shapes: list
    output_shapes: list
    constants: list  # np.ndarray, or None for a computed input (and for an absent optional one)
    folded_pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right of a Pad
    input_names: list = field(default_factory=list)  # "" for an optional input left out

    def attr(self, key: str, default=None):
        return self.attributes.get(key, default)

    def has_input(self, index: int) -> bool:
        """Whether input ``index`` is given (optional inputs may be left out)."""
        return index < len(self.input_names) and bool(self.input_names[index])

    def constant(self, index: int, what: str) -> np.ndarray:
        """Input ``index`` as an array; it must be an initializer or a Constant."""
        value = self.constants[index] if index < len(self.constants) else None
        if value is None:
            raise OnnxUnsupported(f"its {what} (input {index + 1}) is computed by the graph; "
                                  "convgraph needs it as an initializer or a Constant")
        return value

    def spatial_input(self) -> tuple[int, int]:
        """(height, width) of the first input, before any folded Pad."""
        shape = self.input_shapes[0]
        if shape is None or len(shape) != 4:
            raise OnnxUnsupported(f"its input has shape {shape}: convgraph needs (N, C, H, W)")
        return int(shape[2]), int(shape[3])


@dataclass
class OnnxLayer:
    """What ``from_onnx`` makes of an ONNX node: the convgraph settings, the weights under
    the op's own names (``weight``, ``bias``...), and which ONNX inputs are volumes it reads."""

    attrs: dict
    weights: dict = field(default_factory=dict)
    inputs: tuple[int, ...] = (0,)
    # the op that holds the node where it is not the one reading it (Clip(0, 6): relu6; a Mul
    # by a per-channel constant: scale); None: the reading op itself
    op: str | None = None


INIT_RULES = ("fan_in", "ones", "zeros")


@dataclass(frozen=True)
class Weight:
    """One array an op holds per node: a trainable parameter or non-trainable state.

    ``shape`` as PyTorch and ONNX shape it; ``init``: how it starts (INIT_RULES): ``fan_in``
    (He normal or Glorot uniform, by the run's ``init`` choice; fan-in = product of every axis
    but the first, fan-out = first axis x the kernel axes), ``ones`` or ``zeros``.
    ``trainable``: has a gradient and optimizer state (parameters); state that is not
    (running statistics) is counted as buffers.
    """

    shape: tuple[int, ...]
    init: str = "zeros"
    trainable: bool = True

    def __post_init__(self):
        if self.init not in INIT_RULES:
            raise ValueError(f"unknown init rule {self.init!r}: one of {', '.join(INIT_RULES)}")

    def initial(self, rng: np.random.Generator, scheme: str = "he") -> np.ndarray:
        """The initial value as float64 numpy (one draw from ``rng`` for ``fan_in``)."""
        if self.init == "fan_in":
            fan_in = math.prod(self.shape[1:])
            fan_out = self.shape[0] * math.prod(self.shape[2:])
            if scheme == "glorot":
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                return rng.uniform(-bound, bound, self.shape)
            return rng.normal(0.0, math.sqrt(2.0 / fan_in), self.shape)
        return (np.ones if self.init == "ones" else np.zeros)(self.shape)


class Op:
    """Base class of every op. Subclasses set the class attributes and override the rules.

    Every method gets the node it works on as a ``Node`` (``node.attrs``, ``node.derived``,
    ``node.input_volumes``, ``node.output``, ``node.error(...)``); lowerings get a ctx whose
    ``ctx.node`` is that same Node. What passes, training, initialisation, the summary and the
    drawing need to know about an op is declared here, never in a table outside ops/.
    """

    cases: tuple = ()  # its test cases (ops/cases.py): every test harness reads them from here
    name: str = ""
    aliases: tuple[str, ...] = ()
    params: dict[str, Param] = {}
    positional: tuple[str, ...] = ()  # order of unnamed args in `CONV(32, 3x3)`
    presets: dict[str, dict] = {}  # alias -> attrs it implies, e.g. avgpool -> {mode: avg}
    min_inputs: int = 1
    max_inputs: int | None = 1
    summary: str = ""
    colour: str = "#ffffff"  # its box in the drawing (draw.py)

    # --- what the graph passes and the planners read ---
    kernels: tuple[str, ...] = ()  # the kernels/<family>.cl files its lowerings launch from
    inference_identity: bool = False  # does nothing in inference (dropout): shares its input
    # the ACT_* constant of kernels/common.cl computing this activation: set, the op can run as
    # the epilogue of the node before it (one that ``takes_epilogue``)
    activation_code: str | None = None
    # what an activation's derivative is computed from: "output" (relu, sigmoid, clip, elu...:
    # the output fixes the slope, so a fused activation is differentiated from the stored
    # output) or "input" (hardswish, silu, gelu: the output does not, so training runs the
    # activation on its own, keeping its input, and fuses it only in inference)
    derivative_from: str = "output"
    takes_epilogue: bool = False  # its kernels can apply a fused activation (ctx.epilogue())
    # the op this one reads a volume through (fc: "flatten"): passes insert it before this op
    # where the input is not 1x1 already, then fuse it into this op's kernel
    implicit_flatten: str | None = None
    # as the network's output, the loss reads this op's input (softmax: the cross-entropy
    # kernel applies its own), and training stops before it
    loss_reads_input: bool = False
    # --- folding in inference plans (codegen/fold.py) ---
    # in inference this op is a per-channel affine y = x * scale + shift (``inference_affine``):
    # a batchnorm with its running statistics, which the node before can take into its weights
    affine_in_inference: bool = False
    # its weights and bias can take a per-output-channel affine after it (``fold_affine``)
    takes_affine: bool = False
    # an elementwise sum of two inputs that the producer of one (an op that ``takes_residual``)
    # can add in its epilogue, reading the other at the output index (a residual add)
    folds_into_producer: bool = False
    # its forward kernels can add a second tensor of its output's shape before the activation
    # (``RESIDUAL``: a sum folded into it), on every device profile and algorithm
    takes_residual: bool = False
    # --- ONNX import (convgraph/onnx/importer.py) ---
    onnx_types: tuple[str, ...] = ()  # the ONNX op types this op reads, through from_onnx
    onnx_notes: str = ""  # what of those types it covers, for the README's coverage table

    def derived_defaults(self, attrs: dict) -> dict:
        """Defaults that follow from other attributes, for params declared with default None
        or required but not written (pool: ``stride`` = ``size``); a value may be a FromInput,
        known at shape inference (a depthwise conv's ``filters``: ``InputExtent("depth")``).
        The parser fills them (``attrs`` lacks the required ones not written), the summary
        hides them."""
        return {}

    def describe(self, attrs: dict, rounding: str = "exact") -> str:
        """The hyperparameters that differ from the defaults, compactly: 'filters=12 size=3'
        (for the summary table and the drawing). ``rounding``: the spec-wide setting, shown
        only where a layer departs from it."""
        derived = self.derived_defaults(attrs)
        shown = []
        for key, value in attrs.items():
            default = self.params[key].default if key in self.params else None
            if value in (default, derived.get(key, default)) or (
                    key == "rounding" and value == rounding):
                continue
            shown.append(f"{key}={_attr_text(value)}")
        return " ".join(shown)

    def from_onnx(self, node: OnnxNode) -> OnnxLayer:
        """This op's settings and weights for one ONNX node of a type in ``onnx_types``;
        raises OnnxUnsupported(why) for attribute values it cannot express."""
        raise NotImplementedError(f"op '{self.name}' reads no ONNX nodes")

    def onnx_fold_bias(self, layer: OnnxLayer, bias: np.ndarray) -> bool:
        """Take an ONNX ``Add`` of a constant into ``layer`` as its bias (MatMul+Add); True
        when it did. Ops without a bias to take decline."""
        return False

    def onnx_folds_pad(self, node: OnnxNode) -> bool:
        """Whether a zero ``Pad`` before this ONNX node can become this layer's padding."""
        return False

    # --- shapes (shapes.py) ---

    def infer(self, node: Node) -> tuple[Volume, dict]:
        """Output volume for ``node.input_volumes``, plus derived values (e.g. resolved padding)."""
        raise NotImplementedError

    def weights(self, node: Node) -> dict[str, Weight]:
        """Every array this node holds, named as PyTorch/ONNX name them, trainable ones first
        (shape inference records the trainable ones' shapes as ``param_shapes``, the others'
        as ``buffer_shapes``; initialisation draws them in this order)."""
        return {}

    def macs(self, node: Node) -> int:
        """Multiply-accumulates per image (conv and fc only)."""
        return 0

    def flops(self, node: Node) -> int:
        """Forward floating-point operations per image; a multiply-add counts as 2."""
        return 2 * self.macs(node)

    # --- code generation and references (see codegen/plan.py) ---

    def epilogue_args(self, node: Node) -> tuple[str, float]:
        """(ACT_* code, its slope) of this activation run inside another kernel."""
        return self.activation_code, 0.0

    def inference_affine(self, node: Node, params: dict) -> tuple[np.ndarray, np.ndarray]:
        """(scale, shift) per channel, float64, of an op declaring ``affine_in_inference``."""
        raise NotImplementedError(f"op '{self.name}' is no affine in inference")

    def fold_affine(self, node: Node, params: dict, scale, shift) -> dict:
        """This node's parameters (PyTorch layouts) with ``y * scale + shift`` per output
        channel folded in, float64 (an op declaring ``takes_affine``; a bias appears where
        there was none)."""
        raise NotImplementedError(f"op '{self.name}' takes no affine")

    def takes_max_pool(self, node: Node, profile) -> bool:
        """Whether this node's forward kernel, planned with the device ``profile``, can write
        the 2x2 stride-2 max pool of its (activated) output in inference (conv)."""
        return False

    def is_foldable_max_pool(self, node: Node) -> bool:
        """Whether this node is a 2x2 stride-2 max pool with no padding whose windows tile its
        input whole (the output is the input halved, rounded down): the conv before it (one
        that ``takes_max_pool``) can then write it in inference."""
        return False

    def commutes_with_max(self, node: Node) -> bool:
        """Whether max(f(a), f(b)) = f(max(a, b)) for this activation (it never decreases): a
        pool folded into the conv's epilogue then takes the max first and activates once."""
        return False

    def kinks(self, node: Node) -> tuple[float, ...]:
        """The inputs where this op's derivative jumps (relu: 0; relu6: 0 and 6), which the
        finite-difference check of a case declared ``kinks=True`` keeps its inputs away from."""
        return (0.0,)

    def input_halo(self, node: Node) -> tuple[int, int, int, int] | None:
        """The zero halo (top, bottom, left, right) this node reads around its first input."""
        return None

    def output_grad_halo(self, node: Node) -> tuple[int, int, int, int] | None:
        """The zero halo this node's backward pass reads around the gradient of its output."""
        return None

    def lower(self, ctx) -> None:
        """Add this node's specialised kernels and launches to the plan (``ctx``: a Lowering)."""
        raise NotImplementedError(f"op '{self.name}' has no OpenCL lowering")

    def lower_eval(self, ctx) -> None:
        """Evaluation inside a training plan (most ops: the inference kernels)."""
        self.lower(ctx)

    def lower_train(self, ctx) -> None:
        """The forward kernels in training mode (most ops: the inference ones)."""
        self.lower(ctx)

    def lower_backward(self, ctx) -> None:
        """Add the kernels that turn dL/d(output) into dL/d(inputs) and parameter gradients."""
        raise NotImplementedError(f"op '{self.name}' has no backward lowering")

    def device_params(self, node: Node, params: dict, input_layout, output_layout) -> dict:
        """This node's parameters (PyTorch layouts, by name) re-laid for its kernels."""
        return {}

    def device_param_elements(self, node: Node, input_layout, output_layout) -> dict[str, int]:
        """The float count of each array ``device_params`` returns, from the shapes alone:
        what the memory estimate sizes the device parameters by before anything is allocated
        (tests/test_hostile_memory.py checks it against ``device_params`` for every case)."""
        return {}

    def host_params(self, node: Node, device: dict, input_layout, output_layout) -> dict:
        """The inverse of ``device_params``: device arrays back to PyTorch layouts."""
        return {}

    def reference(self, node: Node, inputs: list, params: dict):
        """The living definition: float64 numpy forward on (N, D, H, W) arrays."""
        raise NotImplementedError

    def reference_train(self, node: Node, inputs: list, params: dict, seed: int):
        """The forward pass in training mode (batch statistics, dropout); ``seed`` is the step's
        dropout seed."""
        return self.reference(node, inputs, params)

    def reference_backward(self, node: Node, inputs: list, output, grad, params: dict,
                           seed: int) -> tuple[list, dict]:
        """(dL/d inputs, dL/d params) from dL/d output, all float64 numpy."""
        raise NotImplementedError

    # --- ONNX export (convgraph/onnx/export.py) ---

    def onnx_export(self, node: Node, onnx) -> None:
        """Add the ONNX nodes that compute this node in inference to ``onnx`` (an OnnxGraph of
        convgraph/onnx/export.py): it reads ``onnx.inputs`` ((N, D, H, W) values, in order) and
        writes ``onnx.output`` through ``onnx.add(op_type, inputs, output=..., **attributes)``,
        with ``onnx.param(key)`` for this node's weights. An op that does nothing in inference
        passes its input on; any other op must say how, or it is not exportable."""
        if self.inference_identity:
            onnx.same_as_input()
            return
        raise NotExportable(f"op '{self.name}' has no ONNX mapping")


def residual_defines(shape: dict) -> dict:
    """The defines of a sum folded into a conv (``RESIDUAL`` and its other input's layout,
    prefix ``R``) among a site's ``shape``: what every kernel storing the conv's output (the
    direct one, Winograd's output transform, the tiled GEMM) is specialised with as well."""
    return {key: value for key, value in shape.items()
            if key == "RESIDUAL" or key.startswith("R_")}


def fold_output_affine(params: dict, scale, shift) -> dict:
    """``params`` of a layer whose weight's first axis is its output channels (conv, fc), with
    ``y * scale + shift`` per output channel folded in, float64: w' = w * scale,
    b' = b * scale + shift (b = 0 where the layer has no bias)."""
    weight = np.asarray(params["weight"], np.float64)
    scale = np.asarray(scale, np.float64)
    bias = np.asarray(params.get("bias", np.zeros(weight.shape[0])), np.float64)
    return {"weight": weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1)),
            "bias": bias * scale + np.asarray(shift, np.float64)}


def _attr_text(value) -> str:
    if isinstance(value, Volume):
        return str(value)
    if isinstance(value, tuple) and len(value) == 2 and value[0] == value[1]:
        return str(value[0])
    if isinstance(value, tuple) and len(value) == 2:
        return f"{value[0]}x{value[1]}"
    return str(value).lower() if isinstance(value, bool) else str(value)


REGISTRY: dict[str, Op] = {}
_ALIASES: dict[str, str] = {}


class OpDeclarationError(TypeError):
    """An op class that does not declare what the contract needs (a programming error, raised
    at import, when the class registers)."""


def register(cls: type[Op]) -> type[Op]:
    """Class decorator: make an op known to the parser, shape inference and tests.

    Checks the declarations first, so that an op missing one fails here, naming what is
    missing, and never as a KeyError deep in code generation."""
    op = cls()
    for problem in declaration_problems(op):
        raise OpDeclarationError(f"op class {cls.__name__} ('{op.name}'): {problem}")
    REGISTRY[op.name] = op
    for alias in (op.name, *op.aliases):
        _ALIASES[alias] = op.name
    return cls


def declaration_problems(op: Op) -> list[str]:
    """What an op's declarations lack or contradict (empty when complete); the checks that
    need files (kernels/, common.cl) are in tests/test_ops_contract.py."""
    problems = []
    cls = type(op)

    def overrides(method: str) -> bool:
        return getattr(cls, method) is not getattr(Op, method)

    if not op.name or op.name != op.name.lower():
        problems.append("needs a lower-case 'name'.")
    def same_class(other: Op) -> bool:  # the same class imported again (a reload)
        return (type(other).__module__, type(other).__qualname__) == (
            cls.__module__, cls.__qualname__)

    for alias in (op.name, *op.aliases):
        owner = _ALIASES.get(alias)
        if owner is not None and (owner != op.name or not same_class(REGISTRY[owner])):
            problems.append(f"the name '{alias}' is already op '{owner}'.")
    for key, param in op.params.items():
        if not isinstance(param, Param):
            problems.append(f"params['{key}'] is not a Param.")
    unknown = [key for key in op.positional if key not in op.params]
    unknown += [key for attrs in op.presets.values() for key in attrs if key not in op.params]
    if unknown:
        problems.append(f"positional or presets name unknown params {unknown}.")
    if any(alias not in op.aliases for alias in op.presets):
        problems.append("presets are keyed by aliases of the op.")
    if op.max_inputs is not None and op.max_inputs < op.min_inputs:
        problems.append("max_inputs is below min_inputs.")
    if not isinstance(op.kernels, tuple) or not all(isinstance(k, str) for k in op.kernels):
        problems.append("'kernels' must be a tuple of kernel family names (kernels/<name>.cl).")
    elif op.min_inputs > 0 and not op.kernels and not op.inference_identity:
        problems.append("declares no 'kernels' (the kernels/<family>.cl files it launches).")
    needed = ["infer", "reference"]
    if op.min_inputs > 0:  # every op but the input has a backward pass
        needed += ["lower_backward", "reference_backward"]
        if not op.inference_identity:
            needed.append("lower")
    needed += [m for m in ("device_params", "host_params") if overrides("weights")]
    problems += [f"does not define '{method}'." for method in needed if not overrides(method)]
    if op.activation_code is not None and not (
            isinstance(op.activation_code, str) and op.activation_code.startswith("ACT_")):
        problems.append("'activation_code' names an ACT_* constant of kernels/common.cl.")
    if op.derivative_from not in ("output", "input"):
        problems.append("'derivative_from' is \"output\" or \"input\".")
    if op.implicit_flatten is not None and not isinstance(op.implicit_flatten, str):
        problems.append("'implicit_flatten' names the op that flattens its input.")
    return problems


def canonical_op_name(written: str) -> str | None:
    """The registered op for a name as written (case-insensitive, aliases allowed), or None."""
    return _ALIASES.get(written.lower().replace("-", "_"))


def alias_preset(written: str) -> dict:
    """Attributes implied by the alias a spec used (``avgpool`` -> ``{'mode': 'avg'}``)."""
    key = written.lower().replace("-", "_")
    name = _ALIASES.get(key)
    return dict(REGISTRY[name].presets.get(key, {})) if name else {}


def known_op_names() -> list[str]:
    return sorted(_ALIASES)
