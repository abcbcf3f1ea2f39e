"""The op contract and registry: everything convgraph knows about a layer type lives in its Op.

An op declares its parameter schema (types, defaults, ranges), how many inputs it takes, its pure
shape rule, its parameter shapes and its FLOPs. The spec parser, shape inference, the summary and
the tests all read the registry, so adding an op means adding one class in ``ops/``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from convgraph.core import Volume  # noqa: F401 - re-exported for ops
from convgraph.errors import Location, ShapeError, SpecError

REQUIRED = object()  # marks a parameter with no default


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


class Op:
    """Base class of every op. Subclasses set the class attributes and override the rules."""

    cases: tuple = ()  # its test cases (ops/cases.py): every test harness reads them from here
    name: str = ""
    aliases: tuple[str, ...] = ()
    params: dict[str, Param] = {}
    positional: tuple[str, ...] = ()  # order of unnamed args in `CONV(32, 3x3)`
    presets: dict[str, dict] = {}  # alias -> attrs it implies, e.g. avgpool -> {mode: avg}
    min_inputs: int = 1
    max_inputs: int | None = 1
    summary: str = ""
    inference_identity: bool = False  # does nothing in inference (dropout): shares its input

    def infer(self, layer: LayerDef, inputs: list[Volume]) -> tuple[Volume, dict]:
        """Output volume for these input volumes, plus derived values (e.g. resolved padding)."""
        raise NotImplementedError

    def parameter_shapes(
        self, layer: LayerDef, inputs: list[Volume], output: Volume
    ) -> dict[str, tuple[int, ...]]:
        """Trainable parameters, named and shaped as PyTorch/ONNX name and shape them."""
        return {}

    def buffer_shapes(
        self, layer: LayerDef, inputs: list[Volume], output: Volume
    ) -> dict[str, tuple[int, ...]]:
        """Non-trainable state (running statistics)."""
        return {}

    def macs(self, layer: LayerDef, inputs: list[Volume], output: Volume, derived: dict) -> int:
        """Multiply-accumulates per image (conv and fc only)."""
        return 0

    def flops(self, layer: LayerDef, inputs: list[Volume], output: Volume, derived: dict) -> int:
        """Forward floating-point operations per image; a multiply-add counts as 2."""
        return 2 * self.macs(layer, inputs, output, derived)

    # --- code generation and references (see codegen/plan.py) ---

    def input_halo(self, node: dict, volume: Volume) -> tuple[int, int, int, int] | None:
        """The zero halo (top, bottom, left, right) this node reads around its first input."""
        return None

    def output_grad_halo(self, node: dict) -> tuple[int, int, int, int] | None:
        """The zero halo this node's backward pass reads around the gradient of its output."""
        return None

    def lower(self, ctx) -> None:
        """Add this node's specialised kernels and launches to the plan (``ctx``: a Lowering)."""
        raise NotImplementedError(f"op '{self.name}' has no OpenCL lowering")

    def lower_train(self, ctx) -> None:
        """The forward kernels in training mode (most ops: the inference ones)."""
        self.lower(ctx)

    def lower_backward(self, ctx) -> None:
        """Add the kernels that turn dL/d(output) into dL/d(inputs) and parameter gradients."""
        raise NotImplementedError(f"op '{self.name}' has no backward lowering")

    def device_params(self, node: dict, params: dict, input_layout, output_layout) -> dict:
        """This node's parameters (PyTorch layouts, by name) re-laid for its kernels."""
        return {}

    def host_params(self, node: dict, device: dict, input_layout, output_layout) -> dict:
        """The inverse of ``device_params``: device arrays back to PyTorch layouts."""
        return {}

    def reference(self, node: dict, inputs: list, params: dict):
        """The living definition: float64 numpy forward on (N, D, H, W) arrays."""
        raise NotImplementedError

    def reference_train(self, node: dict, inputs: list, params: dict, seed: int):
        """The forward pass in training mode (batch statistics, dropout); ``seed`` is the step's
        dropout seed."""
        return self.reference(node, inputs, params)

    def reference_backward(self, node: dict, inputs: list, output, grad, params: dict,
                           seed: int) -> tuple[list, dict]:
        """(dL/d inputs, dL/d params) from dL/d output, all float64 numpy."""
        raise NotImplementedError


REGISTRY: dict[str, Op] = {}
_ALIASES: dict[str, str] = {}


def register(cls: type[Op]) -> type[Op]:
    """Class decorator: make an op known to the parser, shape inference and tests."""
    op = cls()
    REGISTRY[op.name] = op
    for alias in (op.name, *op.aliases):
        _ALIASES[alias] = op.name
    return cls


def canonical_op_name(written: str) -> str | None:
    """The registered op for a name as written (case-insensitive, aliases allowed), or None."""
    return _ALIASES.get(written.lower().replace("-", "_"))


def suggest(word: str, candidates) -> str:
    """A ' did you mean ...?' clause, or '' when nothing is close."""
    close = difflib.get_close_matches(str(word).lower(), list(candidates), n=2, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(f"'{c}'" for c in close) + "?"


def alias_preset(written: str) -> dict:
    """Attributes implied by the alias a spec used (``avgpool`` -> ``{'mode': 'avg'}``)."""
    key = written.lower().replace("-", "_")
    name = _ALIASES.get(key)
    return dict(REGISTRY[name].presets.get(key, {})) if name else {}


def known_op_names() -> list[str]:
    return sorted(_ALIASES)
