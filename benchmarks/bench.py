"""Performance benchmark: convgraph on an OpenCL device against PyTorch and onnxruntime (2
threads each), every peer in a process of its own, alternating, with references measured in the
same run.

    pip install -e '.[bench]'           # torch==2.13.0 (a CPU build) and onnxruntime
    python benchmarks/bench.py [--models M1,M2,M3,M4,R18,V16] [--device pocl] [--json FILE]
                               [--rounds N] [--quick] [--tune SECONDS | --no-tune]
                               [--batches 'train=16;infer=1,16'] [--spin]

Each measurement (a model, training or inference, a batch) runs in rounds; a round starts one
process per peer, in turn (convgraph, PyTorch, onnxruntime; benchmarks/peers.py), so every peer
runs alone and all see the same machine. The table gives each peer's median over the rounds
with its spread (min-max), and the ratios of the medians. The references come first, each in
its own process (benchmarks/machine.py): the device's FMA peak as `convgraph run --profile`
measures it and numpy's sgemm with the OpenBLAS pins unset; the CPU model and the load are
printed with every table. Then per-layer profiles (`convgraph run --profile`'s event times) of
training steps, as fractions of that FMA peak (Winograd layers: effective GFLOP/s, marked W),
compile times in fresh processes, and the issue-16 targets, met or not.

M1-M4 (seed, LeNet-5, VGG-CIFAR, ResNet-8): training batch 64 and 128, inference 64 and 256.
R18 and V16 (ResNet-18 and VGG-16 at 224x224): training batch 16, inference 1, 16 and 64.
--quick: the first batch of each, two rounds, short timings, no tuning and no cold compile: a
smoke run (`--quick --models M1` takes about a minute). --batches picks the batches instead.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from machine import cpu_model, load_average, references  # noqa: E402

MODELS = {"M1": "seed", "M2": "lenet5", "M3": "vgg_cifar", "M4": "resnet8",
          "R18": "resnet18", "V16": "vgg16"}
LARGE = ("R18", "V16")  # 224x224 ImageNet networks
BATCHES = {"small": {"train": (64, 128), "infer": (64, 256)},
           "large": {"train": (16,), "infer": (1, 16, 64)}}
PEERS = {"train": ("convgraph", "torch"), "infer": ("convgraph", "torch", "onnxruntime")}
PROFILED = ("M3", "M4", "R18", "V16")  # per-layer tables (training step)


def batches(label: str, mode: str, quick: bool, chosen: dict | None = None) -> tuple[int, ...]:
    """The batches a model is measured at: ``chosen`` (from --batches) where given, else the
    model's defaults (the first of each with --quick)."""
    if chosen:
        return chosen.get(mode, ())
    default = BATCHES["large" if label in LARGE else "small"][mode]
    return default[:1] if quick else default


def parse_batches(text: str | None) -> dict | None:
    """--batches "train=16;infer=1,16" -> {"train": (16,), "infer": (1, 16)}; a mode left out
    is not measured.

    >>> parse_batches("infer=1,16")
    {'infer': (1, 16)}
    """
    if not text:
        return None
    chosen = {}
    for part in text.split(";"):
        mode, _, numbers = part.partition("=")
        if mode.strip() not in PEERS or not numbers:
            raise SystemExit(f"--batches {text!r}: expected e.g. 'train=16;infer=1,16'")
        chosen[mode.strip()] = tuple(int(n) for n in numbers.split(","))
    return chosen


def spec_path(label: str) -> Path:
    return ROOT / "specs" / f"{MODELS[label]}.yaml"


# ---------------------------------------------------------------------------- summaries

def spread(values: list[float]) -> dict:
    """Median, min and max of per-round figures.

    >>> spread([3.0, 1.0, 2.0])
    {'median': 2.0, 'min': 1.0, 'max': 3.0}
    """
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def ratio_spread(ours: list[float], theirs: list[float]) -> dict:
    """The ratio of the medians, and the min-max of the ratios round by round (a round's peers
    ran back to back, so its ratio saw the most similar machine)."""
    per_round = [a / b for a, b in zip(ours, theirs)]
    return {"median": statistics.median(ours) / statistics.median(theirs),
            "min": min(per_round), "max": max(per_round)}


def relative_difference(output, reference) -> float:
    """max |output - reference| / max |reference|."""
    return float(np.abs(output - reference).max() / max(np.abs(reference).max(), 1e-30))


# ---------------------------------------------------------------------------- processes

# On a shared, loaded machine the peers' spinning worker threads (OpenMP's default wait policy
# in PyTorch, onnxruntime's intra-op spinning) lose their cores to other processes and collapse:
# PyTorch trained M1 at ~200 img/s spinning and ~5,000 passive at load 9 (2026-12-01). So by
# default the peers wait passively; --spin keeps their defaults, which can win at light load
# (M3 training up to 1.7x at load 2.7): on a quieter machine measure both.
PASSIVE_WAIT = {"OMP_WAIT_POLICY": "PASSIVE"}


def peer_environment(spin: bool) -> dict:
    return dict(os.environ) if spin else {**os.environ, **PASSIVE_WAIT}


def run_peer(peer: str, mode: str, label: str, batch: int, folder: Path, args,
             onnx: Path | None, output: Path | None) -> dict:
    """One peer's measurement in its own process (benchmarks/peers.py)."""
    result = folder / f"{peer}-{mode}-{batch}.json"
    result.unlink(missing_ok=True)
    command = [sys.executable, str(HERE / "peers.py"), peer, mode, str(spec_path(label)),
               str(batch), "--result", str(result), "--seconds", str(args.seconds)]
    command += ["--device", args.device] if args.device and peer == "convgraph" else []
    command += ["--onnx", str(onnx)] if peer == "onnxruntime" else []
    command += ["--output", str(output)] if output else []
    command += ["--passive"] if not args.spin else []
    done = subprocess.run(command, capture_output=True, text=True, env=peer_environment(args.spin))
    if done.returncode or not result.exists():
        raise SystemExit(f"{label} {mode} batch {batch} ({peer}) failed:\n{done.stderr[-3000:]}")
    return json.loads(result.read_text())


def export_onnx(label: str, folder: Path) -> Path:
    """The PyTorch twin as ONNX (free batch axis), exported once per model in its own process."""
    path = folder / f"{MODELS[label]}.onnx"
    done = subprocess.run([sys.executable, str(HERE / "peers.py"), "export",
                           str(spec_path(label)), str(path)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"exporting {label} to ONNX failed:\n{done.stderr[-3000:]}")
    return path


def measure(label: str, mode: str, batch: int, folder: Path, args, onnx: Path | None) -> dict:
    """Rounds of one process per peer, alternating; medians, spreads and ratios."""
    peers = PEERS[mode]
    rounds: dict[str, list[dict]] = {peer: [] for peer in peers}
    loads = []
    for number in range(args.rounds):
        loads.append(load_average()[0])
        for peer in peers:
            output = folder / f"{peer}-out.npy" if mode == "infer" and number == 0 else None
            rounds[peer].append(run_peer(peer, mode, label, batch, folder, args, onnx, output))
    rates = {peer: [r["rate"] for r in results] for peer, results in rounds.items()}
    record = {"model": label, "spec": MODELS[label], "mode": mode, "batch": batch,
              "rounds": args.rounds, "load_1min": loads,
              "img_s": {peer: spread(values) for peer, values in rates.items()},
              "per_round_img_s": rates,
              "max_rss_bytes": {peer: max(r["max_rss_bytes"] for r in results)
                                for peer, results in rounds.items()},
              "device_bytes": rounds["convgraph"][0]["device_bytes"],
              "ratio": {peer: ratio_spread(rates["convgraph"], rates[peer])
                        for peer in peers if peer != "convgraph"}}
    if mode == "infer":
        reference = np.load(folder / "torch-out.npy")
        record["max_rel_diff_vs_torch"] = {
            peer: relative_difference(np.load(folder / f"{peer}-out.npy"), reference)
            for peer in peers if peer != "torch"}
    return record


def profile_layers(label: str, batch: int, folder: Path, args) -> dict:
    """A training step's per-layer event times (`convgraph run --profile`), own process."""
    result = folder / f"profile-{label}.json"
    command = [sys.executable, str(HERE / "peers.py"), "profile", "train", str(spec_path(label)),
               str(batch), "--result", str(result), "--repeats", "3" if label in LARGE else "5"]
    command += ["--device", args.device] if args.device else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode or not result.exists():
        raise SystemExit(f"profiling {label} failed:\n{done.stderr[-3000:]}")
    return json.loads(result.read_text())


def tune_model(label: str, device: str | None, budget: float) -> float:
    """`convgraph tune` on one model (own process) at its first training batch; seconds."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "convgraph.cli", "tune", str(spec_path(label)),
               "--budget", str(budget), "--batch", str(batches(label, "train", True)[0]),
               "--json"] + (["--device", device] if device else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"tuning {label} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


_FIRST_BATCH = ("import time, numpy as np, convgraph; t = time.perf_counter(); "
                "m = convgraph.compile({spec!r}, device={device!r}, batch={batch}); "
                "v = m.graph.nodes['input']['output']; "
                "m.forward(np.zeros((1, v.depth, v.height, v.width), np.float32)); "
                "print(time.perf_counter() - t)")


def compile_times(label: str, device: str | None, cold: bool) -> dict:
    """Seconds to compile and run a first batch in a fresh process: cold (empty convgraph and
    PoCL caches; the device's tuning file kept), then warm (those caches filled)."""
    from convgraph.codegen.tuning import tuning_dir

    code = _FIRST_BATCH.format(spec=str(spec_path(label)), device=device,
                               batch=batches(label, "infer", True)[0])
    run = [sys.executable, "-c", code]
    with tempfile.TemporaryDirectory() as cache:
        if tuning_dir().is_dir():
            shutil.copytree(tuning_dir(), cache + "/convgraph/tuning")
        env = dict(os.environ, CONVGRAPH_CACHE=cache + "/convgraph",
                   POCL_CACHE_DIR=cache + "/pocl")
        times = {}
        for kind in ("cold", "warm") if cold else ("warm",):
            if kind == "warm" and not cold:  # fill the caches first
                subprocess.run(run, env=env, capture_output=True, text=True, check=True)
            done = subprocess.run(run, env=env, capture_output=True, text=True, check=True)
            times[f"{kind}_s"] = float(done.stdout.split()[-1])
    return times


# ---------------------------------------------------------------------------- tables

def mib(size: float) -> str:
    return f"{size / 2**20:,.0f} MiB"


def rate(value: float) -> str:
    """Images/s: whole numbers, except the few per second of the 224x224 networks.

    >>> rate(12345.6), rate(0.456)
    ('12,346', '0.456')
    """
    return f"{value:,.0f}" if value >= 10 else f"{value:.3g}"


def _figure(value: dict) -> str:
    return f"{rate(value['median'])} [{rate(value['min'])}-{rate(value['max'])}]"


def _ratio(value: dict) -> str:
    return f"{value['median']:.2f}x [{value['min']:.2f}-{value['max']:.2f}]"


def print_header(cpu: dict, refs: dict) -> None:
    pins = ", ".join(f"{k}={v}" for k, v in refs["openblas_pins"].items() if v) or "none set"
    print(f"CPU: {cpu['line']}")
    print(f"device: {refs['device']}; FMA peak {refs['fma_peak_gflops']:.0f} GFLOP/s, copy "
          f"{refs['copy_gbytes']:.0f} GB/s (kernels/peak.cl); numpy sgemm n={refs['sgemm_n']} "
          f"{refs['sgemm_clean_gflops']:.0f} GFLOP/s with the OpenBLAS pins unset "
          f"({refs['sgemm_as_set_gflops']:.0f} as set: {pins}); load {refs['load_average']}")


def print_measurement(record: dict) -> None:
    ours = record["img_s"]["convgraph"]
    torch = record["img_s"]["torch"]
    onnx = record["img_s"].get("onnxruntime")
    rss = record["max_rss_bytes"]
    print(f"{record['model']:<4} {record['mode']:<5} {record['batch']:>4} "
          f"{_figure(ours):>24} {_figure(torch):>24} {_ratio(record['ratio']['torch']):>20} "
          + (f"{_figure(onnx):>24} {_ratio(record['ratio']['onnxruntime']):>20}" if onnx
             else f"{'':>24} {'':>20}")
          + f"  {mib(record['device_bytes'])} / RSS " + " ".join(mib(v) for v in rss.values())
          + f"  load {max(record['load_1min']):.1f}", flush=True)


def conv_rows(profile: dict) -> list[dict]:
    """A profile's conv layers: forward and backward GFLOP/s, fractions of the FMA peak (above
    1 possible for Winograd, whose rows count direct-conv FLOPs), and which ran as Winograd."""
    volumes = profile["layer_volumes"]
    rows = {}
    for layer in profile["layers"]:
        facts = volumes.get(layer["node"])
        if not facts or facts["op"] != "conv" or layer["phase"] not in ("forward", "backward"):
            continue
        row = rows.setdefault(layer["node"], {"layer": layer["node"], **facts})
        row[layer["phase"]] = {"ms": layer["milliseconds"], "gflops": layer["gflops"],
                               "of_peak": layer["of_fma_peak"],
                               "winograd": "winograd" in layer["families"]}
    return [row for row in rows.values() if "forward" in row]


def print_conv_table(label: str, profile: dict) -> None:
    peak = profile["peak_gflops"]
    print(f"\n{label} conv layers, training step at batch {profile['batch']} (GFLOP/s; % of the "
          f"FMA peak {peak:.0f} measured beside them; W: Winograd, effective = direct-conv "
          f"FLOPs / time):")
    for row in conv_rows(profile):
        cells = []
        for phase in ("forward", "backward"):
            cell = row.get(phase)
            cells.append(f"{cell['gflops']:>7.1f} {cell['of_peak']:>5.0%}"
                         f"{' W' if cell['winograd'] else '  '}" if cell else f"{'-':>16}")
        print(f"  {row['layer']:<26} {row['in'][0]:>12} -> {row['out']:<12} "
              f"{cells[0]}  {cells[1]}")
    totals = profile["totals_ms"]
    print(f"  step: forward {totals['forward']:.1f} ms, backward {totals['backward']:.1f} ms, "
          f"update {totals['update']:.1f} ms (kernel sums); wall {profile['wall_ms']:.1f} ms")
    top = sorted(profile["layers"], key=lambda row: -row["milliseconds"])[:6]
    print("  largest rows: " + "; ".join(
        f"{row['node']} {row['phase']} {row['milliseconds']:.1f} ms "
        f"({row['gflops']:.0f} GFLOP/s, {row['bound']})" for row in top))


# ---------------------------------------------------------------------------- targets

def targets(records: dict) -> list[dict]:
    """Issue 16's targets, each with the figure this run measured and whether it is met."""
    rows = []

    def ratios(mode, peer, wanted):
        return [(m["model"], m["batch"], m["ratio"][peer]["median"])
                for m in records["measurements"] if m["mode"] == mode and (m["model"], m["batch"])
                in wanted]

    def add(name, found, threshold):
        if found:
            worst = min(value for *_, value in found)
            rows.append({"target": name, "measured": {f"{m} b{b}": round(v, 3)
                                                      for m, b, v in found},
                         "worst": round(worst, 3), "met": worst >= threshold})

    small = [label for label in ("M1", "M2", "M3", "M4")]
    add("inference >= 1.2x onnxruntime, M1-M4 b64/b256, ResNet-18 b16",
        ratios("infer", "onnxruntime", {(m, b) for m in small for b in (64, 256)}
               | {("R18", 16)}), 1.2)
    add("training >= 1.5x PyTorch, M1-M4 b64/b128",
        ratios("train", "torch", {(m, b) for m in small for b in (64, 128)}), 1.5)
    for phase, threshold in (("forward", 0.9), ("backward", 0.8)):
        found = [(label, row["layer"], row[phase]["of_peak"])
                 for label, profile in records["profiles"].items() for row in conv_rows(profile)
                 if row.get(phase) and not row[phase]["winograd"] and row["channels"] >= 16]
        if found:
            rows.append({"target": f"direct conv >= 16 channels, {phase} >= {threshold:.0%} of "
                                   "the FMA peak",
                         "met": min(v for *_, v in found) >= threshold,
                         "worst": round(min(v for *_, v in found), 3),
                         "below": sorted(f"{m} {layer} {v:.0%}" for m, layer, v in found
                                         if v < threshold)})
    winograd = [(label, row["layer"], phase, row[phase]["of_peak"])
                for label, profile in records["profiles"].items() for row in conv_rows(profile)
                for phase in ("forward", "backward")
                if row.get(phase) and row[phase]["winograd"]]
    if winograd:
        rows.append({"target": "Winograd layers > 150% of the FMA peak (effective)",
                     "met": min(v for *_, v in winograd) > 1.5,
                     "worst": round(min(v for *_, v in winograd), 3),
                     "layers": sorted(f"{m} {layer} {p} {v:.0%}" for m, layer, p, v in winograd)})
    for kind, limit in (("cold", 1.0), ("warm", 0.15)):
        found = {label: times[f"{kind}_s"] for label, times in records["compile"].items()
                 if f"{kind}_s" in times and label != "V16"}
        if found:
            rows.append({"target": f"{kind} compile + first batch < {limit} s (up to ResNet-18)",
                         "measured": {k: round(v, 2) for k, v in found.items()},
                         "met": max(found.values()) < limit})
    return rows


def print_targets(rows: list[dict]) -> None:
    print("\ntargets (issue 16):")
    for row in rows:
        detail = row.get("measured") or row.get("below") or row.get("layers") or ""
        print(f"  {'met' if row['met'] else 'NOT met':<8} {row['target']}: worst "
              f"{row.get('worst', '')} {detail}")


# ---------------------------------------------------------------------------- the run

def git_commit() -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                          capture_output=True, text=True)
    return done.stdout.strip() or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--device")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--rounds", type=int, default=3, help="processes per peer, alternating")
    parser.add_argument("--seconds", type=float, default=0.6,
                        help="each timed repeat inside a process lasts about this long")
    parser.add_argument("--quick", action="store_true",
                        help="first batch only, 2 rounds, short timings, no tuning, warm compile")
    parser.add_argument("--tune", type=float, default=60.0, metavar="SECONDS",
                        help="tune each model on the device first, in this many seconds")
    parser.add_argument("--no-tune", action="store_true", help="measure the untuned defaults")
    parser.add_argument("--batches", type=parse_batches, metavar="'train=16;infer=1,16'",
                        help="measure these batches only (every model), instead of the defaults")
    parser.add_argument("--spin", action="store_true",
                        help="the peers' own thread wait policies (default: passive waits)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.no_tune = min(args.rounds, 2), 0.2, True
    labels = args.models.split(",")
    unknown = [label for label in labels if label not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model {', '.join(unknown)}: choose from {', '.join(MODELS)}")
    started = time.perf_counter()
    cpu = cpu_model()
    records: dict = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(
                         timespec="seconds"),
                     "commit": git_commit(), "cpu": cpu, "quick": args.quick,
                     "rounds": args.rounds,
                     "peer_threads": "spinning (defaults)" if args.spin else
                     "passive waits (OMP_WAIT_POLICY=PASSIVE, onnxruntime allow_spinning=0)",
                     "references": references(args.device, args.quick),
                     "tuning_s": {}, "measurements": [], "profiles": {}, "compile": {}}
    print_header(cpu, records["references"])
    print(f"peers: 2 threads each, {records['peer_threads']}")
    if not args.no_tune:
        for label in labels:
            records["tuning_s"][label] = tune_model(label, args.device, args.tune)
        print("tuned (convgraph tune, seconds): " + ", ".join(
            f"{label} {seconds:.0f}" for label, seconds in records["tuning_s"].items()))
    print(f"\nimages/s, median [min-max] over {args.rounds} rounds of one process per peer; "
          "ratio of medians [per-round min-max]; device buffers / max RSS "
          "(convgraph, torch, onnxruntime)")
    print(f"{'':<4} {'mode':<5} {'batch':>4} {'convgraph':>24} {'PyTorch':>24} "
          f"{'vs PyTorch':>20} {'onnxruntime':>24} {'vs onnxruntime':>20}")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for label in labels:
            onnx = export_onnx(label, folder)
            for mode in ("train", "infer"):
                for batch in batches(label, mode, args.quick, args.batches):
                    record = measure(label, mode, batch, folder, args, onnx)
                    records["measurements"].append(record)
                    print_measurement(record)
            if label in PROFILED and not args.quick:
                records["profiles"][label] = profile_layers(
                    label, batches(label, "train", True)[0], folder, args)
            records["compile"][label] = compile_times(label, args.device, cold=not args.quick)
            save(records, args.json)  # model by model: a run cut short keeps what it measured
    for label, profile in records["profiles"].items():
        print_conv_table(label, profile)
    print("\ncompile + first batch in a fresh process (cold: empty convgraph and PoCL caches):")
    for label, times in records["compile"].items():
        print(f"  {label}: " + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in times.items()))
    records["targets"] = targets(records)
    print_targets(records["targets"])
    records["load_average_end"] = load_average()
    records["minutes"] = round((time.perf_counter() - started) / 60, 1)
    print(f"\nCPU: {cpu['line']}; load at the end {records['load_average_end']}; "
          f"{records['minutes']} minutes")
    save(records, args.json)


def save(records: dict, path: str | None) -> None:
    if path:
        Path(path).write_text(json.dumps(records, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
