"""ONNX export: a validated graph and its weights as an ONNX model (inference).

Every node becomes the ONNX nodes its op declares (``Op.onnx_export`` in ops/); this module
only walks the graph in order, names the values, holds the weights as initializers, puts the
input normalisation first and checks the result with ``onnx.checker`` (the full check). Every
value between nodes is a volume, (N, D, H, W) with a symbolic batch N; the model's output is
(N, D) where the network ends in 1x1xD, as ``Model.forward`` returns it.

>>> export_graph(convgraph.analyse("specs/lenet5.yaml"), params, "lenet5.onnx")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convgraph import __version__
from convgraph.errors import SpecError, SpecErrors, UsageError
from convgraph.graph import ordered
from convgraph.ops.base import REGISTRY, NotExportable

FIRST_OPSET = 13  # Softmax along one axis, Pad's and Reshape's settings as inputs
DEFAULT_OPSET = 17


def onnx_library():
    """The onnx package, or UsageError saying how to install it (the ``onnx`` extra)."""
    try:
        import onnx
        import onnx.checker
        import onnx.helper
        import onnx.numpy_helper
    except ImportError:
        raise UsageError("ONNX export needs the onnx package, which is not installed.",
                         hint="pip install onnx onnxruntime (or pip install -e '.[onnx]' in a "
                              "convgraph checkout).") from None
    return onnx


def newest_opset() -> int:
    """The newest opset the installed onnx knows (and checks models against)."""
    return onnx_library().defs.onnx_opset_version()


def check_opset(opset) -> int:
    """``opset`` as a whole number from FIRST_OPSET to ``newest_opset()``, else UsageError."""
    newest = newest_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not \
            FIRST_OPSET <= opset <= newest:
        raise UsageError(f"ONNX opset {opset!r} cannot be exported.",
                         hint=f"give an opset from {FIRST_OPSET} to {newest} (default "
                              f"{DEFAULT_OPSET}).")
    return opset


class OnnxGraph:
    """What one convgraph node's ``onnx_export`` builds with: its ``inputs`` (value names),
    the ``output`` value it must produce, its weights (``param``), and ``add`` for nodes."""

    def __init__(self, params: dict, opset: int = DEFAULT_OPSET):
        self.params, self.opset = params, opset  # the opset, for ops whose mapping needs one
        self.nodes: list = []
        self.initializers: list = []
        self.values: dict[str, str] = {}  # convgraph node -> the ONNX value holding its output
        self.node = None
        self.inputs: list[str] = []
        self.output = ""
        self._count = 0

    def start(self, node, inputs: list[str]) -> None:
        """Make ``node`` (a graph Node) the one being exported, reading ``inputs``."""
        self.node, self.inputs, self.output = node, inputs, node.name
        self.values[node.name] = node.name

    def add(self, op_type: str, inputs: list[str], output: str | None = None,
            **attributes) -> str:
        """One ONNX node; returns its output's name (a fresh one unless ``output`` is given)."""
        helper = onnx_library().helper
        self._count += 1
        output = output or f"{self.node.name}/{op_type}_{self._count}"
        self.nodes.append(helper.make_node(op_type, inputs, [output],
                                           name=f"{self.node.name}/{op_type}_{self._count}",
                                           **attributes))
        return output

    def initializer(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(onnx_library().numpy_helper.from_array(array, name))
        return name

    def param(self, key: str) -> str:
        """This node's weight ``key`` (``<node>.<key>``, as PyTorch names it), as float32."""
        name = f"{self.node.name}.{key}"
        return self.initializer(name, np.asarray(self.params[name], np.float32))

    def constant(self, key: str, values, dtype: str = "float32") -> str:
        """A small constant of this node (pads, shapes) as an initializer."""
        return self.initializer(f"{self.node.name}/{key}", np.asarray(values, dtype))

    def same_as_input(self) -> None:
        """This node passes its input on unchanged (the input, dropout in inference)."""
        self.values[self.node.name] = self.inputs[0]

    def as_volume(self, value: str, output: str) -> str:
        """(N, ...) -> (N, D, 1, 1): a flat value as the 1x1xD volume convgraph makes it."""
        return self.add("Reshape", [value, self.constant("volume_shape", [0, -1, 1, 1],
                                                         "int64")], output=output)


def export_onnx(model, path, opset: int = DEFAULT_OPSET, normalize_input: bool | None = None
                ) -> Path:
    """Write ``model`` (a ``convgraph.Model``: its graph, weights and input normalisation) to
    ``path`` as an ONNX model; ``Model.export_onnx`` and ``convgraph.export_onnx`` call this.

    ``normalize_input``: None puts the model's normalisation first where it has one, True
    requires one, False leaves it out (the ONNX model then takes standardised inputs).

    >>> model = convgraph.compile("specs/lenet5.yaml")        # doctest: +SKIP
    >>> model.load_weights("lenet5.npz")                      # doctest: +SKIP
    >>> convgraph.export_onnx(model, "lenet5.onnx", opset=17)  # doctest: +SKIP
    """
    normalization = chosen_normalization(model.normalization, normalize_input, "the model")
    return export_graph(model.graph, model.params, path, opset, normalization)


def chosen_normalization(normalization, normalize_input: bool | None, source: str):
    """The normalisation to export from what the weights record and what was asked for."""
    if normalize_input is False:
        return None
    if normalize_input and normalization is None:
        raise UsageError(f"{source} records no input normalisation to put first.",
                         hint="export without --normalize-input, or use weights saved by "
                              "training (a --save file or a checkpoint), which record it.")
    return normalization


def export_graph(graph, params: dict, path, opset: int = DEFAULT_OPSET,
                 normalization=None) -> Path:
    """Write ``graph`` (from ``convgraph.analyse``) with ``params`` (``<node>.weight``...) to
    ``path`` as an ONNX model; ``normalization`` (per-channel mean and std) becomes its first
    two nodes, ``(x - mean) / std``. Checked by ``onnx.checker`` in full before it is written
    (atomically). Returns the path.

    Raises SpecError (every node that cannot be exported, together), UsageError (the opset),
    DataError (parameters that do not fit the graph)."""
    from convgraph.files import atomic_write
    from convgraph.params import check_params

    check_params(graph, params)
    model = onnx_model(graph, params, opset, normalization)
    target = Path(path)
    atomic_write(target, lambda handle: handle.write(model.SerializeToString()))
    return target


def onnx_model(graph, params: dict, opset: int = DEFAULT_OPSET, normalization=None):
    """The checked ``onnx.ModelProto`` of ``graph`` and ``params`` (see ``export_graph``)."""
    onnx = onnx_library()
    helper, float32 = onnx.helper, onnx.TensorProto.FLOAT
    opset = check_opset(opset)
    names = ordered(graph)
    first, last = graph.nodes[names[0]], graph.nodes[graph.graph["output"]]
    # the model's input is named as the network's input node, its output "output"
    image, scores = names[0], _free_name("output", set(names))
    built = OnnxGraph(params, opset)
    x = image if normalization is None else _normalize(built, first, image, normalization)
    _export_nodes(graph, names, built, x)
    output_shape = _output(built, last, scores)
    volume = first.output
    onnx_graph = helper.make_graph(
        built.nodes, graph.graph["name"],
        [helper.make_tensor_value_info(image, float32, ["batch", volume.depth, volume.height,
                                                        volume.width])],
        [helper.make_tensor_value_info(scores, float32, output_shape)],
        built.initializers)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(onnx_graph, opset_imports=opsets, producer_name="convgraph",
                              producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model, full_check=True)  # a failure here is an exporter bug
    return model


def _export_nodes(graph, names: list[str], built: OnnxGraph, x: str) -> None:
    """Every node's ONNX nodes, in order; SpecError(s) naming every node that has none."""
    problems = []
    for name in names:
        node = graph.nodes[name]
        built.start(node, [built.values[source] for source in node.inputs] or [x])
        try:
            REGISTRY[node.op].onnx_export(node, built)
        except NotExportable as reason:
            problems.append(node.error(f"cannot be exported to ONNX: {reason}.", kind=SpecError,
                                       hint="leave the layer out, or run the network with "
                                            "convgraph itself."))
    if problems:
        raise problems[0] if len(problems) == 1 else SpecErrors(problems)


def _output(built: OnnxGraph, last, scores: str) -> list:
    """The model's output ``scores``: (N, D) for a 1x1xD volume, as ``Model.forward`` returns
    it, else the (N, D, H, W) volume; returns its shape."""
    volume, value = last.output, built.values[last.name]
    built.node = last
    if volume.width == volume.height == 1:
        built.add("Flatten", [value], output=scores, axis=1)
        return ["batch", volume.depth]
    built.add("Identity", [value], output=scores)
    return ["batch", volume.depth, volume.height, volume.width]


def _normalize(built: OnnxGraph, first, x: str, normalization) -> str:
    """(x - mean) / std per channel, as training standardised its inputs."""
    mean, std = (np.asarray(stats, np.float32).reshape(1, -1, 1, 1) for stats in normalization)
    built.node = first
    mean_name = built.initializer("normalization.mean", mean)
    std_name = built.initializer("normalization.std", std)
    centred = built.add("Sub", [x, mean_name], output="normalization/centred")
    return built.add("Div", [centred, std_name], output="normalization/standardised")


def _free_name(wanted: str, taken: set[str]) -> str:
    """``wanted``, or ``wanted:1``... where a node of the graph has that name already."""
    name, count = wanted, 0
    while name in taken:
        count += 1
        name = f"{wanted}:{count}"
    return name
