"""A reply pushed in a handler reaches the peer as asynchat's would.

The server (tests/push_timing_server.py) runs in a subprocess on the
reference asynchat and on asynframe (each core, through the ``core``
fixture), with ``use_poll`` False and True, and with plain sockets (the
compiled path, where replies to pipelined frames are held for one send) or
a socket subclass that records every ``send()`` argument.  A client plays
the same scenarios against each: push then ``close()``/``del_channel()``/
``close_all()``, push then ``send()`` or ``self.socket.send()``, push then
STARTTLS by replacing ``self.socket``, push then a blocking ``accept()``
(FTP PASV), each sent line by line and pipelined, in plaintext and over
TLS.  What the client receives (bytes, EOF, where the TLS handshake and the
data connection happen) must be identical, and so must the sequence of
``send()`` arguments a recording socket saw; none may change after the call.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time

import pytest

import _certs
from support import load_reference_asynchat

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "push_timing_server.py")
STEP_TIMEOUT = 10.0

pytestmark = pytest.mark.timeout(240)

STLS = [("send", b"STLS\r\n"), ("lines", 1), ("tls",)]

# name -> steps; ("send", bytes), ("lines", n): read n more lines,
# ("tls",): client handshake, ("pasv",): connect to the port in the last
# line and read the data connection to its end, ("eof",): read to the end.
SCENARIOS = {
    "quit": [("send", b"ECHO a\r\n"), ("lines", 1), ("send", b"QUIT\r\n"), ("eof",)],
    "quit-pipelined": [("send", b"ECHO a\r\nECHO b\r\nQUIT\r\nECHO c\r\n"), ("eof",)],
    "quitdel": [("send", b"QUITDEL\r\n"), ("eof",)],
    "quitdel-pipelined": [("send", b"ECHO a\r\nQUITDEL\r\nECHO b\r\n"), ("eof",)],
    "send": [("send", b"SEND\r\n"), ("lines", 2), ("send", b"QUIT\r\n"), ("eof",)],
    "send-pipelined": [("send", b"ECHO a\r\nSEND\r\nECHO b\r\nQUIT\r\n"), ("eof",)],
    "direct": [("send", b"ECHO a\r\nDIRECT\r\n"), ("lines", 3), ("send", b"QUIT\r\n"), ("eof",)],
    "stls": STLS + [("send", b"ECHO x\r\n"), ("lines", 1), ("send", b"QUIT\r\n"), ("eof",)],
    "stls-pipelined": [
        ("send", b"ECHO a\r\nECHO b\r\nSTLS\r\n"),
        ("lines", 3),
        ("tls",),
        ("send", b"ECHO x\r\nQUIT\r\n"),
        ("eof",),
    ],
    "stls-set-socket": [
        ("send", b"STLSSET\r\n"),
        ("lines", 1),
        ("tls",),
        ("send", b"ECHO x\r\n"),
        ("lines", 1),
        ("send", b"QUIT\r\n"),
        ("eof",),
    ],
    "pasv": [("send", b"PASV\r\n"), ("lines", 1), ("pasv",), ("lines", 1), ("send", b"QUIT\r\n"), ("eof",)],
    "pasv-after-pipelined": [
        ("send", b"ECHO a\r\nECHO b\r\nPASV\r\n"),
        ("lines", 3),
        ("pasv",),
        ("lines", 1),
        ("send", b"QUIT\r\n"),
        ("eof",),
    ],
    "tls-quit-pipelined": STLS + [("send", b"ECHO a\r\nECHO b\r\nQUIT\r\nECHO c\r\n"), ("eof",)],
    "tls-send-direct": STLS
    + [("send", b"ECHO a\r\nSEND\r\nDIRECT\r\n"), ("lines", 5), ("send", b"QUITDEL\r\n"), ("eof",)],
    "tls-pasv": STLS + [("send", b"PASV\r\n"), ("lines", 1), ("pasv",), ("lines", 1), ("send", b"QUIT\r\n"), ("eof",)],
    # the last one: close_all() ends the server
    "quitall-pipelined": [("send", b"ECHO a\r\nQUITALL\r\nECHO b\r\n"), ("eof",)],
}

# What holding pipelined replies cannot keep exact: a handler that writes to
# self.socket itself, or blocks until the peer reacts, while the peer has
# already sent more requests.  hold_pipelined_replies = False restores it.
UNHELD_SCENARIOS = {
    "direct-pipelined": [("send", b"ECHO a\r\nDIRECT\r\nECHO b\r\nQUIT\r\n"), ("eof",)],
    "pasv-pipelined": [
        ("send", b"PASV\r\nECHO a\r\n"),
        ("lines", 1),
        ("pasv",),
        ("lines", 2),
        ("send", b"QUIT\r\n"),
        ("eof",),
    ],
    "quitall-pipelined": SCENARIOS["quitall-pipelined"],
}


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    where = tmp_path_factory.mktemp("push-timing")
    _server_ctx, client_ctx, cert, key = _certs.contexts(where, "server")
    return cert, key, client_ctx, where


class Client:
    """One connection: a transcript of what arrived and when."""

    def __init__(self, port, client_ctx):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=STEP_TIMEOUT)
        self.client_ctx = client_ctx
        self.buffer = b""
        self.transcript = []
        self.data_port = None

    def recv(self):
        try:
            return self.sock.recv(65536)
        except (ssl.SSLError, ConnectionResetError):
            return b""  # a TLS peer that closes without close_notify

    def run(self, steps):
        for step in steps:
            getattr(self, "do_" + step[0])(*step[1:])
        self.sock.close()
        return self.transcript

    def do_send(self, data):
        self.sock.sendall(data)

    def do_lines(self, count):
        deadline = time.monotonic() + STEP_TIMEOUT
        while self.buffer.count(b"\r\n") < count:
            if time.monotonic() > deadline:
                self.transcript.append(("timeout waiting for lines", self.buffer))
                raise AssertionError(self.transcript)
            data = self.recv()
            if not data:
                break
            self.buffer += data
        lines = self.buffer.split(b"\r\n")
        taken, self.buffer = lines[:count], b"\r\n".join(lines[count:])
        for index, line in enumerate(taken):
            if line.startswith(b"227 "):
                # the data port differs from run to run
                self.data_port = int(line.split()[1])
                taken[index] = b"227 <port>"
        self.transcript.append(("lines", taken))

    def do_eof(self):
        data = self.buffer
        while True:
            chunk = self.recv()
            if not chunk:
                break
            data += chunk
        self.buffer = b""
        self.transcript.append(("eof", data))

    def do_tls(self):
        assert not self.buffer, "plaintext after the STLS reply: %r" % self.buffer
        self.sock = self.client_ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.transcript.append(("tls", self.sock.version() is not None))

    def do_pasv(self):
        with socket.create_connection(("127.0.0.1", self.data_port), timeout=STEP_TIMEOUT) as data:
            received = b""
            while True:
                chunk = data.recv(65536)
                if not chunk:
                    break
                received += chunk
        self.transcript.append(("data", received))


def serve(impl, use_poll, record, hold, tls_files, scenarios, env=None):
    """Play *scenarios* against a fresh server: ({name: transcript}, send log)."""
    cert, key, client_ctx, where = tls_files
    log = os.path.join(str(where), "sends-%s-%d-%d-%s.json" % (impl, use_poll, record, hold))
    proc = subprocess.Popen(
        [sys.executable, SERVER, impl, str(int(use_poll)), str(int(record)), hold, cert, key, log],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        port = int(proc.stdout.readline())
        transcripts = {}
        for name, steps in scenarios.items():
            transcripts[name] = Client(port, client_ctx).run(steps)
        if "quitall-pipelined" not in scenarios:
            Client(port, client_ctx).run([("send", b"STOP\r\n"), ("eof",)])
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        _out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    with open(log) as f:
        return transcripts, json.load(f)


_reference = {}


def reference(use_poll, record, tls_files, scenarios_name):
    if load_reference_asynchat() is None:
        pytest.skip("reference asynchat unavailable (pip install pyasynchat pyasyncore)")
    key = (use_poll, record, scenarios_name)
    if key not in _reference:
        scenarios = SCENARIOS if scenarios_name == "held" else UNHELD_SCENARIOS
        _reference[key] = serve("stdlib", use_poll, record, "-", tls_files, scenarios)
    return _reference[key]


def asynframe_env(core):
    env = dict(os.environ)
    env.pop("ASYNFRAME_NO_EXTENSIONS", None)
    if core.IMPLEMENTATION == "python":
        env["ASYNFRAME_NO_EXTENSIONS"] = "1"
    return env


def ports_hidden(sends):
    return [[kind, re.sub(r"^227 \d+", "227 <port>", data)] for kind, data in sends]


def compare(got, ref):
    (got_transcripts, got_log), (ref_transcripts, ref_log) = got, ref
    for name in ref_transcripts:
        assert got_transcripts[name] == ref_transcripts[name], name
    assert ports_hidden(got_log["sends"]) == ports_hidden(ref_log["sends"])
    assert got_log["mutated"] == [] and ref_log["mutated"] == []


@pytest.mark.parametrize("record", [False, True], ids=["plain-socket", "recording-socket"])
@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
def test_replies_reach_the_peer_as_with_asynchat(core, use_poll, record, tls_files):
    ref = reference(use_poll, record, tls_files, "held")
    got = serve("asynframe", use_poll, record, "-", tls_files, SCENARIOS, asynframe_env(core))
    compare(got, ref)
    # the scenarios do reach the cases they are about
    transcripts = ref[0]
    assert transcripts["quit-pipelined"][-1] == ("eof", b"a\r\nb\r\n221 bye\r\n")
    assert transcripts["stls"][1] == ("tls", True)
    assert ("data", b"data over the data connection") in transcripts["pasv"]
    if record:
        assert [b"250 pushed\r\n", b"250 sent\r\n"] == [
            s[1].encode("latin-1") for s in ref[1]["sends"] if s[1].startswith("250")
        ][:2]


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
def test_without_holding_every_pattern_matches(core, use_poll, tls_files):
    ref = reference(use_poll, False, tls_files, "unheld")
    got = serve("asynframe", use_poll, False, "0", tls_files, UNHELD_SCENARIOS, asynframe_env(core))
    compare(got, ref)
    assert ref[0]["direct-pipelined"][-1] == ("eof", b"a\r\n250 pushed\r\n250 direct\r\nb\r\n221 bye\r\n")
