"""Soak test: many short connections, then many long ones, against one asynframe server.

    python3 benchmarks/soak.py                       # full: 100,000 cycles, 1,000 x 60 s
    python3 benchmarks/soak.py --cycles 2000 --concurrent 50 --duration 5   # a quick check
    python3 benchmarks/soak.py --json soak.json

The server (an ``async_chat`` line echo on loopback) runs in a child
process so that its memory and descriptors are measured alone.  Phase 1
makes ``--cycles`` connect/exchange/close cycles; phase 2 keeps
``--concurrent`` connections exchanging lines for ``--duration`` seconds.
Reported as JSON (stdout, and ``--json``): the server's RSS after warm-up
(the first ``--warmup`` fraction of each phase) and at the end, the growth
in percent, its open descriptors before and after, the exchanges made,
and the errors (client failures, wrong replies, server ``handle_error``
calls).  Exit status 0 when growth < ``--max-growth`` %, descriptors are
back where they started and there were no errors.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# -- the server (child process) ----------------------------------------------------------
def serve(port_pipe: int, use_poll: bool) -> None:
    from asynframe import asynchat, asyncore

    stats = {"errors": 0, "frames": 0, "accepted": 0}

    class Echo(asynchat.async_chat):
        def __init__(self, sock):
            super().__init__(sock)
            self.set_terminator(b"\n")

        collect_incoming_data = asynchat.async_chat._collect_incoming_data

        def found_terminator(self):
            stats["frames"] += 1
            self.push(self._get_data() + b"\n")

        def handle_error(self):
            stats["errors"] += 1
            super().handle_error()

    class Server(asyncore.dispatcher):
        def __init__(self):
            super().__init__()
            self.create_socket()
            self.set_reuse_addr()
            self.bind(("127.0.0.1", 0))
            self.listen(1024)

        def handle_accepted(self, sock, addr):
            stats["accepted"] += 1
            Echo(sock)

    def stop(signum, frame):
        raise asyncore.ExitNow()

    signal.signal(signal.SIGTERM, stop)
    server = Server()
    os.write(port_pipe, b"%d\n" % server.socket.getsockname()[1])
    os.close(port_pipe)
    try:
        asyncore.loop(timeout=1.0, use_poll=use_poll)
    except asyncore.ExitNow:
        pass
    asyncore.close_all(ignore_all=True)
    sys.stdout.write(json.dumps(stats) + "\n")
    sys.stdout.flush()


# -- the driver ----------------------------------------------------------------------------
def raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def exchange_once(port: int, payload: bytes) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(payload)
        got = b""
        while len(got) < len(payload):
            data = c.recv(65536)
            if not data:
                return False
            got += data
        return got == payload


def phase_cycles(port, cycles, warmup, proc, result):
    errors = 0
    warm_rss = None
    t0 = time.monotonic()
    for i in range(cycles):
        if i == int(cycles * warmup):
            warm_rss = proc.memory_info().rss
        payload = b"cycle %d %s\n" % (i, b"x" * (i % 200))
        try:
            if not exchange_once(port, payload):
                errors += 1
        except OSError:
            errors += 1
    result.update(
        cycles=cycles,
        cycle_errors=errors,
        cycles_seconds=round(time.monotonic() - t0, 2),
        cycles_rss_warm=warm_rss,
        cycles_rss_end=proc.memory_info().rss,
    )


def phase_concurrent(port, count, duration, warmup, proc, result):
    sel = selectors.DefaultSelector()
    errors = 0
    exchanges = 0
    conns = []
    for i in range(count):
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.setblocking(False)
        state = {"sock": c, "n": 0, "want": b"", "got": b""}
        conns.append(state)
        sel.register(c, selectors.EVENT_READ, state)

    def send_next(state):
        state["n"] += 1
        state["want"] = b"conn %d line %d %s\n" % (id(state) % 9973, state["n"], b"y" * (state["n"] % 300))
        state["got"] = b""
        state["sock"].sendall(state["want"])

    for state in conns:
        send_next(state)
    t0 = time.monotonic()
    warm_at = t0 + duration * warmup
    warm_rss = None
    while time.monotonic() - t0 < duration:
        if warm_rss is None and time.monotonic() >= warm_at:
            warm_rss = proc.memory_info().rss
        for key, _ in sel.select(1.0):
            state = key.data
            try:
                data = state["sock"].recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                errors += 1
                sel.unregister(state["sock"])
                continue
            if not data:
                errors += 1
                sel.unregister(state["sock"])
                continue
            state["got"] += data
            if len(state["got"]) >= len(state["want"]):
                if state["got"] != state["want"]:
                    errors += 1
                exchanges += 1
                send_next(state)
    for state in conns:
        state["sock"].close()
    sel.close()
    result.update(
        concurrent=count,
        duration=duration,
        exchanges=exchanges,
        concurrent_errors=errors,
        concurrent_rss_warm=warm_rss,
        concurrent_rss_end=proc.memory_info().rss,
    )


def growth(warm, end):
    if not warm:
        return None
    return round(100.0 * (end - warm) / warm, 2)


def wait_fds(proc, target, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        n = proc.num_fds()
        if n <= target or time.monotonic() > deadline:
            return n
        time.sleep(0.05)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=100000)
    ap.add_argument("--concurrent", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument(
        "--warmup", type=float, default=0.2, help="fraction of each phase before the RSS baseline (default 0.2)"
    )
    ap.add_argument("--max-growth", type=float, default=5.0, help="percent (default 5)")
    ap.add_argument("--use-poll", action="store_true")
    ap.add_argument("--json", help="also write the result to this file")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def summarise(result, server, max_growth):
    """Fold the server's report into *result* and decide whether the soak passed."""
    result["server_errors"] = server["errors"]
    result["server_accepted"] = server.get("accepted")
    result["cycles_rss_growth_pct"] = growth(result["cycles_rss_warm"], result["cycles_rss_end"])
    result["concurrent_rss_growth_pct"] = growth(result["concurrent_rss_warm"], result["concurrent_rss_end"])
    result["errors"] = (
        result["cycle_errors"] + result["concurrent_errors"] + max(server["errors"], 0) + (server["errors"] < 0)
    )
    growths = [g for g in (result["cycles_rss_growth_pct"], result["concurrent_rss_growth_pct"]) if g is not None]
    result["ok"] = bool(
        result["errors"] == 0 and result["fds_after"] <= result["fds_before"] and all(g < max_growth for g in growths)
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.use_poll)
        return 0

    import psutil

    raise_fd_limit(args.concurrent * 2 + 256)
    r, w = os.pipe()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(ROOT, "src") + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(__file__), "--serve", str(w)]
    if args.use_poll:
        cmd.append("--use-poll")
    child = subprocess.Popen(
        cmd,
        env=env,
        pass_fds=(w,),
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: raise_fd_limit(args.concurrent * 2 + 256),
    )
    os.close(w)
    with os.fdopen(r) as f:
        port = int(f.readline())
    proc = psutil.Process(child.pid)
    import asynframe

    result = {"core": asynframe.CORE_IMPLEMENTATION, "python": sys.version.split()[0], "use_poll": args.use_poll}
    try:
        result["fds_before"] = proc.num_fds()
        result["rss_start"] = proc.memory_info().rss
        phase_cycles(port, args.cycles, args.warmup, proc, result)
        phase_concurrent(port, args.concurrent, args.duration, args.warmup, proc, result)
        result["fds_after"] = wait_fds(proc, result["fds_before"])
    finally:
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=30)
    server = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"errors": -1}
    summarise(result, server, args.max_growth)
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
