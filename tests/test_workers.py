"""``asynframe.workers.serve``: N worker processes on one port.

A subprocess runs ``serve()`` with 2 workers on a loopback port (both with
``SO_REUSEPORT`` and with a socket shared across ``fork()``), each worker
answering with its pid.  Many connections are answered by at least two
distinct workers; SIGTERM to the parent leaves no child process and no
listening socket.  Both cores (an ``api_layer`` file).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from asynframe import workers

psutil = pytest.importorskip("psutil")

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))
pytestmark = [
    pytest.mark.api_layer,
    pytest.mark.timeout(90),
    pytest.mark.skipif(not hasattr(os, "fork"), reason="workers need fork()"),
]

SERVER = r"""
import json, os, sys
from asynframe import asynchat, asyncore, workers

class Pid(asynchat.async_chat):
    def __init__(self, sock):
        super().__init__(sock)
        self.set_terminator(b"\n")
    collect_incoming_data = asynchat.async_chat._collect_incoming_data
    def found_terminator(self):
        self.push(b"%d:%s\n" % (os.getpid(), self._get_data()))

class Server(asyncore.dispatcher):
    def __init__(self, sock):
        super().__init__()
        self.set_socket(sock)
    def handle_accepted(self, sock, addr):
        Pid(sock)

def ready(address, pids):
    print(json.dumps({"port": address[1], "pids": pids}), flush=True)

status = workers.serve(Server, ("127.0.0.1", 0), workers=2,
                       reuse_port=json.loads(sys.argv[1]), on_ready=ready, grace=5)
print(json.dumps({"status": status}), flush=True)
"""


def ask(port, n):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"q%d\n" % n)
        data = b""
        while not data.endswith(b"\n"):
            got = c.recv(100)
            assert got, "server closed early"
            data += got
    pid, echoed = data[:-1].split(b":")
    assert echoed == b"q%d" % n
    return int(pid)


def listening_on(port):
    return [
        c for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
    ]


modes = [False]
if workers.has_reuse_port():
    modes.insert(0, True)


@pytest.mark.parametrize("reuse_port", modes, ids=lambda v: "reuseport" if v else "shared")
def test_two_workers_share_the_port(reuse_port):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, json.dumps(reuse_port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    parent = psutil.Process(proc.pid)
    try:
        info = json.loads(proc.stdout.readline())
        port, pids = info["port"], info["pids"]
        assert len(pids) == 2
        assert {c.pid for c in parent.children()} == set(pids)
        seen = set()
        deadline = time.monotonic() + 30
        n = 0
        # fresh connections until both workers answered (and at least 200)
        while n < 200 or len(seen) < 2:
            assert time.monotonic() < deadline, "only workers %s answered" % seen
            seen.add(ask(port, n))
            n += 1
        assert seen == set(pids)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        status = json.loads(out.strip().splitlines()[-1])["status"]
        assert sorted(int(p) for p in status) == sorted(pids)
        assert set(status.values()) == {0}, status
        for pid in pids:
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert listening_on(port) == []
    finally:
        if proc.poll() is None:
            for child in parent.children(recursive=True):
                child.kill()
            proc.kill()
            proc.wait(10)


def test_sigint_stops_everything():
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, "false"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        info = json.loads(proc.stdout.readline())
        assert ask(info["port"], 1) in info["pids"]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert not any(psutil.pid_exists(p) for p in info["pids"])
        assert listening_on(info["port"]) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


FAILING = r"""
import sys
from asynframe import workers

def factory(sock):
    raise RuntimeError("factory failed")

try:
    workers.serve(factory, ("127.0.0.1", 0), workers=2, reuse_port=False, grace=2)
except RuntimeError as exc:
    print("raised:", exc, flush=True)
"""


def test_worker_failing_at_start_up_stops_all():
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    proc = subprocess.run([sys.executable, "-c", FAILING], env=env, capture_output=True, text=True, timeout=30)
    assert "raised: worker(s) exited during start-up" in proc.stdout, proc.stdout + proc.stderr
    assert "factory failed" in proc.stderr  # the worker's traceback is shown
    assert proc.returncode == 0


def test_bad_arguments():
    with pytest.raises(ValueError):
        workers.serve(lambda s: None, ("127.0.0.1", 0), workers=0)
    with pytest.raises(ValueError):
        workers.serve(lambda s: None, ("127.0.0.1", 0), workers=True)
    with pytest.raises(TypeError):
        workers.serve(None, ("127.0.0.1", 0), workers=1)
