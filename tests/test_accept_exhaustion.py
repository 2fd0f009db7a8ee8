"""Out of file descriptors: the listener pauses, stays open, and resumes.

A server in a subprocess (asynframe's echo with the stock dispatcher
listener, ``RLIMIT_NOFILE`` lowered to 64) is sent more clients than it
can hold.  accept() then fails with EMFILE: asyncore's handle_error closed
the listener for good (and a handle_error that kept it spun at 100% CPU).
Here the listener must stay open with no busy loop, the exhaustion must be
logged once, and new clients must be served once descriptors free up.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

psutil = pytest.importorskip("psutil")

pytestmark = [pytest.mark.api_layer, pytest.mark.timeout(120)]

SERVER = r"""
import resource, socket, sys
from asynframe import asynchat, asyncore
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

class Echo(asynchat.async_chat):
    def __init__(self, sock):
        asynchat.async_chat.__init__(self, sock)
        self.set_terminator(b"\n")
    collect_incoming_data = asynchat.async_chat._collect_incoming_data
    def found_terminator(self):
        self.push(self._get_data() + b"\n")

class Server(asyncore.dispatcher):
    def __init__(self):
        asyncore.dispatcher.__init__(self)
        self.create_socket()
        self.set_reuse_addr()
        self.bind(("127.0.0.1", 0))
        self.listen(256)
    def handle_accepted(self, sock, addr):
        Echo(sock)

server = Server()
print(server.socket.getsockname()[1], flush=True)
asyncore.loop(1.0, use_poll=sys.argv[1] == "1")
"""


def echo(sock, line):
    sock.sendall(line + b"\n")
    got = b""
    while not got.endswith(b"\n"):
        chunk = sock.recv(100)
        assert chunk, "closed"
        got += chunk
    return got[:-1]


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
def test_listener_survives_descriptor_exhaustion(use_poll):
    env = dict(os.environ)
    # log_info prints: unbuffered, so nothing is lost when the server is terminated
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("ASYNFRAME_LOGGING", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(int(use_poll))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    clients = []
    try:
        port = int(proc.stdout.readline())
        server = psutil.Process(proc.pid)
        first = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert echo(first, b"hello") == b"hello"
        # far more than 64 descriptors: the rest wait in the listen backlog
        for _ in range(120):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        time.sleep(0.5)
        before = server.cpu_times()
        time.sleep(2.0)
        after = server.cpu_times()
        busy = (after.user + after.system - before.user - before.system) / 2.0
        assert busy < 0.25, "server used %.0f%% of a CPU while paused" % (busy * 100)
        assert proc.poll() is None
        assert echo(first, b"still served") == b"still served"
        # free descriptors: the waiting clients get accepted by themselves
        for sock in clients[:100]:
            sock.close()
        del clients[:100]
        late = socket.create_connection(("127.0.0.1", port), timeout=10)
        clients.append(late)
        assert echo(late, b"late") == b"late"
        for sock in clients[:-1]:
            assert echo(sock, b"waited") == b"waited"
    finally:
        for sock in clients:
            sock.close()
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    # log_info writes to stdout, as asyncore's does: once per episode
    assert out.count("cannot accept") == 1, out[-3000:]
    assert "accepting connections again" in out, out[-3000:]
    assert "Traceback" not in err, err[-3000:]
