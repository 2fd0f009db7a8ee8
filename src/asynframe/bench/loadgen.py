#!/usr/bin/env python3
"""Load generator for the echo benchmarks (pure Python, no compiler needed).

It is driven by ``benchmarks/run.py`` and talks back through JSON lines on
stdout.  It is written to stay cheaper per message than any server it
measures:

* raw non-blocking sockets on ``select.epoll`` (``select.poll`` elsewhere);
* requests are pre-built: refilling *k* messages is one ``send()`` of a
  memoryview slice of a ready-made buffer, never a per-line Python loop;
* replies are read with ``recv_into()`` a single reused buffer and only
  counted - messages have a fixed size, so completed messages are
  ``received_bytes // size`` (every connection's echo is checked byte for
  byte once, when it is opened).

Modes
-----
``window``  *conns* connections, each keeping *depth* messages of *size*
            bytes in flight (depth 1 = request/response);
``idle``    ``window`` with depth 1, measured once as is and once more after
            *idle* extra connections were opened (each echoes one line, then
            stays silent for the rest of the run);
``accept``  *conns* concurrent cycles of connect, one echo, close;
``rotate``  ``window`` on several servers (``--ports``), one at a time:
            *cycles* rounds of one window per server, the order reversed
            every other round, so that what the machine does meanwhile
            falls on all of them alike.  Before and after each window the
            runner samples that server's CPU time and answers on stdin.

Measurement: after ``--warmup`` seconds, ``--repeats`` back-to-back windows
of ``--duration`` seconds.  A ``{"event": "mark"}`` line is printed at each
window boundary so the runner can sample the server's CPU and memory at the
same moments; the final ``{"event": "result"}`` line has, per window, the
message count, wall time and this process's CPU time.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import select
import socket
import sys
import time

perf_counter = time.perf_counter
process_time = time.process_time

if hasattr(select, "epoll"):
    EV_IN, EV_OUT = select.EPOLLIN, select.EPOLLOUT
    EV_ERR = select.EPOLLERR | select.EPOLLHUP

    CLOSE_UNREGISTERS = True  # close() drops an fd from every epoll set

    def new_poller():
        return select.epoll()

else:  # pragma: no cover - non-Linux fallback
    EV_IN, EV_OUT = select.POLLIN, select.POLLOUT
    EV_ERR = select.POLLERR | select.POLLHUP
    CLOSE_UNREGISTERS = False

    class _PollSeconds:
        def __init__(self):
            self._p = select.poll()
            self.register, self.modify, self.unregister = (self._p.register, self._p.modify, self._p.unregister)

        def poll(self, timeout=-1):
            return self._p.poll(None if timeout is None or timeout < 0 else timeout * 1000.0)

        def close(self):
            pass

    def new_poller():
        return _PollSeconds()


class LoadError(Exception):
    pass


def emit(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def make_message(size):
    """A *size*-byte line: printable payload without CR/LF, then CRLF."""
    if size < 3:
        raise ValueError("message size must be >= 3")
    pattern = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    payload = (pattern * (size // len(pattern) + 1))[: size - 2]
    return payload + b"\r\n"


def _connect(addr, nodelay):
    """A non-blocking socket whose connect() to *addr* has started."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rc = sock.connect_ex(addr)
    if rc not in (0, errno.EINPROGRESS):
        sock.close()
        raise LoadError(f"connect() failed: {os.strerror(rc)}")
    return sock


def _advance_check(entry, fd, poller, verify):
    """Handle one readiness event of a connection being checked; True once its echo is complete.

    *entry* is [sock, phase, unsent (memoryview), received (bytearray)];
    phase 0 = connecting, 1 = sending the line, 2 = reading the echo.
    """
    sock = entry[0]
    if entry[1] == 0:
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise LoadError(f"connect failed: {os.strerror(err)}")
        entry[1] = 1
    if entry[1] == 1:
        sent = sock.send(entry[2])
        entry[2] = entry[2][sent:]
        if not len(entry[2]):
            entry[1] = 2
            poller.modify(fd, EV_IN)
        return False
    data = sock.recv(65536)
    if not data:
        raise LoadError("server closed a connection during setup")
    entry[3] += data
    if len(entry[3]) < len(verify):
        return False
    if entry[3] != verify:
        raise LoadError(f"bad echo: sent {verify[:40]!r}... got {bytes(entry[3][:40])!r}...")
    return True


def open_connections(addr, count, verify, concurrency=256, timeout=300.0, nodelay=True, progress=None):
    """Open *count* connections; each must echo *verify* back exactly.

    Connections are started at most *concurrency* at a time, so the server's
    accept queue never overflows and every returned socket is one the server
    has really accepted and served.
    """
    poller = new_poller()
    done = []
    state = {}  # fd -> the _advance_check entry of a connection still being checked
    started = 0
    deadline = perf_counter() + timeout
    next_report = perf_counter() + 2.0
    try:
        while len(done) < count:
            while started < count and len(state) < concurrency:
                sock = _connect(addr, nodelay)
                state[sock.fileno()] = [sock, 0, memoryview(verify), bytearray()]
                poller.register(sock.fileno(), EV_OUT)
                started += 1
            now = perf_counter()
            if now > deadline:
                raise LoadError(f"only {len(done)}/{count} connections echoed within {timeout:.0f}s")
            if progress is not None and now >= next_report:
                progress(len(done))
                next_report = now + 2.0
            for fd, ev in poller.poll(1.0):
                if _advance_check(state[fd], fd, poller, verify):
                    poller.unregister(fd)
                    done.append(state.pop(fd)[0])
    except BaseException:
        for entry in state.values():
            entry[0].close()
        for sock in done:
            sock.close()
        raise
    finally:
        poller.close()
    return done


class WindowDriver:
    """Keep *depth* messages in flight on every connection, forever."""

    def __init__(self, socks, message, depth):
        self.socks = socks
        self.size = len(message)
        self.depth = depth
        self.batch = memoryview(message * depth)
        top = max(s.fileno() for s in socks) + 1
        self.recv_into = [None] * top
        self.send = [None] * top
        self.rx = [0] * top
        self.pending = [None] * top
        self.completed = 0
        self.poller = new_poller()
        self.buf = bytearray(max(1 << 18, 2 * self.size * depth))
        for s in socks:
            fd = s.fileno()
            self.recv_into[fd] = s.recv_into
            self.send[fd] = s.send
            self.poller.register(fd, EV_IN)
        for s in socks:  # prime: the whole window goes out in one send each
            self._push(s.fileno(), self.batch)

    def _push(self, fd, out):
        if self.pending[fd] is not None:
            self.pending[fd] = self.pending[fd] + bytes(out)
            return
        sent = self.send[fd](out)
        if sent < len(out):
            self.pending[fd] = bytes(out[sent:])
            self.poller.modify(fd, EV_IN | EV_OUT)

    def run_until(self, t_end):
        """Drive the connections until ``perf_counter() >= t_end``."""
        poll = self.poller.poll
        recv_into = self.recv_into
        send = self.send
        rx = self.rx
        pending = self.pending
        buf = self.buf
        batch = self.batch
        size = self.size
        completed = self.completed
        EVI = EV_IN
        try:
            now = perf_counter()
            while now < t_end:
                for fd, ev in poll(t_end - now):
                    if ev & EVI or ev & EV_ERR:
                        n = recv_into[fd](buf)
                        if not n:
                            raise LoadError("server closed a connection")
                        r = rx[fd] + n
                        if r >= size:
                            k = r // size
                            rx[fd] = r - k * size
                            completed += k
                            if pending[fd] is None:
                                out = batch[: k * size]
                                sent = send[fd](out)
                                if sent < len(out):
                                    pending[fd] = bytes(out[sent:])
                                    self.poller.modify(fd, EV_IN | EV_OUT)
                            else:
                                pending[fd] = pending[fd] + bytes(batch[: k * size])
                        else:
                            rx[fd] = r
                    if ev & EV_OUT:
                        p = pending[fd]
                        if p is not None:
                            sent = send[fd](p)
                            if sent < len(p):
                                pending[fd] = p[sent:]
                            else:
                                pending[fd] = None
                                self.poller.modify(fd, EV_IN)
                now = perf_counter()
        finally:
            self.completed = completed
        return completed

    def count(self):
        return self.completed


class AcceptDriver:
    """*concurrency* parallel cycles of connect -> send one line -> read echo -> close."""

    def __init__(self, addr, message, concurrency):
        self.addr = addr
        self.msg = message
        self.size = len(message)
        self.concurrency = concurrency
        self.poller = new_poller()
        self.conns = {}  # fd -> [sock, received]
        self.completed = 0
        self.errors = {}
        self.buf = bytearray(65536)
        for _ in range(concurrency):
            self._start()

    def _error(self, what):
        self.errors[what] = self.errors.get(what, 0) + 1
        if sum(self.errors.values()) > 1000 and self.completed < sum(self.errors.values()):
            raise LoadError(f"too many connection errors: {self.errors}")

    def _start(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        rc = sock.connect_ex(self.addr)
        fd = sock.fileno()
        if rc not in (0, errno.EINPROGRESS):
            sock.close()
            self._error(errno.errorcode.get(rc, str(rc)))
            if rc == errno.EADDRNOTAVAIL:  # ephemeral ports exhausted
                time.sleep(0.01)
            return False
        # On loopback the handshake is usually complete when connect()
        # returns: send at once and skip a wait for writability.
        try:
            sock.send(self.msg)
        except (BlockingIOError, InterruptedError, OSError) as exc:
            if isinstance(exc, BlockingIOError) or exc.errno in (errno.ENOTCONN, errno.EAGAIN):
                self.conns[fd] = [sock, -1]
                self.poller.register(fd, EV_OUT)
                return True
            sock.close()
            self._error(errno.errorcode.get(exc.errno, str(exc.errno)))
            return False
        self.conns[fd] = [sock, 0]
        self.poller.register(fd, EV_IN)
        return True

    def run_until(self, t_end):
        poll = self.poller.poll
        modify = self.poller.modify
        conns = self.conns
        buf = self.buf
        msg = self.msg
        size = self.size
        now = perf_counter()
        while now < t_end:
            for fd, ev in poll(t_end - now):
                entry = conns[fd]
                sock = entry[0]
                try:
                    if entry[1] < 0:  # connected (or failed): send the line
                        sock.send(msg)
                        entry[1] = 0
                        modify(fd, EV_IN)
                        continue
                    n = sock.recv_into(buf)
                except OSError as exc:
                    n = -1
                    self._error(errno.errorcode.get(exc.errno, str(exc.errno)))
                if n > 0:
                    got = entry[1] + n
                    if got < size:
                        entry[1] = got
                        continue
                    self.completed += 1
                elif n == 0:
                    self._error("closed-before-echo")
                del conns[fd]
                if not CLOSE_UNREGISTERS:
                    self.poller.unregister(fd)
                sock.close()
                while not self._start():
                    pass
            now = perf_counter()
        return self.completed

    def count(self):
        return self.completed


def measure(driver, warmup, duration, repeats, phase):
    """Warm up, then *repeats* windows of *duration* s; emit a mark at each edge."""
    driver.run_until(perf_counter() + warmup)
    windows = []
    t0 = perf_counter()
    c0 = process_time()
    r0 = os.times()
    n0 = driver.count()
    emit(event="mark", phase=phase, index=0)
    for i in range(repeats):
        driver.run_until(t0 + duration)
        t1 = perf_counter()
        c1 = process_time()
        r1 = os.times()
        n1 = driver.count()
        emit(event="mark", phase=phase, index=i + 1)
        windows.append(
            {
                "count": n1 - n0,
                "wall": t1 - t0,
                "cpu": c1 - c0,
                "cpu_user": r1.user - r0.user,
                "cpu_sys": r1.system - r0.system,
            }
        )
        t0, c0, r0, n0 = t1, c1, r1, n1
    return windows


def _sampled(index, edge):
    """Mark a window edge of driver *index*; return once the runner has sampled."""
    emit(event="mark", phase="rotate", server=index, edge=edge)
    if not sys.stdin.readline():
        raise LoadError("the runner went away")


def rotate(drivers, warmup, duration, cycles):
    """*cycles* rounds of one window per driver, alternating the order.

    Each window edge emits a mark naming the driver and waits for a line on
    stdin: the runner has sampled that server by then, so no window starts
    before the sample that opens it.
    """
    for driver in drivers:
        driver.run_until(perf_counter() + warmup)
    windows = []
    order = list(range(len(drivers)))
    for cycle in range(cycles):
        for index in order if cycle % 2 == 0 else order[::-1]:
            driver = drivers[index]
            _sampled(index, "start")
            t0 = perf_counter()
            n0 = driver.count()
            driver.run_until(t0 + duration)
            t1 = perf_counter()
            n1 = driver.count()
            _sampled(index, "end")
            windows.append({"server": index, "cycle": cycle, "count": n1 - n0, "wall": t1 - t0})
    return windows


def _die_with_parent():
    """Linux: get SIGKILL if the runner dies, so no load generator outlives it."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except Exception:
            pass


def main(argv=None):
    _die_with_parent()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, help="the server's port (all modes but rotate)")
    ap.add_argument("--ports", help="rotate: the servers' ports, comma-separated")
    ap.add_argument("--cycles", type=int, default=1, help="rotate: rounds of one window per server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--mode", choices=["window", "idle", "accept", "rotate"], required=True)
    ap.add_argument("--conns", type=int, default=10)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--idle", type=int, default=0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--setup-timeout", type=float, default=300.0)
    args = ap.parse_args(argv)
    if (args.mode == "rotate") != (args.ports is not None) or (args.mode != "rotate") != (args.port is not None):
        ap.error("--ports goes with --mode rotate, --port with every other mode")

    addr = (args.host, args.port)
    msg = make_message(args.size)
    result = {"event": "result", "mode": args.mode}
    try:
        if args.mode == "rotate":
            drivers = []
            for port in args.ports.split(","):
                socks = open_connections((args.host, int(port)), args.conns, msg)
                drivers.append(WindowDriver(socks, msg, args.depth))
            result["windows"] = rotate(drivers, args.warmup, args.duration, args.cycles)
            for driver in drivers:
                for s in driver.socks:
                    s.close()
        elif args.mode == "accept":
            # check the server echoes correctly before hammering it
            for s in open_connections(addr, 1, msg):
                s.close()
            driver = AcceptDriver(addr, msg, args.conns)
            result["windows"] = measure(driver, args.warmup, args.duration, args.repeats, "main")
            result["errors"] = driver.errors
        else:
            t = perf_counter()
            socks = open_connections(addr, args.conns, msg)
            result["connect_seconds"] = perf_counter() - t
            driver = WindowDriver(socks, msg, args.depth)
            result["windows"] = measure(driver, args.warmup, args.duration, args.repeats, "main")
            if args.mode == "idle":
                emit(event="idle_start", count=args.idle)
                t = perf_counter()
                idle = open_connections(
                    addr,
                    args.idle,
                    make_message(64),
                    timeout=args.setup_timeout,
                    progress=lambda n: emit(event="idle_progress", done=n, count=args.idle),
                )
                result["idle_setup_seconds"] = perf_counter() - t
                result["idle_count"] = len(idle)
                emit(event="idle_ready", count=len(idle), seconds=result["idle_setup_seconds"])
                result["idle_windows"] = measure(driver, args.warmup, args.duration, args.repeats, "idle")
                for s in idle:
                    s.close()
            for s in socks:
                s.close()
    except (LoadError, OSError) as exc:
        emit(event="error", message=f"{type(exc).__name__}: {exc}")
        return 2
    emit(**result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
