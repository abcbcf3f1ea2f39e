"""Compiling a cold program's kernels in parallel, in worker processes (PoCL).

PoCL builds a program's front end at ``clBuildProgram`` but compiles each kernel (its
work-group function, LLVM optimisation, code generation: 0.1-0.8 s a kernel here) at its first
launch, one after another: a process has one kernel compiler. Worker processes have their own.
So when a build was cold, ``prebuild`` writes a *recipe* (the source, the options, the buffer
sizes at batch 1 and one launch per distinct kernel and work-group shape) and starts workers
(``python -m convgraph.runtime.parallel RECIPE``). Each builds the same source with the same
options (so PoCL's cache key is the same) and launches kernels once on scratch buffers at
batch 1 with the plan's work-group shapes; that leaves each compiled kernel in PoCL's kernel
cache (``POCL_CACHE_DIR``), where the main process's first real launch finds it. The main
process compiles its share the same way meanwhile: it takes kernels from the front of the
list, the workers from the back, each claiming a kernel by creating a file (``O_EXCL``), so no
kernel is compiled twice and the shares balance whatever each kernel costs.

Nothing here changes what runs: the scratch launches read and write scratch buffers only, and
the real launches use the same kernels with the same shapes. A worker that fails, hangs or
is killed costs only speed: a kernel it did not finish is compiled at its first real launch,
as without workers. ``CONVGRAPH_BUILD_WORKERS=0`` turns the workers off (a number sets how
many; default: the CPUs this process may use that the load average leaves idle, minus one, at
most 7; none under MPI).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from convgraph.codegen.launches import Ints

if TYPE_CHECKING:
    import subprocess

# A PoCL build that takes less than this found the program in PoCL's own cache, and then its
# kernels too (cold builds measured 0.55-0.85 s here, warm ones 0.02-0.15 s, under load 13
# too): no workers. A misjudged warm build only starts a worker that finds nothing to do.
COLD_BUILD_SECONDS = 0.25
# Below this many distinct kernels a worker's start (Python, pyopencl, PoCL's cached build:
# 0.4-1.4 CPU seconds measured) costs about what it saves (LeNet-5's 7 kernels: the main
# process 0.35 CPU seconds less, the worker 0.73). It also keeps the tuner's probe programs
# (one site's launches: at most 5 kernels, timed by the hundred) from starting workers: with
# 4 they did, and `convgraph tune` ran out of its budget on a cold cache.
MIN_KERNELS = 8
MPI_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_PROCID")
WORKER_TIMEOUT = 600.0  # seconds; a worker still running then is ended (its kernels: serial)
SCALAR_TYPES = {"batch": "int32", "sample_offset": "uint32", "seed": "uint32",
                "lr": "float32", "correction1": "float32", "correction2": "float32"}


def worker_count(kernels: int) -> int:
    """How many worker processes to start for ``kernels`` distinct kernels."""
    setting = os.environ.get("CONVGRAPH_BUILD_WORKERS", "").strip()
    if not setting and any(name in os.environ for name in MPI_VARIABLES):
        return 0  # one rank per CPU already, and forking inside MPI is best avoided
    wanted = int(setting) if setting.isdigit() else min(idle_cpus() - 1, 7)
    return max(0, min(wanted, kernels // 2)) if kernels >= MIN_KERNELS else 0


def idle_cpus() -> int:
    """The CPUs this process may use that other work leaves idle (its own included), by the
    1-minute load average, which counts this process itself. A worker pays only on an idle CPU:
    on 2 CPUs at load 2.8-3.7 one made VGG-CIFAR's and ResNet-8's cold compiles 4-5% slower
    (3 alternating rounds; the main process's CPU seconds fell to 0.60-0.70x but it waited for
    the worker), at load 8-13 none was faster; a worker's start costs 0.4-1.4 CPU seconds."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this OS
        cpus = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        return cpus
    # load 1.0 on 2 CPUs (this process alone, running) leaves one for a worker
    return max(1, min(cpus, int(cpus - load + 1.5)))


def wants_prebuild(info, cache_hit: bool, seconds: float) -> bool:
    """Only PoCL compiles at first launch; only a cold build has kernels left to compile."""
    return (info.platform == "Portable Computing Language" and not cache_hit
            and seconds >= COLD_BUILD_SECONDS)


def recipe(plan, info, source: str, options: list[str]) -> dict:
    """What a worker needs, as plain data: buffers at batch 1 and one launch per distinct
    (kernel, work-group shape), in plan order."""
    from convgraph.runtime.executor import legal_local, padded_global

    sizes = {**plan.fixed_sizes(), **plan.buffer_sizes(1)}
    launches, seen = [], set()
    for launch in (entry for group in plan.launch_groups().values() for entry in group):
        local = legal_local(info, launch)
        if (launch.kernel, local) in seen:
            continue
        seen.add((launch.kernel, local))
        args = []
        for arg in launch.args:
            name = plan.buffer_name(arg)
            if name is not None:
                args.append(["buffer", name])
            elif isinstance(arg, Ints):  # shapes: the real ones, so it stays in its buffers
                args.append(["ints", list(arg.values)])
            else:
                args.append(["scalar", SCALAR_TYPES.get(arg.name, "int32"), 1])
        if any(kind == "buffer" and name not in sizes for kind, name, *_ in args):
            continue  # a buffer the plan does not size: left to the real first launch
        launches.append({"kernel": launch.kernel, "args": args, "local": local,
                         "global": padded_global(launch.sizes(1)[0], local)})
    return {"device": info.index, "device_name": info.name, "source": source,
            "options": list(options), "buffers": {name: max(4, size)
                                                  for name, size in sizes.items()},
            "launches": launches}


def prebuild(plan, target, program, source: str, options: list[str]) -> dict:
    """Compile every kernel of a freshly (cold) built ``program`` now, in this process and in
    worker processes at once, so that its first launches find them compiled. Returns what it
    did (workers, kernels, compiled here, seconds): ``Built.prebuilt``, which
    benchmarks/compile_time.py reports. A worker that cannot be started is one fewer."""
    import json  # here, not at the top: only a cold build of 8+ kernels starts workers
    import tempfile

    start = time.perf_counter()
    # decided on the kernel count first: a plan with a few kernels may be no network's (the
    # profiler's peak kernels have no buffers to size), and it is never worth a worker
    workers = worker_count(len(plan.kernels))
    if workers == 0:
        return {"workers": 0, "kernels": len(plan.kernels), "here": 0, "seconds": 0.0}
    work = recipe(plan, target.info, source, options)
    with tempfile.TemporaryDirectory(prefix="convgraph-build-") as folder:  # private: 0700
        path, claims = Path(folder) / "recipe.json", Path(folder) / "claims"
        try:
            path.write_text(json.dumps(work))
            claims.mkdir()
        except OSError:  # a full temporary folder: the kernels compile at first launch
            return {"workers": 0, "kernels": len(plan.kernels), "here": 0, "seconds": 0.0}
        children = [child for child in (_start_worker(path) for _ in range(workers)) if child]
        here = _compile_share(work, claims, target.context, target.queue, program,
                              from_end=False)
        owners = _claimants(claims)
        for child in children:
            # every kernel is claimed now: a worker that holds none has nothing left to do
            # (it may still be starting up), so it is not waited for
            _finish(child, start, needed=str(child.pid) in owners)
    return {"workers": len(children), "kernels": len(work["launches"]), "here": here,
            "seconds": time.perf_counter() - start}


def _start_worker(path: Path) -> subprocess.Popen | None:
    """A worker on the recipe at ``path``; None when the system refuses another process."""
    import subprocess

    try:  # stdout/stderr dropped: a worker is an optimisation, never a message to the user
        return subprocess.Popen([sys.executable, "-m", "convgraph.runtime.parallel", str(path)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    except OSError:  # no memory or process slots left for it
        return None


def _finish(child: subprocess.Popen, start: float, needed: bool) -> None:
    import subprocess

    if not needed:
        child.terminate()  # our own child, by its handle
    try:
        child.wait(timeout=max(1.0, WORKER_TIMEOUT - (time.perf_counter() - start)))
    except subprocess.TimeoutExpired:
        child.kill()  # our own child, by its handle; its unfinished kernels compile at launch
        child.wait()


def _claim(claims: Path, index: int) -> bool:
    """Take kernel ``index`` for this process (the claim holds its pid); False: taken."""
    try:
        handle = os.open(claims / str(index), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    try:
        os.write(handle, str(os.getpid()).encode())
    finally:
        os.close(handle)
    return True


def _claimants(claims: Path) -> set[str]:
    """The pids holding claims (a claim being written may read empty: it is the main's own
    or a worker's that is then waited for only if another claim names it)."""
    owners = set()
    for claim in claims.iterdir():
        try:
            owners.add(claim.read_text())
        except OSError:
            continue
    return owners


def _compile_share(work: dict, claims: Path, context, queue, program, from_end: bool) -> int:
    """Launch, once each, the recipe's kernels this process claims (from the front of the list
    or from its end) on scratch buffers; returns how many. A launch the device refuses is left
    to the real run, which reports it properly."""
    import numpy as np
    import pyopencl as cl

    buffers: dict[str, object] = {}
    order = range(len(work["launches"]))
    done = 0
    for index in (reversed(order) if from_end else order):
        if not _claim(claims, index):
            continue
        entry = work["launches"][index]
        try:
            kernel = cl.Kernel(program, entry["kernel"])
            for slot, arg in enumerate(entry["args"]):
                if arg[0] == "buffer":
                    if arg[1] not in buffers:  # uninitialised: only the compile matters
                        buffers[arg[1]] = cl.Buffer(context, cl.mem_flags.READ_WRITE,
                                                    size=work["buffers"][arg[1]])
                    kernel.set_arg(slot, buffers[arg[1]])
                elif arg[0] == "ints":
                    kernel.set_arg(slot, Ints(tuple(arg[1])).value())
                else:
                    kernel.set_arg(slot, np.dtype(arg[1]).type(arg[2]))
            local = None if entry["local"] is None else tuple(entry["local"])
            cl.enqueue_nd_range_kernel(queue, kernel, tuple(entry["global"]), local)
            queue.finish()
            done += 1
        except cl.Error:
            continue
    return done


def _work(path: str) -> int:
    """A worker: open the recipe's device, build its source, compile kernels from the end."""
    import json

    import pyopencl as cl

    work = json.loads(Path(path).read_text())
    platform, device = (int(part) for part in work["device"].split(":"))
    cl_device = cl.get_platforms()[platform].get_devices()[device]
    if cl_device.name.strip() != work["device_name"].strip():
        return 1  # the device list changed under us: leave the kernels to the main process
    context = cl.Context([cl_device])
    queue = cl.CommandQueue(context, cl_device)
    program = cl.Program(context, work["source"]).build(options=work["options"],
                                                        devices=[cl_device])
    _compile_share(work, Path(path).parent / "claims", context, queue, program, from_end=True)
    return 0


if __name__ == "__main__":
    sys.exit(_work(sys.argv[1]))
