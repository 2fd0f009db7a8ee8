"""Line echo server on asyncio streams: ``start_server`` + ``readuntil``."""

from __future__ import annotations

import asyncio

import _lifecycle


async def handle(reader, writer):
    try:
        while True:
            line = await reader.readuntil(b"\r\n")
            writer.write(line)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(handle, _lifecycle.HOST, 0, backlog=_lifecycle.BACKLOG)
    _lifecycle.announce(server.sockets[0].getsockname()[1], impl="asyncio-streams")
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    _lifecycle.setup()
    asyncio.run(main())
