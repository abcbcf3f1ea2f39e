"""What a compiled network is, for people (a table) and for programs (one JSON object)."""

from __future__ import annotations

import networkx as nx
from rich.console import Console

from convgraph.codegen.launches import Buffer
from convgraph.display import (
    Column,
    Listing,
    markup_safe,
    output_console,
    plural,
    print_listing,
)
from convgraph.graph import ordered
from convgraph.ops.base import REGISTRY
from convgraph.shapes import totals


def plain(value):
    """Attribute values as JSON/YAML-friendly data: tuples -> lists, volumes -> [w, h, d]."""
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def describe_attrs(op: str, attrs: dict, rounding: str = "exact") -> str:
    """The hyperparameters that differ from the op's defaults, compactly: 'filters=12 size=3'
    (``Op.describe``). ``rounding`` is the spec-wide setting, shown only where a layer departs
    from it."""
    return REGISTRY[op].describe(attrs, rounding)


def node_record(graph: nx.DiGraph, name: str) -> dict:
    data = graph.nodes[name]
    record = {
        "name": name,
        "op": data["op"],
        "inputs": list(data["inputs"]),
        "output_shape": list(data["output"]),
        "params": data["params"],
        "flops": data["flops"],
        "macs": data["macs"],
        "activation_bytes": data["activation_bytes"],
        "attrs": plain(data["attrs"]),
        "param_shapes": {k: list(v) for k, v in data["param_shapes"].items()},
    }
    if data.get("epilogue"):
        record["fused_epilogue"] = data["epilogue"]
    if data.get("fused_into"):
        record["fused_into"] = data["fused_into"]
    return record


def summary_json(graph: nx.DiGraph) -> dict:
    """The stable machine-readable summary (see the README's `compile --json` contract)."""
    sums = totals(graph)
    names = ordered(graph)
    return {
        "name": graph.graph["name"],
        "source": graph.graph["source"],
        "input": list(graph.nodes[names[0]]["output"]),
        "output": graph.graph["output"],
        "nodes": [node_record(graph, n) for n in names],
        "total_params": sums["params"],
        "total_buffers": sums["buffers"],
        "total_flops": sums["flops"],
        "total_macs": sums["macs"],
        "activation_bytes": sums["activation_bytes"],
        "param_bytes": sums["param_bytes"],
    }


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M'."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:g}{unit}" if isinstance(n, float) else f"{n}{unit}"


def mib(n: int) -> str:
    if n < 2**10:
        return f"{n} B"
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


SUMMARY_COLUMNS = [
    Column("layer"), Column("op"),
    Column("hyperparameters", short="hyper", secondary=True, wrap=True),
    Column("output", "right"), Column("params", "right"), Column("FLOPs", "right"),
    Column("memory", "right", short="mem", secondary=True),
]


def summary_listing(graph: nx.DiGraph) -> Listing:
    """The summary as a table: one row per layer, then the totals."""
    sums = totals(graph)
    title = f"{graph.graph['name']}  ({graph.graph['source']}"
    title += (
        f", rounding: {graph.graph['rounding']})" if graph.graph["rounding"] != "exact" else ")"
    )
    listing = Listing(title, SUMMARY_COLUMNS)
    for name in ordered(graph):
        data = graph.nodes[name]
        op = (
            data["op"]
            + (f" +{graph.nodes[data['epilogue']]['op']}" if data.get("epilogue") else "")
            + (" (fused)" if data.get("fused_into") else "")
        )
        hyper = describe_attrs(data["op"], data["attrs"], graph.graph["rounding"])
        listing.rows.append([name, op, hyper, str(data["output"]), f"{data['params']:,}",
                             human(data["flops"]), mib(data["activation_bytes"])])
    listing.totals.append(["total", "", "", "", f"{sums['params']:,}", human(sums["flops"]),
                           mib(sums["activation_bytes"])])
    return listing


def summary_line(graph: nx.DiGraph) -> str:
    """The sentence under the summary table: layers, parameters, FLOPs, activations."""
    sums = totals(graph)
    return (f"{plural(len(graph), 'layer')}, {plural(sums['params'], 'parameter')} "
            f"({mib(sums['param_bytes'])}), "
            f"{human(sums['flops'], ' FLOPs')} per image forward (multiply-add = 2), "
            f"{mib(sums['activation_bytes'])} of activations per image.")


def print_summary(graph: nx.DiGraph, console: Console | None = None) -> None:
    """The summary table and its sentence, laid out as the console calls for (a terminal's
    width, plain text into a pipe or a file: convgraph.display's output policy)."""
    console = console or output_console()
    print_listing(summary_listing(graph), console)
    console.print(markup_safe(summary_line(graph)), highlight=False)


def plan_text(model) -> str:
    """The plan as a person reads it: buffers, then every launch in order with its sizes."""
    plan = model.plan
    lines = [f"# plan of '{model.graph.graph['name']}' for {model.info.label}, batch {model.batch}",
             "", "## buffers (shared by liveness; per image: elements x 4 bytes)"]
    for index, elements in enumerate(plan.buffer_elements):
        users = [s for s, b in plan.buffer_of.items() if b == index]
        lines.append(f"buffer {index}: {elements * 4 * model.batch:,} bytes, holds "
                     + ", ".join(f"{s} ({plan.layouts[s].volume}, halo {plan.layouts[s].halo}, "
                                 f"channels {plan.layouts[s].stride_c})" for s in users))
    lines += ["", "## launches, in order"]
    for launch, record in zip(plan.launches, model.kernel_records()):
        args = ", ".join(map(_arg_text, launch.args))
        lines.append(f"{record['node']}: {record['name']} global {tuple(record['global_size'])} "
                     f"local {tuple(record['local_size']) if record['local_size'] else 'auto'} "
                     f"({args})")
    folded = plan.folded_layers()
    if folded:  # inference: layers with no kernel of their own
        lines += ["", "## folded (done by the kernel of the layer before)"]
        lines += [f"{layer}: folded into {into}" for layer, into in folded.items()]
    return "\n".join(lines) + "\n"


def _arg_text(arg) -> str:
    """A launch argument as the plan listing shows it: 'tensor:conv1' (the activation, whichever
    buffer it shares), 'param:conv1:weight', 'batch'."""
    if isinstance(arg, Buffer) and arg.kind == "act":
        return f"tensor:{arg.node}"
    return arg.name
