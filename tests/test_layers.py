"""The package's stages import downwards only: no import circles, no upward imports.

The pipeline reads like its sentence (spec -> graph -> shapes -> plan -> kernels -> run), and so do
the imports: each module may import its own stage and the stages below it, never one above. Every
import counts, those inside functions too (they are how an upward import hides).
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parent.parent / "convgraph"

# lowest first; a module may import from its own stage and any earlier one
STAGES = [
    # launches.py holds plain data types (buffers, kernels, launches) that ops' lowerings build
    ("core", ["convgraph.core", "convgraph.errors", "convgraph.files", "convgraph.memory",
              "convgraph.display", "convgraph.signals",
              "convgraph.codegen.launches"]),
    ("ops", ["convgraph.ops"]),
    ("data", ["convgraph.data"]),  # owns the list of data sets the spec's train: may name
    ("spec", ["convgraph.spec"]),
    ("graph", ["convgraph.graph", "convgraph.shapes", "convgraph.passes", "convgraph.pipeline",
               "convgraph.reference", "convgraph.params", "convgraph.summary", "convgraph.draw"]),
    ("codegen", ["convgraph.codegen", "convgraph.kernels"]),
    ("runtime", ["convgraph.runtime"]),
    ("train", ["convgraph.train"]),
    ("api", ["convgraph.model", "convgraph.verify", "convgraph.onnx", "convgraph"]),
    ("cli", ["convgraph.cli"]),
]


def stage_of(module: str) -> int:
    """The index in STAGES of the most specific prefix naming ``module``."""
    best, length = None, -1
    for index, (_, prefixes) in enumerate(STAGES):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = index, len(prefix)
    assert best is not None, f"{module} belongs to no stage: add it to STAGES"
    return best


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every convgraph module ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    # 'from convgraph.x import name' names module convgraph.x.name only if that module exists
    return {name for name in found if name in modules}


def import_graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        graph.add_node(name)
        for target in imports_of(path):
            if target != name and not name.startswith(target + "."):  # a package's parent
                graph.add_edge(name, target)
    return graph


def test_every_module_has_a_stage():
    for module in import_graph():
        stage_of(module)


def test_no_upward_imports():
    upward = [f"{a} ({STAGES[stage_of(a)][0]}) imports {b} ({STAGES[stage_of(b)][0]})"
              for a, b in import_graph().edges if stage_of(b) > stage_of(a)]
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def test_no_import_circles():
    graph = import_graph()
    # a package importing its own submodules (ops/__init__ registering its ops) is not a circle
    graph.remove_edges_from([(a, b) for a, b in list(graph.edges) if b.startswith(a + ".")])
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c + [c[0]]) for c in cycles)
