"""Every op convgraph knows. Importing this package registers them all (see base.REGISTRY)."""

from convgraph.ops import activation, conv, dense, merge, norm, pool, source  # noqa: F401
from convgraph.ops.base import (
    REGISTRY,
    LayerDef,
    Node,
    Op,
    Param,
    Volume,
    Weight,
    canonical_op_name,
    register,
)

__all__ = ["REGISTRY", "LayerDef", "Node", "Op", "Param", "Volume", "Weight", "canonical_op_name",
           "register"]
