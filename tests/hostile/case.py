"""One hostile case, and how it is run and judged.

A case is the files it creates in a fresh temporary folder (on top of the base set every case
gets: a tiny spec, a data set, a trained checkpoint folder and a weights file), a command line
of the real CLI run in its own process (cwd: that folder; its own CONVGRAPH_CACHE, HOME and
XDG_CACHE_HOME inside it, so nothing outside is touched), optionally a signal sent at a moment
or a second command run alongside, the exit statuses it may end with (errors.py's table), an
optional message fragment, and the files that must survive unchanged.

The outcome is judged in this order: a hang (killed at the timeout), a data loss (a file that
had to survive is changed, truncated or gone; trained weights written nowhere), a traceback on
stderr, an internal error (exit 70 or "internal error" on stderr), a bad exit status; else ok.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent.parent
TRACEBACK = "Traceback (most recent call last)"
# what every case's folder starts with: the base set (made once per run, then copied)
BASE_FILES = ("spec.yaml", "data.npz", "x.npy", "weights.npz", "ckpt/last.npz", "ckpt/best.npz")
KEEP = ("weights.npz", "ckpt/last.npz", "ckpt/best.npz")
OUTCOMES = ("hang", "traceback", "internal error", "data loss", "bad exit code", "ok",
            "case error")  # the last: the case itself failed to set up (a corpus bug)


MEMORY_LIMIT = 8 << 30  # address space per case: a read of /dev/zero ends in a MemoryError


def limit_memory(limit: int = MEMORY_LIMIT) -> tuple[int, int]:
    """Cap this process's address space (its children inherit it) so that a case that reads
    without bound (``/dev/zero``, a bomb) fails with a MemoryError instead of calling the OOM
    killer on a shared machine; returns the previous limits, for ``resource.setrlimit``."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    capped = limit if soft == resource.RLIM_INFINITY else min(soft, limit)
    resource.setrlimit(resource.RLIMIT_AS, (capped, hard))
    return soft, hard


@dataclass(frozen=True)
class Case:
    """A hostile input and what convgraph must do with it.

    ``argv`` follows ``python -m convgraph.cli``; ``{dir}`` in it (or in ``env``) is the case's
    folder. ``expect`` holds the exit statuses allowed. ``keep`` files (as they are after
    ``make``) must be byte-identical afterwards; ``updates`` may change but must remain whole,
    loadable checkpoints with finite arrays. ``weights`` names the --save target of a training
    case: once an epoch has ended, trained weights must exist there or in a file the error
    names (a fallback). ``signal`` = (signal number, seconds after the start or a text to wait
    for on stdout/stderr). ``alongside`` is a second command started at the same time;
    ``prepare`` commands run first (each must exit 0) and ``mutate`` edits the folder after
    them."""

    name: str
    klass: str
    argv: tuple
    expect: tuple[int, ...]
    make: Callable[[Path], None] | None = None
    message: str | None = None
    forbid: tuple[str, ...] = ()
    keep: tuple[str, ...] = KEEP
    updates: tuple[str, ...] = ()
    weights: str | None = None
    signal: tuple[int, float | str] | None = None
    alongside: tuple | None = None
    prepare: tuple[tuple, ...] = ()
    mutate: Callable[[Path], None] | None = None
    env: dict = field(default_factory=dict)
    timeout: float = 30.0
    quick: bool = False
    needs: str | None = None


@dataclass
class Outcome:
    name: str
    klass: str
    outcome: str
    status: int | None
    expect: tuple[int, ...]
    seconds: float
    message_ok: bool
    detail: str
    stderr_tail: str


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    except OSError:
        return None


def _whole_checkpoint(path: Path) -> str:
    """'' when ``path`` is a checkpoint numpy reads whole with finite arrays, else why not."""
    try:
        if not path.is_file():
            return "gone"
        with np.load(path, allow_pickle=False) as archive:
            for key in archive.files:
                array = archive[key]
                if array.dtype.kind == "f" and not np.isfinite(array).all():
                    return f"non-finite {key}"
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        return f"unreadable ({exc})"
    return ""


def environment(folder: Path, pocl_cache: Path, extra: dict) -> dict:
    """The child's environment: this checkout first on the path, every cache in the case's
    folder (PoCL's compiled kernels in one folder shared by the run, so builds stay fast)."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("CONVGRAPH_", "POCL_", "XDG_"))}
    home = folder / ".home"
    home.mkdir(exist_ok=True)
    env.update({"CONVGRAPH_CACHE": str(folder / ".cache"), "HOME": str(home),
                "XDG_CACHE_HOME": str(home / ".cache"), "MPLCONFIGDIR": str(home / ".mpl"),
                "POCL_CACHE_DIR": str(pocl_cache), "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
                "COLUMNS": "140", "TERM": "dumb"})
    if os.environ.get("CONVGRAPH_DEVICE"):
        env["CONVGRAPH_DEVICE"] = os.environ["CONVGRAPH_DEVICE"]
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value.replace("{dir}", str(folder))
    return env


def _argv(case_argv: tuple, folder: Path) -> list:
    args = [sys.executable, "-m", "convgraph.cli"]
    for item in case_argv:
        args.append(item.replace("{dir}", str(folder)) if isinstance(item, str) else item)
    return args


class _Process:
    """A child in its own session (so a hang's whole group is killed) whose output is read by
    threads as it comes (so a signal can wait for a line)."""

    def __init__(self, argv, folder: Path, env: dict):
        self.text = ""
        self.lock = threading.Lock()
        self.stdout, self.stderr = [], []
        self.proc = subprocess.Popen(argv, cwd=folder, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self.readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout),
                                         daemon=True),
                        threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr),
                                         daemon=True)]
        for reader in self.readers:
            reader.start()

    def _read(self, stream, sink) -> None:
        for chunk in iter(lambda: stream.read1(65536), b""):
            sink.append(chunk)
            with self.lock:
                self.text += chunk.decode("utf-8", "replace")

    def seen(self, text: str) -> bool:
        with self.lock:
            return text in self.text

    def wait(self, deadline: float) -> tuple[int | None, bool]:
        """(exit status as a shell reports it, hung)."""
        try:
            status = self.proc.wait(max(0.1, deadline - time.monotonic()))
            hung = False
        except subprocess.TimeoutExpired:
            self.kill()
            status, hung = None, True
        for reader in self.readers:
            reader.join(5)
        if status is not None and status < 0:
            status = 128 - status  # killed by a signal: 143 for SIGTERM, 139 a segfault
        return status, hung

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def output(self) -> tuple[str, str]:
        return (b"".join(self.stdout).decode("utf-8", "replace"),
                b"".join(self.stderr).decode("utf-8", "replace"))


def run_case(case: Case, base: Path, pocl_cache: Path, scratch: Path | None = None) -> Outcome:
    """Run one case in a fresh folder (removed afterwards) and judge it."""
    start = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="hostile-", dir=scratch))
    try:
        return _run(case, base, pocl_cache, folder, start)
    except Exception as exc:  # noqa: BLE001 - a broken case is reported, not fatal to the run
        return Outcome(case.name, case.klass, "case error", None, case.expect,
                       round(time.monotonic() - start, 2), False,
                       f"{type(exc).__name__}: {exc}", "")
    finally:
        _remove(folder)


def _remove(folder: Path) -> None:
    for path in folder.rglob("*"):  # a FIFO or a socket is removed like a file
        try:
            if path.is_symlink() or not (path.is_dir()):
                path.unlink()
        except OSError:
            pass
    shutil.rmtree(folder, ignore_errors=True)


def _run(case: Case, base: Path, pocl_cache: Path, folder: Path, start: float) -> Outcome:
    shutil.copytree(base, folder, dirs_exist_ok=True, symlinks=True)
    env = environment(folder, pocl_cache, case.env)
    detail = []
    if case.make is not None:
        case.make(folder)
    for command in case.prepare:
        done = subprocess.run(_argv(command, folder), cwd=folder, env=env, timeout=120,
                              stdin=subprocess.DEVNULL, capture_output=True)
        if done.returncode != 0:
            detail.append(f"prepare {command} exited {done.returncode}")
    if case.mutate is not None:
        case.mutate(folder)
    before = {name: _digest(folder / name) for name in case.keep}
    trained_before = {p for p in folder.rglob("*.npz")}
    deadline = time.monotonic() + case.timeout
    main = _Process(_argv(case.argv, folder), folder, env)
    other = _Process(_argv(case.alongside, folder), folder, env) if case.alongside else None
    try:
        return _judge(case, folder, main, other, deadline, start, before, trained_before,
                      detail)
    finally:  # whatever happened above, no child outlives its case
        for process in (main, other):
            if process is not None and process.proc.poll() is None:
                process.kill()


def _judge(case: Case, folder: Path, main: _Process, other: _Process | None, deadline: float,
           start: float, before: dict, trained_before: set, detail: list) -> Outcome:
    if case.signal is not None:
        number, moment = case.signal
        while main.proc.poll() is None and time.monotonic() < deadline:
            if isinstance(moment, str) and main.seen(moment):
                break
            if not isinstance(moment, str) and time.monotonic() - start >= moment:
                break
            time.sleep(0.01)
        if main.proc.poll() is None:
            main.proc.send_signal(number)
    status, hung = main.wait(deadline)
    other_status, other_hung = (other.wait(deadline + 30) if other else (None, False))
    out, err = main.output()
    statuses = [status]
    if other:
        o_out, o_err = other.output()
        out, err = out + o_out, err + o_err
        statuses.append(other_status)
        hung = hung or other_hung
    outcome = "ok"
    loss = _data_loss(case, folder, before, trained_before, out, err)
    if hung:
        outcome = "hang"
    elif loss:  # the worst a user can suffer, whatever the exit looked like
        outcome = "data loss"
        detail.append(loss)
    elif TRACEBACK in err:
        outcome = "traceback"
    elif 70 in statuses or "internal error" in err:
        outcome = "internal error"
    elif any(s not in case.expect for s in statuses) or (
            other and 0 not in statuses and 0 in case.expect):
        outcome = "bad exit code"
    # the message a case expects is the refusal's: a case that may also succeed (exit 0) has
    # nothing to say then, only nothing it forbids
    message_ok = _message_ok(case, err + out, refused=any(s != 0 for s in statuses))
    if loss and outcome != "data loss":
        detail.append(loss)
    return Outcome(case.name, case.klass, outcome, status if not other else statuses,
                   case.expect, round(time.monotonic() - start, 2), message_ok,
                   "; ".join(detail), err[-600:])


SPEC = """\
name: tiny
input: 8x8x1
pattern: "[INPUT-CONV(4, 3, pad=1)-RELU-POOL-FC(4)]"
train:
  batch: 16
  epochs: 1
  dataset: npz
  data: data.npz
"""


def make_base(folder: Path, pocl_cache: Path) -> None:
    """The base set every case starts from: spec.yaml (8x8x1, 4 classes, npz data), data.npz,
    x.npy (4 images to predict, float 0..255), and what one epoch of training leaves: ckpt/
    (last.npz, best.npz) and weights.npz. Made once per run through the CLI itself."""
    from tests.hostile.make import tiny_set, write_npz

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.yaml").write_text(SPEC)
    x, y = tiny_set()
    write_npz(folder / "data.npz", {"x": x, "y": y, "x_test": x[:32], "y_test": y[:32]})
    np.save(folder / "x.npy", x[:4].astype(np.float32))
    env = environment(folder, pocl_cache, {})
    done = subprocess.run(_argv(("run", "spec.yaml", "--limit", "64", "--checkpoint-dir",
                                 "ckpt", "--save", "weights.npz"), folder),
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    shutil.rmtree(folder / ".home", ignore_errors=True)
    shutil.rmtree(folder / ".cache", ignore_errors=True)
    missing = [name for name in BASE_FILES if not (folder / name).is_file()]
    if done.returncode != 0 or missing:
        raise RuntimeError(f"the base set could not be made (exit {done.returncode}, missing "
                           f"{missing}): {done.stderr[-2000:]}")


def _message_ok(case: Case, text: str, refused: bool = True) -> bool:
    folded = text.lower()
    if refused and case.message is not None and case.message.lower() not in folded:
        return False
    return not any(re.search(pattern, text, re.IGNORECASE) for pattern in case.forbid)


def _data_loss(case: Case, folder: Path, before: dict, trained_before: set, out: str,
               err: str) -> str:
    lost = []
    for name, digest in before.items():
        if name in case.updates:
            continue
        if digest is not None and _digest(folder / name) != digest:
            lost.append(f"{name} {'changed' if (folder / name).exists() else 'gone'}")
    for name in case.updates:
        why = _whole_checkpoint(folder / name)
        if why:
            lost.append(f"{name} {why}")
    if case.weights and re.search(r"^epoch \d+:", out, re.MULTILINE):
        if not _weights_somewhere(folder / case.weights, folder, trained_before, err):
            lost.append("trained weights written nowhere")
    return "; ".join(lost)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long, a component that is not a folder
        return False


def _weights_somewhere(target: Path, folder: Path, before: set, err: str) -> bool:
    if not _whole_checkpoint(target):
        return True
    fresh = {p for p in folder.rglob("*.npz") if _is_file(p)} - before
    if fresh:
        return True
    for match in re.finditer(r"(/[^\s'\"]+\.npz)", err):  # a fallback the error names
        path = Path(match.group(1))
        if _is_file(path):
            if str(path).startswith(tempfile.gettempdir()) and folder not in path.parents:
                path.unlink()  # the case's own fallback: cleaned up like the folder
            return True
    return False
