"""Running a real process on a pseudo-terminal of a given width, as a person's terminal is."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time


def on_a_terminal(command: list[str], columns: int, env: dict | None = None,
                  timeout: float = 240) -> tuple[int, str]:
    """Run ``command`` with stdin, stdout and stderr on a pseudo-terminal ``columns`` wide;
    (exit status, everything it wrote, escape sequences and all). Killed after ``timeout``."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    environment = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm-256color",
                   **(env or {})}
    process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave,
                               env=environment, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
    return process.returncode, b"".join(chunks).decode(errors="replace")
