"""Model parameters on the host: named and shaped as PyTorch and ONNX name and shape them.

``<node>.weight`` and ``<node>.bias`` for conv and fc (conv weights (filters, depth // groups,
kernel_h, kernel_w), fc weights (units, inputs) with inputs in (depth, height, width) order), and
``.weight``, ``.bias``, ``.running_mean``, ``.running_var`` for batchnorm.
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np

from convgraph.errors import DataError
from convgraph.graph import ordered


def expected_shapes(graph: nx.DiGraph) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for name in ordered(graph):
        data = graph.nodes[name]
        for key, shape in {**data["param_shapes"], **data["buffer_shapes"]}.items():
            shapes[f"{name}.{key}"] = tuple(shape)
    return shapes


def initial_params(graph: nx.DiGraph, init: str = "he", seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded initial values, as each op declares them (ops/base.Weight): weights He (normal,
    fan-in) or Glorot (uniform) by ``init``, biases zero, batchnorm's scale and variance one.
    One generator draws for every weight in graph order, so a seed gives one network."""
    check_host_params(graph)  # before drawing anything
    rng = np.random.default_rng(seed)
    params = {}
    for name in ordered(graph):
        node = graph.nodes[name]
        for key in {**node["param_shapes"], **node["buffer_shapes"]}:
            params[f"{name}.{key}"] = node.weights[key].initial(rng, init).astype(np.float32)
    return params


def check_params(graph: nx.DiGraph, params: dict, source: str = "the parameters") -> None:
    """Every expected array present with its shape, nothing unknown, all finite."""
    shapes = expected_shapes(graph)
    missing = [key for key in shapes if key not in params]
    unknown = [key for key in params if key not in shapes]
    if missing or unknown:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else ""))
        if unknown:
            parts.append("unknown " + ", ".join(unknown[:6]) + (" ..." if len(unknown) > 6 else ""))
        raise DataError(f"{source} do not fit the model '{graph.graph['name']}': "
                        + "; ".join(parts) + ".",
                        hint="weights are named <node>.weight, <node>.bias (batchnorm also "
                             ".running_mean, .running_var); see 'convgraph compile --json'.")
    for key, shape in shapes.items():
        array = np.asarray(params[key])
        if array.shape != shape:
            raise DataError(f"{source}: '{key}' has shape {array.shape}, but the model needs "
                            f"{shape}.", hint="conv weights are (filters, depth // groups, "
                            "kernel_h, kernel_w); fc weights (units, inputs).")
        if not np.all(np.isfinite(array)):
            raise DataError(f"{source}: '{key}' holds NaN or infinite values.")


def load_arrays(path, what: str = "weights") -> dict[str, np.ndarray]:
    """Arrays from a .npz (never unpickling) or a single .npy; DataError naming the file.

    ``path`` must be a regular file (a FIFO or device is refused at once, never read), each
    array's header is checked against the bytes the file holds before anything is allocated
    (data/arrays.py), only plain numbers are read, and none may be NaN or infinite.

    >>> load_arrays("runs/best.npz")["conv1.weight"].shape  # doctest: +SKIP
    (8, 3, 3, 3)
    """
    from convgraph.data.arrays import NpzReader, describe_value, first_nonfinite, place, read_npy
    from convgraph.files import readable_file

    target = readable_file(path, f"the {what} file")
    try:
        with open(target, "rb") as handle:
            head = handle.read(6)
    except OSError as exc:
        raise DataError(f"the {what} file {path} cannot be read: {exc.strerror or exc}.") \
            from None
    if str(path).endswith(".npy"):
        arrays = {"x": read_npy(target, f"the {what} file")}
    elif head.startswith(b"\x93NUMPY"):
        raise DataError(f"{path} is a single array; {what} need a .npz of named arrays.")
    elif head.startswith(b"PK"):
        with NpzReader(target, f"the {what} file") as archive:
            arrays = archive.read_all()
    else:
        raise DataError(f"{path} is not a readable .npz/.npy file (it starts like neither a "
                        "zip archive nor a .npy array).",
                        hint="save it with numpy.savez (named arrays) or numpy.save.")
    for key, array in arrays.items():
        index = first_nonfinite(array)
        if index is not None:
            raise DataError(f"the {what} file {path}: '{key}' holds {describe_value(array[index])}"
                            f" at {place(index, what == 'input')}; every value must be a finite "
                            "number.",
                            hint=f"replace the NaN and infinite values in {path}.")
    return arrays


def to_device_layouts(graph: nx.DiGraph, params: dict, layout_of
                      ) -> dict[tuple[str, str], np.ndarray]:
    """Every node's parameters re-laid by its op for the kernels (``device_params``), as float32,
    keyed (node, name); ``layout_of(node)`` gives a node's stored layout."""
    from convgraph.ops.base import REGISTRY
    from convgraph.reference import node_params

    arrays = {}
    for name in ordered(graph):
        own = node_params(params, name)
        if not own:
            continue
        data = graph.nodes[name]
        inputs = data["inputs"]
        relaid = REGISTRY[data["op"]].device_params(
            data, own, layout_of(inputs[0]) if inputs else None, layout_of(name))
        arrays.update({(name, key): np.asarray(value, np.float32)
                       for key, value in relaid.items()})
    return arrays


def device_bytes(arrays: dict) -> int:
    """Bytes the device holds for these arrays (an empty one still takes one value)."""
    return sum(max(4, np.asarray(array).nbytes) for array in arrays.values())


def device_param_elements(graph: nx.DiGraph, layout_of) -> dict[tuple[str, str], int]:
    """The float count of every array ``to_device_layouts`` makes, keyed (node, name), from the
    shapes alone (each op's ``device_param_elements``): nothing is allocated, so a network of
    terabytes is sized in microseconds."""
    from convgraph.ops.base import REGISTRY

    counts = {}
    for name in ordered(graph):
        data = graph.nodes[name]
        if not {**data["param_shapes"], **data["buffer_shapes"]}:
            continue  # to_device_layouts skips a node without parameters
        inputs = data["inputs"]
        sizes = REGISTRY[data["op"]].device_param_elements(
            data, layout_of(inputs[0]) if inputs else None, layout_of(name))
        counts.update({(name, key): int(count) for key, count in sizes.items()})
    return counts


def device_param_bytes(graph: nx.DiGraph, layout_of) -> int:
    """Bytes of every parameter once re-laid for the kernels, known before anything exists on
    the device or the host (an empty array still takes one value, as in ``device_bytes``)."""
    return sum(max(4, 4 * count) for count in device_param_elements(graph, layout_of).values())


def host_param_bytes(graph: nx.DiGraph) -> dict[str, int]:
    """Bytes of each host parameter array (float32), by name, from the shapes alone."""
    return {key: 4 * math.prod(shape) for key, shape in expected_shapes(graph).items()}


def check_host_params(graph: nx.DiGraph) -> int:
    """Refuse (DeviceError, before allocating) parameters the host cannot hold: the float32
    arrays plus the float64 draw of the largest one (``Weight.initial``) and a re-laid copy for
    the device. Returns the bytes estimated."""
    from convgraph.memory import check_host

    sizes = host_param_bytes(graph)
    total = sum(sizes.values())
    largest = max(sizes.values(), default=0)
    needed = 2 * total + 2 * largest  # host arrays, device re-layout, float64 temporary
    if not sizes:
        return 0
    layer = max(sizes, key=sizes.get).rsplit(".", 1)[0]
    return check_host(
        needed, f"the parameters of '{graph.graph['name']}' (host copy, float64 draw and the "
        "re-laid copy for the device)", list(sizes.items()),
        hint=f"make layer '{layer}' smaller (a smaller input or more pooling before it, fewer "
             "filters or units), or use a machine with more memory.")
