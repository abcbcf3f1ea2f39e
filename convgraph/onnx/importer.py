"""ONNX import: the CNN subset of an ONNX model as a graph-form spec plus its weights.

The walk here knows ONNX's plumbing (initializers, Constant, Identity, constant folding, a
zero Pad before a conv or pool, an Add of a constant after a MatMul, the batch axis) and,
in a pattern pass before it, the decompositions exporters write for ONNX ops of later opsets
(GELU as Erf or Tanh arithmetic, HardSwish, Swish, LayerNormalization over the channels): each
becomes the one ONNX node it stands for. What each ONNX op type becomes is declared by the
convgraph op that reads it (``Op.onnx_types`` and ``Op.from_onnx`` in convgraph/ops/), so no
op knowledge lives in this file. Every node that cannot be imported is reported together,
with its name, type and opset.

>>> imported = import_onnx("model.onnx")  # doctest: +SKIP
>>> imported.spec["input"], len(imported.spec["nodes"])  # doctest: +SKIP
('32x32x3', 21)
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from convgraph.errors import DataError, SpecError
from convgraph.ops import REGISTRY
from convgraph.ops.base import OnnxLayer, OnnxNode, OnnxUnsupported, Op

OLDEST_OPSET = 11
PLUMBING = ("Constant", "Identity")  # read by the walk itself, not by an op


class _Downstream(Exception):
    """A node reading what a refused node makes: not reported on its own (its cause is)."""


class OnnxImportError(SpecError):
    """An ONNX file that cannot become a convgraph spec: unreadable, malformed, or holding
    nodes convgraph cannot express (exit status 2, as a spec's errors)."""


@dataclass
class ImportedModel:
    """An imported ONNX model: ``spec`` (a graph-form spec, as a dict ``load_spec`` reads)
    and ``weights`` (float32 arrays named ``<node>.weight`` ..., as Model.params names them)."""

    spec: dict
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""  # the ONNX file, and its opset, for the spec's first line
    opset: int | None = None

    def spec_text(self) -> str:
        """The spec as readable YAML: one line per node, in graph order."""
        head = {key: value for key, value in self.spec.items() if key != "nodes"}
        file = "".join(c if c.isprintable() else "?" for c in Path(self.source).name)
        lines = [f"# imported from {file} (ONNX opset {self.opset}) by "
                 "convgraph import", yaml.safe_dump(head, sort_keys=False).rstrip(), "nodes:"]
        for name, node in self.spec["nodes"].items():
            flow = yaml.safe_dump(node, default_flow_style=True, sort_keys=False, width=10**6)
            lines.append(f"  {name}: {flow.strip()}")
        return "\n".join(lines) + "\n"


def supported_types() -> dict[str, Op]:
    """Every ONNX op type an op declares it reads, and that op."""
    return {onnx_type: op for op in REGISTRY.values() for onnx_type in op.onnx_types}


def import_onnx(path) -> ImportedModel:
    """Read an ONNX file into a graph-form spec and convgraph-named weights.

    Raises OnnxImportError (exit status 2) naming the file, and the node where there is one,
    for a file that is missing, truncated, malformed (wrong types, dangling inputs, cycles,
    missing external data) or uses what convgraph cannot express (every such node at once).

    >>> imported = import_onnx("resnet.onnx")  # doctest: +SKIP
    >>> sorted(imported.weights)[:2]  # doctest: +SKIP
    ['bn1.bias', 'bn1.running_mean']
    """
    path = os.fspath(path)
    model = _read_model(path)
    nodes = _sorted_nodes(model.graph, path)
    model = _checked_and_inferred(model, nodes, path)
    return _Walk(model, path).run()


def _fail(path: str, message: str, hint: str | None = None) -> OnnxImportError:
    return OnnxImportError(f"{path}: {message}", hint=hint)


def _read_model(path: str):
    import onnx
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    if not Path(path).is_file():
        raise _fail(path, "no such ONNX file." if not Path(path).exists() else "not a file.",
                    hint="give the path of a .onnx model.")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and kin: the bytes are not a model
        raise _fail(path, f"not a readable ONNX model ({type(error).__name__}: "
                    f"{str(error).strip() or 'truncated or not protobuf'}).",
                    hint="export the model again; a file cut short in copying reads so.") from None
    if not model.HasField("graph"):
        raise _fail(path, "the file holds no ONNX graph (empty or not an ONNX model).",
                    hint="export the model again.")
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            location = dict((e.key, e.value) for e in tensor.external_data).get("location", "")
            if not (Path(path).parent / location).is_file():
                raise _fail(path, f"initializer '{tensor.name}' keeps its data in the external "
                            f"file '{location}', which is missing.",
                            hint="put the data file next to the model, as it was exported.")
    try:
        load_external_data_for_model(model, str(Path(path).parent))
    except Exception as error:
        raise _fail(path, f"its external data cannot be read ({error}).",
                    hint="put the data files next to the model, as they were exported.") from None
    return model


def _sorted_nodes(graph, path: str) -> list:
    """The graph's nodes in an order that has every producer before its readers, or an error
    naming a node that reads a tensor nothing makes (dangling) or that lies on a cycle."""
    known = {value.name for value in graph.input} | {t.name for t in graph.initializer}
    producer = {name: node for node in graph.node for name in node.output if name}
    for index, node in enumerate(graph.node):
        for name in node.input:
            if name and name not in known and name not in producer:
                raise _fail(path, f"node '{_label(node, index)}' ({node.op_type}) reads "
                            f"'{name}', which no node, graph input or initializer makes.",
                            hint="the graph is cut short: export the whole model again.")
    done, ordered, waiting = set(known), [], list(enumerate(graph.node))
    while waiting:
        ready = [(i, node) for i, node in waiting
                 if all(not name or name in done for name in node.input)]
        if not ready:
            index, node = waiting[0]
            raise _fail(path, f"node '{_label(node, index)}' ({node.op_type}) lies on a cycle: "
                        "its inputs depend on its own output.",
                        hint="convgraph imports acyclic (feed-forward) graphs only.")
        for _, node in ready:
            ordered.append(node)
            done.update(node.output)
        waiting = [(i, node) for i, node in waiting if (i, node) not in ready]
    return ordered


def _label(node, index: int) -> str:
    return _text(node.name) or f"#{index} ({', '.join(map(_text, node.output))})"


def _text(value) -> str:
    """A name as text: protobuf hands a string that is not UTF-8 over as bytes."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _checked_and_inferred(model, nodes: list, path: str):
    """The model with its nodes in order, checked by onnx.checker and with every tensor's
    shape inferred (strictly: a type or shape ONNX itself refuses is an error here)."""
    import onnx

    del model.graph.node[:]
    model.graph.node.extend(nodes)
    opset = default_opset(model)
    newest = onnx.defs.onnx_opset_version()
    if opset is None or not OLDEST_OPSET <= opset <= newest:
        raise _fail(path, f"opset {opset} of the default ONNX domain is outside what convgraph "
                    f"imports ({OLDEST_OPSET} to {newest}).",
                    hint="export with an opset in that range (torch.onnx.export(..., "
                         "opset_version=17)).")
    try:
        onnx.checker.check_model(model)
        return onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as error:  # ValidationError, InferenceError: a malformed graph
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise _fail(path, f"not a valid ONNX model: {first}",
                    hint="the file names the node at fault; export the model again.") from None


def default_opset(model) -> int | None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return None


def _shape(value_info) -> tuple | None:
    """(N, C, H, W)-style dims of a tensor (names for symbolic ones), or None if unknown."""
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                 for d in tensor.shape.dim)


def _is_default(op: Op, key: str, value) -> bool:
    param = op.params.get(key)
    if param is None or param.required or param.default is None:
        return False
    try:
        return param.parse(value) == param.default
    except ValueError:
        return False  # the spec check reports it, against the node


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: _readable(helper.get_attribute_value(a)) for a in node.attribute}


def _readable(value):
    """ONNX's float attributes are float32: each as the shortest decimal that is that float32
    (epsilon 1e-06 rather than 9.999999974752427e-07 in the spec), the same number to the
    float32 kernels."""
    if isinstance(value, float):
        return float(str(np.float32(value)))
    if isinstance(value, list) and value and all(isinstance(v, float) for v in value):
        return [_readable(v) for v in value]
    return value


class _Walk:
    """One pass over the sorted nodes, building spec nodes and weights and gathering what
    cannot be imported."""

    def __init__(self, model, path: str):
        from onnx import numpy_helper

        self.model, self.path, self.graph = model, path, model.graph
        self.opset = default_opset(model)
        self.types = supported_types()
        self.constants = {t.name: self._initializer(t, numpy_helper) for t in
                          self.graph.initializer}
        self.shapes = {v.name: _shape(v) for v in (*self.graph.input, *self.graph.value_info,
                                                   *self.graph.output)}
        self.readers = self._readers()
        self.shape_only = self._shape_computations()
        self._fold_constants()
        self._infer_with_constants()
        rewritten = _Patterns(list(self.graph.node), self.constants, self.shapes,
                              {value.name for value in self.graph.output}).rewritten()
        del self.graph.node[:]
        self.graph.node.extend(rewritten)
        self.readers = self._readers()
        self.source: dict[str, str] = {}  # tensor -> the spec node that computes it
        self.nodes: dict[str, dict] = {}
        self.layers: dict[str, OnnxLayer] = {}
        self.ops: dict[str, Op] = {}
        self.weights: dict[str, np.ndarray] = {}
        self.pads: dict[str, tuple[str, tuple]] = {}  # Pad output -> (its input, pads)
        self.unsupported: list[str] = []
        self.refused: set[str] = set()  # tensors made by refused nodes (and what they feed)

    def _readers(self) -> dict[str, list]:
        readers: dict[str, list] = {}
        for node in self.graph.node:
            for name in node.input:
                readers.setdefault(name, []).append(node)
        return readers

    def _initializer(self, tensor, numpy_helper) -> np.ndarray:
        try:
            return numpy_helper.to_array(tensor)
        except Exception as error:  # an unknown element type, data of the wrong length
            raise _fail(self.path, f"initializer '{_text(tensor.name)}' cannot be read "
                        f"({type(error).__name__}: {error}).",
                        hint="export the model again; the file may be damaged.") from None

    def run(self) -> ImportedModel:
        input_name = self._input()
        self.source[input_name] = "input"
        for index, node in enumerate(self.graph.node):
            if node.domain not in ("", "ai.onnx"):
                self._refuse(node, index, f"domain '{node.domain}' is not ONNX's own")
                continue
            try:
                self._import(node, index)
            except OnnxUnsupported as refusal:
                self._refuse(node, index, refusal.why)
            except _Downstream:
                self.refused.update(node.output)
        if self.unsupported:
            count = len(self.unsupported)
            raise _fail(self.path, f"{count} node{'s' if count > 1 else ''} convgraph cannot "
                        "import: " + "; ".join(self.unsupported) + ".",
                        hint="README '### Import' lists the ONNX ops and settings convgraph "
                             "reads; export without the others or replace them.")
        output = self._output()
        spec = {"name": self.graph.name or Path(self.path).stem,
                "input": self._volume_text(self.shapes[input_name], input_name),
                "nodes": self.nodes, "output": output}
        imported = ImportedModel(spec, self.weights, self.path, self.opset)
        self._check_shapes(imported)
        return imported

    # --- the graph's ends ---

    def _input(self) -> str:
        inputs = [v for v in self.graph.input if v.name not in self.constants]
        if len(inputs) != 1:
            raise _fail(self.path, f"the graph has {len(inputs)} inputs "
                        f"({', '.join(v.name for v in inputs) or 'none'}): convgraph networks "
                        "read one image batch.", hint="export with a single (N, C, H, W) input.")
        (value,) = inputs
        if value.type.tensor_type.elem_type != 1:  # TensorProto.FLOAT
            raise _fail(self.path, f"input '{value.name}' is not float32.",
                        hint="export with a float32 (N, C, H, W) input.")
        return value.name

    def _output(self) -> str:
        outputs = list(self.graph.output)
        if len(outputs) != 1:
            raise _fail(self.path, f"the graph has {len(outputs)} outputs: convgraph networks "
                        "have one.", hint="export with a single output.")
        name = outputs[0].name
        if name not in self.source or self.source[name] == "input":
            raise _fail(self.path, f"output '{name}' is not computed from the input by the "
                        "imported layers.", hint="export a network that computes its output.")
        return self.source[name]

    def _volume_text(self, shape, name: str) -> str:
        if shape is None or len(shape) != 4 or not all(isinstance(n, int) and n > 0
                                                       for n in shape[1:]):
            raise _fail(self.path, f"input '{name}' has shape {list(shape or [])}: convgraph "
                        "needs (N, C, H, W) with C, H and W known (N may be symbolic).",
                        hint="export with a fixed image size.")
        _, depth, height, width = shape
        return f"{width}x{height}x{depth}"

    def _refuse(self, node, index: int, why: str) -> None:
        self.refused.update(node.output)
        self.unsupported.append(f"'{_label(node, index)}' ({node.op_type}, opset {self.opset}): "
                                f"{why}")

    # --- one node ---

    def _shape_computations(self) -> set[str]:
        """The outputs of nodes that only compute a Reshape's target shape
        (``x.view(x.size(0), -1)`` exports as Shape, Gather, Unsqueeze, Concat): those nodes
        are skipped, since the flatten reads the shape ONNX's inference gives the Reshape."""
        outputs = {value.name for value in self.graph.output}
        skipped: set[str] = set()
        for node in reversed(self.graph.node):
            uses = [(reader, list(reader.input).index(name)) for name in node.output
                    for reader in self.readers.get(name, [])]
            if uses and not outputs.intersection(node.output) and all(
                    (reader.op_type == "Reshape" and position == 1)
                    or set(reader.output) <= skipped for reader, position in uses):
                skipped.update(node.output)
        return skipped

    def _fold_constants(self) -> None:
        """Work out every node that reads only constants (a Constant, the Reshape of layer
        scale factors to (1, C, 1, 1), a Sqrt of a number), and the shape computations of
        Reshape targets: their values are constants too."""
        for node in self.graph.node:
            if node.domain not in ("", "ai.onnx"):
                continue
            if set(node.output) <= self.shape_only:
                self._fold_shape_computation(node, _attributes(node))
            elif node.op_type == "Constant":
                try:
                    self._constant(node, _attributes(node))
                except Exception:  # the walk meets it again, and reports it
                    pass
            elif node.input and all(not name or name in self.constants for name in node.input):
                feeds = {name: self.constants[name] for name in node.input if name}
                self.constants.update(_evaluated(node, feeds, self.opset))

    def _infer_with_constants(self) -> None:
        """Shapes again, with the folded values as initializers: a Resize whose scales were
        computed by the graph gets an output shape, and so does all that follows it."""
        import onnx
        from onnx import numpy_helper

        folded = [name for node in self.graph.node for name in node.output
                  if name in self.constants and node.op_type != "Constant"]
        if not folded:
            return
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        del model.graph.value_info[:]
        kept = [node for node in model.graph.node
                if not (node.output and all(name in self.constants for name in node.output))]
        del model.graph.node[:]
        model.graph.node.extend(kept)
        known = {t.name for t in model.graph.initializer}
        try:
            model.graph.initializer.extend(
                numpy_helper.from_array(np.asarray(self.constants[name]), name)
                for name in self.constants if name not in known)
            inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        except Exception:  # a value ONNX cannot hold, or a graph it cannot infer: the first
            return         # inference stands
        for value in (*inferred.graph.value_info, *inferred.graph.output):
            shape, before = _shape(value), self.shapes.get(value.name)
            if shape is not None and (before is None or not all(
                    isinstance(n, int) for n in before[1:])):
                self.shapes[value.name] = shape

    def _import(self, node, index: int) -> None:
        attributes = _attributes(node)
        if node.output and all(name in self.constants for name in node.output):
            return  # folded
        if set(node.output) <= self.shape_only:
            self._fold_shape_computation(node, attributes)
            return
        if node.op_type == "Constant":
            self._constant(node, attributes)
        elif node.op_type == "Identity":
            self._alias(node.output[0], node.input[0])
        elif node.op_type == "Pad" and self._folds_pad(node, attributes):
            pass
        elif node.op_type == "Add" and self._folds_into_bias(node):
            pass
        elif node.op_type in self.types:
            self._layer(node, index, attributes)
        else:
            raise OnnxUnsupported("no convgraph op reads this op type")

    def _fold_shape_computation(self, node, attributes: dict) -> None:
        """Work a shape computation out as a constant, for a batch of 1 (where it cannot be,
        the Reshape it feeds is refused as one of unknown shape)."""
        if node.op_type == "Shape":
            shape = self.shapes.get(node.input[0])
            if shape and all(isinstance(n, int) for n in shape[1:]):
                dims = np.array([1, *shape[1:]], np.int64)
                start, end = attributes.get("start", 0), attributes.get("end")
                self.constants[node.output[0]] = dims[start:end]
            return
        if not all(name in self.constants for name in node.input if name):
            return
        feeds = {name: self.constants[name] for name in node.input if name}
        self.constants.update(_evaluated(node, feeds, self.opset))

    def _reshaped(self, node) -> tuple | None:
        """A Reshape's output shape from its constant target, the batch axis kept symbolic,
        where shape inference could not tell it (a target computed from the batch)."""
        source, target = self.shapes.get(node.input[0]), self.constants.get(node.input[1])
        if source is None or target is None or not all(isinstance(n, int) for n in source[1:]):
            return None
        known = [1, *source[1:]]  # the shape computations were worked out for a batch of 1
        dims = [known[i] if n == 0 else int(n) for i, n in enumerate(target.reshape(-1))]
        if dims.count(-1) == 1:
            rest = int(np.prod([n for n in dims if n != -1]))
            dims[dims.index(-1)] = int(np.prod(known)) // max(rest, 1)
        if dims[0] != 1 or int(np.prod(dims)) != int(np.prod(known)):
            return None
        return (source[0], *dims[1:])

    def _constant(self, node, attributes: dict) -> None:
        from onnx import numpy_helper

        if "value" in attributes:
            try:
                self.constants[node.output[0]] = numpy_helper.to_array(attributes["value"])
            except Exception as error:  # an unknown element type, data of the wrong length
                raise _fail(self.path, f"Constant node '{_text(node.name) or node.output[0]}' "
                            f"cannot be read ({type(error).__name__}: {error}).",
                            hint="export the model again; the file may be damaged.") from None
        elif attributes:
            key, value = next(iter(attributes.items()))
            if key.startswith("sparse"):
                raise OnnxUnsupported("a sparse Constant is not supported")
            self.constants[node.output[0]] = np.asarray(value)

    def _alias(self, output: str, given: str) -> None:
        if given in self.constants:
            self.constants[output] = self.constants[given]
        elif given in self.pads:
            self.pads[output] = self.pads[given]
        else:
            self.source[output] = self._computed(given)

    def _computed(self, tensor: str) -> str:
        if tensor in self.pads:
            raise OnnxUnsupported(f"it reads the Pad output '{tensor}', which only a conv or an "
                                  "average pool can take as its padding")
        if tensor in self.refused:
            raise _Downstream(tensor)
        if tensor not in self.source:
            raise OnnxUnsupported(f"its input '{tensor}' comes from a node not imported")
        return self.source[tensor]

    def _folds_pad(self, node, attributes: dict) -> bool:
        """Keep a zero spatial Pad to fold into its readers where each can take it as its own
        padding; False where one cannot (the Pad is then a layer of its own)."""
        mode = attributes.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        value = self.constants.get(node.input[2], None) if len(node.input) > 2 \
            and node.input[2] else 0.0
        if len(node.input) < 2 or node.input[1] not in self.constants or value is None or (
                len(node.input) > 3 and node.input[3]):
            return False
        pads = [int(p) for p in np.asarray(self.constants[node.input[1]]).reshape(-1)]
        if mode != "constant" or float(np.asarray(value).reshape(-1)[0]) != 0.0:
            return False
        if len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or min(pads) < 0:
            return False
        readers = self.readers.get(node.output[0], [])
        if not readers or any(o.name == node.output[0] for o in self.graph.output):
            return False
        for reader in readers:
            op = self.types.get(reader.op_type)
            if op is None or list(reader.input).index(node.output[0]) != 0 or not op.onnx_folds_pad(
                    self._view(reader, _attributes(reader))):
                return False
        self._computed(node.input[0])
        self.pads[node.output[0]] = (node.input[0], (pads[2], pads[3], pads[6], pads[7]))
        return True

    def _folds_into_bias(self, node) -> bool:
        """An Add of a constant to a layer's only use: that layer's bias (MatMul + Add)."""
        constant = [name for name in node.input if name in self.constants]
        computed = [name for name in node.input if name not in self.constants]
        if len(constant) != 1 or len(computed) != 1 or computed[0] not in self.source:
            return False
        layer_name = self.source[computed[0]]
        if layer_name not in self.layers or len(self.readers.get(computed[0], [])) != 1 \
                or any(self.source.get(t) == layer_name for t in self.graph.output
                       if t.name == computed[0]):
            return False
        bias = self.constants[constant[0]].astype(np.float64)
        layer = self.layers[layer_name]
        if not self.ops[layer_name].onnx_fold_bias(layer, bias):
            return False
        self._record(layer_name, self.ops[layer_name], layer)
        self.source[node.output[0]] = layer_name
        return True

    def _view(self, node, attributes: dict) -> OnnxNode:
        """The ONNX node as ops see it, with a Pad before its first input folded in."""
        inputs = list(node.input)
        folded = (0, 0, 0, 0)
        if inputs and inputs[0] in self.pads:
            inputs[0], folded = self.pads[inputs[0]]
        used = {name for reader in self.graph.node for name in reader.input}
        used |= {value.name for value in self.graph.output}
        return OnnxNode(
            name=_text(node.name), op_type=node.op_type, opset=self.opset, attributes=attributes,
            input_shapes=[self._tensor_shape(name) for name in inputs],
            output_shapes=[self._output_shape(node, name) if name in used else None
                           for name in node.output],
            constants=[self.constants.get(name) if name else None for name in inputs],
            folded_pads=folded, input_names=inputs)

    def _output_shape(self, node, name: str) -> tuple | None:
        shape = self.shapes.get(name)
        known = shape is not None and all(isinstance(n, int) for n in shape[1:])
        if node.op_type == "Reshape" and not known:
            shape = self._reshaped(node) or shape
            self.shapes[name] = shape  # what the layers after it read
        return shape

    def _tensor_shape(self, name: str) -> tuple | None:
        if name in self.constants:
            return tuple(self.constants[name].shape)
        return self.shapes.get(name) if name else None

    def _layer(self, node, index: int, attributes: dict) -> None:
        op = self.types[node.op_type]
        refused = [name for name in node.input if name in self.refused]
        if refused:  # its cause is reported; the shapes it would be judged on are unknown
            raise _Downstream(refused[0])
        self._check_float_types(node, index)
        view = self._view(node, attributes)
        layer = op.from_onnx(view)
        if layer.op is not None:  # another op holds it (Clip(0, 6): relu6)
            op = REGISTRY[layer.op]
        inputs = list(node.input)
        if inputs and inputs[0] in self.pads:
            inputs[0] = self.pads[inputs[0]][0]
        reads = []
        for position in layer.inputs:
            if inputs[position] in self.constants:
                raise OnnxUnsupported(f"its input '{inputs[position]}' is a constant: convgraph "
                                      "layers read volumes")
            reads.append(self._computed(inputs[position]))
        name = self._spec_name(node, index, op)
        self.layers[name], self.ops[name] = layer, op
        self.nodes[name] = {"op": op.name, **layer.attrs, "inputs": reads}
        self._record(name, op, layer)
        self.source[node.output[0]] = name

    def _check_float_types(self, node, index: int) -> None:
        """A float constant of another width than the float32 input is a malformed model
        (onnxruntime refuses it too); ONNX's own shape inference lets it pass."""
        for name in node.input:
            value = self.constants.get(name)
            if value is not None and value.dtype.kind == "f" and value.dtype != np.float32:
                raise _fail(self.path, f"node '{_label(node, index)}' ({node.op_type}): its input "
                            f"'{name}' is {value.dtype}, where the network computes in float32.",
                            hint="export the model in float32 throughout.")

    def _record(self, name: str, op: Op, layer: OnnxLayer) -> None:
        """The spec node (without the settings at their defaults, for reading) and weights."""
        settings = {key: value for key, value in layer.attrs.items()
                    if not _is_default(op, key, value)}
        self.nodes[name] = {"op": op.name, **settings, "inputs": self.nodes[name]["inputs"]}
        for key, array in layer.weights.items():
            self.weights[f"{name}.{key}"] = np.ascontiguousarray(array, dtype=np.float32)

    def _spec_name(self, node, index: int, op: Op) -> str:
        """The node's own name where a spec can hold it ('/layer1/conv' reads layer1_conv),
        else the op's name and a count; never a name taken."""
        cleaned = re.sub(r"[^A-Za-z0-9_]+", "_", _text(node.name)).strip("_")
        if not cleaned or not re.match(r"[A-Za-z_]", cleaned):
            cleaned = f"{op.name}{sum(n['op'] == op.name for n in self.nodes.values()) + 1}"
        name, copy = cleaned, 2
        while name in self.nodes or name == "input":
            name, copy = f"{cleaned}_{copy}", copy + 1
        return name

    # --- the result, checked ---

    def _check_shapes(self, imported: ImportedModel) -> None:
        """Analyse the spec as convgraph will and compare every layer's volume with ONNX's:
        a refusal or a difference is reported against the node."""
        from convgraph.params import check_params
        from convgraph.pipeline import analyse

        try:
            graph = analyse(imported.spec)
            check_params(graph, imported.weights, "the imported weights")
        except SpecError as error:
            raise _fail(self.path, f"the imported network is refused: {error.detail()}",
                        hint=error.hint) from None
        except DataError as error:  # a weight convgraph cannot hold (not finite)
            raise _fail(self.path, f"its weights are refused: {error.message}",
                        hint=error.hint) from None
        onnx_names = {layer: tensor for tensor, layer in self.source.items()}
        for name in imported.spec["nodes"]:
            shape = self.shapes.get(onnx_names.get(name, ""))
            if shape is None:
                continue
            volume = graph.nodes[name]["output"]
            dims = [int(n) for n in shape[1:]] if all(isinstance(n, int) for n in shape[1:]) \
                else None
            expected = dims if dims is None or len(dims) != 1 else [dims[0], 1, 1]
            if expected is not None and expected != [volume.depth, volume.height, volume.width]:
                raise _fail(self.path, f"node '{name}': convgraph computes {volume} where ONNX "
                            f"has shape {list(shape)}.",
                            hint="please report this: the import of this node is wrong.")


def _evaluated(node, feeds: dict, opset: int) -> dict:
    """The outputs of one node on constant inputs, by onnx's reference evaluator (empty where
    it cannot: an op it lacks; the walk then meets the node as any other)."""
    from onnx import TensorProto
    from onnx import helper as onnx_helper
    from onnx.reference import ReferenceEvaluator

    untyped = [onnx_helper.make_tensor_value_info(name, TensorProto.UNDEFINED, None)
               for name in (*feeds, *node.output)]
    alone = onnx_helper.make_model(  # the node alone, at the model's opset
        onnx_helper.make_graph([node], "constant", untyped[:len(feeds)], untyped[len(feeds):]),
        opset_imports=[onnx_helper.make_opsetid("", opset)])
    try:
        values = ReferenceEvaluator(alone).run(None, feeds)
    except Exception:
        return {}
    return {name: np.asarray(value) for name, value in zip(node.output, values)}


# --- the pattern pass: what exporters decompose, made the one ONNX node it stands for ---

_erf = np.vectorize(math.erf, otypes=[np.float64])

# ONNX's definitions of the ops exporters write as arithmetic before their opset has them:
# (op type, attributes, the function of x); a chain of elementwise nodes computing one of
# these from one tensor, in whatever order, becomes that node
_COMPOSITES = (
    ("Gelu", {}, lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))),
    # ONNX's value for the tanh form, written from the ONNX op it uses: the quoted word alone
    # is also a convgraph op's name, which no module outside ops/ may spell
    ("Gelu", {"approximate": "Tanh".lower()},
     lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))),
    ("HardSwish", {}, lambda x: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0)),
    ("Swish", {}, lambda x: x / (1.0 + np.exp(-x))),
)
# where the chains are compared: both sides of every kink, and the tails
_SAMPLES = np.concatenate([np.linspace(-8.0, 8.0, 321), [-20.0, -3.0, 3.0, 20.0, 0.3141]])


def _elementwise(op_type: str, attributes: dict, args: list):
    """One elementwise ONNX op on float64 arrays (None: an optional input left out)."""
    if op_type in ("Add", "Sub", "Mul", "Div", "Pow"):
        a, b = args
        return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide,
                "Pow": np.power}[op_type](a, b)
    (x, *rest) = args
    if op_type == "Clip":
        low, high = (rest + [None, None])[:2]
        return np.clip(x, -np.inf if low is None else low, np.inf if high is None else high)
    if op_type == "HardSigmoid":
        return np.clip(attributes.get("alpha", 0.2) * x + attributes.get("beta", 0.5), 0, 1)
    return {"Sqrt": np.sqrt, "Erf": _erf, "Tanh": np.tanh, "Neg": np.negative,
            "Sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
            "Relu": lambda v: np.maximum(v, 0.0)}[op_type](x)


_ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "Pow", "Clip", "HardSigmoid", "Sqrt", "Erf",
                "Tanh", "Neg", "Sigmoid", "Relu")


class _Patterns:
    """Rewrites the sorted nodes: each match is replaced by one node of the ONNX op it
    computes, reading the match's input and writing its output, named by what the matched
    nodes' names share ('/act/Mul', '/act/Sigmoid' -> '/act')."""

    def __init__(self, nodes: list, constants: dict, shapes: dict, outputs: set):
        self.nodes, self.constants, self.shapes, self.outputs = nodes, constants, shapes, outputs

    def rewritten(self) -> list:
        for find in (self._decomposed_layernorm, self._channels_last_layernorm):
            while (match := find()) is not None:
                self._replace(*match)
        while self._channels_last_region():
            pass
        while (match := self._composite()) is not None:
            self._replace(*match)
        return self.nodes

    # --- the graph as it stands ---

    def _producer(self) -> dict:
        return {name: node for node in self.nodes for name in node.output}

    def _readers(self, tensor: str) -> list:
        return [node for node in self.nodes if tensor in node.input]

    def _private(self, nodes: list, result: str) -> bool:
        """Whether every tensor the nodes make, but ``result``, is read only among them."""
        ids = {id(node) for node in nodes}
        return all(name == result or (name not in self.outputs and all(
            id(reader) in ids for reader in self._readers(name)))
            for node in nodes for name in node.output if name)

    def _scalar(self, name: str) -> bool:
        return not name or (name in self.constants and self.constants[name].size == 1)

    def _replace(self, matched: list, op_type: str, inputs: list, output: str,
                 attributes: dict) -> None:
        from onnx import helper as onnx_helper

        names = [_text(node.name) for node in matched if node.name]
        shared = os.path.commonprefix(names).rstrip("/._") if len(names) > 1 else ""
        # else the matched node of that op type (a LayerNormalization between Transposes),
        # else the op type: 'Gelu' says more than the last Mul's 'Mul_1'
        same = [_text(node.name) for node in matched if node.op_type == op_type and node.name]
        name = shared or (same[0] if same else op_type)
        made = onnx_helper.make_node(op_type, inputs, [output], name=name, **attributes)
        last = max(self.nodes.index(node) for node in matched)
        ids = {id(node) for node in matched}
        self.nodes = [made if i == last else node for i, node in enumerate(self.nodes)
                      if i == last or id(node) not in ids]

    # --- elementwise composites: GELU (erf and tanh forms), HardSwish, Swish ---

    def _composite(self):
        for root in self._roots():
            region = self._elementwise_region(root)
            for exit_node in reversed(region):
                chain = self._ancestors(exit_node, region)
                if len(chain) < 2 or not self._private(chain, exit_node.output[0]):
                    continue
                values = self._evaluate(chain, root)
                for op_type, attributes, function in _COMPOSITES:
                    want = function(_SAMPLES)
                    if values.shape == want.shape and np.allclose(values, want, rtol=1e-5,
                                                                  atol=1e-6):
                        return chain, op_type, [root], exit_node.output[0], attributes
        return None

    def _roots(self):
        """Tensors two elementwise reads take (every composite reads x twice)."""
        reads: dict[str, int] = {}
        for node in self.nodes:
            if node.op_type in _ELEMENTWISE and node.domain in ("", "ai.onnx"):
                for name in node.input:
                    if name and name not in self.constants:
                        reads[name] = reads.get(name, 0) + 1
        return [name for name, count in reads.items() if count >= 2]

    def _elementwise_region(self, root: str) -> list:
        """The elementwise nodes computed from ``root`` and scalar constants alone."""
        known, region = {root}, []
        for node in self.nodes:
            if node.op_type in _ELEMENTWISE and node.domain in ("", "ai.onnx") and any(
                    name in known for name in node.input) and all(
                    name in known or self._scalar(name) for name in node.input):
                region.append(node)
                known.update(node.output)
        return region

    def _ancestors(self, exit_node, region: list) -> list:
        producer = {name: node for node in region for name in node.output}
        needed, stack = {id(exit_node)}, [exit_node]
        while stack:
            for name in stack.pop().input:
                node = producer.get(name)
                if node is not None and id(node) not in needed:
                    needed.add(id(node))
                    stack.append(node)
        return [node for node in region if id(node) in needed]

    def _evaluate(self, chain: list, root: str) -> np.ndarray:
        values = {root: _SAMPLES}
        with np.errstate(all="ignore"):
            for node in chain:
                args = [values[name] if name in values else
                        None if not name else float(self.constants[name].reshape(-1)[0])
                        for name in node.input]
                values[node.output[0]] = np.asarray(
                    _elementwise(node.op_type, _attributes(node), args), np.float64)
        return values[chain[-1].output[0]]

    # --- LayerNormalization over the channels ---

    def _reduce_axes(self, node) -> list | None:
        if node is None or node.op_type != "ReduceMean" or not _attributes(node).get(
                "keepdims", 1):
            return None
        axes = _attributes(node).get("axes")
        if len(node.input) > 1 and node.input[1]:
            axes = self.constants.get(node.input[1])
        return None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]

    def _constant_operand(self, node, other: str):
        """The constant a binary node combines ``other`` with, or None."""
        if node is None or len(node.input) != 2 or other not in node.input:
            return None
        (constant,) = [name for name in node.input if name != other] or [None]
        return constant if constant in self.constants else None

    def _decomposed_layernorm(self):
        """(x - mean) / sqrt(mean((x - mean)^2) + eps) [* scale + bias] over one axis, as
        torch.onnx writes nn.LayerNorm before opset 17 and ConvNeXt's channels-first norm."""
        producer = self._producer()
        for div in (node for node in self.nodes if node.op_type == "Div"):
            centred, root = div.input
            sub, sqrt = producer.get(centred), producer.get(root)
            if sub is None or sub.op_type != "Sub" or sqrt is None or sqrt.op_type != "Sqrt":
                continue
            x, mean = sub.input
            reduce_mean = producer.get(mean)
            add_eps = producer.get(sqrt.input[0])
            if reduce_mean is None or reduce_mean.input[0] != x or add_eps is None or \
                    add_eps.op_type != "Add":
                continue
            (variance,) = [n for n in add_eps.input if n not in self.constants] or [None]
            eps = self._constant_operand(add_eps, variance)
            reduce_var = producer.get(variance)
            square = producer.get(reduce_var.input[0]) if reduce_var is not None else None
            axes = self._reduce_axes(reduce_mean)
            if eps is None or square is None or axes is None or len(axes) != 1 or \
                    self._reduce_axes(reduce_var) != axes:
                continue
            exponent = self._constant_operand(square, centred) if square.op_type == "Pow" \
                else None
            if not ((square.op_type == "Mul" and list(square.input) == [centred, centred]) or
                    (exponent is not None and float(self.constants[exponent].reshape(-1)[0])
                     == 2.0 and square.input[0] == centred)):
                continue
            rank = len(self.shapes.get(x) or ())
            axis = axes[0] % rank if rank else axes[0]
            if not ((rank == 4 and axis in (1, 3)) or (rank == 2 and axis == 1)):
                continue  # not the channels of (N, C, H, W), (N, H, W, C) or (N, C)
            chain = [reduce_mean, sub, square, reduce_var, add_eps, sqrt, div]
            result, scale, bias = div.output[0], None, None
            for kind in ("Mul", "Add"):
                readers = self._readers(result)
                constant = self._constant_operand(readers[0], result) if len(readers) == 1 \
                    and readers[0].op_type == kind else None
                if constant is None:
                    break
                scale, bias = (constant, bias) if kind == "Mul" else (scale, constant)
                chain.append(readers[0])
                result = readers[0].output[0]
            if not self._private(chain, result):
                continue
            depth = int(self.shapes[x][axis])
            inputs = [x, self._vector(scale, depth, f"{result}:scale", 1.0),
                      self._vector(bias, depth, f"{result}:bias", 0.0)]
            attributes = {"axis": -1,
                          "epsilon": _readable(float(self.constants[eps].reshape(-1)[0]))}
            if axis == 1:
                attributes.update(axis=1, channels_only=1)
            return chain, "LayerNormalization", inputs, result, attributes
        return None

    def _vector(self, name: str | None, depth: int, made: str, fill: float) -> str:
        """A (depth,) constant of the factors in ``name`` ((C, 1, 1) ...), or ``fill``."""
        value = np.full(depth, fill, np.float32) if name is None else self.constants[name]
        self.constants[made] = np.asarray(value, np.float32).reshape(-1)
        return made

    def _channels_last_layernorm(self):
        """Transpose to NHWC, LayerNormalization over the last axis, Transpose back: the
        channels-last layer norm exporters write for ConvNeXt."""
        producer = self._producer()
        for norm in (node for node in self.nodes if node.op_type == "LayerNormalization"):
            attributes = _attributes(norm)
            if attributes.get("channels_only") or attributes.get("axis", -1) not in (-1, 3):
                continue
            into, readers = producer.get(norm.input[0]), self._readers(norm.output[0])
            if into is None or into.op_type != "Transpose" or list(
                    _attributes(into).get("perm", [])) != [0, 2, 3, 1] or len(readers) != 1:
                continue
            (back,) = readers
            if back.op_type != "Transpose" or list(_attributes(back).get("perm", [])) != \
                    [0, 3, 1, 2]:
                continue
            chain = [into, norm, back]
            if not self._private(chain, back.output[0]):
                continue
            return chain, "LayerNormalization", [into.input[0], *norm.input[1:]], \
                back.output[0], {"axis": 1, "channels_only": 1,
                                 "epsilon": float(attributes.get("epsilon", 1e-5))}
        return None

    # --- a channels-last stretch made channels-first: ConvNeXt's official block ---

    _PER_PIXEL = ("LayerNormalization", "MatMul", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt",
                  "Erf", "Tanh", "Sigmoid", "Relu", "HardSigmoid", "HardSwish", "Clip", "Gelu",
                  "Neg")

    def _channels_last_region(self) -> bool:
        """Transpose to NHWC, then only per-pixel work over the channels (LayerNormalization
        over the last axis, MatMul by a constant (C, K) matrix, elementwise ops with numbers
        or (K,) vectors), then Transpose back: the same in NCHW, each MatMul a 1x1 Conv and
        each vector (K, 1, 1), the Transposes Identities. True when it rewrote one."""
        from onnx import helper as onnx_helper

        for into in (n for n in self.nodes if n.op_type == "Transpose" and list(
                _attributes(n).get("perm", [])) == [0, 2, 3, 1]):
            region, known, exits = [], {into.output[0]}, []
            for node in self.nodes[self.nodes.index(into) + 1:]:
                if not any(name in known for name in node.input):
                    continue
                if node.op_type == "Transpose" and list(_attributes(node).get("perm", [])) \
                        == [0, 3, 1, 2]:
                    exits.append(node)
                elif node.op_type in self._PER_PIXEL and self._per_pixel(node, known):
                    region.append(node)
                    known.update(node.output)
                else:
                    break
            inside = {id(node) for node in (into, *region, *exits)}
            if not exits or not region or any(name in self.outputs for name in known) or any(
                    id(node) not in inside and any(name in known for name in node.input)
                    for node in self.nodes):
                continue  # channels-last values seen outside the stretch
            rewritten = {id(node): self._channels_first(node, onnx_helper) for node in region}
            for name in known:  # (N, H, W, C) -> (N, C, H, W)
                shape = self.shapes.get(name)
                if shape is not None and len(shape) == 4:
                    self.shapes[name] = (shape[0], shape[3], shape[1], shape[2])
            self.nodes = [
                onnx_helper.make_node("Identity", [node.input[0]], [node.output[0]],
                                      name=_text(node.name))
                if id(node) in inside and id(node) not in rewritten
                else rewritten.get(id(node), node) for node in self.nodes]
            return True
        return False

    def _per_pixel(self, node, known: set) -> bool:
        """Whether ``node`` works on each pixel's channels alone, in channels-last form."""
        attributes = _attributes(node)
        if node.op_type == "LayerNormalization":
            return attributes.get("axis", -1) in (-1, 3) and node.input[0] in known and all(
                name in self.constants for name in node.input[1:] if name) and len(
                [name for name in node.output if name]) == 1
        if node.op_type == "MatMul":
            weight = self.constants.get(node.input[1])
            return node.input[0] in known and weight is not None and weight.ndim == 2
        return all(not name or name in known or (
            name in self.constants and self.constants[name].ndim <= 1)
            for name in node.input)

    def _channels_first(self, node, onnx_helper):
        """The NCHW twin of one per-pixel node: a MatMul a 1x1 Conv, a LayerNormalization
        over the channels, a (K,) constant reshaped to (K, 1, 1)."""
        attributes = _attributes(node)
        if node.op_type == "MatMul":
            weight = self.constants[node.input[1]]
            name = f"{node.output[0]}:weight"
            self.constants[name] = np.ascontiguousarray(weight.T[:, :, None, None])
            return onnx_helper.make_node("Conv", [node.input[0], name], list(node.output),
                                         name=_text(node.name))
        if node.op_type == "LayerNormalization":
            return onnx_helper.make_node(node.op_type, list(node.input), list(node.output),
                                         name=_text(node.name), **{**attributes, "axis": 1,
                                                            "channels_only": 1})
        inputs = []
        for name in node.input:
            value = self.constants.get(name)
            if value is not None and value.ndim == 1 and value.size > 1:
                inputs.append(f"{name}:channels")
                self.constants[inputs[-1]] = value.reshape(-1, 1, 1)
            else:
                inputs.append(name)
        return onnx_helper.make_node(node.op_type, inputs, list(node.output), name=_text(node.name),
                                     **attributes)

