"""asynframe.loops: one server on asynframe's loop, asyncio or uvloop.

Each loop runs in a child process (run_server installs signal handlers and
blocks until a signal): it serves line echo, a client checks a round trip,
then SIGTERM must end the server with every connection closed and exit
status 0.  Loopback only; every child is killed at the end of its test.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from asynframe import loops

pytestmark = [pytest.mark.api_layer, pytest.mark.timeout(60)]

SERVER = textwrap.dedent("""
    import sys
    from asynframe import aio, asynchat, asyncore, loops

    class Echo(asynchat.async_chat):
        def __init__(self, sock):
            super().__init__(sock)
            self.set_terminator(b"\\n")
        def frame_received(self, line):
            self.push(line + b"\\n")

    class Listener(asyncore.dispatcher):
        def __init__(self, host, port):
            super().__init__()
            self.create_socket()
            self.set_reuse_addr()
            self.bind((host, port))
            self.listen(8)
        def handle_accepted(self, sock, addr):
            Echo(sock)

    class AioEcho(aio.ChatProtocol):
        def __init__(self):
            super().__init__()
            self.set_terminator(b"\\n")
        def frame_received(self, line):
            self.push(line + b"\\n")

    loops.run_server(sys.argv[1], "127.0.0.1", 0,
                     asyncore_server=Listener, protocol_factory=AioEcho,
                     on_listening=lambda address: print(address[1], flush=True))
    print("stopped", flush=True)
""")


def available(kind):
    return kind != "uvloop" or importlib.util.find_spec("uvloop") is not None


@pytest.mark.parametrize("kind", loops.LOOPS)
def test_serves_then_sigterm_closes_everything(kind):
    if not available(kind):
        pytest.skip("uvloop is not installed")
    child = subprocess.Popen(
        [sys.executable, "-c", SERVER, kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        port = int(child.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"hello\n")
            reply = b""
            while not reply.endswith(b"\n"):
                data = conn.recv(100)
                assert data, "server closed before replying"
                reply += data
            assert reply == b"hello\n"
            child.send_signal(signal.SIGTERM)
            # the open connection is closed by the server on its way out
            assert conn.recv(100) == b""
        out, err = child.communicate(timeout=20)
        assert child.returncode == 0, err
        assert out.strip() == "stopped", (out, err)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()


def test_unknown_loops_are_refused_before_anything_listens():
    with pytest.raises(ValueError, match="unknown loop 'tornado'"):
        loops.run_server("tornado", "127.0.0.1", 0, asyncore_server=None, protocol_factory=None)
    with pytest.raises(ValueError, match="one of: asyncio, uvloop"):
        loops.new_event_loop("asynframe")


def test_new_event_loop_makes_a_fresh_loop():
    loop = loops.new_event_loop("asyncio")
    try:
        assert not loop.is_running() and not loop.is_closed()
        assert loop.run_until_complete(_answer()) == 42
    finally:
        loop.close()


async def _answer():
    return 42
