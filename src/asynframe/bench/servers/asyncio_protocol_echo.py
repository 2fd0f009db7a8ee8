"""Line echo server on ``asyncio.Protocol`` with a hand-written line split.

``--uvloop`` runs the very same protocol on uvloop's event loop.
"""

from __future__ import annotations

import argparse
import asyncio

import _lifecycle


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        buf = self.buf + data if self.buf else data
        start = 0
        write = self.transport.write
        while True:
            end = buf.find(b"\r\n", start)
            if end < 0:
                break
            write(buf[start : end + 2])
            start = end + 2
        self.buf = buf[start:]

    def connection_lost(self, exc):
        self.transport = None


async def main(info):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoProtocol, _lifecycle.HOST, 0, backlog=_lifecycle.BACKLOG)
    info["loop"] = type(loop).__module__ + "." + type(loop).__name__
    _lifecycle.announce(server.sockets[0].getsockname()[1], **info)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    _lifecycle.setup()
    if args.uvloop:
        try:
            import uvloop
        except ImportError:
            _lifecycle.skip("uvloop not installed (pip install uvloop)")
        info = {"impl": "uvloop", "version": uvloop.__version__}
        if hasattr(uvloop, "run"):
            uvloop.run(main(info))
        else:  # uvloop < 0.18
            uvloop.install()
            asyncio.run(main(info))
    else:
        asyncio.run(main({"impl": "asyncio-protocol"}))
