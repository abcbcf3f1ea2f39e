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
