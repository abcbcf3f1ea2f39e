"""Drawing a network: Graphviz DOT text, rendered by `dot` when it is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import networkx as nx

from convgraph.errors import OutputError
from convgraph.graph import ordered
from convgraph.ops.base import REGISTRY
from convgraph.summary import describe_attrs


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def to_dot(graph: nx.DiGraph) -> str:
    """DOT text: one box per layer labelled with name, op, hyperparameters and output volume."""
    lines = [
        f"digraph {_quote(graph.graph['name'])} {{",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
    ]
    for name in ordered(graph):
        data = graph.nodes[name]
        hyper = describe_attrs(data["op"], data["attrs"], graph.graph["rounding"])
        label = "\n".join(
            x for x in (name, data["op"] + (f" {hyper}" if hyper else ""), str(data["output"])) if x
        )
        colour = REGISTRY[data["op"]].colour
        lines.append(f"  {_quote(name)} [label={_quote(label)}, fillcolor={_quote(colour)}];")
    for name in ordered(graph):
        for source in graph.nodes[name]["inputs"]:
            lines.append(f"  {_quote(source)} -> {_quote(name)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as exc:
        raise OutputError(f"cannot write the --graph file {path}: {exc.strerror or exc}.",
                          hint="choose a file in a folder you can write.") from None


def draw(graph: nx.DiGraph, path: str) -> str:
    """Write the drawing to ``path``; returns a sentence saying what was written."""
    target = Path(path)
    dot_text = to_dot(graph)
    fmt = target.suffix.lstrip(".").lower()
    if fmt in ("dot", "gv", ""):
        _write(target, dot_text)
        return f"wrote the DOT graph to {target}"
    dot = shutil.which("dot")
    if dot is None:
        fallback = target.with_suffix(".dot")
        _write(fallback, dot_text)
        return (
            f"Graphviz's 'dot' is not installed, so wrote the DOT text to {fallback} instead "
            f"of {target} (apt-get install graphviz, then: dot -T{fmt} {fallback} -o {target})"
        )
    result = subprocess.run(
        [dot, f"-T{fmt}", "-o", str(target)],
        input=dot_text,
        text=True,
        capture_output=True,
        timeout=60,
    )
    if result.returncode != 0:
        detail = result.stderr.strip()
        # dot says "Format: "x" not recognized" for a format it lacks; anything else (a folder
        # gone, a full disk) is about the file, not the format
        format_problem = "not recognized" in detail or "Use one of" in detail
        raise OutputError(
            f"Graphviz could not draw {target}: {detail.splitlines()[0] if detail else ''}",
            hint="use a format dot knows (svg, png, pdf) or write .dot." if format_problem
            else "choose a file in a folder you can write.",
        )
    return f"drew the graph to {target}"
