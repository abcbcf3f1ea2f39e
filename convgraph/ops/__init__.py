"""Every op convgraph knows. Importing this package registers them all (see base.REGISTRY)."""

from convgraph.ops import activation, conv, dense, merge, norm, pool, source  # noqa: F401
from convgraph.ops.base import REGISTRY, LayerDef, Op, Volume, canonical_op_name

__all__ = ["REGISTRY", "LayerDef", "Op", "Volume", "canonical_op_name"]
