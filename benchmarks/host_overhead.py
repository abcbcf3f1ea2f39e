"""The host's share of a forward pass and a training step: wall time against the kernels' time.

    python benchmarks/host_overhead.py [--models seed,lenet5,resnet8] [--rounds 4]
                                       [--baseline DIR] [--calls 40] [--device D] [--json FILE]
    python benchmarks/host_overhead.py --report FILE.json [FILE.json ...]

Cases: inference at batch 64 and 256 (``model.forward(x)``, float32 images, no normalisation,
as benchmarks/peers.py runs it) and a training step at batch 64 (``TrainingSession.step``).
Each measurement is a process of its own; with ``--baseline DIR`` (another checkout, e.g.
``git archive main | tar -x -C DIR``) "before" runs that tree's convgraph and "after" this
one's, in alternating order (ABBA over the rounds), so the machine's load falls on both alike.

A process warms up, then times ``--calls`` public calls one by one, each followed by a
``finish`` (so a training step's wall includes its optimizer kernels), recording the events of
every launch it enqueues. PoCL's event clock is CLOCK_MONOTONIC_RAW, so host and device times
lie on one line: per call, ``kernels`` is the sum of the launches' event times, ``gaps`` the
time between the first kernel's start and the last one's end that no kernel ran (PoCL
dispatching the next command), ``before`` the host's time until the first kernel started
(checks, packing, the input copy, enqueueing), ``after`` from the last kernel's end until the
call returned (the wait's wake-up, the read-back, unpacking). Host's share = wall - kernels =
before + gaps + after. ``cpu`` is the calling thread's CPU time (PoCL's threads run the
kernels and copies). Throughput (images/s) is timed apart, ``--calls`` calls back to back with
one finish at the end, as benchmarks/bench.py times them. Medians over the calls, then over
the rounds (with the min-max of the rounds).

The floor, measured in a process of its own: an empty kernel enqueued and waited for, and a
64-byte blocking read, on a profiling queue (convgraph's Target opens one) and a plain one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (benchmarks/machine.py)

ROOT = Path(__file__).resolve().parent.parent
CASES = [("infer", 64), ("infer", 256), ("train", 64)]
RAW = time.CLOCK_MONOTONIC_RAW  # PoCL's event clock


def _now_ns() -> int:
    return time.clock_gettime_ns(RAW)


def _runner(spec: str, mode: str, batch: int, device: str | None):
    """(one call, its executor, its queue): ``model.forward`` or ``TrainingSession.step`` on
    random float32 images (seed 0), as benchmarks/peers.py builds them."""
    import numpy as np

    import convgraph
    from convgraph.pipeline import analyse

    graph = analyse(spec)
    volume = graph.nodes["input"]["output"]
    classes = graph.nodes[graph.graph["output"]]["output"].depth
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, volume.depth, volume.height, volume.width),
                            dtype=np.float32)
    if mode == "infer":
        model = convgraph.compile(graph, device=device, batch=batch)
        return (lambda: model.forward(x)), model.executor, model.queue
    from convgraph.train.session import TrainingSession

    session = TrainingSession(graph, device=device, batch=batch)
    session.check_every = 0  # the guard's downloads every 100 steps are no part of a step
    labels = rng.integers(0, classes, batch)
    return (lambda: session.step(x, labels, 0.001)), session.executor, session.queue


def child(spec: str, mode: str, batch: int, calls: int, device: str | None) -> dict:
    run, executor, queue = _runner(spec, mode, batch, device)
    captured: list = []
    enqueue = executor.enqueue

    def recording(count, events=None, **options):  # every launch's event, as profile does
        events = [] if events is None else events
        enqueue(count, events, **options)
        captured.extend(events)

    executor.enqueue = recording
    for _ in range(5):  # the first launches compile on PoCL
        run()
    queue.finish()
    rows = []
    for _ in range(calls):
        captured.clear()
        cpu, started = time.thread_time_ns(), _now_ns()
        run()
        queue.finish()
        ended, cpu = _now_ns(), time.thread_time_ns() - cpu
        spans = sorted((event.profile.start, event.profile.end) for event in captured)
        kernels = sum(end - start for start, end in spans)
        first, last = spans[0][0], max(end for _, end in spans)
        rows.append({"wall": ended - started, "kernels": kernels,
                     "gaps": (last - first) - kernels, "before": first - started,
                     "after": ended - last, "cpu": cpu})
    executor.enqueue = enqueue
    started = time.perf_counter()
    for _ in range(calls):
        run()
    queue.finish()
    rate = batch * calls / (time.perf_counter() - started)
    import convgraph

    result = {key: statistics.median(row[key] for row in rows) / 1e6 for key in rows[0]}
    result.update(host=result["wall"] - result["kernels"], images_per_s=rate,
                  launches=len(captured), tree=str(Path(convgraph.__file__).parent.parent))
    return result


def floor() -> dict:
    """Microseconds of an empty kernel enqueued and waited for, and of a 64-byte blocking read,
    on a profiling and a plain queue (medians of 300)."""
    import numpy as np
    import pyopencl as cl

    context = cl.create_some_context(interactive=False)
    program = cl.Program(context, "__kernel void empty(__global float *a) { }").build()
    kernel, buffer = program.empty, cl.Buffer(context, cl.mem_flags.READ_WRITE, 4096)
    kernel.set_arg(0, buffer)
    small = np.zeros(16, np.float32)
    result = {"device": context.devices[0].name}
    for name, properties in (("profiling", cl.command_queue_properties.PROFILING_ENABLE),
                             ("plain", 0)):
        queue = cl.CommandQueue(context, properties=properties)
        steps = {"empty kernel + finish": lambda q=queue: (
                     cl.enqueue_nd_range_kernel(q, kernel, (64,), (16,)), q.finish()),
                 "64 B blocking read": lambda q=queue: cl.enqueue_copy(q, small, buffer),
                 "empty kernel + 64 B blocking read": lambda q=queue: (
                     cl.enqueue_nd_range_kernel(q, kernel, (64,), (16,)),
                     cl.enqueue_copy(q, small, buffer))}
        for step_name, step in steps.items():
            for _ in range(20):
                step()
            times = []
            for _ in range(300):
                started = time.perf_counter_ns()
                step()
                times.append(time.perf_counter_ns() - started)
            result[f"{name}: {step_name}"] = statistics.median(times) / 1e3
    return result


def spawn(tree: Path, arguments: list[str]) -> dict:
    """One child process on ``tree``'s convgraph (run from /tmp: the working folder would
    otherwise come first on sys.path)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *arguments],
                          env=env, cwd="/tmp", capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"child {arguments} on {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _spread(values: list[float], digits: int = 3) -> str:
    middle = statistics.median(values)
    return f"{middle:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="seed,lenet5,resnet8")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--baseline", type=Path, help="a checkout to run as 'before'")
    parser.add_argument("--device")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", nargs=3, metavar=("SPEC", "MODE", "BATCH"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, nargs="+", metavar="JSON",
                        help="print the table of earlier --json files' rounds together")
    args = parser.parse_args()
    if args.report:
        report(args.report)
        return
    if args.child:
        spec, mode, batch = args.child
        print(json.dumps(child(spec, mode, int(batch), args.calls, args.device)))
        return
    if args.floor:
        print(json.dumps(floor()))
        return
    trees = {"after": ROOT} if args.baseline is None else {"before": args.baseline.resolve(),
                                                           "after": ROOT}
    print(machine.cpu_model()["line"], "| load", machine.load_average())
    results: dict = {}
    for round_index in range(args.rounds):
        for model in args.models.split(","):
            spec = str(ROOT / "specs" / f"{model}.yaml")
            for mode, batch in CASES:
                order = list(trees) if round_index % 2 == 0 else list(trees)[::-1]
                for side in order:
                    row = spawn(trees[side], ["--child", spec, mode, str(batch),
                                              "--calls", str(args.calls)]
                                + (["--device", args.device] if args.device else []))
                    results.setdefault((model, mode, batch), {}).setdefault(side, []).append(
                        row)
        print(f"round {round_index + 1}/{args.rounds} done, load {machine.load_average()}",
              flush=True)
    floors = spawn(ROOT, ["--floor"])
    print_table(results)
    print("\nfloor (us, median of 300):", json.dumps(floors))
    print("load at the end", machine.load_average())
    if args.json:
        args.json.write_text(json.dumps({
            "cpu": machine.cpu_model()["line"], "floor": floors,
            "results": [{"model": m, "mode": mode, "batch": b, "side": side, "rows": rows}
                        for (m, mode, b), sides in results.items()
                        for side, rows in sides.items()]}, indent=1))


def print_table(results: dict) -> None:
    """{(model, mode, batch): {side: [each process's medians]}} as a markdown table."""
    print("\nms per call, median of the rounds (min-max); host = wall - kernels")
    print("| model | mode | batch | side | wall | kernels | host | before first kernel "
          "| gaps between kernels | after last kernel | calling thread CPU | images/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (model, mode, batch), sides in results.items():
        for side, rows in sides.items():
            cells = [_spread([row[key] for row in rows]) for key in
                     ("wall", "kernels", "host", "before", "gaps", "after", "cpu")]
            rate = _spread([row["images_per_s"] for row in rows], 0)
            print(f"| {model} | {mode} | {batch} | {side} | " + " | ".join(cells)
                  + f" | {rate} |")


def report(paths: list[Path]) -> None:
    """The table of the rounds of one or more ``--json`` files taken together."""
    results: dict = {}
    for path in paths:
        for record in json.loads(path.read_text())["results"]:
            key = (record["model"], record["mode"], record["batch"])
            results.setdefault(key, {}).setdefault(record["side"], []).extend(record["rows"])
    print_table(results)


if __name__ == "__main__":
    main()
