"""The README's "Recommended hardened configuration" block, run as written.

The block is taken from README.md itself, so the documented configuration
cannot drift from one that works: every defence it names is on, an echo
round trip works, a frame over the limit closes only that peer, and a peer
that half-closes still gets its reply.
"""

from __future__ import annotations

import logging
import os
import re
import socket

import pytest

from asynframe import diagnostics

from support import run_until

pytestmark = pytest.mark.api_layer

HERE = os.path.abspath(__file__)
README = os.path.join(os.path.dirname(HERE), os.pardir, "README.md")


def readme_block() -> str:
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Recommended hardened configuration", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python block in the README section"
    return match.group(1)


@pytest.fixture
def handler_class():
    namespace: dict = {"__name__": "readme_recommended"}
    was_logging = diagnostics.logging_enabled()
    try:
        exec(compile(readme_block(), "README.md", "exec"), namespace)
        yield namespace["Handler"]
    finally:
        diagnostics.use_logging(was_logging)


def test_every_defence_is_on(handler_class, smap):
    a, b = socket.socketpair()
    with b:
        chan = handler_class(a, smap)
        assert chan.max_frame == 8 * 1024
        assert chan.drain_on_eof is True
        assert chan.get_write_buffer_limits() == (64 * 1024, 256 * 1024)
        assert chan.get_idle_timeout() == 300
        assert diagnostics.logging_enabled()
        chan.close()


def test_echo_and_an_oversized_frame_closes_only_its_peer(handler_class, smap, caplog):
    a1, b1 = socket.socketpair()
    a2, b2 = socket.socketpair()
    with b1, b2:
        good = handler_class(a1, smap)
        bad = handler_class(a2, smap)
        b1.setblocking(False)
        b2.sendall(b"x" * (20 * 1024))
        b1.sendall(b"hello\r\n")
        got = bytearray()

        def echoed():
            try:
                got.extend(b1.recv(100))
            except BlockingIOError:
                pass
            return got == b"hello\r\n" and not bad.connected

        with caplog.at_level(logging.INFO, logger="asynframe"):
            run_until(echoed, smap)
        assert good.connected
        assert any("frame" in r.getMessage() for r in caplog.records), caplog.records


def test_half_closed_peer_gets_its_reply(handler_class, smap):
    a, b = socket.socketpair()
    with b:
        chan = handler_class(a, smap)
        b.sendall(b"ping\r\n")
        b.shutdown(socket.SHUT_WR)
        b.settimeout(10)
        run_until(lambda: not chan.connected, smap)
        data = b""
        while True:
            part = b.recv(100)
            if not part:
                break
            data += part
        assert data == b"ping\r\n"
