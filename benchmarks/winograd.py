"""Winograd against direct convolution, per 3x3 stride-1 layer, on this machine's device.

    .venv/bin/python benchmarks/winograd.py [--batch 64] [--rounds 5] [--resnet18] [--json OUT]
        [--passes forward,input grad,weight grad] [--only conv6,res3] [--before]
        [--breakdown | --errors]

For each 3x3 stride-1 layer shape of VGG-CIFAR and ResNet-8 (and, with --resnet18, ResNet-18
at 224x224) this times the conv's forward site, its input-gradient site (the stride-1 input
gradient is itself a 3x3 conv) and its weight-gradient site (with the sum of its batch splits)
with each algorithm of the site's ALGORITHM knob, direct, winograd2 = F(2x2, 3x3),
winograd4 = F(4x4, 3x3) and their fused forms (one kernel from x to y; forward sites only, and
only where the site offers them), at the profile's default tiles, through the tuner's own runner
(runtime/tune.py: the site's launches alone, OpenCL event times, median of several runs;
Winograd's times include its transforms: filter, input and output for a forward site; input,
output gradient and the inverse filter transform for a weight gradient). The algorithms
alternate within each round, and the table gives the median over rounds and the spread
(min-max), since other work shares the machine. GFLOP/s are direct-conv FLOPs / time (for
Winograd layers "effective", marked *), and % is of the device's fp32 FMA peak measured in the
same run with kernels/peak.cl. The CPU model is printed with the table.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (benchmarks/machine.py)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import convgraph  # noqa: E402
from convgraph.codegen.launches import Buffer  # noqa: E402
from convgraph.codegen.plan import plan_forward  # noqa: E402
from convgraph.codegen.profile import profile_for  # noqa: E402
from convgraph.codegen.training import plan_training  # noqa: E402
from convgraph.codegen.tuning import Tuning  # noqa: E402
from convgraph.ops import winograd  # noqa: E402
from convgraph.pipeline import analyse  # noqa: E402
from convgraph.runtime.devices import select_device  # noqa: E402
from convgraph.runtime.inspect import _peak  # noqa: E402
from convgraph.runtime.tune import _Tuner  # noqa: E402

ALGORITHMS = winograd.ALGORITHMS  # direct, F(2x2), F(4x4), and the two fused
LABELS = {"direct": "direct", "winograd2": "F(2x2)", "winograd4": "F(4x4)",
          "winograd2_fused": "F(2x2) fused", "winograd4_fused": "F(4x4) fused"}
PASSES = ("forward", "input grad", "weight grad")
# (network, layer, width = height, input channels, filters): every 3x3 stride-1 shape once
LAYERS = [
    ("vgg_cifar", "conv1", 32, 3, 32),
    ("vgg_cifar", "conv2", 32, 32, 32),
    ("vgg_cifar", "conv3", 16, 32, 64),
    ("vgg_cifar", "conv4", 16, 64, 64),
    ("vgg_cifar", "conv5", 8, 64, 128),
    ("vgg_cifar", "conv6", 8, 128, 128),
    ("resnet8", "conv1", 32, 3, 16),
    ("resnet8", "res1 conv1/2", 32, 16, 16),
    ("resnet8", "res2 conv2", 16, 32, 32),
    ("resnet8", "res3 conv2", 8, 64, 64),
]
RESNET18 = [
    ("resnet18", "layer1 convs", 56, 64, 64),
    ("resnet18", "layer2 conv2s", 28, 128, 128),
    ("resnet18", "layer3 conv2s", 14, 256, 256),
    ("resnet18", "layer4 conv2s", 7, 512, 512),
]


def cpu_model() -> str:
    """The CPU line benchmarks/machine.py prints with every table (vendor, family, model, name,
    cores, SIMD flags): the machine changes between runs."""
    return machine.cpu_model()["line"]


def layer_graph(size: int, channels: int, filters: int):
    """The layer after a 1x1 conv (so that its input has a gradient), then an fc for the loss."""
    return analyse({"input": f"{size}x{size}x{channels}",
                    "pattern": f"[INPUT-CONV({channels}, 1)-CONV({filters}, 3, pad=1)-FC(2)]"})


def layer_sites(tuner: _Tuner, node: str, passes=PASSES) -> dict:
    """The layer's forward site (inference plan), input-gradient site (training plan: the
    CONV_FORWARD launch that reads a gradient) and weight-gradient site (training plan; only
    where it offers Winograd: not on 3-channel layers), of those named in ``passes``."""
    sites = {site.key: site for site in tuner.sites(("infer", "train"))}
    found = {}
    for mode, role in (("infer", "forward"), ("train", "input grad"), ("train", "weight grad")):
        if role not in passes:
            continue
        plan = tuner.plan_with(Tuning(), mode)
        for launch in (x for group in plan.launch_groups().values() for x in group):
            if launch.node != node or launch.site not in sites:
                continue
            site = sites[launch.site]
            if role == "weight grad":
                if site.selector == "CONV_BACKWARD_WEIGHTS" and "ALGORITHM" in site.default:
                    found[role] = site
                    tuner.mode_of[launch.site] = mode
                continue
            if site.selector != "CONV_FORWARD":
                continue
            reads_grad = isinstance(launch.args[0], Buffer) and launch.args[0].kind == "grad"
            if reads_grad == (role == "input grad"):
                found[role] = site
                tuner.mode_of[launch.site] = mode
    return found


def session6_runner(tuner: _Tuner, site, knobs: dict):
    """The tuner's runner for ``knobs`` as the code stood before session 7: GEMM rows from one
    image only, and the filters transformed on every pass (also in inference)."""
    winograd.CROSS_IMAGE_ROWS = False
    try:
        _, _, executor = tuner.probe(site, knobs)
    finally:
        winograd.CROSS_IMAGE_ROWS = True

    def run() -> float:
        samples = []
        for _ in range(tuner.repeats):
            events: list = []
            executor.params_changed = True  # the filter transform runs every pass
            executor.enqueue(tuner.batch, events, group="probe")
            tuner.queue.finish()
            samples.append(sum(e.profile.end - e.profile.start for e in events) * 1e-6)
        return statistics.median(samples)

    return run


def kernel_times(tuner: _Tuner, site, knobs: dict, rounds: int) -> dict:
    """Median event time (ms) of each kernel of the site's launches with ``knobs``, by
    selector (the launches of one selector summed), over ``rounds`` passes."""
    plan, launches, executor = tuner.probe(site, knobs)
    ran = [launch for launch in launches if not launch.per_params]  # once per weights
    samples: dict = {}
    for _ in range(rounds):
        events: list = []
        executor.enqueue(tuner.batch, events, group="probe")
        tuner.queue.finish()
        per: dict = {}
        for launch, event in zip(ran, events):
            selector = plan.kernels[launch.kernel].selector
            per[selector] = per.get(selector, 0.0) + (event.profile.end
                                                      - event.profile.start) * 1e-6
        for selector, ms in per.items():
            samples.setdefault(selector, []).append(ms)
    return {selector: statistics.median(ms) for selector, ms in samples.items()}


def gemm_gflop(size: int, channels: int, filters: int, batch: int, algorithm: str) -> float:
    """The FLOPs the Winograd GEMMs do (positions x tiles x channels x filters x 2)."""
    out_tile = winograd.OUT_TILE[algorithm]
    tiles = (-(-size // out_tile)) ** 2
    return 2 * (out_tile + 2) ** 2 * tiles * channels * filters * batch / 1e9


def transform_bytes(size: int, channels: int, filters: int, batch: int, algorithm: str
                    ) -> dict:
    """The bytes each transform kernel must move at least (its input read once, its output
    written once), by selector: against the copy bandwidth they tell how far each is from
    memory-bound."""
    out_tile = winograd.OUT_TILE[algorithm]
    tiled = (out_tile + 2) ** 2 * (-(-size // out_tile)) ** 2 * batch * 4  # bytes a channel
    pixels = size * size * batch * 4
    return {"WINOGRAD_INPUT": (pixels + tiled) * channels,
            "WINOGRAD_OUTPUT": (tiled + pixels) * filters,
            "WINOGRAD_OUTPUT_GRAD": (pixels + tiled) * filters}


def breakdown(layers, args, peak: float, bandwidth: float) -> list[str]:
    """Per layer and pass, each Winograd algorithm's kernels: the transforms' share of the
    time, the GEMM's own GFLOP/s and % of the FMA peak (the limit of a faster Winograd), and
    each tile transform's ms and GB/s (% of the copy bandwidth)."""
    lines = ["| layer | shape | pass | algorithm | transforms ms | GEMM ms | GEMM GFLOP/s (% of "
             "peak) | transforms' share | tile transforms: ms, GB/s (% of copy) |",
             "|---|---|---|---|---|---|---|---|---|"]
    gemms = ("WINOGRAD_GEMM", "WINOGRAD_WEIGHT_GEMM")
    for network, layer, size, channels, filters in layers:
        tuner = _Tuner(layer_graph(size, channels, filters), None, args.batch, args.repeats)
        for role, site in layer_sites(tuner, "conv2", args.passes.split(",")).items():
            for algorithm in ("winograd2", "winograd4"):  # (a fused form is one kernel)
                times = kernel_times(tuner, site, winograd.first_of(site.space, algorithm),
                                     args.rounds)
                gemm = sum(ms for selector, ms in times.items() if selector in gemms)
                rest = sum(times.values()) - gemm
                rate = gemm_gflop(size, channels, filters, args.batch, algorithm) / gemm * 1e3
                moved = transform_bytes(size, channels, filters, args.batch, algorithm)
                cells = ", ".join(
                    f"{selector.removeprefix('WINOGRAD_').lower()} {times[selector]:.2f} ms "
                    f"{moved[selector] / times[selector] / 1e6:.0f} GB/s "
                    f"({100 * moved[selector] / times[selector] / 1e6 / bandwidth:.0f}%)"
                    for selector in moved if selector in times)
                lines.append(f"| {network} {layer} | {size}x{size} {channels}->{filters} | "
                             f"{role} | {algorithm} | {rest:.2f} | {gemm:.2f} | {rate:.0f} "
                             f"({100 * rate / peak:.0f}%) | {100 * rest / (rest + gemm):.0f}% | "
                             f"{cells} |")
                print(lines[-1], flush=True)
    return lines


def measure(tuner: _Tuner, site, rounds: int, before: bool,
            algorithms: tuple = ALGORITHMS) -> dict:
    """Per algorithm (and with ``before``, per Winograd algorithm as of session 6, marked
    'winograd2 s6'): the per-round medians of the site's launches (ms), alternating."""
    offered = {knobs.get("ALGORITHM") for knobs in site.space}
    runs = {a: tuner.runner(site, winograd.first_of(site.space, a)) for a in algorithms
            if a in offered}
    if before and site.selector == "CONV_FORWARD":
        for algorithm in ("winograd2", "winograd4"):
            runs[f"{algorithm} s6"] = session6_runner(tuner, site,
                                                      {**site.default, "ALGORITHM": algorithm})
    samples = {name: [] for name in runs}
    for index in range(rounds):  # ABBA: the order reversed every other round
        for name, run in (list(runs.items())[::-1] if index % 2 else runs.items()):
            samples[name].append(run())
    return samples


# (width = height, input channels, filters, batch): the numerical guard's layers, up to the
# 512 channels F(4x4) is offered for; the weight gradient sums batch x tiles products
ERROR_LAYERS = [(32, 32, 32, 16), (16, 64, 64, 8), (8, 128, 128, 8), (14, 256, 256, 4),
                (7, 512, 512, 4)]


def forced_profile(graph, algorithm: str):
    """The untuned profile with every site that offers ``algorithm`` (forward, input and weight
    gradients) set to it, the other knobs their defaults."""
    base = profile_for(select_device()[0], tuned=False)
    sites = {**plan_forward(graph, base).sites, **plan_training(graph, base).sites}
    entries = {key: {"knobs": winograd.first_of(site.space, algorithm)}
               for key, site in sites.items()
               if any(knobs.get("ALGORITHM") == algorithm for knobs in site.space)}
    return replace(base, tuning=Tuning(entries, "tuned on this device"))


def layer_errors(size: int, channels: int, filters: int, batch: int, algorithm: str) -> dict:
    """Worst relative errors (max |device - reference| / max |reference|) of the 3x3 layer's
    output, input gradient and weight gradient, ``algorithm`` forced, against float64 numpy."""
    import numpy as np

    import convgraph.runtime.target as target
    from convgraph.params import initial_params
    from convgraph.reference import reference_gradients
    from convgraph.train.session import TrainingSession
    from convgraph.verify import relative_error

    graph = layer_graph(size, channels, filters)
    profile = forced_profile(graph, algorithm)
    original, target.profile_for = target.profile_for, lambda info: profile
    try:
        session = TrainingSession(graph, batch=batch)
    finally:
        target.profile_for = original
    rng = np.random.default_rng(0)
    params = initial_params(graph, seed=0)
    params.update({key: rng.normal(0.0, 0.5, value.shape).astype(np.float32)
                   for key, value in params.items() if key.endswith(".bias")})
    session.set_params(params)
    x = rng.normal(size=(batch, channels, size, size)).astype(np.float32)
    labels = rng.integers(0, 2, batch)
    grads, param_grads = session.gradients(x, labels)
    _, _, values, expected, expected_params = reference_gradients(graph, params, x, labels)
    output = session.executor.read_tensor(session.plan.storage_of["conv2"], batch)
    return {"forward": relative_error(output, values["conv2"]),
            "input grad": relative_error(grads["conv1"], expected["conv1"]),
            "weight grad": relative_error(param_grads["conv2.weight"],
                                          expected_params["conv2.weight"])}


def errors_table(started: str, algorithms: tuple = ALGORITHMS) -> tuple[str, list]:
    """The numerical guard: every layer of ERROR_LAYERS with each algorithm."""
    rows = []
    for size, channels, filters, batch in ERROR_LAYERS:
        for algorithm in algorithms:
            if not winograd.offered(algorithm, channels, filters):
                continue  # (a fused form where its filters do not fit the cache)
            errors = layer_errors(size, channels, filters, batch, algorithm)
            rows.append({"shape": f"{size}x{size} {channels}->{filters}", "batch": batch,
                         "algorithm": algorithm, **errors})
            print(rows[-1], flush=True)
    lines = [f"CPU: {cpu_model()}; {started}; worst relative error against float64 numpy",
             "", "| layer | batch | algorithm | forward | input grad | weight grad |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['shape']} | {r['batch']} | {r['algorithm']} | {r['forward']:.1e} | "
              f"{r['input grad']:.1e} | {r['weight grad']:.1e} |" for r in rows]
    return "\n".join(lines), rows


def main(argv=None) -> int:
    parser = machine.timing_parser(__doc__)
    parser.add_argument("--resnet18", action="store_true", help="add ResNet-18's 224 layers")
    parser.add_argument("--passes", default=",".join(PASSES),
                        help="which sites to time (comma-separated: " + ", ".join(PASSES) + ")")
    parser.add_argument("--before", action="store_true",
                        help="also time forward sites' Winograd as of session 6 (GEMM rows per "
                        "image, filters transformed every pass)")
    parser.add_argument("--breakdown", action="store_true",
                        help="per-kernel times of each Winograd site instead: transforms "
                        "against the GEMM, and the GEMM's own %% of the peak")
    parser.add_argument("--errors", action="store_true",
                        help="measure the numerical guard instead (worst errors per variant)")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS),
                        help="which algorithms to time (comma-separated, of "
                        + ", ".join(ALGORITHMS) + ")")
    parser.add_argument("--only", help="only the layers whose 'network layer' name contains "
                        "one of these (comma-separated), e.g. 'conv6,res3'")
    args = parser.parse_args(argv)
    layers = LAYERS + (RESNET18 if args.resnet18 else [])
    if args.only:
        layers = [row for row in layers
                  if any(part in f"{row[0]} {row[1]}" for part in args.only.split(","))]
    if args.breakdown:
        probe = convgraph.compile({"input": "8x8x8", "pattern": "[INPUT-CONV(8, 3, pad=1)]"})
        peak, bandwidth = _peak(probe)
        print(f"CPU: {cpu_model()}; fp32 FMA peak {peak:.0f} GFLOP/s, copy {bandwidth:.0f} GB/s "
              f"(kernels/peak.cl); batch {args.batch}; "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; per-kernel event times, "
              f"median of {args.rounds} passes; transforms = everything but the GEMM (with the "
              "split sum for a weight gradient; inference's filter transform runs once per "
              "weights, not here)")
        print("\n".join(breakdown(layers, args, peak, bandwidth)))
        return 0
    if args.errors:
        text, rows = errors_table(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                  tuple(args.algorithms.split(",")))
        print(text)
        if args.json:
            Path(args.json).write_text(json.dumps({"cpu": cpu_model(), "rows": rows}, indent=1))
        return 0

    probe = convgraph.compile({"input": "8x8x8", "pattern": "[INPUT-CONV(8, 3, pad=1)]"})
    peak_before, _ = _peak(probe)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = []
    for network, layer, size, channels, filters in layers:
        graph = layer_graph(size, channels, filters)
        tuner = _Tuner(graph, None, args.batch, args.repeats)
        flops = 2 * size * size * channels * filters * 9 * args.batch
        for role, site in layer_sites(tuner, "conv2", args.passes.split(",")).items():
            samples = measure(tuner, site, args.rounds, args.before,
                              tuple(args.algorithms.split(",")))
            row = {"network": network, "layer": layer, "shape": f"{size}x{size} {channels}->"
                   f"{filters}", "pass": role, "gflop": flops / 1e9}
            for algorithm, times in samples.items():
                row[algorithm] = {"ms": statistics.median(times), "min": min(times),
                                  "max": max(times)}
            rows.append(row)
            print(_line(row, peak_before), flush=True)
    peak_after, _ = _peak(probe)
    peak = max(peak_before, peak_after)
    print()
    print(table(rows, peak, args, started))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"cpu": cpu_model(), "device": probe.info.label, "started": started,
             "batch": args.batch, "rounds": args.rounds, "repeats": args.repeats,
             "peak_gflops": [peak_before, peak_after], "rows": rows}, indent=1))
    return 0


def _line(row: dict, peak: float) -> str:
    return f"{row['network']} {row['layer']} {row['pass']}: " + ", ".join(
        f"{a} {row[a]['ms']:.2f} ms (min {row[a]['min']:.2f})" for a in (*ALGORITHMS, *BEFORE)
        if a in row)


BEFORE = ("winograd2 s6", "winograd4 s6")  # as of session 6 (--before)


def table(rows: list[dict], peak: float, args, started: str) -> str:
    before = any(name in row for row in rows for name in BEFORE)
    shown = [a for a in ALGORITHMS if any(a in row for row in rows)]
    lines = [f"CPU: {cpu_model()}; fp32 FMA peak {peak:.0f} GFLOP/s (kernels/peak.cl, "
             f"same run); batch {args.batch}; {started}; median of {args.rounds} alternating "
             f"rounds (each the median of {args.repeats} runs), spread min-max",
             "GFLOP/s = direct-conv FLOPs / time; * = effective (Winograd); % of the FMA peak"
             + ("; s6 = Winograd as of session 6 (GEMM rows per image, filters transformed "
                "every pass), same run" if before else ""),
             "",
             "| layer | shape | pass | " + " | ".join(f"{LABELS[a]} ms" for a in shown)
             + " | " + " | ".join(f"{LABELS[a]} GFLOP/s{'*' if a != 'direct' else ''} (%)"
                                  for a in shown) + " |"
             + (" F(2x2) s6 GFLOP/s* | F(4x4) s6 GFLOP/s* |" if before else "") + " best |",
             "|---|---|---|" + "---|---|" * len(shown) + ("---|---|" if before else "")
             + "---|"]
    for row in rows:
        cells = []
        for algorithm in shown:
            r = row.get(algorithm)
            cells.append(f"{r['ms']:.2f} ({r['min']:.2f}-{r['max']:.2f})" if r else "-")
        rates = []
        for algorithm in shown + (list(BEFORE) if before else []):
            if algorithm not in row:
                rates.append("-")
                continue
            gflops = row["gflop"] / (row[algorithm]["ms"] / 1e3)
            rates.append(f"{gflops:.0f} ({100 * gflops / peak:.0f}%)")
        best = LABELS[min((a for a in shown if a in row), key=lambda a: row[a]["ms"])]
        lines.append(f"| {row['network']} {row['layer']} | {row['shape']} | {row['pass']} | "
                     + " | ".join(cells) + " | " + " | ".join(rates) + f" | {best} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
