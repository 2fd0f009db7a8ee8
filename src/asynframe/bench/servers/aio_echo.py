"""Line echo server on ``asynframe.aio.ChatProtocol`` (the framing core under asyncio).

The application code is the asynchat echo of ``asynchat_echo.py``, moved onto
an asyncio transport; ``--uvloop`` runs it on uvloop's event loop.
"""

from __future__ import annotations

import argparse
import asyncio

import _lifecycle


def make_protocol():
    from asynframe import aio

    class EchoChat(aio.ChatProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            self.set_terminator(b"\r\n")

        def collect_incoming_data(self, data):
            self._collect_incoming_data(data)

        def found_terminator(self):
            self.push(self._get_data() + b"\r\n")

    return EchoChat


async def main(info):
    import asynframe

    loop = asyncio.get_running_loop()
    server = await loop.create_server(make_protocol(), _lifecycle.HOST, 0, backlog=_lifecycle.BACKLOG)
    info["loop"] = type(loop).__module__ + "." + type(loop).__name__
    info["core"] = asynframe.CORE_IMPLEMENTATION
    _lifecycle.announce(server.sockets[0].getsockname()[1], **info)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    _lifecycle.setup()
    import asynframe

    info = {"impl": "asynframe.aio", "version": asynframe.__version__}
    if args.uvloop:
        try:
            import uvloop
        except ImportError:
            _lifecycle.skip("uvloop not installed (pip install uvloop)")
        if hasattr(uvloop, "run"):
            uvloop.run(main(info))
        else:  # uvloop < 0.18
            uvloop.install()
            asyncio.run(main(info))
    else:
        asyncio.run(main(info))
