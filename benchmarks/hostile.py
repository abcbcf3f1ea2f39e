"""The hostile-input runner: every case of the corpus (tests/hostile/) through the real CLI, each
in its own process with a timeout, classified and counted by class.

    python benchmarks/hostile.py                  # the whole corpus (926 cases): ~8 min
    python benchmarks/hostile.py --quick          # a few cases per class, as CI runs them
    python benchmarks/hostile.py --class signals --class caches --jobs 2 --json out.json
    python benchmarks/hostile.py --case checkpoint/epoch-   # the cases whose name holds this

Each case starts from a fresh temporary folder holding a base set (a tiny spec, an npz data set,
a checkpoint folder and a weights file trained once at the start through the CLI) plus its own
files; the child's CONVGRAPH_CACHE, HOME and XDG_CACHE_HOME are inside that folder, and PoCL's
kernel cache is one temporary folder for the run, so nothing outside the temporary folders is
touched and nothing is left behind.

An outcome is the first of: hang (killed at the case's timeout), data loss (a checkpoint or
weights file changed, truncated or gone; trained weights written nowhere), traceback
("Traceback (most recent call last)" on stderr), internal error (exit 70 or "internal error" on
stderr), bad exit code (not one the case allows, from errors.py's table); else ok. "wrong
message" (a fragment missing or a forbidden one present) is counted beside them. The last line
printed is always

    N cases, T tracebacks, H hangs, L data losses, B bad exit codes, I internal errors

Exit status 0 when every case is ok, 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hostile.case import OUTCOMES, limit_memory, make_base, run_case  # noqa: E402
from tests.hostile.corpus import CLASSES, corpus  # noqa: E402

COLUMNS = ("traceback", "hang", "data loss", "bad exit code", "internal error")


def summary_line(outcomes) -> str:
    """The runner's last line, the figures the README quotes."""
    count = collections.Counter(o.outcome for o in outcomes)
    return (f"{len(outcomes)} cases, {count['traceback']} tracebacks, {count['hang']} hangs, "
            f"{count['data loss']} data losses, {count['bad exit code']} bad exit codes, "
            f"{count['internal error']} internal errors")


def select(classes=None, quick=False, names=()) -> list:
    cases = corpus(classes, quick)
    if names:
        cases = [c for c in cases if any(n in c.name for n in names)]
    missing = []
    for case in cases:
        if case.needs and case.needs not in missing:
            try:
                __import__(case.needs)
            except ImportError:
                missing.append(case.needs)
    return [c for c in cases if c.needs not in missing]


def run_all(cases, jobs: int, progress=True):
    """Every case, ``jobs`` at a time; returns their outcomes in the corpus order."""
    work = Path(tempfile.mkdtemp(prefix="convgraph-hostile-"))
    try:
        pocl = work / "pocl-cache"
        base = work / "base"
        make_base(base, pocl)
        outcomes = [None] * len(cases)
        with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
            futures = {pool.submit(run_case, case, base, pocl, work): index
                       for index, case in enumerate(cases)}
            for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
                index = futures[future]
                outcomes[index] = future.result()
                if progress:
                    o = outcomes[index]
                    print(f"[{done}/{len(cases)}] {o.outcome:<14} {o.status!s:>9} "
                          f"{o.seconds:5.1f} s  {o.name}", file=sys.stderr, flush=True)
        return outcomes
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_table(outcomes, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"hostile inputs by class ({seconds:.0f} s)", title_justify="left")
    for column in ("class", "cases", "ok", *COLUMNS, "wrong message"):
        table.add_column(column, justify="left" if column == "class" else "right")
    by_class = collections.defaultdict(list)
    for o in outcomes:
        by_class[o.klass].append(o)
    for klass in [k for k in CLASSES if k in by_class]:
        rows = by_class[klass]
        count = collections.Counter(o.outcome for o in rows)
        table.add_row(klass, str(len(rows)), str(count["ok"]), *(str(count[c]) for c in COLUMNS),
                      str(sum(not o.message_ok for o in rows)))
    count = collections.Counter(o.outcome for o in outcomes)
    table.add_section()
    table.add_row("total", str(len(outcomes)), str(count["ok"]),
                  *(str(count[c]) for c in COLUMNS),
                  str(sum(not o.message_ok for o in outcomes)))
    Console(width=None if Console().is_terminal else 140).print(table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--class", dest="classes", action="append", choices=list(CLASSES),
                        help="only this class (repeatable)")
    parser.add_argument("--case", dest="names", action="append", default=[],
                        help="only the cases whose name contains this (repeatable)")
    parser.add_argument("--quick", action="store_true", help="the CI subset only")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    parser.add_argument("--json", metavar="FILE", help="write every case's outcome here")
    parser.add_argument("--list", action="store_true", help="list the cases and stop")
    args = parser.parse_args(argv)
    cases = select(args.classes, args.quick, args.names)
    if args.list:
        for case in cases:
            print(f"{case.name}\t{' '.join(map(str, case.argv))}\t{case.expect}")
        print(f"{len(cases)} cases")
        return 0
    # SIGTERM and SIGHUP unwind like Ctrl-C: each case kills its children, the folders go
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    limit_memory()
    start = time.monotonic()
    outcomes = run_all(cases, args.jobs)
    seconds = time.monotonic() - start
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip()
        Path(args.json).write_text(json.dumps({
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": commit, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "quick": args.quick, "jobs": args.jobs, "seconds": round(seconds, 1),
            "summary": summary_line(outcomes),
            "cases": [dataclasses.asdict(o) for o in outcomes]}, indent=1) + "\n")
    bad = [o for o in outcomes if o.outcome != "ok"]
    for o in bad:
        print(f"{o.outcome}: {o.name} (exit {o.status}, expected {o.expect}) {o.detail}")
    print_table(outcomes, seconds)
    print(summary_line(outcomes))
    assert set(OUTCOMES) >= {o.outcome for o in outcomes}
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
