"""Line echo server written the way asyncore/asynchat users write it.

One source file serves three benchmark entries so that the application code
is literally identical:

* ``--impl asynframe``  ->  ``from asynframe import asynchat, asyncore``
  (run with ``ASYNFRAME_NO_EXTENSIONS=1`` for the pure-Python core);
* ``--impl stdlib``     ->  ``import asynchat, asyncore`` (the stdlib modules
  on Python <= 3.11, the ``pyasynchat``/``pyasyncore`` backports on 3.12+).

The loop runs with ``use_poll=True`` because plain ``select()`` cannot watch
file descriptors above FD_SETSIZE (1024), which the idle-connection scenario
needs; anyone running asyncore with thousands of sockets has to do the same.
"""

from __future__ import annotations

import argparse
import socket
import warnings

import _lifecycle

parser = argparse.ArgumentParser()
parser.add_argument("--impl", choices=["asynframe", "stdlib"], required=True)
# legacy: the usual pair of callbacks, collect_incoming_data calling the
# stock helper (two Python calls per line); stock: collect_incoming_data IS
# the stock helper, which asynframe's core then runs in C (one call per line,
# found_terminator); frames: asynframe's frame_received (one call per line)
parser.add_argument("--style", choices=["legacy", "stock", "frames"], default="legacy")
args = parser.parse_args()
_lifecycle.setup()

if args.impl == "asynframe":
    try:
        from asynframe import asynchat, asyncore
    except ImportError as exc:
        _lifecycle.skip(f"asynframe.asyncore/asynchat not importable ({exc})")
else:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import asynchat
            import asyncore
    except ImportError:
        _lifecycle.skip("no stdlib asyncore/asynchat (Python 3.12+: pip install pyasyncore pyasynchat)")
    if getattr(asynchat, "__asynframe__", False):
        _lifecycle.skip("'import asynchat' resolves to asynframe, not the stdlib/backport")


# --- the application: what a user of asynchat writes ----------------------


class EchoChannel(asynchat.async_chat):
    def __init__(self, sock):
        super().__init__(sock)
        self.set_terminator(b"\r\n")

    def collect_incoming_data(self, data):
        self._collect_incoming_data(data)

    def found_terminator(self):
        self.push(self._get_data() + b"\r\n")


class StockPairChannel(asynchat.async_chat):
    collect_incoming_data = asynchat.async_chat._collect_incoming_data

    def __init__(self, sock):
        super().__init__(sock)
        self.set_terminator(b"\r\n")

    def found_terminator(self):
        self.push(self._get_data() + b"\r\n")


class FramesChannel(asynchat.async_chat):
    def __init__(self, sock):
        super().__init__(sock)
        self.set_terminator(b"\r\n")

    def frame_received(self, frame):
        self.push(frame + b"\r\n")


if args.style == "frames" and args.impl != "asynframe":
    _lifecycle.skip("frame_received is asynframe's own")
CHANNEL = {"legacy": EchoChannel, "stock": StockPairChannel, "frames": FramesChannel}[args.style]


class EchoServer(asyncore.dispatcher):
    def __init__(self, host, port):
        super().__init__()
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind((host, port))
        self.listen(_lifecycle.BACKLOG)

    def handle_accepted(self, sock, addr):
        CHANNEL(sock)


# ---------------------------------------------------------------------------

server = EchoServer(_lifecycle.HOST, 0)
info = {"impl": args.impl, "style": args.style, "asynchat": getattr(asynchat, "__file__", "?")}
if args.impl == "asynframe":
    import asynframe

    info["core"] = asynframe.CORE_IMPLEMENTATION
    info["version"] = asynframe.__version__
_lifecycle.announce(server.socket.getsockname()[1], **info)
asyncore.loop(timeout=30.0, use_poll=True)
