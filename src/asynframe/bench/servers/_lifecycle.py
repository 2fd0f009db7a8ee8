"""Process plumbing shared by the benchmark echo servers.

Every server follows the same contract with ``benchmarks/run.py``:

* it binds 127.0.0.1 port 0 and prints one JSON line on stdout:
  ``{"port": N, "info": {...}}`` (or ``{"skip": "reason"}`` and exits 0 when
  the library it needs is not installed);
* it exits when its stdin reaches EOF (the runner closed the pipe or died),
  on SIGTERM, or when its parent process dies (Linux ``PR_SET_PDEATHSIG``).

None of this touches the request path: the stdin watcher is a thread that
sits blocked in ``read()`` for the life of the process.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import sys
import threading

HOST = "127.0.0.1"
BACKLOG = 1024  # the same for every server; the kernel caps it at somaxconn


def _exit_when_parent_goes() -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except Exception:  # best effort only
            pass

    def watch_stdin() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except Exception:
            pass
        os._exit(0)

    threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()


def setup() -> None:
    """Call first thing in a server: arm the exit-on-EOF/parent-death guards."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _exit_when_parent_goes()


def announce(port: int, **info: object) -> None:
    """Tell the runner which port we listen on (and what we are)."""
    info.setdefault("python", platform.python_version())
    info.setdefault("pid", os.getpid())
    sys.stdout.write(json.dumps({"port": port, "info": info}) + "\n")
    sys.stdout.flush()


def skip(reason: str) -> "None":
    """The library under test is not installed: say so and exit cleanly."""
    sys.stdout.write(json.dumps({"skip": reason}) + "\n")
    sys.stdout.flush()
    os._exit(0)
