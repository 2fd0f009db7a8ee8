"""Run one asyncore server in N worker processes on one listening port.

One Python process uses one core; ``serve()`` forks *workers* children that
each run their own loop on the same address:

* with ``SO_REUSEPORT`` (Linux, the BSDs, macOS) each worker binds its own
  listening socket and the kernel spreads new connections over them;
* without it (or with ``reuse_port=False``) the parent binds and listens
  once and the workers inherit that socket across ``fork()``: each accepts
  from the shared queue.

POSIX only: Windows has no ``fork()`` and no load-spreading
``SO_REUSEPORT``, and ``serve()`` raises ``NotImplementedError`` there.
Past one machine, put a standard L4 balancer (HAProxy, nginx ``stream``,
IPVS) in front of several such hosts.

The parent only supervises: on SIGTERM or SIGINT it sends SIGTERM to every
worker, waits up to *grace* seconds, then kills what is left, and returns.
A worker stops its loop on SIGTERM/SIGINT, closes its channels and exits;
on Linux it also gets SIGTERM if the parent dies, so no worker outlives it.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _events, asyncore

__all__ = ["serve", "has_reuse_port"]


def has_reuse_port() -> bool:
    """Whether this platform can spread connections over ``SO_REUSEPORT`` listeners."""
    return hasattr(socket, "SO_REUSEPORT") and sys.platform != "win32"


def _listener(family: int, address: Any, backlog: int, reuse_port: bool, listen: bool = True) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if listen:
            sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _Stop(asyncore.ExitNow):
    """Raised by a worker's signal handler to leave the loop."""


def _die_with_parent() -> None:
    # Linux: SIGTERM this worker when the parent goes, even by SIGKILL
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _worker(
    factory: Callable[[socket.socket], Any],
    sock: socket.socket,
    ready_fd: int,
    timeout: float,
    use_poll: bool,
    parent: int,
) -> int:
    def stop(signum: int, frame: Any) -> None:
        raise _Stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _die_with_parent()
    if os.getppid() != parent:
        return 0  # the parent died before the death signal was armed
    # a fresh map: whatever the parent had in the default one is not ours
    asyncore.socket_map.clear()
    try:
        server = factory(sock)
        if isinstance(server, asyncore.dispatcher) and not server.accepting:
            server.accepting = True
            _events.touch(server)
        os.write(ready_fd, b"r")
        os.close(ready_fd)
        asyncore.loop(timeout=timeout, use_poll=use_poll)
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        asyncore.close_all(ignore_all=True)
        sock.close()
    return 0


def serve(
    factory: Callable[[socket.socket], Any],
    address: Tuple[Any, ...],
    workers: Optional[int] = None,
    *,
    reuse_port: Optional[bool] = None,
    backlog: int = 128,
    family: int = socket.AF_INET,
    loop_timeout: float = 1.0,
    use_poll: bool = False,
    grace: float = 5.0,
    on_ready: Optional[Callable[[Tuple[Any, ...], List[int]], None]] = None,
) -> Dict[int, int]:
    """Serve *address* from *workers* processes (default: the CPU count) until signalled.

    *factory* is called in each worker with a listening, non-blocking socket
    and builds the server around it, typically ``MyServer(sock)`` where
    ``MyServer`` is an ``asyncore.dispatcher`` whose ``handle_accepted``
    creates the channels; a dispatcher it returns is marked ``accepting``.
    Each worker then runs ``asyncore.loop(loop_timeout, use_poll)``.

    *reuse_port*: ``None`` uses ``SO_REUSEPORT`` where available, ``True``
    requires it, ``False`` shares one socket bound before forking.  With port
    0 the parent picks the port first, so all workers serve the same one.

    *on_ready(address, pids)* is called in the parent once every worker
    listens, with the bound address.  Returns ``{pid: exit status}`` once
    every worker has exited (after SIGTERM/SIGINT to the parent, or when
    they all stop by themselves).  A worker that exits before it listens
    (its factory raised, say) stops them all with ``RuntimeError``.
    """
    workers, reuse_port = _checked_arguments(factory, workers, reuse_port)
    # With SO_REUSEPORT the parent holds a bound, never listening, socket:
    # it fixes the port (0 becomes a real port) without taking connections.
    parent_sock = _listener(family, address, backlog, reuse_port, listen=not reuse_port)
    bound = parent_sock.getsockname()
    pids: List[int] = []
    status: Dict[int, int] = {}
    stopping, old_handlers = _catch_stop_signals()
    ready_r, ready_w = os.pipe()
    me = os.getpid()
    try:
        for _ in range(workers):
            sock = _listener(family, bound, backlog, True) if reuse_port else parent_sock
            pids.append(
                _fork_worker(
                    factory, sock, parent_sock if reuse_port else None, ready_r, ready_w, loop_timeout, use_poll, me
                )
            )
            if reuse_port:
                sock.close()
        os.close(ready_w)
        ready_w = -1
        _supervise(ready_r, pids, status, stopping, grace, on_ready, bound)
    finally:
        if ready_w >= 0:
            os.close(ready_w)
        os.close(ready_r)
        _terminate(pids, status, grace)
        parent_sock.close()
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
    return status


def _checked_arguments(
    factory: Callable[[socket.socket], Any], workers: Optional[int], reuse_port: Optional[bool]
) -> Tuple[int, bool]:
    """``serve()``'s worker count and reuse_port choice, defaults filled in; raises on bad ones."""
    if not hasattr(os, "fork"):
        raise NotImplementedError("asynframe.workers.serve() needs fork(); it is not supported on this platform")
    if not callable(factory):
        raise TypeError("factory must be callable, not %s" % type(factory).__name__)
    if workers is None:
        workers = os.cpu_count() or 1
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError("workers must be a positive int, not %r" % (workers,))
    if reuse_port is None:
        reuse_port = has_reuse_port()
    elif reuse_port and not has_reuse_port():
        raise ValueError("reuse_port=True but this platform has no SO_REUSEPORT")
    return workers, reuse_port


def _catch_stop_signals() -> Tuple[List[int], Dict[int, Any]]:
    """Record SIGTERM and SIGINT instead of dying of them: the parent must stop its workers first.

    Returns the list the signal numbers are appended to, and the handlers
    replaced, for ``serve()`` to put back.
    """
    stopping: List[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        stopping.append(signum)

    return stopping, {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}


def _fork_worker(
    factory: Callable[[socket.socket], Any],
    sock: socket.socket,
    not_served: Optional[socket.socket],
    ready_r: int,
    ready_w: int,
    loop_timeout: float,
    use_poll: bool,
    parent: int,
) -> int:
    """Fork a worker that serves *sock*; returns its pid (the child never returns).

    *not_served* is the parent's bound socket when each worker has its own
    ``SO_REUSEPORT`` listener: the child closes its copy, as it does the
    pipe's read end, so only the parent holds them.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        code = 1
        try:
            os.close(ready_r)
            if not_served is not None:
                not_served.close()
            code = _worker(factory, sock, ready_w, loop_timeout, use_poll, parent)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def _supervise(
    ready_r: int,
    pids: List[int],
    status: Dict[int, int],
    stopping: List[int],
    grace: float,
    on_ready: Optional[Callable[[Tuple[Any, ...], List[int]], None]],
    bound: Tuple[Any, ...],
) -> None:
    """Wait until every worker listens, tell *on_ready*, then reap workers until all exit or a signal comes."""
    ready = _wait_ready(ready_r, len(pids), pids, status, stopping)
    if ready < len(pids) and not stopping:
        # a worker that dies before it listens (its factory raised, the
        # address is taken) would fail the same way again: stop them all
        _reap(pids, status, block_for=grace)
        failed = dict(status)
        _terminate(pids, status, grace)
        raise RuntimeError("worker(s) exited during start-up (pid: exit status): %r" % (failed,))
    if on_ready is not None and not stopping:
        on_ready(bound, list(pids))
    while len(status) < len(pids):
        if stopping:
            break
        _reap(pids, status, block_for=0.2)


def _wait_ready(fd: int, count: int, pids: List[int], status: Dict[int, int], stopping: List[int]) -> int:
    """How many workers said they listen (fewer when some died or a signal came)."""
    got = 0
    while got < count and not stopping and len(status) < len(pids):
        try:
            readable, _, _ = select.select([fd], [], [], 0.2)
        except InterruptedError:
            continue
        if readable:
            data = os.read(fd, count)
            if not data:
                return got  # every worker closed its end: some failed early
            got += len(data)
        _reap(pids, status, block_for=0)
    return got


def _reap(pids: List[int], status: Dict[int, int], block_for: float) -> None:
    deadline = time.monotonic() + block_for
    while True:
        for pid in pids:
            if pid in status:
                continue
            try:
                done, code = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                status[pid] = -1
                continue
            if done:
                status[pid] = os.waitstatus_to_exitcode(code) if hasattr(os, "waitstatus_to_exitcode") else code
        if len(status) == len(pids) or time.monotonic() >= deadline:
            return
        time.sleep(0.02)


def _terminate(pids: List[int], status: Dict[int, int], grace: float) -> None:
    for pid in pids:
        if pid not in status:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    _reap(pids, status, block_for=grace)
    for pid in pids:
        if pid not in status:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    while len(status) < len(pids):
        _reap(pids, status, block_for=1.0)
        if len(status) < len(pids):
            # a pid that cannot be reaped any more is recorded as lost
            for pid in pids:
                if pid not in status:
                    try:
                        os.kill(pid, 0)
                    except (ProcessLookupError, PermissionError):
                        status[pid] = -1
