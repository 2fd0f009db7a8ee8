"""The runner's child processes (servers and load generators) and their output.

Every child is tracked from the moment it starts, so that an interrupted
run can stop all of them (``stop_all``) and leave nothing behind.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

_children: List[subprocess.Popen] = []


def spawn(argv: List[str], env: Dict[str, str], cwd: Path, stderr) -> subprocess.Popen:
    proc = subprocess.Popen(
        argv,
        cwd=str(cwd),
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        start_new_session=True,
    )  # no terminal Ctrl-C in children
    _children.append(proc)
    return proc


def _ask_to_exit(proc: subprocess.Popen, grace: float) -> None:
    """Close stdin (servers exit on EOF), then SIGTERM, then SIGKILL, each given time to work."""
    try:
        if proc.poll() is None:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(0.2)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    pass
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    except (OSError, subprocess.TimeoutExpired):
        pass


def stop(proc: subprocess.Popen, grace: float = 2.0) -> None:
    _ask_to_exit(proc, grace)
    try:  # the child's own session: anything it forked dies with it
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    for f in (proc.stdin, proc.stdout):
        try:
            if f:
                f.close()
        except OSError:
            pass
    if proc in _children:
        _children.remove(proc)


def stop_all() -> None:
    for proc in list(_children):
        stop(proc, grace=0.5)


class LineReader:
    """Read JSON lines from a child's stdout with timeouts."""

    def __init__(self, proc: subprocess.Popen):
        assert proc.stdout is not None, "started with stdout=PIPE"
        self.fd = proc.stdout.fileno()
        self.buf = b""
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.fd, selectors.EVENT_READ)

    def read(self, timeout: float) -> Optional[Dict[str, Any]]:
        """Next JSON object; None at EOF; TimeoutError if none in *timeout* s."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sel.select(left):
                raise TimeoutError(f"no output for {timeout:.0f}s")
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            return {"event": "garbage", "line": line.decode("utf-8", "replace")}

    def close(self):
        self.sel.close()
