"""convgraph: a declarative CNN compiler. YAML spec -> networkx graph -> OpenCL kernels -> run."""

from convgraph.errors import (
    ConvgraphError,
    DataError,
    DeviceError,
    KernelBuildError,
    ShapeError,
    SpecError,
)

__version__ = "0.1.0"
__all__ = [
    "analyse",
    "compile",
    "load",
    "Model",
    "Target",
    "load_weights",
    "export_onnx",
    "callbacks",
    "ConvgraphError",
    "SpecError",
    "ShapeError",
    "KernelBuildError",
    "DeviceError",
    "DataError",
]


def compile(spec, device=None, batch=None, overrides=(), share_buffers=True):  # noqa: A001
    """Compile a spec for an OpenCL device (a selector or a Target), planned for ``batch``
    (default: the spec's ``train: batch``); see convgraph.model.compile."""
    from convgraph.model import compile as compile_model

    return compile_model(spec, device=device, batch=batch, overrides=overrides,
                         share_buffers=share_buffers)


def export_onnx(model, path, opset=None, normalize_input=None):
    """Write a Model (graph, weights, input normalisation) to ``path`` as an ONNX model; see
    convgraph.onnx.export.export_onnx (needs the ``onnx`` extra)."""
    return model.export_onnx(path, opset=opset, normalize_input=normalize_input)


def __getattr__(name: str):
    """``analyse``, ``Model``, ``Target``, ``load`` and ``load_weights`` on first use: importing
    convgraph stays light (no OpenCL, no networkx) for ``convgraph check`` and spec tools, and
    so that the command line's signal handlers are in place before anything heavy loads."""
    if name == "analyse":
        from convgraph.pipeline import analyse

        return analyse
    if name == "Model":
        from convgraph.model import Model

        return Model
    if name == "Target":
        from convgraph.runtime.target import Target

        return Target
    if name == "callbacks":  # convgraph.callbacks.EarlyStopping, as keras.callbacks has it
        import convgraph.callbacks as callbacks

        return callbacks
    if name == "load":  # a saved model: a .npz from save/--save, or a compiled artifact folder
        from convgraph.model import load

        return load
    if name == "load_weights":
        from convgraph.train.checkpoint import load_weights

        return load_weights
    raise AttributeError(f"module 'convgraph' has no attribute {name!r}")
