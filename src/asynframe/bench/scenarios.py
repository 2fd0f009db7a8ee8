"""What the benchmark measures: the servers, the scenarios and the run lengths.

Also where the runner finds its parts: the echo servers and the load
generator are scripts next to this module, run as their own processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

HERE = Path(__file__).resolve().parent
# the directory holding the asynframe package this runner belongs to: the
# servers import asynframe from there too, so they run the code under test
# (a wheel's site-packages, or a checkout's src/ built in place)
PACKAGE_PARENT = HERE.parent.parent
SERVERS_DIR = HERE / "servers"
LOADGEN = HERE / "loadgen.py"
DEFAULT_RESULTS_DIR = Path("asynframe-bench-results")
REFERENCE = "asynframe-c"
NOISE = 0.25  # CPUs' worth of foreign work above which a measurement is flagged

SERVERS: Dict[str, Dict[str, Any]] = {
    "asynframe-c": {
        "argv": ["asynchat_echo.py", "--impl", "asynframe"],
        "env": {"ASYNFRAME_NO_EXTENSIONS": None},
        "expect_core": "c",
        "about": "asynframe.asynchat/asyncore, compiled core",
    },
    "asynframe-c-stock": {
        "argv": ["asynchat_echo.py", "--impl", "asynframe", "--style", "stock"],
        "env": {"ASYNFRAME_NO_EXTENSIONS": None},
        "expect_core": "c",
        "only": ["reqresp"],
        "about": "the same, collect_incoming_data = async_chat._collect_incoming_data (one Python call per line)",
    },
    "asynframe-c-frames": {
        "argv": ["asynchat_echo.py", "--impl", "asynframe", "--style", "frames"],
        "env": {"ASYNFRAME_NO_EXTENSIONS": None},
        "expect_core": "c",
        "only": ["reqresp"],
        "about": "the same with frame_received(frame) instead of the pair (one Python call per line)",
    },
    "asynframe-py": {
        "argv": ["asynchat_echo.py", "--impl", "asynframe"],
        "env": {"ASYNFRAME_NO_EXTENSIONS": "1"},
        "expect_core": "python",
        "about": "asynframe.asynchat/asyncore, ASYNFRAME_NO_EXTENSIONS=1",
    },
    "stdlib-asynchat": {
        "argv": ["asynchat_echo.py", "--impl", "stdlib"],
        "about": "stdlib asynchat/asyncore (pyasynchat/pyasyncore on 3.12+), same code",
    },
    "asynframe-aio": {
        "argv": ["aio_echo.py"],
        "env": {"ASYNFRAME_NO_EXTENSIONS": None},
        "about": "the same async_chat code on asynframe.aio.ChatProtocol, asyncio loop",
    },
    "asynframe-uvloop": {
        "argv": ["aio_echo.py", "--uvloop"],
        "env": {"ASYNFRAME_NO_EXTENSIONS": None},
        "about": "the same async_chat code on asynframe.aio.ChatProtocol, uvloop",
    },
    "asyncio-protocol": {
        "argv": ["asyncio_protocol_echo.py"],
        "about": "asyncio.Protocol, hand-written line split",
    },
    "asyncio-streams": {
        "argv": ["asyncio_streams_echo.py"],
        "about": "asyncio.start_server + readuntil + drain",
    },
    "uvloop": {
        "argv": ["asyncio_protocol_echo.py", "--uvloop"],
        "about": "the asyncio-protocol server on uvloop",
    },
    "twisted": {
        "argv": ["twisted_echo.py"],
        "about": "twisted LineReceiver, default reactor",
    },
}

SCENARIOS: Dict[str, Dict[str, Any]] = {
    "pipelined": {
        "title": "pipelined 32 B lines",
        "mode": "window",
        "conns": 10,
        "depth": 100,
        "size": 32,
        "unit": "msg/s",
        "about": "10 connections, 100 lines in flight each, 32-byte lines",
    },
    "reqresp": {
        "title": "request/response 64 B",
        "mode": "window",
        "conns": 100,
        "depth": 1,
        "size": 64,
        "unit": "msg/s",
        "about": "100 connections, 1 request in flight each, 64-byte lines",
    },
    "large": {
        "title": "large 16 KiB messages",
        "mode": "window",
        "conns": 10,
        "depth": 4,
        "size": 16384,
        "unit": "MB/s",
        "about": "10 connections, 4 x 16 KiB lines in flight each; MB/s = 10^6 bytes echoed back per second",
    },
    "idle": {
        "title": "req/resp + idle conns",
        "mode": "idle",
        "conns": 10,
        "depth": 1,
        "size": 64,
        "unit": "msg/s",
        "about": "10 connections doing request/response (64 B) while N idle connections are open; "
        "compared with the same 10 connections and no idle ones",
    },
    "accept": {
        "title": "connect+echo+close",
        "mode": "accept",
        "conns": 20,
        "size": 64,
        "unit": "conn/s",
        "about": "20 parallel cycles of connect, one 64-byte echo, close",
    },
}

FULL = {"duration": 3.0, "repeats": 3, "warmup": 1.0, "idle": 10000, "rotation_cycles": 8}
QUICK = {"duration": 1.0, "repeats": 1, "warmup": 0.3, "idle": 2000, "rotation_cycles": 2}
