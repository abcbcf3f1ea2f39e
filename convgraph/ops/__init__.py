"""Every op convgraph knows. Importing this package registers them all (see base.REGISTRY).

Every module of the package is imported, in name order, so a new op is one new file here: no
list of modules to extend.
"""

import importlib
import pkgutil

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

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["REGISTRY", "LayerDef", "Node", "Op", "Param", "Volume", "Weight", "canonical_op_name",
           "register"]
