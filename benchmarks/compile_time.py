"""Compile plus the first batch, in a fresh process, cold and warm, with and without build workers.

    .venv/bin/python benchmarks/compile_time.py [--models seed,lenet5,...] [--rounds 3]
                                                 [--device D] [--json OUT] [--kernels]

What is timed, per model of specs/: a fresh Python process runs ``convgraph.compile(spec,
batch=64)`` and ``model.forward`` of one image (the inference program, default profile; no
tuning table). Three clocks, all ending when that first batch's output is on the host:

- **from process start**: from just before the parent starts the child (interpreter start,
  every import, the device, the build, the first batch: what a user waits for);
- **after import convgraph**: from just after ``import numpy, convgraph`` (light: convgraph
  loads networkx, pyopencl and its compiler lazily, so those imports are inside);
- **in-process**: from after those modules are loaded (a second model in a running process).

Each child also records the CPU seconds of every stage (interpreter, numpy, convgraph,
pyopencl, networkx, convgraph's compiler modules, device open, parse, plan + build, first
batch; ``time.process_time``, all threads), printed as a table with the floor every such
process pays (interpreter + numpy + pyopencl + device open): on a loaded machine the wall
clock of a stage holds other processes' time, its CPU seconds do not. Cold runs also count the
(kernel, work-group shape) pairs PoCL compiled (the ``.so`` files in its cache), and each run
says whether convgraph's modules came from bytecode (PYTHONDONTWRITEBYTECODE=1 with an
editable install leaves none: 0.11 CPU s of compiling them from source in every process).

Cold: empty convgraph and PoCL caches (``CONVGRAPH_CACHE``, ``POCL_CACHE_DIR`` pointed at new
empty folders); warm: the next process on the same caches. "before" is
``CONVGRAPH_BUILD_WORKERS=0`` (every kernel compiled at its first launch, one after another, as
before runtime/parallel.py), "after" CPUs - 1 worker processes, forced (by default convgraph
starts them only where the load average leaves CPUs idle). Each process's CPU seconds are
printed too (the main process's, and its workers'): on a machine busy with other work the wall
clock shows little of the split, the CPU seconds show where the work went. The two alternate
within each round (which goes first alternates too); medians over rounds, spread min-max. The
breakdown is the median "after" run's. ``--kernels`` adds, per model, each distinct kernel's
compile time at its first launch (serial, cold), which is the floor's material: N kernels x
PoCL's per-kernel LLVM time, divided among the CPUs at best.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (benchmarks/machine.py)

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("seed", "lenet5", "fashion_convnet", "fashion_convnet_bn", "vgg_cifar", "resnet8",
          "resnet18")
# CONVGRAPH_BUILD_WORKERS: none, or one per CPU but the main process's (forced: by default the
# workers are left out while other work keeps the CPUs busy, which would hide what they do)
MODES = {"before": "0", "after": str(max(1, len(os.sched_getaffinity(0)) - 1))}

CHILD = r"""
import time
START, T0 = time.time(), time.perf_counter()
CPU = {"interpreter": time.process_time()}  # CPU seconds of each stage (all threads)


def mark(stage, began=[time.process_time()]):
    CPU[stage] = time.process_time() - began[0]
    began[0] = time.process_time()


import json, sys
import numpy as np
mark("numpy")
import convgraph
T1 = time.perf_counter()
mark("convgraph")
import pyopencl  # noqa: F401  (what compile() loads, each timed on its own)
mark("pyopencl")
import networkx  # noqa: F401
mark("networkx")
from convgraph.model import Model  # noqa: F401  (the rest: convgraph's compiler)
T2 = time.perf_counter()
mark("convgraph modules")
spec, device, per_kernel = sys.argv[1], sys.argv[2] or None, sys.argv[3] == "1"
train = sys.argv[4] == "1"
target = convgraph.Target.open(device)
target.queue
T3 = time.perf_counter()
mark("device open")
graph = convgraph.analyse(spec)
T4 = time.perf_counter()
mark("parse + shapes")
model = convgraph.compile(graph, device=target, batch=64)
T5 = time.perf_counter()
mark("plan + build")
volume = model.plan.layouts[model.plan.input].volume
kernels = {}
if per_kernel:  # each distinct kernel's first launch alone, timed (serial builds only)
    import tempfile
    from pathlib import Path
    from convgraph.runtime import parallel
    built = model.build
    work = parallel.recipe(built.plan, target.info, built.source, target.profile.build_options)
    with tempfile.TemporaryDirectory() as claims:
        for index, entry in enumerate(work["launches"]):
            one = dict(work, launches=[entry])
            began = time.perf_counter()
            parallel._compile_share(one, Path(claims), target.context, target.queue,
                                    built.program, from_end=False)
            (Path(claims) / "0").unlink()
            kernels[entry["kernel"]] = time.perf_counter() - began
    T5 = time.perf_counter()
if train:  # the first training step: fit() builds the training program, then one batch of 64
    T5A = time.perf_counter()
    images = np.random.default_rng(0).standard_normal(
        (64, volume.depth, volume.height, volume.width)).astype(np.float32)
    model.fit((images, np.arange(64) % 2), epochs=1, verbose=0, shuffle=False)
    T6 = time.perf_counter()
    built = model._training.build  # the training program's build
else:
    model.executor.allocate(64)  # what the first batch does first: buffers for the planned batch
    T5A = time.perf_counter()
    model.forward(np.zeros((1, volume.depth, volume.height, volume.width), np.float32))
    T6 = time.perf_counter()
    built = model.build
mark("buffers + first batch")
import importlib.util, os, resource
# whether convgraph's modules came from bytecode: with PYTHONDONTWRITEBYTECODE=1 and an
# editable install there is none, and each process compiles them from source
source = sys.modules["convgraph.model"].__file__
bytecode = os.path.exists(importlib.util.cache_from_source(source))
own, workers = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                   resource.RUSAGE_CHILDREN))
print(json.dumps({
    "cpu_main": own.ru_utime + own.ru_stime, "cpu_workers": workers.ru_utime + workers.ru_stime,
    "end": START + (T6 - T0), "start": START, "import_convgraph": T1 - T0, "imports": T2 - T0,
    "device": T3 - T2, "analyse": T4 - T3, "compile": T5 - T4, "allocate": T5A - T5,
    "first_batch": T6 - T5A,
    "after_import": T6 - T1, "in_process": T6 - T2, "build": built.seconds,
    "cache_hit": built.cache_hit, "prebuilt": built.prebuilt,
    "kernels": len(built.plan.kernels),
    "launches": sum(len(group) for group in built.plan.launch_groups().values()),
    "per_kernel": kernels, "cpu_stages": CPU, "bytecode": bytecode,
    "dont_write_bytecode": sys.flags.dont_write_bytecode}))
"""


def cpu_model() -> str:
    """The CPU line benchmarks/machine.py prints with every table (vendor, family, model, name,
    cores, SIMD flags): the machine changes between runs."""
    return machine.cpu_model()["line"]


def run_child(spec: Path, device: str | None, caches: Path, workers: str,
              per_kernel: bool = False, tree: Path | None = None, train: bool = False) -> dict:
    """One fresh process: compile + first batch (``train``: first training step); its clocks
    (from process start included). ``tree``: another checkout whose convgraph the child runs."""
    env = dict(os.environ, CONVGRAPH_CACHE=str(caches / "convgraph"),
               POCL_CACHE_DIR=str(caches / "pocl"))
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    env.pop("CONVGRAPH_BINARY_CACHE", None)
    if workers:
        env["CONVGRAPH_BUILD_WORKERS"] = workers
    else:
        env.pop("CONVGRAPH_BUILD_WORKERS", None)
    began = time.time()
    done = subprocess.run([sys.executable, "-c", CHILD, str(spec), device or "",
                           "1" if per_kernel else "0", "1" if train else "0"], env=env,
                          capture_output=True, text=True, cwd=tree or ROOT, timeout=1800)
    if done.returncode:
        raise SystemExit(f"{spec.name} failed:\n{done.stderr[-3000:]}")
    record = json.loads(done.stdout.splitlines()[-1])
    record["from_start"] = record["end"] - began
    record["interpreter"] = record["start"] - began
    return record


def cold_and_warm(spec: Path, device: str | None, workers: str, tree: Path | None = None,
                  train: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="compile-time-") as folder:
        cold = run_child(spec, device, Path(folder), workers, tree=tree, train=train)
        cold["pocl_compiles"] = pocl_compiles(Path(folder) / "pocl")
        warm = run_child(spec, device, Path(folder), workers, tree=tree, train=train)
    return {"cold": cold, "warm": warm}


def pocl_compiles(cache: Path) -> int:
    """What PoCL compiled into its cache: one shared object per (kernel, work-group shape) it
    generated code for (the program's own build leaves none)."""
    return sum(1 for _ in cache.rglob("*.so")) if cache.is_dir() else 0


def median_run(runs: list[dict], clock: str = "from_start") -> dict:
    ordered = sorted(runs, key=lambda run: run[clock])
    return ordered[len(ordered) // 2]


def spread(values: list[float]) -> str:
    return (f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"
            if len(values) > 1 else f"{values[0]:.2f}")


def breakdown(run: dict) -> dict:
    """Where one process's time went, in seconds, in order."""
    prebuilt = (run["prebuilt"] or {}).get("seconds", 0.0)
    return {"interpreter start": run["interpreter"], "imports": run["imports"],
            "device open": run["device"], "parse + shapes": run["analyse"],
            "plan + source + params": run["compile"] - run["build"] - prebuilt,
            "clBuildProgram": run["build"], "kernels (parallel)": prebuilt,
            "buffers for batch 64 (zero-filled)": run.get("allocate", 0.0),
            "first batch (+ first-launch compiles)": run["first_batch"]}


FLOOR = ("interpreter", "numpy", "pyopencl", "device open")  # what any such process pays


def print_cpu_stages(records: dict) -> None:
    """CPU seconds of each stage, warm and cold, 'after' (medians over rounds): under load the
    wall clock of a stage also holds other processes' time, its CPU seconds do not. The floor
    is what a process pays before convgraph does anything: the interpreter, numpy, pyopencl
    and opening the device (PoCL's platform, a context and a queue)."""
    for kind in ("warm", "cold"):
        runs = {model: [run["after"][kind] for run in record["runs"]
                        if "cpu_stages" in run["after"][kind]]
                for model, record in records["models"].items()}
        runs = {model: found for model, found in runs.items() if found}
        if not runs:
            return  # a baseline child of an older benchmark: no stage clocks
        stages = list(next(iter(runs.values()))[0]["cpu_stages"])
        print(f"\nCPU seconds by stage, {kind}, 'after' (median over rounds):")
        print("| stage | " + " | ".join(runs) + " |")
        print("|---|" + "---|" * len(runs))
        for stage in stages:
            print(f"| {stage} | " + " | ".join(
                f"{statistics.median(run['cpu_stages'][stage] for run in found):.3f}"
                for found in runs.values()) + " |")
        for label, names in (("floor (" + " + ".join(FLOOR) + ")", FLOOR),
                             ("whole process", stages)):
            totals = [statistics.median(sum(run["cpu_stages"][name] for name in names)
                                        for run in found) for found in runs.values()]
            print(f"| **{label}** | " + " | ".join(f"{total:.3f}" for total in totals) + " |")
        first = next(iter(runs.values()))[0]
        print(f"(convgraph's modules from bytecode: {first['bytecode']}; "
              f"PYTHONDONTWRITEBYTECODE: {bool(first['dont_write_bytecode'])})")


def print_tables(records: dict) -> None:
    print("\n| model | kernels / launches / PoCL compiles | cold before | cold after | warm before "
          "| warm after | warm after, after import | warm after, in-process |")
    print("|---|---|---|---|---|---|---|---|")
    for model, record in records["models"].items():
        runs = record["runs"]

        def figures(mode, kind, clock="from_start", runs=runs):
            return spread([run[mode][kind][clock] for run in runs])

        first = runs[0]["after"]["cold"]
        print(f"| {model} | {first['kernels']} / {first['launches']} / "
              f"{first.get('pocl_compiles', '?')} | "
              f"{figures('before', 'cold')} | {figures('after', 'cold')} | "
              f"{figures('before', 'warm')} | {figures('after', 'warm')} | "
              f"{figures('after', 'warm', 'after_import')} | "
              f"{figures('after', 'warm', 'in_process')} |")
    print("\nCold, after import convgraph (s): before -> after")
    for model, record in records["models"].items():
        runs = record["runs"]
        print(f"  {model}: {spread([run['before']['cold']['after_import'] for run in runs])} -> "
              f"{spread([run['after']['cold']['after_import'] for run in runs])}")
    print("\nCold CPU seconds, the median run: main process (+ its workers), before -> after")
    for model, record in records["models"].items():
        before, after = (median_run([run[mode]["cold"] for run in record["runs"]])
                         for mode in ("before", "after"))
        if "cpu_main" in after:
            print(f"  {model}: {before['cpu_main']:.2f} -> {after['cpu_main']:.2f} "
                  f"(+ {after['cpu_workers']:.2f} in {(after['prebuilt'] or {}).get('workers', 0)}"
                  " workers)")
    print_cpu_stages(records)
    for kind in ("cold", "warm"):
        print(f"\nBreakdown, {kind}, 'after' (the median run, seconds):")
        names = list(breakdown(next(iter(records["models"].values()))["runs"][0]["after"][kind]))
        print("| stage | " + " | ".join(records["models"]) + " |")
        print("|---|" + "---|" * len(records["models"]))
        medians = {model: breakdown(median_run([run["after"][kind] for run in record["runs"]]))
                   for model, record in records["models"].items()}
        for name in names:
            print(f"| {name} | " + " | ".join(f"{medians[model][name]:.3f}"
                                             for model in records["models"]) + " |")
    for model, record in records["models"].items():
        if record.get("per_kernel"):
            times = record["per_kernel"]
            total = sum(times.values())
            top = sorted(times.items(), key=lambda item: -item[1])[:6]
            print(f"\n{model}: {len(times)} kernels, {total:.2f} s compiling at first launch "
                  f"(serial, cold); slowest: " + ", ".join(f"{name} {seconds:.2f}"
                                                          for name, seconds in top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default=None)
    parser.add_argument("--kernels", action="store_true",
                        help="also time each kernel's first-launch compile (serial, cold)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--baseline", default=None, type=Path,
                        help="another checkout (e.g. `git archive main`): 'before' runs its "
                             "convgraph, 'after' this one's, both without build workers")
    parser.add_argument("--train", action="store_true",
                        help="time compile + the first training step (fit of one batch of 64)")
    args = parser.parse_args()
    if args.baseline:  # code against code: the same serial builds on both sides
        modes = {"before": (args.baseline.resolve(), "0"), "after": (None, "0")}
    else:
        modes = {mode: (None, workers) for mode, workers in MODES.items()}
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    stamp = time.strftime("%Y-%m-%d-%H%M", time.gmtime())
    records = {"cpu": cpu_model(), "date": stamp, "load_before": os.getloadavg(),
               "python": sys.version.split()[0], "models": {},
               "baseline": str(args.baseline) if args.baseline else None, "train": args.train}
    print(f"CPU: {records['cpu']}; load average {os.getloadavg()[0]:.1f}")
    for model in models:
        records["models"][model] = {"runs": []}
    for round_index in range(args.rounds):
        order = list(modes) if round_index % 2 == 0 else list(reversed(modes))
        for model in models:
            spec = ROOT / "specs" / f"{model}.yaml"
            run = {mode: cold_and_warm(spec, args.device, modes[mode][1], modes[mode][0],
                                       args.train) for mode in order}
            records["models"][model]["runs"].append(run)
            print(f"round {round_index + 1} {model} (load {os.getloadavg()[0]:.1f}): " + ", ".join(
                f"{mode} cold {run[mode]['cold']['from_start']:.2f} warm "
                f"{run[mode]['warm']['from_start']:.2f}" for mode in order), flush=True)
    if args.kernels:
        for model in models:
            with tempfile.TemporaryDirectory(prefix="compile-time-") as folder:
                run = run_child(ROOT / "specs" / f"{model}.yaml", args.device, Path(folder), "0",
                                per_kernel=True)
            records["models"][model]["per_kernel"] = run["per_kernel"]
    records["load_after"] = os.getloadavg()
    print(f"\nCPU: {records['cpu']}; load average before {records['load_before'][0]:.1f}, "
          f"after {records['load_after'][0]:.1f}; {args.rounds} rounds")
    print_tables(records)
    out = Path(args.json) if args.json else ROOT / "benchmarks" / "results" / \
        f"compile-time-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=1))
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
