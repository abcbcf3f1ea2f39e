"""convgraph: a declarative CNN compiler. YAML spec -> networkx graph -> OpenCL kernels -> run."""

from convgraph.errors import (
    ConvgraphError,
    DataError,
    DeviceError,
    KernelBuildError,
    ShapeError,
    SpecError,
)
from convgraph.pipeline import analyse

__version__ = "0.1.0"
__all__ = [
    "analyse",
    "ConvgraphError",
    "SpecError",
    "ShapeError",
    "KernelBuildError",
    "DeviceError",
    "DataError",
]


def compile(spec, device=None, batch=64, overrides=(), share_buffers=True):  # noqa: A001
    """Compile a spec for an OpenCL device; see convgraph.model.compile."""
    from convgraph.model import compile as compile_model

    return compile_model(spec, device=device, batch=batch, overrides=overrides,
                         share_buffers=share_buffers)
