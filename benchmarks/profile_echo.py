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


def client_argv(opts: argparse.Namespace, port: int) -> list:
    return [sys.executable, __file__, "--mode", opts.mode, "--messages", str(opts.messages), "--client", str(port)]


# The application styles the request/response target names.  "legacy" is the
# benchmark's own echo channel (collect_incoming_data calls the stock helper:
# two Python calls per message); "stock" assigns the stock pair, so the core
# collects in C and found_terminator is the one Python call; "frames" defines
# frame_received; "buffer" is the classic hand-kept list of chunks.
ASYNCHAT_STYLES = ("legacy", "stock", "frames", "buffer")
ASYNCIO_SERVERS = ("uvloop", "asyncio")


def make_asynchat_server(style: str) -> type:
    from asynframe import asynchat, asyncore

    class LegacyChannel(asynchat.async_chat):
        def __init__(self, sock: socket.socket) -> None:
            super().__init__(sock)
            self.set_terminator(b"\r\n")

        def collect_incoming_data(self, data: bytes) -> None:
            self._collect_incoming_data(data)

        def found_terminator(self) -> None:
            self.push(self._get_data() + b"\r\n")

    class StockChannel(asynchat.async_chat):
        collect_incoming_data = asynchat.async_chat._collect_incoming_data

        def __init__(self, sock: socket.socket) -> None:
            super().__init__(sock)
            self.set_terminator(b"\r\n")

        def found_terminator(self) -> None:
            self.push(self._get_data() + b"\r\n")

    class FramesChannel(asynchat.async_chat):
        def __init__(self, sock: socket.socket) -> None:
            super().__init__(sock)
            self.set_terminator(b"\r\n")

        def frame_received(self, frame: bytes) -> None:
            self.push(frame + b"\r\n")

    class BufferChannel(asynchat.async_chat):
        def __init__(self, sock: socket.socket) -> None:
            super().__init__(sock)
            self.set_terminator(b"\r\n")
            self.ibuffer: list = []

        def collect_incoming_data(self, data: bytes) -> None:
            self.ibuffer.append(data)

        def found_terminator(self) -> None:
            line = b"".join(self.ibuffer)
            self.ibuffer = []
            self.push(line + b"\r\n")

    channel_class = {
        "legacy": LegacyChannel,
        "stock": StockChannel,
        "frames": FramesChannel,
        "buffer": BufferChannel,
    }[style]

    class EchoServer(asyncore.dispatcher):
        def __init__(self) -> None:
            super().__init__()
            self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
            self.set_reuse_addr()
            self.bind(("127.0.0.1", 0))
            self.listen(1024)

        def handle_accepted(self, sock: socket.socket, addr: object) -> None:
            channel_class(sock)

    return EchoServer


def serve_asyncio(opts: argparse.Namespace) -> None:
    """The runner's asyncio-protocol echo server (hand-written line split)
    on asyncio or uvloop, serving one client child to the end."""
    import asyncio

    from asynframe.bench.scenarios import SERVERS_DIR

    # the runner's own protocol: its servers import their helper by name
    sys.path.insert(0, str(SERVERS_DIR))
    from asyncio_protocol_echo import EchoProtocol

    async def serve() -> float:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0, backlog=1024)
        port = server.sockets[0].getsockname()[1]
        child = await asyncio.create_subprocess_exec(*client_argv(opts, port))
        start = time.perf_counter()
        if await child.wait():
            raise SystemExit("client failed")
        elapsed = time.perf_counter() - start
        server.close()
        return elapsed

    if opts.server == "uvloop":
        import uvloop

        elapsed = uvloop.run(serve())
    else:
        elapsed = asyncio.run(serve())
    report(opts, elapsed)


def report(opts: argparse.Namespace, elapsed: float) -> None:
    print(
        "%s/%s: %d messages in %.3f s (%.0f msg/s, under this process's profiler if any)"
        % (opts.mode, opts.server, opts.messages, elapsed, opts.messages / elapsed),
        file=sys.stderr,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=sorted(MODES), default="pipelined")
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--server", choices=sorted(ASYNCHAT_STYLES) + sorted(ASYNCIO_SERVERS), default="legacy")
    ap.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    opts = ap.parse_args()
    conns, depth, size = MODES[opts.mode]
    if opts.client:
        run_client(opts.client, conns, depth, size, opts.messages)
        return

    if opts.server in ASYNCIO_SERVERS:
        serve_asyncio(opts)
        return
    from asynframe import asyncore

    EchoServer = make_asynchat_server(opts.server)
    server = EchoServer()
    port = server.socket.getsockname()[1]
    env = dict(os.environ)
    child = subprocess.Popen(
        client_argv(opts, port),
        env=env,
    )
    start = time.perf_counter()
    while child.poll() is None or len(asyncore.socket_map) > 1:
        asyncore.loop(timeout=0.05, use_poll=True, count=1)
    elapsed = time.perf_counter() - start
    server.close()
    asyncore.close_all()
    report(opts, elapsed)
    if child.returncode:
        raise SystemExit("client failed")


if __name__ == "__main__":
    main()
