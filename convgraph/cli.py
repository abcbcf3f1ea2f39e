"""The `convgraph` command: a thin layer that parses arguments, calls the library, prints results.

Every ConvgraphError becomes one paragraph on stderr and its exit status (2 for a bad spec);
nothing a user can cause ends in a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from convgraph import __version__
from convgraph.errors import ConvgraphError
from convgraph.pipeline import analyse


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override a spec value, e.g. --set lr=0.05 --set train.batch=128 "
        "(bare keys are train: settings)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convgraph",
        description="A declarative CNN compiler: YAML spec -> graph -> shapes -> OpenCL kernels.",
    )
    parser.add_argument("--version", action="version", version=f"convgraph {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    compile_ = commands.add_parser(
        "compile",
        help="check a spec and print its summary (layers, volumes, params, FLOPs)",
        description="Parse SPEC, infer and check every shape, and print a summary table.",
    )
    compile_.add_argument("spec", help="the model spec (.yaml)")
    compile_.add_argument(
        "--json",
        action="store_true",
        help="print exactly one JSON object on stdout instead of the table",
    )
    compile_.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        help="write the compiled artifact (graph.json, spec.yaml, summary.txt)",
    )
    compile_.add_argument(
        "--expand", action="store_true", help="print the spec in its canonical long (graph) form"
    )
    compile_.add_argument(
        "--graph",
        metavar="FILE",
        help="draw the network to FILE.svg/.png/.pdf (Graphviz) or FILE.dot",
    )
    _add_overrides(compile_)
    compile_.set_defaults(handler=command_compile)

    check = commands.add_parser(
        "check",
        help="validate one or more specs (no kernels, no device); for CI",
        description="Validate each SPEC; exit 0 if all are valid, 2 if any is not.",
    )
    check.add_argument("specs", nargs="+", metavar="SPEC")
    _add_overrides(check)
    check.set_defaults(handler=command_check)
    return parser


def command_compile(args) -> int:
    from convgraph.draw import draw
    from convgraph.spec.expand import expanded_yaml
    from convgraph.summary import print_summary, summary_json

    graph = analyse(args.spec, args.overrides)
    if args.output:
        write_artifact(graph, Path(args.output))
    if args.graph:
        note = draw(graph, args.graph)
        print(note, file=sys.stderr if args.json or args.expand else sys.stdout)
    if args.json:
        print(json.dumps(summary_json(graph), indent=2))
    elif args.expand:
        print(expanded_yaml(graph.graph["spec"]), end="")
    else:
        print_summary(graph)
        if args.output:
            print(f"wrote the compiled artifact to {args.output}/")
    return 0


def write_artifact(graph, directory: Path) -> None:
    """The compiled artifact: what the compiler decided, as files a person can read."""
    from rich.console import Console

    from convgraph.spec.expand import expanded_yaml
    from convgraph.summary import print_summary, summary_json

    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "graph.json").write_text(json.dumps(summary_json(graph), indent=2) + "\n")
        (directory / "spec.yaml").write_text(expanded_yaml(graph.graph["spec"]))
        with open(directory / "summary.txt", "w") as handle:
            print_summary(graph, Console(file=handle, width=140, color_system=None))
    except OSError as exc:
        raise ConvgraphError(
            f"cannot write the compiled artifact to {directory}: {exc.strerror or exc}."
        ) from None


def command_check(args) -> int:
    from convgraph.shapes import totals

    status = 0
    for path in args.specs:
        try:
            graph = analyse(path, args.overrides)
        except ConvgraphError as exc:
            print(f"FAIL {exc}", file=sys.stderr)
            status = max(status, exc.exit_status)
            continue
        sums = totals(graph)
        print(
            f"ok   {path}: {graph.graph['name']}, {len(graph)} layers, "
            f"{sums['params']:,} parameters, {sums['flops'] / 1e6:,.1f} MFLOPs per image"
        )
    return status


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ConvgraphError as exc:
        print(f"convgraph: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("convgraph: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug in convgraph, not the user's fault: say so, briefly
        if os.environ.get("CONVGRAPH_DEBUG"):
            traceback.print_exc()
        print(
            f"convgraph: internal error ({type(exc).__name__}: {exc}). This is a bug in "
            "convgraph; please report it with the spec that caused it (set CONVGRAPH_DEBUG=1 "
            "for the traceback).",
            file=sys.stderr,
        )
        return 70


if __name__ == "__main__":
    sys.exit(main())
