"""Timing a compiled model on its device: `convgraph run --profile`.

profile_training times every launch of one training step (forward with the loss, backward,
the optimizer's update) with OpenCL events, profile_inference those of the inference program's
forward pass; both set each layer against the device's measured peak FLOP rate or bandwidth,
whichever bounds it (two small kernels of kernels/peak.cl, built like every program), and
measure whole passes apart for the wall time. (The kernel checks of `--verify` are in
convgraph/verify.py, above training.)
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np

from convgraph.codegen.plan import KernelSpec
from convgraph.graph import ordered
from convgraph.runtime.target import build

# ---------------------------------------------------------------------------- profiling

PHASES = ("forward", "backward", "update")


@dataclass
class Timing:
    """One layer's kernels in one phase of a pass: the median milliseconds, the rates they
    reached and the fraction of the peak that bounds them (compute-bound layers against the FMA
    peak, memory-bound ones against the copy bandwidth; capped at 1, ``above_peak`` saying a
    measurement went past the peak measured beside it, as data held in cache can)."""

    node: str
    op: str
    milliseconds: float
    gflops: float
    gbytes: float
    peak_fraction: float
    phase: str = "forward"  # forward, backward or update (the optimizer step)
    bound: str = "memory"  # what limits it at its arithmetic intensity: compute or memory
    above_peak: bool = False
    flops_estimated: bool = False  # no kernel declared its FLOPs: estimated from the forward

    def as_json(self) -> dict:
        return {key: (round(value, 6) if isinstance(value, float) else value)
                for key, value in self.__dict__.items()}


@dataclass
class Profile:
    """A profiled pass: per-layer timings, their totals per phase, the device peaks measured in
    the same run and the wall time of whole passes, measured apart (what the kernels leave out:
    transfers, enqueueing, the host's share)."""

    name: str
    device: str
    mode: str  # "training" (forward, backward, update of one step) or "inference"
    batch: int
    repeats: int
    timings: list[Timing]
    peak_flops: float
    peak_bytes: float
    wall_ms: float  # median wall time of one whole step or pass

    def phase_ms(self, phase: str) -> float:
        """The phase's total: the sum of its rows' milliseconds."""
        return sum(t.milliseconds for t in self.timings if t.phase == phase)

    @property
    def total_ms(self) -> float:
        """The sum of every row: forward + backward + update."""
        return sum(t.milliseconds for t in self.timings)

    @property
    def ridge(self) -> float:
        """FLOPs per byte where the FMA peak and the copy bandwidth meet."""
        return self.peak_flops / self.peak_bytes if self.peak_bytes else float("inf")

    def as_json(self) -> dict:
        return {"model": self.name, "device": self.device, "mode": self.mode,
                "batch": self.batch, "repeats": self.repeats,
                "peak_gflops": round(self.peak_flops, 3), "peak_gbytes": round(self.peak_bytes, 3),
                "ridge_flops_per_byte": round(self.ridge, 3),
                "totals_ms": {**{phase: round(self.phase_ms(phase), 6) for phase in PHASES},
                              "step": round(self.total_ms, 6)},
                "wall_ms": round(self.wall_ms, 6),
                "images_per_s": round(self.batch / self.wall_ms * 1000, 3) if self.wall_ms else 0,
                "layers": [t.as_json() for t in self.timings]}


class _PeakPlan:
    """The two peak kernels as a plan to build (run by hand below: their arguments are not a
    network's buffers)."""

    def __init__(self, rounds: int):
        self.kernels = {spec.name: spec for spec in (
            KernelSpec("convgraph_peak_fma", "peak", "PEAK_FMA", {"ROUNDS": rounds}),
            KernelSpec("convgraph_peak_copy", "peak", "PEAK_COPY", {}))}

    def launch_groups(self) -> dict:
        return {}


def _peak(model) -> tuple[float, float]:
    """The device's measured fp32 FMA rate (GFLOP/s) and copy bandwidth (GB/s)."""
    import pyopencl as cl

    rounds = 256
    # no build options, as these were always measured (fma is explicit in the kernel)
    program = build(_PeakPlan(rounds), model.target, "peak FLOP rate and bandwidth",
                    options=()).program
    items = 64 * model.info.compute_units * 16
    out = cl.Buffer(model.context, cl.mem_flags.WRITE_ONLY, 4 * items)
    kernel = program.convgraph_peak_fma
    kernel.set_args(out, np.float32(0.5))
    floats = 1 << 24
    src = cl.Buffer(model.context, cl.mem_flags.READ_WRITE, 4 * floats)
    dst = cl.Buffer(model.context, cl.mem_flags.READ_WRITE, 4 * floats)
    cl.enqueue_fill_buffer(model.queue, src, np.float32(1), 0, 4 * floats)
    copier = program.convgraph_peak_copy
    copier.set_args(src, dst)
    best_flops = best_bytes = 0.0
    for _ in range(5):
        event = cl.enqueue_nd_range_kernel(model.queue, kernel, (items,), None)
        event.wait()
        seconds = (event.profile.end - event.profile.start) * 1e-9
        best_flops = max(best_flops, items * 16 * 8 * 2 * rounds / seconds / 1e9)
        event = cl.enqueue_nd_range_kernel(model.queue, copier, (floats // 4,), None)
        event.wait()
        seconds = (event.profile.end - event.profile.start) * 1e-9
        best_bytes = max(best_bytes, 2 * 4 * floats / seconds / 1e9)
    return best_flops, best_bytes


def profile_model(model, batch: int | None = None, repeats: int = 10
                  ) -> tuple[list[Timing], float, float, float]:
    """Per-layer median times of the inference program over ``repeats`` forward passes (after
    a warm-up).

    Returns (timings, total milliseconds, peak GFLOP/s, peak GB/s)."""
    profile = profile_inference(model, batch, repeats)
    return profile.timings, profile.total_ms, profile.peak_flops, profile.peak_bytes


def profile_inference(model, batch: int | None = None, repeats: int = 10) -> Profile:
    """The forward pass of ``model``'s inference program, per layer (a Profile in mode
    'inference', every row in phase 'forward')."""
    batch = batch or model.batch
    volume = model.graph.nodes[ordered(model.graph)[0]]["output"]
    x = np.random.default_rng(0).normal(
        size=(batch, volume.depth, volume.height, volume.width)).astype(np.float32)
    model.forward(x)  # warm-up: first launches compile on some drivers
    executor = model.executor
    # what a pass runs: launches that read only parameters ran in the warm-up, once for these
    launches = [launch for launch in model.plan.launches if not launch.per_params]

    def one_pass() -> list:
        events: list = []
        executor.allocate(model.batch)
        executor.write_input(model.plan.layouts[model.plan.input].pack(x))
        executor.enqueue(batch, events)
        model.queue.finish()
        return events

    samples = _samples(one_pass, [("forward", launch) for launch in launches], repeats)
    walls = [_wall_ms(lambda: model.forward(x)) for _ in range(repeats)]
    peak_flops, peak_bytes = _peak(model)
    timings = _timings(model.graph, samples, executor, batch, peak_flops, peak_bytes, set())
    return Profile(model.graph.graph["name"], model.info.label, "inference", batch, repeats,
                   timings, peak_flops, peak_bytes, statistics.median(walls))


def profile_training(session, model, repeats: int = 10) -> Profile:
    """One training step of ``session`` (a TrainingSession on ``model``'s target), per layer:
    the training-mode forward pass with the loss, the backward pass, the optimizer's update.
    The session's parameters move (at learning rate 0): give it a session of its own.

    The step's launches are enqueued as ``TrainingSession.step`` enqueues them, with events;
    the wall time is that of ``step`` itself, measured apart, so the two can be compared."""
    graph, plan, executor = session.graph, session.plan, session.executor
    batch = session.batch
    one_step, whole_step = step_runners(session)
    samples = _samples(one_step, _phased(plan), repeats)

    walls = [_wall_ms(whole_step) for _ in range(repeats)]
    peak_flops, peak_bytes = _peak(model)
    trainable = {node for node, _ in plan.trainable}
    timings = _timings(graph, samples, executor, batch, peak_flops, peak_bytes, trainable)
    return Profile(graph.graph["name"], session.info.label, "training", batch, repeats,
                   timings, peak_flops, peak_bytes, statistics.median(walls))


def step_runners(session):
    """(one_step, whole_step) on one random batch of ``session``, warmed up: ``one_step``
    enqueues a training step's launches as ``TrainingSession.step`` does and returns their
    events; ``whole_step`` runs ``step`` itself (for the wall time). The parameters move at
    learning rate 0."""
    graph, plan, executor = session.graph, session.plan, session.executor
    batch = session.batch
    volume = graph.nodes[ordered(graph)[0]]["output"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, volume.depth, volume.height, volume.width)).astype(np.float32)
    labels = rng.integers(0, plan.classes, batch)
    if plan.segmentation:  # (batch, H, W) masks for a per-pixel loss
        logits = plan.layouts[plan.logits].volume
        labels = rng.integers(0, plan.classes, (batch, logits.height, logits.width))
    session.check_every = 0  # the finite-value guard's downloads are no kernels of the step
    session.step(x, labels, 0.0)  # warm-up: the first launches compile on some drivers
    session.queue.finish()

    def one_step() -> list:
        events: list = []
        count = session._write_batch(x, labels)
        scalars = session._scalars(0.0)
        executor.enqueue(count, events, group="train", scalars=scalars)
        session._read_metrics(count)
        executor.enqueue(count, events, group="step", scalars=scalars)
        session.queue.finish()
        return events

    def whole_step() -> None:
        session.step(x, labels, 0.0)
        session.queue.finish()

    return one_step, whole_step


LOSS_ROW = "loss"  # the row of the loss kernel (it reads the labels), in the forward phase


def _phased(plan) -> list[tuple[str, object]]:
    """(phase, launch) for every launch of a training step, in order: the 'train' group is
    the forward pass, the loss (the first launch to read the labels), then the backward pass;
    the 'step' group is the update."""
    from convgraph.codegen.launches import LABELS

    phased, phase = [], "forward"
    for launch in plan.launch_groups()["train"]:
        reads_labels = LABELS in launch.args
        phased.append(("loss" if reads_labels else phase, launch))
        if reads_labels:
            phase = "backward"
    phased += [("update", launch) for launch in plan.launch_groups()["step"]]
    return phased


def _wall_ms(run) -> float:
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) * 1e3


def _samples(one_pass, phased: list, repeats: int) -> dict:
    """{(phase, node): [milliseconds of each pass]} of the launches ``phased`` lists, in the
    order ``one_pass`` enqueues them (it returns their events)."""
    samples: dict = {}
    for _ in range(repeats):
        per_row: dict = {}
        for (phase, launch), event in zip(phased, one_pass()):
            row = per_row.setdefault((phase, launch.node), {"ms": 0.0, "launches": []})
            row["ms"] += (event.profile.end - event.profile.start) * 1e-6
            row["launches"].append(launch)
        for key, row in per_row.items():
            samples.setdefault(key, {"ms": [], "launches": row["launches"]})["ms"].append(
                row["ms"])
    return samples


def _launch_work(launch, executor, batch: int) -> tuple[int, int]:
    """(FLOPs, bytes) of one launch at ``batch``: as the kernel declared them; bytes it did not
    declare count each argument buffer once (what the kernel must at least read or write)."""
    moved = launch.bytes * batch
    if not moved:
        names = {executor.plan.buffer_name(arg) for arg in launch.args} - {None}
        moved = sum(executor.buffer(name).size for name in names)
    return launch.flops * batch, moved


def _timings(graph, samples: dict, executor, batch: int, peak_flops: float, peak_bytes: float,
             trainable: set) -> list[Timing]:
    ridge = peak_flops / peak_bytes if peak_bytes else float("inf")
    timings = []
    for (phase, node), sample in samples.items():
        ms = statistics.median(sample["ms"])
        work = [_launch_work(launch, executor, batch) for launch in sample["launches"]]
        flops, moved = sum(w[0] for w in work), sum(w[1] for w in work)
        estimated = False
        if not flops and phase == "backward" and node in graph:
            # a gradient kernel declares no FLOPs: a layer with weights computes the input's
            # and the weights' gradients (twice its forward), any other layer about its forward
            flops = graph.nodes[node]["flops"] * batch * (2 if node in trainable else 1)
            estimated = bool(flops)
        gflops = flops / ms / 1e6 if ms else 0.0
        gbytes = moved / ms / 1e6 if ms else 0.0
        compute_bound = bool(flops) and moved and flops / moved >= ridge
        fraction = (gflops / peak_flops if peak_flops else 0.0) if compute_bound else (
            gbytes / peak_bytes if peak_bytes else 0.0)
        timings.append(Timing(
            LOSS_ROW if phase == "loss" else node, _op_text(graph, node, phase), ms, gflops,
            gbytes, min(fraction, 1.0), "forward" if phase == "loss" else phase,
            "compute" if compute_bound else "memory", fraction > 1.0, estimated))
    return timings


def _op_text(graph, node: str, phase: str) -> str:
    if phase == "loss":
        return LOSS_ROW
    data = graph.nodes[node]
    return data["op"] + (f"+{graph.nodes[data['epilogue']]['op']}" if data.get("epilogue")
                         else "")
