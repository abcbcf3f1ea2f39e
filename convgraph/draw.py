"""Drawing a network: Graphviz DOT text, rendered by `dot` when it is installed.

The drawing is one box per layer (a fused activation drawn inside the layer that applies it),
boxes grouped in one cluster per block instance (``layer1/block2/conv1`` sits in ``layer1`` and
``layer1/block2``), edges labelled with the tensor's volume (and, into a layer of several inputs,
the input's position), and a deep network's top-level stretches laid side by side in columns so
the picture stays near a page's shape instead of one column many thousands of pixels tall.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from convgraph.display import shown
from convgraph.errors import OutputError
from convgraph.graph import ordered
from convgraph.ops.base import REGISTRY, _attr_text
from convgraph.summary import human

# the drawing's height over its width that column wrapping aims for: between a portrait page
# (1.41) and a landscape screen (0.6)
TARGET_ASPECT = 1.0
# a single column is kept up to this height over width, or this many rows: small networks read
# best top to bottom
WRAP_ABOVE_ASPECT, WRAP_ABOVE_ROWS = 2.2, 16
MAX_COLUMNS = 8
# estimated sizes in points (dot's unit) for planning the columns: a box of ~4 text lines and
# the labelled edge below it; a box's width
ROW_POINTS, BOX_POINTS = 96.0, 250.0
LIGHT, DARK = "#7a7a7a", "#333333"
FONT = "Helvetica"


def _quote(text: str) -> str:
    """A DOT id in double quotes (layer names are the user's text)."""
    escaped = shown(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _html(text) -> str:
    """Text for a Graphviz HTML-like label: the five markup characters as entities Graphviz
    knows (html.escape's &#x27; is not one of them everywhere), control characters escaped."""
    return (shown(str(text)).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))


# ---------------------------------------------------------------------------- what a box says

def settings_of(op_name: str, attrs: dict, rounding: str = "exact") -> tuple[list[str], list[str]]:
    """(the settings that differ from the op's defaults, those left at their defaults), each
    as 'key=value' -- the same rule as ``Op.describe``; the spec-wide ``rounding`` counts as a
    default."""
    op = REGISTRY[op_name]
    derived = op.derived_defaults(attrs)
    changed, defaults = [], []
    for key, value in attrs.items():
        default = op.params[key].default if key in op.params else None
        is_default = value in (default, derived.get(key, default)) or (
            key == "rounding" and value == rounding)
        (defaults if is_default else changed).append(f"{key}={_attr_text(value)}")
    return changed, defaults


def _lines(words: list[str], width: int = 34) -> list[str]:
    """``words`` joined by spaces into lines of at most ~``width`` characters."""
    lines, line = [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + [line] if line else lines


def _row(text: str, size: int = 9, colour: str = DARK, bold: bool = False) -> str:
    content = f"<B>{text}</B>" if bold else text
    return (f'<TR><TD ALIGN="LEFT" BALIGN="LEFT"><FONT POINT-SIZE="{size}" COLOR="{colour}">'
            f"{content}</FONT></TD></TR>")


def node_label(graph: nx.DiGraph, name: str, fused: list[str], sink: bool) -> str:
    """The HTML-like label of ``name``'s box: its name and op, the settings it changes, its
    defaults (lighter), the activations fused into it, its parameter count and FLOPs, and for
    the network's output its volume."""
    data = graph.nodes[name]
    rounding = graph.graph.get("rounding", "exact")
    changed, defaults = settings_of(data["op"], data["attrs"], rounding)
    # inside its block's cluster a box says only its own part of the name (the cluster says
    # the rest; the SVG's title keeps the whole name)
    rows = [_row(f"{_html(name.rsplit('/', 1)[-1])}  <I>{_html(data['op'])}</I>", 10, bold=True)]
    rows += [_row(_html(line)) for line in _lines(changed)]
    rows += [_row(_html(line), 8, LIGHT) for line in _lines(defaults, 40)]
    for other in fused:  # named as the box is: within the same block, by its own part
        same_block = other.rpartition("/")[0] == name.rpartition("/")[0]
        shown_name = other.rsplit("/", 1)[-1] if same_block else other
        rows.append(_row(f"+ {_html(graph.nodes[other]['op'])} (fused: {_html(shown_name)})",
                         8))
    figures = []
    if data["params"]:
        figures.append(f"{data['params']:,} params")
    if data["flops"]:
        figures.append(human(data["flops"], " FLOPs"))
    if figures:
        rows.append(_row(_html(" · ".join(figures)), 8, LIGHT))
    if sink:
        rows.append(_row(f"output {_html(data['output'])}", 9, bold=True))
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">'
            + "".join(rows) + "</TABLE>>")


# ---------------------------------------------------------------------------- what is drawn

def host_of(graph: nx.DiGraph, name: str) -> str:
    """The box that draws ``name``: itself, or the layer it is fused into (followed along)."""
    seen = set()
    while graph.nodes[name].get("fused_into") in graph and name not in seen:
        seen.add(name)
        name = graph.nodes[name]["fused_into"]
    return name


def _entering(graph: nx.DiGraph, box: str) -> list[str]:
    """The layers whose outputs enter ``box`` from outside it, in input order: a layer fused
    into the box ahead of it (an implicit flatten before an fc) stands for its own inputs."""
    found = []
    for source in graph.nodes[box]["inputs"]:
        if host_of(graph, source) == box:
            found += _entering(graph, source)
        else:
            found.append(source)
    return found


@dataclass
class Drawing:
    """The boxes and edges to draw, in the spec's order."""

    boxes: list[str]
    fused: dict[str, list[str]]  # box -> the layers drawn inside it
    edges: list[tuple[str, str, str]]  # (source box, target box, label)
    column: dict[str, int] = field(default_factory=dict)  # box -> its column (0: the first)


def plan_drawing(graph: nx.DiGraph) -> Drawing:
    names = ordered(graph)
    boxes = [n for n in names if host_of(graph, n) == n]
    fused: dict[str, list[str]] = {box: [] for box in boxes}
    for name in names:
        if host_of(graph, name) != name:
            fused[host_of(graph, name)].append(name)
    edges = []
    for target in boxes:
        inputs = _entering(graph, target)
        for index, source in enumerate(inputs):
            volume = str(graph.nodes[source]["output"])
            label = f"{index + 1}: {volume}" if len(inputs) > 1 else volume
            edges.append((host_of(graph, source), target, label))
    drawing = Drawing(boxes, fused, edges)
    drawing.column = assign_columns(drawing)
    return drawing


def segments_of(boxes: list[str]) -> list[list[str]]:
    """Consecutive boxes of one top-level block instance together, every other box alone: the
    pieces a column break may fall between (a block is never cut in two)."""
    pieces: list[list[str]] = []
    previous = None
    for box in boxes:
        top = box.split("/", 1)[0] if "/" in box else None
        if top is not None and top == previous:
            pieces[-1].append(box)
        else:
            pieces.append([box])
        previous = top
    return pieces


def _extent(piece: list[str], edges) -> tuple[int, int]:
    """(rows, boxes side by side) of a piece laid out alone: its longest path and its widest
    rank."""
    inside = nx.DiGraph()
    inside.add_nodes_from(piece)
    inside.add_edges_from((s, t) for s, t, _ in edges if s in inside and t in inside)
    depth: dict[str, int] = {}
    for box in nx.topological_sort(inside):
        depth[box] = max((depth[p] + 1 for p in inside.predecessors(box)), default=0)
    rows = max(depth.values()) + 1
    width = max(list(depth.values()).count(d) for d in range(rows))
    return rows, width


def _pack(extents: list[tuple[int, int]], columns: int) -> list[int]:
    """Each piece's column, filling columns in order to about an equal number of rows."""
    total = sum(rows for rows, _ in extents)
    target = total / columns
    assignment, column, filled = [], 0, 0
    for rows, _ in extents:
        # a new column when this piece would overshoot the target by more than it undershoots
        if filled and column < columns - 1 and filled + rows - target > target - filled:
            column, filled = column + 1, 0
        assignment.append(column)
        filled += rows
    return assignment


def _aspect(extents, assignment) -> float:
    columns = max(assignment) + 1
    heights = [sum(e[0] for e, c in zip(extents, assignment) if c == k) for k in range(columns)]
    widths = [max((e[1] for e, c in zip(extents, assignment) if c == k), default=1)
              for k in range(columns)]
    return (max(heights) * ROW_POINTS) / (sum(widths) * BOX_POINTS)


def assign_columns(drawing: Drawing) -> dict[str, int]:
    """Each box's column: one column while the drawing is short or not much taller than wide,
    else the number of columns whose estimated shape comes nearest TARGET_ASPECT."""
    pieces = segments_of(drawing.boxes)
    extents = [_extent(piece, drawing.edges) for piece in pieces]
    best = [0] * len(pieces)
    rows = sum(e[0] for e in extents)
    if rows > WRAP_ABOVE_ROWS and _aspect(extents, best) > WRAP_ABOVE_ASPECT:
        score = math.inf
        for columns in range(2, min(MAX_COLUMNS, len(pieces)) + 1):
            assignment = _pack(extents, columns)
            miss = abs(math.log(_aspect(extents, assignment) / TARGET_ASPECT))
            if miss < score:
                best, score = assignment, miss
    return {box: column for piece, column in zip(pieces, best) for box in piece}


# ---------------------------------------------------------------------------- DOT text

def _cluster_names(graph: nx.DiGraph) -> dict[str, str]:
    """Block instance -> the block it instantiates, from the layers' context ("in block
    'basic' used as 'layer1/block1'"), where the spec loader recorded one."""
    names = {}
    for name in graph:
        found = re.fullmatch(r"in block '(.+)' used as '(.+)'",
                             getattr(graph.nodes[name].get("layer"), "context", "") or "")
        if found:
            names[found.group(2)] = found.group(1)
    return names


def _clusters(drawing: Drawing, graph: nx.DiGraph, indent: str = "  ") -> list[str]:
    """The boxes, nested in one ``subgraph cluster_N`` per block instance."""
    tree: dict = {}
    for box in drawing.boxes:
        place = tree
        parts = box.split("/")
        for depth in range(1, len(parts)):
            place = place.setdefault("/".join(parts[:depth]), {})
        place.setdefault(None, []).append(box)
    blocks = _cluster_names(graph)
    sinks = {n for n in graph if graph.out_degree(n) == 0}
    counter = iter(range(1 << 30))
    lines: list[str] = []

    def emit(place: dict, indent: str) -> None:
        for key, inner in place.items():
            if key is None:
                for box in inner:
                    label = node_label(graph, box, drawing.fused[box],
                                       sink=box in sinks or any(f in sinks
                                                                for f in drawing.fused[box]))
                    colour = REGISTRY[graph.nodes[box]["op"]].colour
                    lines.append(f"{indent}{_quote(box)} [label={label}, "
                                 f"fillcolor={_quote(colour)}];")
                continue
            title = _html(key.rsplit("/", 1)[-1])
            if key in blocks:
                title += f'  <FONT COLOR="{LIGHT}">{_html(blocks[key])}</FONT>'
            lines.append(f"{indent}subgraph cluster_{next(counter)} {{")
            lines.append(f"{indent}  label=<<B>{title}</B>>; labeljust=l; style=\"rounded,"
                         f"filled\"; fillcolor=\"#00000008\"; color=\"#b0b0b0\";")
            emit(inner, indent + "  ")
            lines.append(f"{indent}}}")

    emit(tree, indent)
    return lines


def to_dot(graph: nx.DiGraph) -> str:
    """DOT text: one box per layer (name, op, changed settings, defaults in grey, parameters,
    fused activations), clusters per block instance, edges labelled with tensor volumes."""
    drawing = plan_drawing(graph)
    lines = [
        f"digraph {_quote(graph.graph['name'])} {{",
        "  rankdir=TB; newrank=true; nodesep=0.25; ranksep=0.25; compound=true;",
        f'  fontname="{FONT}"; fontsize=10;',
        f'  node [shape=box, style="rounded,filled", fontname="{FONT}", fontsize=10, '
        'margin="0.08,0.04", color="#555555"];',
        f'  edge [fontname="{FONT}", fontsize=8, fontcolor="{DARK}", color="#666666", '
        "arrowsize=0.6];",
    ]
    lines += _clusters(drawing, graph)
    for source, target, label in drawing.edges:
        across = drawing.column[source] != drawing.column[target]
        attrs = f'label=<<FONT COLOR="{DARK}">{_html(label)}</FONT>>'
        if across:  # a column's first box starts at the top, beside the previous column
            attrs += ', constraint=false, style=dashed, color="#999999"'
        lines.append(f"  {_quote(source)} -> {_quote(target)} [{attrs}];")
    heads = [next(b for b in drawing.boxes if drawing.column[b] == k)
             for k in sorted(set(drawing.column.values()))]
    if len(heads) > 1:  # the columns' first boxes on the top row, in order left to right
        lines.append("  { rank=same; " + " ".join(map(_quote, heads)) + "; }")
        lines += [f"  {_quote(a)} -> {_quote(b)} [style=invis];" for a, b in zip(heads, heads[1:])]
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- rendering

def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as exc:
        raise OutputError(f"cannot write the --graph file {path}: {exc.strerror or exc}.",
                          hint="choose a file in a folder you can write.") from None


def render_svg(graph: nx.DiGraph) -> str | None:
    """The drawing as SVG text (for inlining in a page), or None when Graphviz's ``dot`` is not
    installed or fails."""
    dot = shutil.which("dot")
    if dot is None:
        return None
    try:
        result = subprocess.run([dot, "-Tsvg"], input=to_dot(graph), text=True,
                                capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


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
