"""A benchmark results file (bench.py --json) as the README's Markdown tables.

    python benchmarks/report.py benchmarks/results/bench-DATE.json

Prints the run's line (date, commit, CPU, load, references), the images/s table with spreads and
ratios, the per-layer conv tables and the targets, so the README quotes the file, not a copy
typed by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import conv_rows, targets  # noqa: E402

NAMES = {"M1": "M1 seed", "M2": "M2 LeNet-5", "M3": "M3 VGG-CIFAR", "M4": "M4 ResNet-8",
         "R18": "ResNet-18 224", "V16": "VGG-16 224"}


def rate(value: float) -> str:
    """Images/s: whole numbers, except the few per second of the 224x224 networks."""
    return f"{value:,.0f}" if value >= 10 else f"{value:.3g}"


def _figure(value: dict) -> str:
    return f"{rate(value['median'])} ({rate(value['min'])}-{rate(value['max'])})"


def _ratio(value: dict) -> str:
    return f"**{value['median']:.2f}x** ({value['min']:.2f}-{value['max']:.2f})"


def run_line(records: dict) -> str:
    refs, cpu = records["references"], records["cpu"]
    return (f"Run {records['date']} (commit {records['commit']}), {cpu['line']}; "
            f"{records['peer_threads']}; {records['rounds']} rounds. References in the same run: "
            f"FMA peak {refs['fma_peak_gflops']:.0f} GFLOP/s (kernels/peak.cl), numpy sgemm "
            f"(n={refs['sgemm_n']}) {refs['sgemm_clean_gflops']:.0f} GFLOP/s with the OpenBLAS "
            f"pins unset ({refs['sgemm_as_set_gflops']:.0f} as set). Load average "
            f"{refs['load_average']} at the start, {records.get('load_average_end', '?')} at the "
            f"end; {records.get('minutes', '?')} minutes.")


def measurement_table(records: dict) -> list[str]:
    lines = ["| model | mode | batch | convgraph img/s | PyTorch | convgraph / PyTorch | "
             "onnxruntime | convgraph / onnxruntime | device buffers | max RSS cg / pt / ort |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for m in records["measurements"]:
        onnx = m["img_s"].get("onnxruntime")
        rss = " / ".join(f"{v / 2**20:,.0f}" for v in m["max_rss_bytes"].values())
        lines.append(
            f"| {NAMES[m['model']]} | {m['mode']} | {m['batch']} | "
            f"{_figure(m['img_s']['convgraph'])} | {_figure(m['img_s']['torch'])} | "
            f"{_ratio(m['ratio']['torch'])} | "
            + (f"{_figure(onnx)} | {_ratio(m['ratio']['onnxruntime'])}" if onnx else "- | -")
            + f" | {m['device_bytes'] / 2**20:,.0f} MiB | {rss} MiB |")
    return lines


def conv_table(label: str, profile: dict) -> list[str]:
    lines = [f"| {NAMES[label]} layer (batch {profile['batch']}) | volumes | forward GFLOP/s "
             "(of FMA peak) | backward |", "|---|---|---|---|"]
    for row in conv_rows(profile):
        cells = []
        for phase in ("forward", "backward"):
            cell = row.get(phase)
            mark = " W" if cell and cell["winograd"] else ""
            cells.append(f"{cell['gflops']:.0f} ({cell['of_peak']:.0%}){mark}" if cell else "-")
        lines.append(f"| {row['layer']} | {row['in'][0]} -> {row['out']} | {cells[0]} | "
                     f"{cells[1]} |")
    return lines


def main() -> None:
    records = json.loads(Path(sys.argv[1]).read_text())
    print(run_line(records) + "\n")
    print("\n".join(measurement_table(records)) + "\n")
    for label, profile in records["profiles"].items():
        print("\n".join(conv_table(label, profile)) + "\n")
    print("compile + first batch: " + "; ".join(
        f"{label} " + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in times.items())
        for label, times in records["compile"].items()) + "\n")
    for row in records.get("targets") or targets(records):  # a run cut short has none
        detail = row.get("measured") or row.get("below") or row.get("layers") or ""
        print(f"- {'met' if row['met'] else 'NOT met'}: {row['target']}: worst "
              f"{row.get('worst', '')} {detail}")


if __name__ == "__main__":
    main()
