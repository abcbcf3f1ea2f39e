"""The reliability report: run the reliability tests and say, with the counts they measured, what
was checked and what survived.

    python benchmarks/reliability.py            # quick (CI-sized): minutes
    python benchmarks/reliability.py --full     # 10,000 fuzzed specs and the whole Oclgrind
                                                # sweep, forward and backward: hours on 2 cores
    make reliability  /  make reliability FULL=1

Every figure comes from a pytest run made here, nothing is written in by hand:

- kernels under Oclgrind: tests/test_oclgrind.py (the quick networks; with --full also the
  sweep of the whole kernel harness on a simulated small device) writes the kernel checks,
  launches and distinct specialisations it ran (counted by tests/launch_log.py) and the reports
  Oclgrind made ($CONVGRAPH_OCLGRIND_REPORT);
- malformed specs: tests/test_fuzz.py writes how many specs it tried, how many compiled, were
  rejected with a located error, or ended in a traceback ($CONVGRAPH_FUZZ_REPORT);
- faults: the checkpoint, data and device fault tests run under tests/launch_log.py, which
  records each test's outcome as pytest reports it; a scenario survived when all its tests
  passed.

The table goes to the terminal; the JSON (with every test's outcome) to
benchmarks/results/reliability.json, or --json FILE. Exit status 1 if anything failed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "reliability.json"

# fault scenario -> the tests that provoke it (node ids, or a prefix ending in '[' for every
# parameter of one test)
CHECKPOINT = {
    "truncated file": ["tests/test_training.py::test_corrupt_truncated_and_foreign_checkpoints"
                       "_are_refused"],
    "bit flip": ["tests/test_training.py::test_corrupt_truncated_and_foreign_checkpoints_are"
                 "_refused"],
    "another network's checkpoint": ["tests/test_training.py::test_corrupt_truncated_and_foreign"
                                     "_checkpoints_are_refused"],
    "full disk during a save": ["tests/test_training.py::test_a_failed_save_leaves_the_previous"
                                "_checkpoint"],
    "SIGKILL mid-save (5 kills)": ["tests/test_training.py::test_a_kill_during_saving_leaves_a"
                                   "_whole_checkpoint"],
    "SIGKILL during training, then resume (3 kills)": [
        "tests/test_training.py::test_sigkill_then_resume_gives_the_same_weights"],
    "Ctrl-C mid-epoch, then resume": ["tests/test_training.py::test_resume_after_an_interruption"
                                      "_gives_the_same_weights"],
    "diverging loss": ["tests/test_training.py::test_a_diverging_loss_stops_with_the_layer"],
}
DEVICE = {
    "kernel build failure": ["tests/test_runtime.py::test_build_failure_is_saved_and_explained"],
    "allocation refused by the device": [
        "tests/test_device_faults.py::test_a_buffer_the_device_refuses_is_a_device_error_and_the"
        "_model_survives"],
    "out of device memory while allocating": [
        "tests/test_device_faults.py::test_running_out_of_device_memory_is_a_device_error"],
    "unknown device": ["tests/test_device_faults.py::test_an_unknown_device_lists_the_devices"
                       "_there_are[",
                       "tests/test_runtime.py::test_unknown_device_lists_what_is_there",
                       "tests/test_runtime.py::test_unknown_device_on_the_command_line"],
    "no OpenCL platform": ["tests/test_runtime.py::test_no_platform_says_how_to_install_one"],
    "network too big: refused with the estimate": [
        "tests/test_device_faults.py::test_a_network_too_big_for_the_device_is_refused_with_the"
        "_estimate[",
        "tests/test_device_faults.py::test_training_too_big_for_the_device_is_refused_with_the"
        "_estimate",
        "tests/test_device_faults.py::test_the_refusal_comes_before_any_context_program_or_buffer",
        "tests/test_device_faults.py::test_a_small_device_refuses_what_a_large_one_runs",
        "tests/test_runtime.py::test_refuses_what_the_device_cannot_hold"],
}
# data files: every test of tests/test_data.py (and the weights/data checks of the commands)
# whose name says it feeds a bad file; each test (each parameter) is one scenario
DATA_TESTS = re.compile(r"truncated|corrupt|wrong_magic|mismatch|out_of_range|missing"
                        r"|malicious|pickled|_errors|must_fit|does_not_fit|bad_weight")
DATA_FILES = ["tests/test_data.py", "tests/test_training.py::test_run_refuses_data_that_does_not"
              "_fit", "tests/test_runtime.py::test_run_rejects_bad_weight_files"]


def pytest(args: list[str], env: dict, label: str, log: Path, work: Path
           ) -> tuple[dict, float]:
    """Run pytest with the launch log (kept in ``work``); returns (its record, seconds)."""
    record = work / f"{label}.launches.json"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-p", "tests.launch_log", *args]
    print(f"[{time.strftime('%H:%M:%S')}] {label}: {' '.join(command[2:])}", flush=True)
    start = time.monotonic()
    with open(log, "a") as out:
        done = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, **env, "CONVGRAPH_LAUNCH_LOG": str(record)})
    seconds = time.monotonic() - start
    result = json.loads(record.read_text()) if record.is_file() else {}
    result["exit_status"] = done.returncode
    print(f"    exit {done.returncode}, {result.get('tests')}, {seconds:.0f} s", flush=True)
    return result, seconds


def oclgrind(full: bool, work: Path, log: Path) -> dict:
    report = work / "oclgrind.json"
    env = {"CONVGRAPH_OCLGRIND_REPORT": str(report)}
    args = ["tests/test_oclgrind.py"]
    if full:
        env["OCLGRIND_SWEEP"] = "1"
        args += ["-m", "slow or not slow"]
    run, seconds = pytest(args, env, "oclgrind", log, work)
    runs = json.loads(report.read_text()) if report.is_file() else {}
    return {"tests": run.get("tests"), "outcomes": run.get("outcomes", {}),
            "exit_status": run["exit_status"], "seconds": round(seconds, 1), "runs": runs}


def fuzzing(full: bool, examples: int, work: Path, log: Path) -> dict:
    report = work / "fuzz.json"
    env = {"CONVGRAPH_FUZZ_REPORT": str(report)}
    args = ["tests/test_fuzz.py"]
    if full:
        env["CONVGRAPH_FUZZ_EXAMPLES"] = str(examples)
        args += ["-m", "slow"]
    run, seconds = pytest(args, env, "fuzz", log, work)
    counts = json.loads(report.read_text()) if report.is_file() else {}
    return {"tests": run.get("tests"), "exit_status": run["exit_status"],
            "seconds": round(seconds, 1),
            **{k: counts.get(k) for k in ("examples", "compiled", "rejected", "tracebacks",
                                          "badly_located", "by_generator")}}


def faults(work: Path, log: Path) -> dict:
    ids = sorted({test for group in (CHECKPOINT, DEVICE) for tests in group.values()
                  for test in tests})
    targets = sorted({test.split("[")[0] for test in ids} | set(DATA_FILES))
    run, seconds = pytest(targets, {}, "faults", log, work)
    outcomes = run.get("outcomes", {})

    def scenario(name: str, tests: list[str]) -> dict:
        chosen = {k: v for k, v in outcomes.items()
                  if any(k == t or (t.endswith("[") and k.startswith(t)) for t in tests)}
        return {"scenario": name, "tests": len(chosen),
                "survived": bool(chosen) and all(v == "passed" for v in chosen.values()),
                "outcomes": chosen}

    def bad_file(name: str) -> bool:
        base = name.split("[")[0]
        return (base.startswith("tests/test_data.py::") or base in DATA_FILES) and bool(
            DATA_TESTS.search(name.split("::", 1)[1]))

    data = [scenario(name.split("::", 1)[1], [name]) for name in sorted(outcomes)
            if bad_file(name)]
    return {"tests": run.get("tests"), "exit_status": run["exit_status"],
            "seconds": round(seconds, 1),
            "checkpoint": [scenario(name, tests) for name, tests in CHECKPOINT.items()],
            "data": data,
            "device": [scenario(name, tests) for name, tests in DEVICE.items()]}


def machine() -> dict:
    cpu = platform.processor()
    try:
        cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text()).group(1)
    except (OSError, AttributeError):
        pass
    try:
        from convgraph.runtime.devices import select_device

        device = select_device()[0].label
    except Exception as exc:  # the report still says what failed
        device = f"none ({exc})"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return {"date": datetime.date.today().isoformat(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "device": device,
            "commit": commit + ("+changes" if dirty else "")}


def print_tables(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if Console().is_terminal else 120)
    info = report["machine"]
    table = Table(title=f"convgraph reliability ({report['mode']}), {info['date']}, "
                        f"{info['cores']} cores {info['cpu']}, {info['device']}, commit "
                        f"{info['commit']}", title_justify="left")
    for column in ("check", "measured", "result"):
        table.add_column(column, justify="left" if column != "measured" else "right")

    def verdict(good: bool) -> str:
        return "[green]ok[/green]" if good else "[red]FAILED[/red]"

    grind = report["oclgrind"]
    for name, run in grind["runs"].items():
        what = ("3 small networks, forward and backward" if name == "quick" else
                "the whole kernel harness, forward and backward, on a 64-work-item 16 KiB device")
        table.add_row(f"Oclgrind {name}: {what}",
                      f"{run.get('launches', 0):,} launches, {run.get('specialisations', 0):,} "
                      f"specialisations of {run.get('templates_launched', 0)}/"
                      f"{run.get('templates', 0)} kernels, {run.get('programs', 0):,} programs",
                      "")
        tests = run.get("tests") or {}
        checks = (f"{run['kernel_checks']} kernel checks against numpy" if "kernel_checks" in run
                  else f"{tests.get('passed', 0)} tests passed, {tests.get('failed', 0)} failed")
        table.add_row("", f"{checks}; {run.get('reports', '?')} Oclgrind reports; "
                          f"{run.get('seconds', 0):,.0f} s",
                      verdict(run.get("reports") == 0 and not run.get("failed_tests")
                              and grind["exit_status"] == 0))
    if not grind["runs"]:
        table.add_row("Oclgrind", "not run (is oclgrind installed?)",
                      verdict(grind["exit_status"] == 0))
    table.add_section()
    fuzz = report["fuzzing"]
    table.add_row("malformed and random specs (hypothesis)",
                  f"{fuzz.get('examples') or 0:,} tried: {fuzz.get('compiled') or 0:,} compiled, "
                  f"{fuzz.get('rejected') or 0:,} rejected with a located error, "
                  f"{fuzz.get('tracebacks')} tracebacks; {fuzz['seconds']:,.0f} s",
                  verdict(fuzz["exit_status"] == 0 and fuzz.get("tracebacks") == 0))
    table.add_section()
    fault = report["faults"]
    for group in ("checkpoint", "data", "device"):
        rows = fault[group]
        survived = sum(row["survived"] for row in rows)
        table.add_row(f"{group} faults", f"{survived} of {len(rows)} scenarios survived "
                      f"({sum(row['tests'] for row in rows)} tests)",
                      verdict(survived == len(rows) and len(rows) > 0))
        if group != "data":
            for row in rows:
                table.add_row(f"  {row['scenario']}",
                              f"{row['tests']} test{'s' if row['tests'] != 1 else ''}",
                              verdict(row["survived"]))
    console.print(table)
    console.print(f"{report['seconds']:,.0f} s in all; JSON: {report['json']}", highlight=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true",
                        help="10,000 fuzzed specs and the whole Oclgrind sweep (hours)")
    parser.add_argument("--fuzz-examples", type=int, default=10_000,
                        help="specs to fuzz with --full (default 10,000)")
    parser.add_argument("--only", default="oclgrind,fuzzing,faults",
                        help="comma-separated parts to run (oclgrind, fuzzing, faults)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write JSON")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    started = time.monotonic()
    report = {"mode": "full" if args.full else "quick", "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="convgraph-reliability-") as folder:
        work = Path(folder)
        log = args.json.with_suffix(".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        print(f"pytest output goes to {log}", flush=True)
        empty = {"runs": {}, "exit_status": 0, "seconds": 0.0}
        report["oclgrind"] = oclgrind(args.full, work, log) if "oclgrind" in parts else empty
        report["fuzzing"] = (fuzzing(args.full, args.fuzz_examples, work, log)
                             if "fuzzing" in parts else {"exit_status": 0, "seconds": 0.0})
        report["faults"] = (faults(work, log) if "faults" in parts else
                            {"checkpoint": [], "data": [], "device": [], "exit_status": 0})
    report["seconds"] = round(time.monotonic() - started, 1)
    report["json"] = str(args.json.relative_to(ROOT) if args.json.is_relative_to(ROOT)
                         else args.json)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print_tables(report)
    failed = any(report[part]["exit_status"] for part in ("oclgrind", "fuzzing", "faults"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
