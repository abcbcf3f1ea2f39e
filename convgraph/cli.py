"""The `convgraph` command: a thin layer that parses arguments, calls the library, prints results.

Every ConvgraphError becomes one paragraph on stderr and its exit status (2 for a bad spec);
nothing a user can cause ends in a traceback.
"""
# ruff: noqa: E402 -- the signal handlers are installed before the imports

from __future__ import annotations

# First, before anything heavy is imported: a Ctrl-C, SIGTERM or SIGHUP while the modules below
# load ends the process with one line and its status (130, 143, 129), not a traceback.
from convgraph import signals as _signals  # stdlib only

_IMPORT_HANDLERS = _signals.exit_during_imports()

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

import numpy as np

from convgraph import __version__
from convgraph.display import ITEM_GAP, Column, Listing, markup_safe, plural, print_listing
from convgraph.errors import ConvgraphError, DataError, OutputError, UsageError
from convgraph.pipeline import analyse

_signals.restore(_IMPORT_HANDLERS)  # main() routes them from here on


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in convgraph's form: one paragraph on stderr, exit status 2
    (argparse's own status for a bad command line), the values shown escaped."""

    def error(self, message: str):
        from convgraph.display import shown
        self.exit(2, f"{shown(self.prog)}: error: {shown(message)}. See '{shown(self.prog)} "
                     "--help'.\n")


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None


def at_least_one(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a count: --batch, --epochs, --limit,
    --top); 0 and negative numbers are refused, never read as Python slices."""
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def at_least_zero(text: str) -> int:
    """An argparse type: a whole number of at least 0 (tune's --samples)."""
    value = _whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def a_path(text: str) -> str:
    """An argparse type: a path, which cannot be empty (``--save ''`` skipped the save)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return text


def positive_number(text: str) -> float:
    """An argparse type: a finite number above 0 (--lr, --budget); nan and inf are refused."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", metavar="DEVICE", default=None,
                        help="OpenCL device: P:D index or a name fragment (pocl, nvidia, gpu, "
                             "cpu); default $CONVGRAPH_DEVICE, else the first GPU, else the first "
                             "CPU (see 'convgraph devices')")
    parser.add_argument("--batch", type=at_least_one, default=None,
                        help="the batch size to plan for (default: the spec's train: batch)")


def _add_distributed(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "data-parallel training (README, 'Distributed training'); --device may list several "
        "devices (0:0,0:1, all-gpus, all-cpus): each batch is split across them")
    group.add_argument("--distributed", action="store_true",
                       help="train over the MPI ranks of 'mpirun -n N' or srun (one device per "
                            "rank: its entry of a --device list, by local rank)")
    group.add_argument("--mpi-timeout", type=positive_number, default=None, metavar="SECONDS",
                       help="abort the job when a rank waits longer for the others (default "
                            "300)")


def _add_training(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training (overriding the spec's train: section)")
    group.add_argument("--epochs", type=at_least_one)
    group.add_argument("--lr", type=positive_number, help="learning rate")
    group.add_argument("--seed", type=int)
    group.add_argument("--optimizer", choices=("sgd", "adam", "adamw"))
    group.add_argument("--dataset", help="embedded, fashion-mnist, mnist, cifar10, npz, folder")
    group.add_argument("--data", metavar="PATH", type=a_path, help="the data set's file or folder")
    group.add_argument("--checkpoint-dir", metavar="DIR", type=a_path,
                       help="save last.npz (every epoch, and on Ctrl-C) and best.npz here")
    group.add_argument("--resume", action="store_true",
                       help="continue from DIR/last.npz (same network required)")
    group.add_argument("--metrics", metavar="FILE", type=a_path,
                       help="append one JSON object per epoch")
    group.add_argument("--plot", metavar="FILE.png", type=a_path,
                       help="draw loss and accuracy curves")
    group.add_argument("--save", metavar="FILE.npz", type=a_path, help="write the final weights")
    group.add_argument("--limit", type=at_least_one, metavar="N",
                       help="use only the first N training images (quick trials)")


def _training_overrides(args) -> list[str]:
    """The dedicated flags, as --set overrides of train: (applied after the --set ones)."""
    pairs = [("epochs", getattr(args, "epochs", None)), ("lr", getattr(args, "lr", None)),
             ("seed", getattr(args, "seed", None)),
             ("optimizer", getattr(args, "optimizer", None)),
             ("dataset", getattr(args, "dataset", None)), ("data", getattr(args, "data", None)),
             ("batch", getattr(args, "batch", None))]
    return [f"train.{key}={json.dumps(value)}" for key, value in pairs if value is not None]


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


def printable_errors(handler):
    """``handler`` whose ConvgraphErrors carry printable text: a file name, a layer or a value
    quoted from a spec or the command line can hold control characters or undecodable bytes,
    and the error is printed as it is (``convgraph.display.shown`` is idempotent, so a message
    escaped twice reads the same)."""
    import dataclasses
    import functools

    @functools.wraps(handler)
    def run(args):
        from convgraph.display import shown

        try:
            return handler(args)
        except ConvgraphError as exc:
            exc.message = shown(exc.message)
            exc.hint = None if exc.hint is None else shown(exc.hint)
            location = getattr(exc, "location", None)
            if location is not None:
                exc.location = dataclasses.replace(location, file=shown(location.file))
            if getattr(exc, "layer", None):
                exc.layer = shown(exc.layer)
            raise

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
        metavar="DIR", type=a_path,
        help="write the compiled artifact to DIR: the expanded spec, graph.json, kernels.cl and "
             "plan.json for the device, summary.txt, weights.npz with --weights, and "
             "manifest.json with every file's SHA-256 (run DIR / eval DIR use it)",
    )
    compile_.add_argument("--weights", metavar="FILE.npz", type=a_path,
                          help="with -o: put these weights (a --save file or a checkpoint) "
                               "into the artifact, with their normalisation and class names")
    compile_.add_argument(
        "--expand", action="store_true", help="print the spec in its canonical long (graph) form"
    )
    compile_.add_argument(
        "--graph",
        metavar="FILE", type=a_path,
        help="draw the network to FILE.svg/.png/.pdf (Graphviz) or FILE.dot",
    )
    compile_.add_argument("--no-kernels", action="store_true",
                          help="only check and summarise; generate no OpenCL (needs no device)")
    _add_device(compile_)
    _add_overrides(compile_)
    compile_.set_defaults(handler=printable_errors(command_compile))

    run = commands.add_parser(
        "run", help="train a model on its data set (the default), or run inference "
                    "(--predict), a kernel self-test (--verify) or a per-layer profile (--profile)",
        description="Compile SPEC (a spec file or a directory written by 'compile -o') for a "
                    "device and train it as its train: section says (every setting can be "
                    "overridden here), or run it with --predict, --verify or --profile.")
    run.add_argument("spec", help="a spec (.yaml) or a compiled directory")
    run.add_argument("--weights", metavar="FILE.npz", type=a_path,
                     help="parameters named <node>.weight etc. (default: the spec's seeded init)")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--predict", metavar="INPUT", type=a_path,
                      help="run inference on a .npy/.npz batch (batch, depth, height, width) "
                           "and print class scores")
    mode.add_argument("--verify", action="store_true",
                      help="check every generated kernel against the numpy reference")
    mode.add_argument("--profile", action="store_true",
                      help="time every layer: ms, GFLOP/s, GB/s, fraction of the device peak")
    run.add_argument("--random-weights", action="store_true",
                     help="with --predict, --verify or --profile and no --weights: use the "
                          "spec's seeded initial weights (--predict refuses to without it)")
    run.add_argument("--output", metavar="FILE.npy", type=a_path,
                     help="with --predict: save the scores to exactly this file (.npy format)")
    run.add_argument("--top", type=at_least_one, default=None, metavar="K",
                     help="with --predict: classes shown per image (default 5, or every class "
                          "of a model with fewer; at most the class count)")
    run.add_argument("--softmax", action="store_true",
                     help="with --predict: print probabilities (softmax of the scores; "
                          "--output still saves the raw scores)")
    run.add_argument("--json", action="store_true",
                     help="with --predict, --verify or --profile: print one JSON object "
                          "instead of the table")
    _add_training(run)
    run.add_argument("--report", metavar="FILE.html", type=a_path,
                     help="write a self-contained HTML run report, rewritten after every "
                          "epoch (open it in a browser: it reloads while training)")
    _add_device(run)
    _add_distributed(run)
    _add_overrides(run)
    run.set_defaults(handler=printable_errors(command_run))

    evaluate = commands.add_parser(
        "eval", help="test loss and accuracy of trained weights on a data set",
        description="Evaluate SPEC with WEIGHTS (a weights .npz or a checkpoint) on the test "
                    "split of its data set.")
    evaluate.add_argument("spec", help="a spec (.yaml) or a compiled directory")
    evaluate.add_argument("--weights", metavar="FILE.npz", type=a_path,
                          help="a --save file or a checkpoint (default: a compiled "
                               "directory's weights.npz)")
    evaluate.add_argument("--dataset", help="override train: dataset")
    evaluate.add_argument("--data", metavar="PATH", type=a_path,
                          help="the data set's file or folder")
    evaluate.add_argument("--confusion", action="store_true", help="print the confusion matrix")
    evaluate.add_argument("--json", action="store_true",
                          help="print one JSON object (with --confusion, the matrix too)")
    _add_device(evaluate)
    _add_overrides(evaluate)
    evaluate.set_defaults(handler=printable_errors(command_eval))

    tune = commands.add_parser(
        "tune", help="time each kernel's tile sizes on the device and keep the fastest",
        description="For every tunable kernel of SPEC (training and inference), time the tile "
                    "sizes and work-group shapes it allows on the device, within a time budget, "
                    "and store the fastest in this device's tuning file, which every later "
                    "compile for the device reads. Tuning changes speed only: every setting is "
                    "a tested kernel.")
    tune.add_argument("specs", nargs="+", metavar="SPEC")
    tune.add_argument("--budget", type=positive_number, default=120.0, metavar="SECONDS",
                      help="time allowed per spec (default 120); untimed kernels keep defaults")
    tune.add_argument("--mode", choices=("both", "train", "infer"), default="both",
                      help="tune the training kernels, the inference kernels, or both")
    tune.add_argument("--search", choices=("two-stage", "descent"), default="two-stage",
                      help="two-stage (default): per kernel a fixed set (the defaults and the "
                           "settings that won most often), then random samples of the rest; "
                           "descent: one knob at a time from the default (the earlier search)")
    tune.add_argument("--samples", type=at_least_zero, default=12, metavar="N",
                      help="random samples per kernel after the fixed set (default 12; the "
                           "budget may stop them sooner)")
    tune.add_argument("--seed", type=_whole, default=0,
                      help="seed of the random samples, so a run can be repeated (default 0)")
    tune.add_argument("--reset", action="store_true",
                      help="forget this device's tuning first")
    tune.add_argument("--json", action="store_true", help="print one JSON object")
    _add_device(tune)
    _add_overrides(tune)
    tune.set_defaults(handler=printable_errors(command_tune))

    devices = commands.add_parser("devices", help="list every OpenCL platform and device",
                                  description="List every OpenCL platform and device.")
    devices.add_argument("--json", action="store_true", help="print one JSON object")
    devices.set_defaults(handler=printable_errors(command_devices))

    check = commands.add_parser(
        "check",
        help="validate one or more specs (no kernels, no device); for CI",
        description="Validate each SPEC; exit 0 if all are valid, 2 if any is not.",
    )
    check.add_argument("specs", nargs="+", metavar="SPEC")
    check.add_argument("--json", action="store_true",
                       help="print one JSON object (each spec: ok, or its error and status)")
    _add_overrides(check)
    check.set_defaults(handler=printable_errors(command_check))

    export = commands.add_parser(
        "export", help="write a network and its trained weights as an ONNX model",
        description="Write SPEC (a spec file or a directory written by 'compile -o') with its "
                    "WEIGHTS as an ONNX model for inference, checked in full by onnx.checker "
                    "(needs the onnx extra; no device).")
    export.add_argument("spec", help="a spec (.yaml) or a compiled directory")
    export.add_argument("--weights", metavar="FILE.npz", type=a_path,
                        help="a --save file or a checkpoint (default: a compiled directory's "
                             "weights.npz)")
    export.add_argument("-o", "--output", metavar="FILE.onnx", type=a_path, required=True,
                        help="the ONNX file to write")
    export.add_argument("--opset", type=int, default=None, metavar="N",
                        help="the ONNX opset (default 17; 13 to the newest the installed onnx "
                             "knows)")
    export.add_argument("--normalize-input", action=argparse.BooleanOptionalAction,
                        default=None,
                        help="put the input normalisation the weights record first, so the "
                             "model takes images on the training scale (default: where the "
                             "weights record one; --no-normalize-input leaves it out)")
    _add_overrides(export)
    export.set_defaults(handler=printable_errors(command_export))

    report = commands.add_parser(
        "report", help="build the HTML run report of a checkpoint folder",
        description="Build the self-contained HTML run report (curves, epochs, settings and, "
                    "with the spec, the layers and the network's drawing) from DIR/last.npz.")
    report.add_argument("folder", metavar="DIR",
                        help="a --checkpoint-dir folder (or a checkpoint file)")
    report.add_argument("-o", "--output", metavar="FILE.html", type=a_path,
                        help="the page to write (default: DIR/report.html)")
    report.add_argument("--spec", metavar="SPEC", type=a_path,
                        help="the run's spec, where the checkpoint does not hold it")
    _add_overrides(report)
    report.set_defaults(handler=printable_errors(command_report))

    import_ = commands.add_parser(
        "import", help="turn an ONNX model into a graph-form spec and a weights file",
        description="Read MODEL.onnx (the CNN subset of ONNX, opsets 11 and up) and write it as "
                    "a graph-form spec (stdout, or -o) and its weights under convgraph's names "
                    "(--weights). compile and run also take a .onnx file directly.")
    import_.add_argument("model", metavar="MODEL.onnx", help="the ONNX model")
    import_.add_argument("-o", "--output", metavar="SPEC.yaml", type=a_path,
                         help="write the spec here (default: print it)")
    import_.add_argument("--weights", metavar="FILE.npz", type=a_path,
                         help="write the weights here (<node>.weight, .bias, ...), for "
                              "'run SPEC --weights FILE.npz'")
    import_.set_defaults(handler=printable_errors(command_import))
    return parser


def print_warnings(graph) -> None:
    """What the analysed network should tell its author that is not an error, once each."""
    from convgraph.display import shown

    for warning in graph.graph.get("warnings", ()):
        print(f"convgraph: warning: {shown(warning)}", file=sys.stderr)


def command_compile(args) -> int:
    from convgraph.display import shown
    from convgraph.draw import draw
    from convgraph.files import writable_file
    from convgraph.spec.expand import expanded_yaml
    from convgraph.summary import print_summary, summary_json

    graph = analyse(network_source(args.spec), args.overrides)
    print_warnings(graph)
    # the outputs are checked before anything is built, so a bad path costs nothing
    if args.output:
        check_artifact_target(args.output)
    if args.graph:
        writable_file(args.graph, "the --graph file")
    if args.weights:
        check_compile_weights(args)
    model = None
    if not args.no_kernels and not args.expand:
        model = compile_model(graph, args)
    if args.weights:  # normalised as trained, else (normalize: true) as the training set is
        model.load_weights(args.weights, train_data=lambda: load_data(graph, "train"))
    if args.output:
        write_artifact(graph, Path(args.output), model, weights=bool(args.weights))
    if args.graph:
        note = draw(graph, args.graph)
        print(shown(note), file=sys.stderr if args.json or args.expand else sys.stdout)
    if args.json:
        summary = summary_json(graph)
        if model is not None:
            summary.update(model_json(model))
        print(json.dumps(summary, indent=2))
    elif args.expand:
        print(expanded_yaml(graph.graph["spec"]), end="")
    else:
        print_summary(graph)
        if model is not None:
            print(model_line(model))
        if args.output:
            print(f"wrote the compiled artifact to {shown(args.output)}/")
    return 0


def compile_model(graph, args, share_buffers: bool = True):
    """``convgraph.compile`` on the chosen device at the planned batch (--batch, else the spec's
    train: batch: the rule of ``model.planned_batch``)."""
    from convgraph.model import compile as compile_graph

    return compile_graph(graph, device=args.device, batch=args.batch,
                         share_buffers=share_buffers)


def console(width: int | None = None, stderr: bool = False):
    """The one console every command prints through (``convgraph.display.output_console``): a
    terminal's own width, plain unwrapped text into a pipe or a file. (``width`` is not used:
    the output policy decides.)"""
    from convgraph.display import output_console

    return output_console(stderr=stderr)


def print_json(record: dict) -> None:
    """Exactly one JSON object on stdout (what every --json prints)."""
    print(json.dumps(record, indent=2))


def model_json(model) -> dict:
    return {
        "device": model.info.as_json(),
        "batch": model.batch,
        "kernels": model.kernel_records(),
        "build": {"seconds": round(model.build.seconds, 3), "cache_hit": model.build.cache_hit},
        "peak_device_memory": model.device_memory(),
        "tuning": {"source": model.profile.tuning.source, "sites": len(model.plan.sites),
                   "tuned": tuned_sites(model)},
    }


def tuned_sites(model) -> int:
    """How many of the model's kernel sites the device's tuning table chose settings for."""
    return sum(1 for key in model.plan.sites if key in model.profile.tuning.entries)


def model_line(model) -> str:
    from convgraph.summary import mib

    state = "from the cache" if model.build.cache_hit else "built"
    advice = "" if tuned_sites(model) else "; convgraph tune SPEC times them"
    folded = len(model.plan.folded_layers())
    folds = f" ({plural(folded, 'layer')} folded into the kernel before them)" if folded else ""
    return (f"{plural(len(model.plan.kernels), 'kernel')}, "
            f"{plural(len(model.plan.launches), 'launch', 'launches')} per pass{folds}; "
            f"program {state} in {model.build.seconds:.2f} s for {model.info.label}; peak device "
            f"memory at batch {model.batch}: {mib(model.device_memory())} (parameters "
            f"{mib(model.param_bytes)}, activations shared by liveness); tile sizes: "
            f"{tuned_sites(model)} of {len(model.plan.sites)} kernel sites tuned "
            f"({model.profile.tuning.source}{advice}).")


def check_artifact_target(folder) -> None:
    """The -o folder: missing, empty or an artifact (replaced whole), else OutputError."""
    from convgraph.artifact import check_target

    check_target(folder, "the -o folder")


def check_compile_weights(args) -> None:
    """--weights goes into the artifact: it needs -o and the kernels, and a readable file."""
    from convgraph.files import readable_file

    if not args.output or args.no_kernels or args.expand:
        raise UsageError("--weights puts the weights into the compiled artifact, so it needs "
                         "-o DIR and the kernels.",
                         hint="add -o DIR (and leave out --no-kernels and --expand), or leave "
                              "--weights out.")
    readable_file(args.weights, "the --weights file")


def write_artifact(graph, directory: Path, model=None, weights: bool = False) -> None:
    """The compiled artifact (convgraph/artifact.py): the expanded spec, the summary, the
    kernels and plan of ``model`` for its device, its weights when asked, and a manifest of
    checksums; written whole or not at all."""
    from convgraph.artifact import write_artifact as write

    write(directory, graph, model, weights=weights, what="the -o folder")


def command_check(args) -> int:
    from convgraph.display import shown
    from convgraph.shapes import totals

    status, results = 0, []
    for path in args.specs:
        try:
            graph = analyse(path, args.overrides)
        except ConvgraphError as exc:
            status = max(status, exc.exit_status)
            results.append({"spec": str(path), "ok": False, "exit_status": exc.exit_status,
                            "error": str(exc)})
            if not args.json:
                print(f"FAIL {shown(exc)}", file=sys.stderr)
            continue
        print_warnings(graph)
        sums = totals(graph)
        results.append({"spec": str(path), "ok": True, "name": graph.graph["name"],
                        "layers": len(graph), "params": sums["params"],
                        "flops": sums["flops"]})
        if not args.json:
            print(f"ok   {shown(path)}: {shown(graph.graph['name'])}, "
                  f"{plural(len(graph), 'layer')}, {plural(sums['params'], 'parameter')}, "
                  f"{sums['flops'] / 1e6:,.1f} MFLOPs per image")
    if args.json:
        print_json({"ok": status == 0, "specs": results})
    return status


def resolve_spec(path: str, overrides=(), args=None):
    """(graph, artifact): a spec file's network and None, or a compiled directory (from
    'compile -o') verified against its manifest (DataError naming a missing or altered file)
    and the network of the spec it holds; an ONNX model as network_source reads it."""
    if Path(path).is_dir():
        from convgraph.artifact import read_artifact

        artifact = read_artifact(path, overrides)
        return artifact.graph, artifact
    return analyse(network_source(path, args), overrides), None


def network_source(path: str, args=None):
    """What analyse reads for a spec path: the path, or for an ONNX model (.onnx) its spec,
    imported in memory; its weights become ``args.weights`` where none are given."""
    if not str(path).lower().endswith(".onnx"):
        return path
    import atexit
    import shutil
    import tempfile

    from convgraph import import_onnx

    imported = import_onnx(path)
    if args is not None and not getattr(args, "weights", None):
        folder = tempfile.mkdtemp(prefix="convgraph-onnx-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        args.weights = os.path.join(folder, "weights.npz")
        np.savez(args.weights, **imported.weights)
    return imported.spec


def command_import(args) -> int:
    """``convgraph import``: convgraph.import_onnx, written as a spec and a weights file."""
    from convgraph import import_onnx
    from convgraph.display import shown
    from convgraph.files import atomic_write, writable_file

    for target, what in ((args.output, "the spec file"), (args.weights, "the weights file")):
        if target:
            writable_file(target, what)
    imported = import_onnx(args.model)
    text = imported.spec_text()
    if args.weights:
        atomic_write(args.weights, lambda handle: np.savez(handle, **imported.weights))
    if not args.output:
        sys.stdout.write(text)
        return 0
    atomic_write(args.output, lambda handle: handle.write(text.encode()))
    print(f"wrote {shown(args.output)}: {plural(len(imported.spec['nodes']), 'layer')}"
          + (f", weights in {shown(args.weights)}" if args.weights else ""), file=sys.stderr)
    return 0


def command_run(args) -> int:
    from convgraph.files import atomic_write
    graph, artifact = resolve_spec(args.spec, args.overrides + _training_overrides(args), args)
    print_warnings(graph)
    if artifact is not None and artifact.weights is not None and not args.weights \
            and not args.random_weights:
        args.weights = str(artifact.weights)  # the artifact's own weights, unless others given
    check_run_arguments(args)
    if not (args.predict or args.verify or args.profile):
        return run_training(graph, args)
    classes = graph.nodes[graph.graph["output"]]["output"].depth
    top = args.top or min(5, classes)
    check_top(top, classes)  # before anything is built
    if artifact is not None and not args.verify:  # its stored kernels, where they fit
        from convgraph.model import model_from_artifact

        model = model_from_artifact(artifact, args.device, args.batch, weights=False)
    else:  # --verify reads every tensor: a plan of its own, without shared buffers
        model = compile_model(graph, args, share_buffers=not args.verify)
    if args.weights:  # inputs prepared as in training, if the file says how
        model.load_weights(args.weights)
    if args.verify:
        return run_verify(model, args.json)
    if args.profile:
        return run_profile(model, args.json)
    from convgraph.params import load_arrays

    inputs = load_arrays(args.predict, "input")
    if "x" not in inputs and len(inputs) != 1:
        raise DataError(f"{args.predict} holds {', '.join(inputs)}; convgraph reads the array "
                        "named 'x' (or the only one).")
    x = inputs.get("x", next(iter(inputs.values())))
    mismatch = model.input_mismatch(x)
    if mismatch:
        print(f"convgraph: warning: {mismatch}", file=sys.stderr)
    scores = model.predict(x)
    if args.output:  # written to exactly this path (np.save would add .npy to one without)
        try:
            atomic_write(args.output, lambda handle: np.save(handle, scores))
        except OSError as exc:
            raise OutputError(f"cannot write the scores to {args.output}: "
                              f"{exc.strerror or exc}.",
                              hint="choose a file in a folder you can write.") from None
    names = predicted_class_names(model, graph)
    if scores.ndim == 4 and scores.shape[2] * scores.shape[3] > 1:  # per-pixel scores
        return print_segmentation_predictions(graph, scores, names, args.json)
    shown_scores = softmax(scores) if args.softmax else scores
    if args.json:
        print_json({"model": graph.graph["name"], "images": int(scores.shape[0]),
                    "classes": model.classes, "class_names": names,
                    "probabilities": args.softmax,
                    "predictions": prediction_records(shown_scores, top, names, args.softmax)})
    else:
        print_predictions(shown_scores, top, names, args.softmax)
    return 0


def print_segmentation_predictions(graph, scores, names: list[str], as_json: bool) -> int:
    """``run --predict`` of a segmentation network, whose scores are (N, C, H, W): each image's
    predicted classes as a histogram of its pixels (the --output file holds the scores)."""
    classes = scores.shape[1]
    pixels = scores.shape[2] * scores.shape[3]
    counts = [np.bincount(image.argmax(axis=0).ravel(), minlength=classes)
              for image in scores]
    if as_json:
        print_json({"model": graph.graph["name"], "images": int(scores.shape[0]),
                    "classes": classes, "class_names": names,
                    "height": int(scores.shape[2]), "width": int(scores.shape[3]),
                    "predictions": [{"image": index, "pixels": {names[c]: int(n) for c, n in
                                                                enumerate(row) if n}}
                                    for index, row in enumerate(counts)]})
        return 0
    listing = Listing(f"predicted classes per pixel ({plural(scores.shape[0], 'image')}, "
                      f"{scores.shape[3]}x{scores.shape[2]} pixels each)",
                      [Column("image", "right"),
                       Column("pixels by class, most first", short="classes", items=True)])
    for index, row in enumerate(counts):
        order = [int(c) for c in np.argsort(-row, kind="stable") if row[c]]
        listing.rows.append([str(index), ITEM_GAP.join(
            f"{c}: {names[c]} {100 * row[c] / pixels:.1f}%" for c in order)])
    print_listing(listing, console())
    return 0


def check_run_arguments(args) -> None:
    """``convgraph run``'s flags that go together, and every output it will write, checked
    before any data is read or anything is built (UsageError, OutputError): a run never fails
    at its end for a path it could have refused at its start."""
    from convgraph.files import readable_file, writable_file, writable_folder
    from convgraph.train.report import check_plot_target

    predicting = bool(args.predict or args.verify or args.profile)
    training_only = [flag for flag, value in (
        ("--checkpoint-dir", args.checkpoint_dir), ("--resume", args.resume),
        ("--metrics", args.metrics), ("--plot", args.plot), ("--save", args.save),
        ("--limit", args.limit), ("--report", getattr(args, "report", None)),
        ("--distributed", getattr(args, "distributed", False))) if value]
    if predicting and training_only:
        mode = "--predict" if args.predict else "--verify" if args.verify else "--profile"
        raise UsageError(f"{', '.join(training_only)} {'is' if len(training_only) == 1 else 'are'}"
                         f" for training, not {mode}.",
                         hint=f"leave {' and '.join(training_only)} out, or train without "
                              f"{mode}.")
    if args.output and not args.predict:
        raise UsageError("--output saves the scores of --predict.",
                         hint="add --predict INPUT, or leave --output out.")
    for flag, value in (("--top", args.top), ("--softmax", args.softmax)):
        if value and not args.predict:
            raise UsageError(f"{flag} is for the class list of --predict.",
                             hint=f"add --predict INPUT, or leave {flag} out.")
    if args.json and not predicting:
        raise UsageError("--json prints the result of --predict, --verify or --profile; "
                         "training reports as it goes.",
                         hint="for training figures as JSON, use --metrics FILE (one object "
                              "per epoch); or add --predict, --verify or --profile.")
    if args.predict and not args.weights and not args.random_weights:
        raise UsageError("--predict without --weights would score the input with the spec's "
                         "random initial weights.",
                         hint="give the trained weights with --weights FILE.npz (a --save file "
                              "or a checkpoint), or add --random-weights if random scores are "
                              "what you want.")
    if args.random_weights and args.weights:
        raise UsageError("--random-weights and --weights do not go together.",
                         hint="leave one of them out.")
    # the inputs named on the command line, before anything is built (a FIFO would block)
    if args.weights:
        readable_file(args.weights, "the --weights file")
    if args.predict:
        readable_file(args.predict, "the --predict input")
    if args.checkpoint_dir:
        writable_folder(args.checkpoint_dir, "the --checkpoint-dir folder")
    for flag, path in (("--save", args.save), ("--metrics", args.metrics),
                       ("--output", args.output)):
        if path:
            writable_file(path, f"the {flag} file")
    if args.plot:
        check_plot_target(args.plot)
    if getattr(args, "report", None):
        from convgraph.train.html_report import check_report_target

        check_report_target(args.report)


def load_data(graph, split: str):
    """The spec's data set (``Model.dataset``), saying how it was read where that matters."""
    from convgraph.display import shown
    from convgraph.model import spec_dataset

    data = spec_dataset(graph, split)
    if data.note and split == "train":
        print(f"note: {shown(data.note)}", file=sys.stderr)
    return data


def open_model(graph, args):
    """A Model on the chosen device at the planned batch, built only as it is used (training
    builds the training program, evaluation its own). Of a --device list, the first (or, with
    --distributed, this rank's entry by its local rank)."""
    from convgraph.model import Model

    return Model(graph, training_devices(args)[0], args.batch)


def training_devices(args) -> list:
    """The devices this process trains on: this rank's one of a --device list with
    --distributed, else every device the list names (one: the usual single-device run)."""
    from convgraph.runtime.devices import device_selectors

    selectors = device_selectors(getattr(args, "device", None))
    if getattr(args, "distributed", False):
        from convgraph.train.distributed import local_rank

        return [selectors[local_rank() % len(selectors)]]
    return selectors


def is_root_process(args) -> bool:
    """False on the ranks other than 0 of a --distributed run: they neither write nor print."""
    if not getattr(args, "distributed", False):
        return True
    from convgraph.train.distributed import launched_rank

    return launched_rank() == 0


def training_report(out, args, train_data, test_data):
    """``convgraph run``'s view of training: the progress ``Model.fit(verbose=1)`` shows
    (train/callbacks.py ProgressBar: the first launch's compile as its own phase, a bar per
    epoch and its evaluation on a terminal, one line per epoch), after an opening line that
    says what is trained where, and what a --resume found."""
    from convgraph.train.callbacks import ProgressBar

    class TrainingReport(ProgressBar):
        def on_start(self, trainer) -> None:
            from convgraph.summary import mib

            session, train = trainer.session, trainer.settings
            if trainer.resumed:
                out.print(f"resumed from {args.checkpoint_dir}/last.npz: "
                          f"{trainer.resume_summary()}.", highlight=False, markup=False)
            elif args.resume:
                print(f"convgraph: nothing to resume in {args.checkpoint_dir} (no last.npz): "
                      "starting from scratch.", file=sys.stderr)
            state = "from the cache" if session.build.cache_hit else "built"
            split = f" ({session.describe()})" if hasattr(session, "describe") else ""
            out.print(
                f"training '{markup_safe(trainer.graph.graph['name'])}' on "
                f"{markup_safe(session.info.label)}: "
                f"{plural(len(train_data.y), 'training image')} and "
                f"{plural(len(test_data.y), 'test image')} "
                f"({markup_safe(train_data.name)}), batch {session.batch}{split}, "
                f"{plural(train['epochs'], 'epoch')}, "
                f"{train['optimizer']} lr {train['lr']:g}; "
                f"{plural(len(session.plan.kernels), 'kernel')} "
                f"{state} in {session.build.seconds:.2f} s; device memory "
                f"{mib(session.device_memory())}.", highlight=False)

    return TrainingReport(out)


def run_training(graph, args) -> int:
    """``convgraph run``: ``Model.fit`` on the spec's data set, reported as it goes."""
    from convgraph.train.checkpoint import FolderLock

    if args.resume and not args.checkpoint_dir:
        raise UsageError("--resume needs --checkpoint-dir DIR (the folder whose last.npz to "
                         "continue from).", hint="add --checkpoint-dir DIR, or leave out "
                                                 "--resume.")
    if args.checkpoint_dir and is_root_process(args):  # one run per folder, before any work
        from convgraph.files import writable_folder

        writable_folder(args.checkpoint_dir, "the --checkpoint-dir")
        with FolderLock(args.checkpoint_dir):
            return _run_training(graph, args)
    return _run_training(graph, args)


def _run_training(graph, args) -> int:
    from convgraph.train.loop import Interrupted
    from convgraph.train.report import plot_history

    out = console()
    train_data, test_data = load_data(graph, "train"), load_data(graph, "test")
    model = open_model(graph, args)
    if args.limit:
        train_data = train_data.first(args.limit)
    if args.weights:  # trained further from these weights (normalised as this data set is)
        model.load_weights(args.weights)
    root = is_root_process(args)
    report = training_report(out, args, train_data, test_data)
    callbacks = [report] if root else []
    page = None
    if getattr(args, "report", None) and root:  # the HTML run report, after every epoch
        from convgraph.train.html_report import ReportWriter

        page = ReportWriter(args.report, f"{graph.graph['name']} on {train_data.name}")
        callbacks.append(page)
    try:
        devices = training_devices(args)
        sharded = args.distributed or len(devices) > 1
        model.fit(train_data, test_data=test_data, checkpoint_dir=args.checkpoint_dir,
                  resume=args.resume, metrics_file=args.metrics, callbacks=callbacks,
                  verbose=int(root), distributed=args.distributed,
                  devices=devices if sharded else None, mpi_timeout=args.mpi_timeout)
    except Interrupted as stop:
        report.close()
        if page is not None:
            page.finish(note=f"interrupted ({stop.signal}) at epoch {stop.epoch + 1}")
        if root:  # the others saved nothing: rank 0's line says where the state is
            _say(interrupted_line(stop, args))
        return stop.exit_status
    except ConvgraphError as exc:  # diverged, or a device fault: the page stops reloading
        if page is not None:
            page.finish(note=f"training stopped: {exc.message}")
        raise
    finally:
        report.close()
    if page is not None:  # the final page: the confusion matrix and the profile added
        from convgraph.display import markup_safe

        page.finish(model)
        out.print(f"wrote the run report to {markup_safe(args.report)}", highlight=False)
    trainer = model.trainer
    history = trainer.progress.history
    status = 0
    if not root:  # rank 0 saves, plots and prints for the run
        return status
    if args.save:  # a checkpoint without optimizer state: weights plus the normalisation
        status = save_trained(model, args.save, args.spec)
    if args.plot:
        plot_history(history, args.plot, f"{graph.graph['name']} on {train_data.name}")
    if history and history[-1].get("test_miou") is not None:
        out.print(f"final test mIoU {history[-1]['test_miou']:.4f} "
                  f"(best {trainer.progress.best_accuracy:.4f}), pixel accuracy "
                  f"{history[-1]['test_accuracy']:.4f} after {plural(len(history), 'epoch')}.",
                  highlight=False)
    elif history and history[-1].get("test_accuracy") is not None:
        out.print(f"final test accuracy {history[-1]['test_accuracy']:.4f} "
                  f"(best {trainer.progress.best_accuracy:.4f}) after "
                  f"{plural(len(history), 'epoch')}.",
                  highlight=False)
    return status


def fallback_paths(name: str, spec: str) -> list[Path]:
    """Where trained weights go when --save's file cannot be written at the end (the disk
    filled up, the folder was removed or replaced meanwhile): a new file beside the spec, else
    in the cache folder, else in the temporary folder, else in the working folder."""
    import re
    import tempfile
    import time

    from convgraph.files import cache_dir

    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "model"
    file_name = f"{stem}.trained-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.npz"
    spec_folder = Path(spec) if Path(spec).is_dir() else Path(spec).parent
    return [folder / file_name for folder in (spec_folder, cache_dir() / "saved",
                                              Path(tempfile.gettempdir()), Path.cwd())]


def save_trained(model, path: str, spec: str) -> int:
    """``model.save_weights(path)``; where that fails, the weights are written to the first fallback
    path that takes them and the message names it (exit status 7: the weights are safe, the
    file asked for was not written). Trained weights are never lost to a failed save."""
    from convgraph.display import shown

    try:
        model.save_weights(path)  # exactly this file, whatever its name
        return 0
    except (OSError, OutputError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    for fallback in fallback_paths(model.graph.graph["name"], spec):
        try:
            model.save_weights(fallback)
        except (OSError, OutputError):
            continue
        print(f"convgraph: error: cannot write the trained weights to {shown(path)} "
              f"({shown(reason)}); saved them to {shown(fallback)} instead. Fix: move that "
              "file where you want it (it is what --save writes).", file=sys.stderr)
        return OutputError.exit_status
    raise OutputError(f"cannot write the trained weights to {path} ({reason}), nor to any "
                      "fallback (beside the spec, the cache folder, the temporary folder, the "
                      "working folder).", hint="free some disk space and train again.")


def interrupted_line(stop, args) -> str:
    """What ``run`` says when a signal stopped training: what was saved, and how to go on."""
    position = f"epoch {stop.epoch + 1}, batch {stop.batch}"
    if stop.saved is None:
        return (f"convgraph: interrupted ({stop.signal}) at {position}; the training state was "
                "saved nowhere (no --checkpoint-dir).")
    distributed = getattr(args, "distributed", False)  # resumed on any number of ranks
    return (f"convgraph: interrupted ({stop.signal}); saved the training state to {stop.saved} "
            f"at {position}. Resume with: {'mpirun -n N ' if distributed else ''}convgraph run "
            f"{args.spec} --checkpoint-dir {args.checkpoint_dir} --resume"
            f"{' --distributed' if distributed else ''} (and the same data and batch options).")


def command_eval(args) -> int:
    """``convgraph eval``: ``Model.evaluate`` of the weights on the spec's test split."""
    from convgraph.files import readable_file

    overrides = args.overrides + _training_overrides(args)
    graph, artifact = resolve_spec(args.spec, overrides)
    if not args.weights:
        if artifact is None or artifact.weights is None:
            raise UsageError("eval needs the trained weights: --weights FILE.npz.",
                             hint="give --weights (a --save file or a checkpoint), or a "
                                  "compiled directory holding weights.npz.")
        args.weights = str(artifact.weights)
    readable_file(args.weights, "the --weights file")  # before the data is read
    test_data = load_data(graph, "test")
    model = open_model(graph, args)
    # the normalisation the weights were trained with, else the training set's
    model.load_weights(args.weights, train_data=lambda: load_data(graph, "train"))
    out = console()
    with _phase(console(stderr=True), f"evaluating {plural(len(test_data.y), 'test image')}",
                disable=args.json):
        result = model.evaluate(test_data)
    names = class_names_of(model, test_data)
    matrix = result.confusion(model.classes)
    record, line = (segmentation_eval_summary if result.miou is not None
                    else classification_eval_summary)(graph, test_data, result, matrix, names)
    if args.json:
        if args.confusion:
            record["confusion"] = matrix.tolist()
        print_json(record)
        return 0
    out.print(line, highlight=False)
    if args.confusion:
        print_listing(confusion_listing(matrix, names), out)
    return 0


def classification_eval_summary(graph, test_data, result, matrix, names) -> tuple[dict, str]:
    """``convgraph eval`` of a classifier: its JSON record and its line (loss, accuracy)."""
    right = int((result.predictions == result.labels).sum())
    record = {"model": graph.graph["name"], "dataset": test_data.name,
              "loss": result.loss, "accuracy": result.accuracy, "correct": right,
              "images": len(result.labels), "class_names": names}
    line = (f"{markup_safe(graph.graph['name'])} on {markup_safe(test_data.name)}: "
            f"test loss {result.loss:.4f}, "
            f"test accuracy {result.accuracy:.4f} ({right:,} of {len(result.labels):,}).")
    return record, line


def segmentation_eval_summary(graph, test_data, result, matrix, names) -> tuple[dict, str]:
    """``convgraph eval`` of a segmentation network: loss, accuracy over the counted pixels
    (those without the ignore label), mean IoU over the classes present."""
    counted = int(matrix.sum())
    right = int(np.trace(matrix))
    record = {"model": graph.graph["name"], "dataset": test_data.name,
              "loss": result.loss, "pixel_accuracy": result.accuracy, "miou": result.miou,
              "correct_pixels": right, "counted_pixels": counted,
              "images": len(result.labels), "class_names": names}
    line = (f"{markup_safe(graph.graph['name'])} on {markup_safe(test_data.name)}: "
            f"test loss {result.loss:.4f}, test pixel accuracy {result.accuracy:.4f} "
            f"({right:,} of {counted:,} pixels), test mIoU {result.miou:.4f} "
            f"({plural(len(result.labels), 'image')}).")
    return record, line


def command_export(args) -> int:
    """``convgraph export``: the network and its weights as an ONNX model (no device)."""
    from convgraph.files import readable_file, writable_file
    from convgraph.onnx.export import (
        DEFAULT_OPSET,
        check_opset,
        chosen_normalization,
        export_graph,
    )
    from convgraph.train.checkpoint import load_weights

    opset = check_opset(DEFAULT_OPSET if args.opset is None else args.opset)
    graph, artifact = resolve_spec(args.spec, args.overrides)
    if not args.weights:
        if artifact is None or artifact.weights is None:
            raise UsageError("export needs the trained weights: --weights FILE.npz.",
                             hint="give --weights (a --save file or a checkpoint), or a "
                                  "compiled directory holding weights.npz.")
        args.weights = str(artifact.weights)
    readable_file(args.weights, "the --weights file")
    writable_file(args.output, "the -o file")  # before anything is built
    params, normalization = load_weights(args.weights)
    normalization = chosen_normalization(normalization, args.normalize_input, args.weights)
    path = export_graph(graph, params, args.output, opset, normalization)
    console().print(f"wrote {markup_safe(str(path))}: '{markup_safe(graph.graph['name'])}' as "
                    f"ONNX opset {opset}, input normalisation "
                    f"{'first' if normalization is not None else 'not included'}.",
                    highlight=False)
    return 0


def command_report(args) -> int:
    """``convgraph report DIR``: the HTML run report of a checkpoint folder."""
    from convgraph.display import shown
    from convgraph.train.html_report import (
        check_report_target,
        report_from_checkpoint,
        write_report,
    )

    folder = Path(args.folder)
    output = args.output or str((folder if folder.is_dir() else folder.parent) / "report.html")
    check_report_target(output, "the report file")
    if args.overrides and not args.spec:
        raise UsageError("--set changes a spec, and no --spec is given.",
                         hint="add --spec SPEC, or leave --set out.")
    # a spec file, or the network of a compiled directory
    spec = resolve_spec(args.spec, args.overrides)[0] if args.spec else None
    report = report_from_checkpoint(folder, spec)
    write_report(output, report)
    print(f"wrote the run report of {shown(folder)} ({len(report.history)} epochs) to "
          f"{shown(output)}")
    return 0


def confusion_listing(matrix, names: list[str]) -> Listing:
    """The confusion matrix: a row per true class, a column per predicted class (headed by
    its number, the names being the rows')."""
    columns = [Column("true \\ predicted", short="true")]
    columns += [Column(str(index), "right") for index in range(len(names))]
    listing = Listing("confusion matrix (rows: true class, columns: predicted class number)",
                      columns)
    for index, (name, row) in enumerate(zip(names, matrix)):
        listing.rows.append([f"{index} {name}" if name != str(index) else name,
                             *(str(v) for v in row)])
    return listing


def class_names_of(model, data=None) -> list[str]:
    """The class names to print: the model's own (a saved model's), else the data set's, else
    the class numbers."""
    names = getattr(model, "class_names", None) or (data.class_names if data else None)
    if names and len(names) == model.classes:
        return [str(name) for name in names]
    return [str(index) for index in range(model.classes)]


def predicted_class_names(model, graph) -> list[str]:
    """``class_names_of`` for --predict, which reads no data set: the spec's data set is asked
    for its names where it can be read, and the numbers are used where it cannot."""
    if getattr(model, "class_names", None):
        return class_names_of(model)
    from convgraph.model import spec_dataset

    try:
        return class_names_of(model, spec_dataset(graph, "test"))
    except ConvgraphError:
        return class_names_of(model)


def _phase(out, text: str, disable: bool = False):
    """A spinner with ``text`` on a terminal while a phase runs (evaluating, compiling); nothing
    into a pipe."""
    import contextlib

    if disable or not out.is_terminal:
        return contextlib.nullcontext()
    return out.status(markup_safe(text))


def softmax(scores: np.ndarray) -> np.ndarray:
    """Probabilities of each image's class scores (along the last axis), computed stably."""
    shifted = scores - scores.max(axis=-1, keepdims=True)
    exp = np.exp(shifted.astype(np.float64))
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def check_top(top: int, classes: int) -> None:
    """--top asks for at most as many classes as there are (UsageError otherwise)."""
    if top > classes:
        raise UsageError(f"--top {top} asks for more classes than the model has ({classes}).",
                         hint=f"give --top {classes} or less (the default is "
                              f"{min(5, classes)}).")


def prediction_records(scores, top: int, names: list[str], probabilities: bool) -> list[dict]:
    """Each image's ``top`` classes, best first: index, name and score (or probability)."""
    key = "probability" if probabilities else "score"
    records = []
    for index, row in enumerate(scores.reshape(scores.shape[0], -1)):
        best = np.argsort(-row, kind="stable")[:top]
        records.append({"image": index, "top": [
            {"class": int(c), "name": names[c], key: float(row[c])} for c in best]})
    return records


def print_predictions(scores, top: int, names: list[str] | None = None,
                      probabilities: bool = False) -> None:
    """The top classes of each image, by name where the classes have names."""
    flat = scores.reshape(scores.shape[0], -1)
    names = names or [str(c) for c in range(flat.shape[1])]
    named = any(name != str(index) for index, name in enumerate(names))
    what = "probabilities" if probabilities else "class scores"
    listing = Listing(f"{what} ({plural(scores.shape[0], 'image')})", [
        Column("image", "right"), Column("class", "right"),
        *([Column("name")] if named else []),
        Column(f"top {top} (class: {'name ' if named else ''}"
               f"{'probability' if probabilities else 'score'})", short=f"top {top}",
               items=True)])
    for record in prediction_records(flat, top, names, probabilities):
        best = record["top"]
        value = "probability" if probabilities else "score"
        cells = [f"{c['class']}: {c['name'] + ' ' if named else ''}"
                 + (f"{c[value]:.1%}" if probabilities else f"{c[value]:.4g}") for c in best]
        listing.rows.append([str(record["image"]), str(best[0]["class"]),
                             *([best[0]["name"]] if named else []), ITEM_GAP.join(cells)])
    print_listing(listing, console())


def run_verify(model, as_json: bool = False) -> int:
    from convgraph.errors import SpecError
    from convgraph.verify import TOLERANCE, verify_model, verify_training

    checks = verify_model(model)
    try:  # the backward kernels too, where the network can be trained (on the model's target)
        checks += verify_training(model.graph, model.target)
    except SpecError:
        pass  # no class scores to train on (e.g. a network ending in a volume)
    failed = [c for c in checks if not c.passed]
    worst = max((c.error for c in checks), default=0.0)
    if as_json:
        print_json({"model": model.graph.graph["name"], "device": model.info.label,
                    "tolerance": TOLERANCE, "passed": len(checks) - len(failed),
                    "failed": len(failed), "worst_error": worst,
                    "checks": [{"layer": c.node, "op": c.op, "kernels": list(c.kernels),
                                "error": c.error, "passed": c.passed} for c in checks]})
        return 1 if failed else 0
    listing = Listing(f"kernels of '{model.graph.graph['name']}' against the numpy reference "
                      f"on {model.info.label} (forward, then gradients)", [
                          Column("layer"), Column("op"),
                          Column("kernels", secondary=True, wrap=True),
                          Column("max rel. error", "right", short="error"), Column("result")])
    for check in checks:
        listing.rows.append([check.node, check.op, ", ".join(check.kernels),
                             f"{check.error:.2e}", "pass" if check.passed else "FAIL"])
    out = console()
    print_listing(listing, out)
    out.print(f"{len(checks) - len(failed)} passed, {len(failed)} failed; worst error "
              f"{worst:.2e} (tolerance {TOLERANCE:g}: max |device - numpy| / max |numpy|).",
              highlight=False)
    return 1 if failed else 0


def run_profile(model, as_json: bool = False) -> int:
    """``run --profile``: one training step per layer (forward, backward, update) where the
    network can be trained, else its forward pass; as a table or one JSON object."""
    from convgraph.display import shown
    from convgraph.errors import DeviceError, SpecError
    from convgraph.runtime.inspect import profile_inference, profile_training
    from convgraph.train.session import TrainingSession

    try:  # a session of its own: profiling moves its parameters (at learning rate 0)
        session = TrainingSession(model.graph, model.target, model.batch, params=model.params)
    except SpecError:  # no class scores to train on: the forward pass only
        session = None
    except DeviceError as exc:  # the step does not fit where inference does: say so
        print(f"convgraph: warning: {shown(exc.message)} Profiling the forward pass only "
              f"(a smaller --batch would fit the training step).", file=sys.stderr)
        session = None
    profile = (profile_training(session, model) if session is not None
               else profile_inference(model))
    if as_json:
        print_json(profile.as_json())
        return 0
    out = console()
    print_listing(profile_listing(profile), out)
    for line in profile_notes(profile):
        out.print(markup_safe(line), highlight=False)
    return 0


PROFILE_COLUMNS = [
    Column("layer"), Column("op"), Column("phase", secondary=True),
    Column("ms", "right"), Column("GFLOP/s", "right", short="GF/s"),
    Column("GB/s", "right"), Column("bound", secondary=True),
    Column("of peak", "right", short="peak"),
]


def profile_listing(profile) -> Listing:
    """The profile as a table: the forward rows and their total, the backward rows and
    theirs, the update's, then the step's (which is their sum)."""
    what = "training step" if profile.mode == "training" else "forward pass"
    listing = Listing(f"'{profile.name}' {what}, batch {profile.batch}, on {profile.device} "
                      f"(median of {profile.repeats})", PROFILE_COLUMNS)
    phases = ("forward", "backward", "update") if profile.mode == "training" else ("forward",)
    for phase in phases:
        for t in (t for t in profile.timings if t.phase == phase):
            listing.rows.append([t.node, t.op, phase, f"{t.milliseconds:.3f}",
                                 f"{'~' if t.flops_estimated else ''}{t.gflops:.1f}"
                                 if t.gflops else "-", f"{t.gbytes:.1f}", t.bound,
                                 "above" if t.above_peak
                                 else f"{100 * t.peak_fraction:.0f}%"])
        listing.rows.append([f"{phase} total", "", phase, f"{profile.phase_ms(phase):.3f}",
                             "", "", "", ""])
        listing.rows.append(None)
    listing.rows.pop()
    total = "step total" if profile.mode == "training" else "pass total"
    listing.totals.append([total, "", "", f"{profile.total_ms:.3f}", "", "", "", ""])
    # beside the sum, the wall clock of whole steps measured apart (the notes say the gap)
    listing.totals.append(["wall time", "", "", f"{profile.wall_ms:.3f}", "", "", "", ""])
    return listing


def profile_notes(profile) -> list[str]:
    """What the profile table's figures mean, and how its total compares with the wall time."""
    phases = ("forward", "backward", "update") if profile.mode == "training" else ("forward",)
    parts = " + ".join(f"{phase} {profile.phase_ms(phase):.3f}" for phase in phases)
    outside = profile.wall_ms - profile.total_ms
    share = f" ({outside / profile.wall_ms:.0%})" if profile.wall_ms else ""
    what = "step" if profile.mode == "training" else "forward pass"
    notes = [f"kernels {profile.total_ms:.3f} ms = {parts}; a whole {what} measured apart "
             f"takes {profile.wall_ms:.3f} ms of wall time, {outside:.3f} ms{share} outside the "
             "kernels (transfers, enqueueing, the host's share); "
             f"{profile.batch / profile.wall_ms * 1000:,.0f} images/s." if profile.wall_ms
             else f"kernels {profile.total_ms:.3f} ms = {parts}.",
             f"device peak measured now: {profile.peak_flops:.0f} GFLOP/s (fp32 fma), "
             f"{profile.peak_bytes:.1f} GB/s (copy); a layer doing more than "
             f"{profile.ridge:.1f} FLOPs per byte is compute-bound and its 'of peak' is against "
             "the FMA peak, any other is memory-bound and measured against the copy bandwidth."]
    if any(t.above_peak for t in profile.timings):
        notes.append("'above' (of peak): the layer went past the peak measured beside it (its data "
                     "stays in cache, or it moves less than its buffers hold), so no fraction "
                     "is given.")
    if any(t.flops_estimated for t in profile.timings):
        notes.append("~: the gradient kernels declare no FLOPs; estimated as twice the forward "
                     "FLOPs for a layer with weights, once for any other.")
    return notes


def command_tune(args) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from convgraph.codegen.tuning import forget_tuning
    from convgraph.files import tuning_dir, writable_folder
    from convgraph.model import planned_batch
    from convgraph.runtime.target import Target
    from convgraph.runtime.tune import tune

    graphs = [analyse(network_source(spec), args.overrides)  # all checked first
              for spec in args.specs]
    # the table is what tuning produces: its folder is checked before the first timing
    writable_folder(tuning_dir(), "the tuning folder (in the cache folder: $CONVGRAPH_CACHE, "
                                  "else $XDG_CACHE_HOME/convgraph, else ~/.cache/convgraph)")
    target = Target.open(args.device)  # one device, one context, for every spec
    info = target.info
    if args.reset:
        forget_tuning(info)
    modes = ("train", "infer") if args.mode == "both" else (args.mode,)
    reports = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[now]}"),
                  TimeElapsedColumn(), console=console(stderr=True),
                  disable=args.json) as progress:
        for graph in graphs:
            task = progress.add_task(f"tuning {markup_safe(graph.graph['name'])}",
                                     total=None, now="")

            def advance(done, total, text, task=task):
                progress.update(task, completed=done, total=total, now=markup_safe(text))

            reports.append((graph, tune(graph, device=target,
                                        batch=planned_batch(graph, args.batch),
                                        budget=args.budget, modes=modes, progress=advance,
                                        search=args.search, samples=args.samples,
                                        seed=args.seed)))
    if args.json:
        print(json.dumps({"device": info.label, "models": [{
            "model": graph.graph["name"], "file": report.path, "seconds": report.seconds,
            "not_reached": len(report.skipped),
            "sites": [{"layer": r.site.node, "mode": r.mode, "kernel": r.site.selector,
                       "key": r.site.key,
                       "default_ms": r.default_ms, "tuned_ms": r.best_ms, "tried": r.tried,
                       "knobs": r.best} for r in report.results]}
            for graph, report in reports]}, indent=2))
        return _unsaved(reports)
    out = console()
    for graph, report in reports:
        print_listing(tuning_listing(graph, report, info), out)
        skipped = (f"; {plural(len(report.skipped), 'kernel')} not reached in the budget keep "
                   "their defaults" if report.skipped else "")
        out.print(f"{plural(len(report.results), 'kernel')} tuned in {report.seconds:.0f} s"
                  f"{skipped}; saved to {markup_safe(report.path or '(nothing)')}.",
                  highlight=False)
    return _unsaved(reports)


def tuning_listing(graph, report, info) -> Listing:
    """A tuning report as a table: a row per kernel site tuned."""
    listing = Listing(f"{graph.graph['name']} on {info.label}", [
        Column("layer"), Column("for", secondary=True), Column("kernel"),
        Column("default ms", "right", short="default"), Column("tuned ms", "right", short="tuned"),
        Column("speedup", "right", short="x"), Column("GFLOP/s", "right", secondary=True),
        Column("tried", "right", secondary=True), Column("settings", wrap=True)])
    for r in report.results:
        gflops = r.flops / r.best_ms / 1e6 if r.best_ms and r.flops else 0.0
        listing.rows.append([r.site.node, r.mode, r.site.selector, f"{r.default_ms:.3f}",
                             f"{r.best_ms:.3f}", f"{r.speedup:.2f}x",
                             f"{gflops:.1f}" if gflops else "", str(r.tried),
                             " ".join(f"{k.lower()}={v}" for k, v in r.best.items())])
    return listing


def _unsaved(reports) -> int:
    """0, or (once every result is shown) the OutputError of a tuning table not written."""
    for _, report in reports:
        if report.unsaved is not None:
            raise report.unsaved
    return 0


def command_devices(args) -> int:
    from convgraph.runtime.devices import list_devices, select_device
    from convgraph.summary import mib

    found = list_devices()
    default = select_device()[0].index if found else None
    if args.json:
        print_json({"default": default, "devices": [info.as_json() for info, _ in found]})
        return 0
    if not found:
        select_device()  # raises the error that says how to install a platform
    listing = Listing("OpenCL devices", [
        Column("P:D"), Column("platform", secondary=True), Column("device", wrap=True),
        Column("type"), Column("units", "right", short="CUs"),
        Column("global mem", "right", short="memory"),
        Column("local mem", "right", secondary=True),
        Column("max wg", "right", secondary=True), Column("OpenCL", secondary=True),
        Column("fp64", secondary=True)])
    for info, _ in found:
        mark = " *" if info.index == default else ""
        listing.rows.append([info.index + mark, info.platform, info.name, info.type,
                             str(info.compute_units), mib(info.global_memory),
                             mib(info.local_memory), str(info.max_work_group_size),
                             " ".join(info.opencl_version.split()[:2]),
                             "yes" if info.fp64 else "no"])
    out = console()
    print_listing(listing, out)
    out.print("* the default (first GPU, else first CPU); choose with --device P:D or a "
                  "name fragment, or CONVGRAPH_DEVICE.", highlight=False)
    return 0


def main(argv=None) -> int:
    # SIGTERM and SIGHUP do what Ctrl-C does (signals.py), from the first moment on
    with _signals.handled():
        try:
            return _main(argv)
        except KeyboardInterrupt as exc:  # one line and the signal's status, at any moment
            _signals.taken()
            _say(f"convgraph: interrupted ({_signals.name_of(exc)}).")
            return _signals.status_of(exc)


def _say(line: str) -> None:
    """A line on stderr that a hung-up terminal cannot turn into a traceback."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ConvgraphError as exc:
        print(f"convgraph: error: {exc}", file=sys.stderr)
        return exc.exit_status
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


def run_as_program() -> None:
    """The `convgraph` program (its console script, ``python -m convgraph.cli``): ``main``, then
    the exit with its status as soon as the output is flushed, so that a signal as it exits
    still gives one line and the signal's status (everything was written by then)."""
    status = main()
    _signals.exit_when_finished()
    _signals.exit_now(status)


if __name__ == "__main__":
    run_as_program()
