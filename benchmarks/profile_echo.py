#!/usr/bin/env python3
"""Serve a fixed number of echo messages, for profilers (not a benchmark).

The server half (this process) is the same echo ``async_chat`` as
``servers/asynchat_echo.py`` on asynframe's own loop; the client half is a
child process started with ``--client`` (plain blocking-free sockets on
epoll), so a profiler wrapped around this process sees the server only::

    PYTHONPATH=$PWD/src valgrind --tool=callgrind --callgrind-out-file=cg.out \\
        python3 benchmarks/profile_echo.py --mode pipelined --messages 20000

Instructions per message: run it with N and 2N messages and divide the
difference of the two totals by N (start-up cost cancels out).  Modes:
``pipelined`` (10 connections, 100 lines of 32 B in flight each) and
``reqresp`` (100 connections, one 64 B line in flight each), the runner's
two small-message scenarios.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import subprocess
import sys
import time

MODES = {"pipelined": (10, 100, 32), "reqresp": (100, 1, 64)}


def run_client(port: int, conns: int, depth: int, size: int, total: int) -> None:
    line = b"x" * (size - 2) + b"\r\n"
    socks = []
    for _ in range(conns):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        socks.append(sock)
    ep = select.epoll()
    partial = {}  # fd -> bytes of a reply not yet complete
    to_send = total
    by_fd = {s.fileno(): s for s in socks}
    for sock in socks:
        n = min(depth, to_send)
        to_send -= n
        if n:
            sock.sendall(line * n)
        partial[sock.fileno()] = 0
        ep.register(sock.fileno(), select.EPOLLIN)
    left = total * size
    while left > 0:
        for fd, _ in ep.poll(30):
            got = len(data := by_fd[fd].recv(1 << 16))
            if not data:
                raise SystemExit("server closed early")
            left -= got
            # replies are fixed-size: send one new line per completed reply
            done, partial[fd] = divmod(partial[fd] + got, size)
            refill = min(done, to_send)
            if refill > 0:
                to_send -= refill
                by_fd[fd].sendall(line * refill)
    for sock in socks:
        sock.close()
    ep.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=sorted(MODES), default="pipelined")
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    opts = ap.parse_args()
    conns, depth, size = MODES[opts.mode]
    if opts.client:
        run_client(opts.client, conns, depth, size, opts.messages)
        return

    from asynframe import asynchat, asyncore

    class EchoChannel(asynchat.async_chat):
        def __init__(self, sock: socket.socket) -> None:
            super().__init__(sock)
            self.set_terminator(b"\r\n")

        def collect_incoming_data(self, data: bytes) -> None:
            self._collect_incoming_data(data)

        def found_terminator(self) -> None:
            self.push(self._get_data() + b"\r\n")

    class EchoServer(asyncore.dispatcher):
        def __init__(self) -> None:
            super().__init__()
            self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
            self.set_reuse_addr()
            self.bind(("127.0.0.1", 0))
            self.listen(1024)

        def handle_accepted(self, sock: socket.socket, addr: object) -> None:
            EchoChannel(sock)

    server = EchoServer()
    port = server.socket.getsockname()[1]
    env = dict(os.environ)
    child = subprocess.Popen(
        [sys.executable, __file__, "--mode", opts.mode, "--messages", str(opts.messages), "--client", str(port)],
        env=env,
    )
    start = time.perf_counter()
    while child.poll() is None or len(asyncore.socket_map) > 1:
        asyncore.loop(timeout=0.05, use_poll=True, count=1)
    elapsed = time.perf_counter() - start
    server.close()
    asyncore.close_all()
    print(
        "%s: %d messages in %.3f s (%.0f msg/s, under this process's profiler if any)"
        % (opts.mode, opts.messages, elapsed, opts.messages / elapsed),
        file=sys.stderr,
    )
    if child.returncode:
        raise SystemExit("client failed")


if __name__ == "__main__":
    main()
