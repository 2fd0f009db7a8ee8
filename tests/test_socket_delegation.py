"""Python 2-style delegation of unknown dispatcher attributes to the socket.

Off by default (as in Python 3.6-3.11's asyncore); on per class with the
``asyncore.SocketDelegation`` mixin, for every class with
``asyncore.delegate_socket_attributes(True)`` or, at import,
``ASYNFRAME_SOCKET_DELEGATION=1``.  The file runs again on the pure core.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from asynframe import _poller, asynchat, asyncore

from support import ROOT, both_poll_modes, run_until

pytestmark = pytest.mark.api_layer

HERE = os.path.abspath(__file__)


@pytest.fixture
def delegation_off():
    yield
    asyncore.delegate_socket_attributes(False)


class Legacy(asyncore.SocketDelegation, asynchat.async_chat):
    """Python 2-era code: asks the channel, not its socket, for socket facts."""

    def __init__(self, sock, m):
        super().__init__(sock, map=m)
        self.set_terminator(b"\r\n")
        self.lines = []

    def collect_incoming_data(self, data):
        self._collect_incoming_data(data)

    def found_terminator(self):
        self.lines.append(self._get_data())
        # getsockname() and family come from the socket through the mixin
        self.push(b"%d %d\r\n" % (self.family, self.getsockname()[1] > 0))


def test_off_by_default():
    assert not asyncore.socket_delegation_enabled()
    a, b = socket.socketpair()
    with a, b:
        chan = asyncore.dispatcher(a, map={})
        assert not hasattr(chan, "family")
        with pytest.raises(AttributeError, match="getsockname"):
            chan.getsockname()
        # the dispatcher's own methods are not affected
        assert chan.readable() and chan.socket.family == socket.AF_UNIX


@both_poll_modes
def test_mixin_serves_socket_attributes(smap, use_poll):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server_side = listener.accept()[0]
    with client:
        chan = Legacy(server_side, smap)
        assert chan.getpeername() == client.getsockname()
        client.sendall(b"hello\r\n")
        got = []

        def received():
            try:
                got.append(client.recv(100))
            except BlockingIOError:
                pass
            return b"".join(got).endswith(b"\r\n")

        client.setblocking(False)
        run_until(received, smap, use_poll=use_poll)
        assert b"".join(got) == b"%d 1\r\n" % socket.AF_INET
        assert chan.lines == [b"hello"]


def test_mixin_errors_name_the_channel():
    a, b = socket.socketpair()
    with a, b:
        chan = Legacy(a, {})
        with pytest.raises(AttributeError, match="Legacy object has no attribute 'no_such_thing'"):
            chan.no_such_thing
        # dunder lookups are never delegated (copy, pickle and friends probe them)
        assert not hasattr(chan, "__getstate_never__")
    bare = Legacy.__new__(Legacy)
    with pytest.raises(AttributeError):
        bare.family  # no socket yet: no recursion into self.socket


def test_global_switch(delegation_off):
    a, b = socket.socketpair()
    with a, b:
        chan = asyncore.dispatcher(a, map={})
        asyncore.delegate_socket_attributes(True)
        assert asyncore.socket_delegation_enabled()
        assert chan.family == socket.AF_UNIX
        assert chan.fileno() == a.fileno()

        class Later(asyncore.dispatcher_with_send):
            pass

        assert Later(b, map={}).type == socket.SOCK_STREAM
        asyncore.delegate_socket_attributes(False)
        assert not asyncore.socket_delegation_enabled()
        assert not hasattr(chan, "family")
        asyncore.delegate_socket_attributes(False)  # idempotent


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_global_switch_rejects_non_bool(bad):
    with pytest.raises(TypeError, match="enabled must be a bool"):
        asyncore.delegate_socket_attributes(bad)
    assert not asyncore.socket_delegation_enabled()


def test_instance_attributes_shadow_socket_attributes(delegation_off):
    asyncore.delegate_socket_attributes(True)
    a, b = socket.socketpair()
    with a, b:
        chan = asyncore.dispatcher(a, map={})
        chan.timeout = 30  # legacy code kept its own settings on the channel
        assert chan.timeout == 30 and a.gettimeout() == 0.0


@pytest.mark.skipif(_poller.LOOP_IMPLEMENTATION != "c", reason="no compiled loop")
def test_delegating_channel_still_takes_fast_path(smap):
    a, b = socket.socketpair()
    with b:
        chan = Legacy(a, smap)
        poller = _poller.poller_for(smap)
        b.sendall(b"x\r\n")
        run_until(lambda: chan.lines == [b"x"], smap, use_poll=True)
        assert poller.fast_dispatches > 0


def test_environment_switch():
    code = (
        "import socket; from asynframe import asyncore;"
        "a, b = socket.socketpair();"
        "print(asyncore.socket_delegation_enabled(), asyncore.dispatcher(a, map={}).family == a.family)"
    )
    env = dict(os.environ, ASYNFRAME_SOCKET_DELEGATION="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]
