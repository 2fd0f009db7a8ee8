"""Every public setter of async_chat and the core, fed invalid and extreme values.

Run by tests/test_setter_equivalence.py once per core (the asynchat layer
binds its core at import).  Prints one JSON object: for each call, what it
raised (type and message) or "ok", and the state it left.  A rejected call
that changed the state is reported under "changed_on_error".
"""

from __future__ import annotations

import json
import socket
import sys

from asynframe import asynchat, asyncore

VALUES = [
    -(2**63) - 1,
    -(2**63),
    -1,
    0,
    1,
    7,
    2**31,
    sys.maxsize,
    sys.maxsize + 1,
    2**64,
    1.5,
    float("nan"),
    float("inf"),
    True,
    False,
    "3",
    "\r\n",
    None,
    b"",
    b"\r\n",
    bytearray(b"\n"),
    memoryview(b";"),
    [1],
]


def label(value):
    # repr() of a memoryview names its address: not comparable across runs
    return "memoryview(%r)" % bytes(value) if isinstance(value, memoryview) else repr(value)


class Chat(asynchat.async_chat):
    def __init__(self, sock=None, map=None):
        asynchat.async_chat.__init__(self, sock, map)
        self.frames = []
        self.errors = []
        self.data = []

    def collect_incoming_data(self, data):
        self.data.append(data)

    def found_terminator(self):
        self.frames.append(b"".join(self.data).decode("latin-1"))
        self.data = []

    def handle_error(self):
        kind, value = sys.exc_info()[:2]
        self.errors.append("%s: %s" % (kind.__name__, value))
        self.close()


def state(chat):
    return {
        "terminator": repr(chat.get_terminator()),
        "max_frame": repr(chat.max_frame),
        "limits": repr(chat.get_write_buffer_limits()),
        "idle": repr(chat.get_idle_timeout()),
        "connect": repr(chat.get_connect_timeout()),
    }


SETTERS = {
    "set_terminator": lambda chat, value: chat.set_terminator(value),
    "terminator=": lambda chat, value: setattr(chat, "terminator", value),
    "max_frame=": lambda chat, value: setattr(chat, "max_frame", value),
    "set_write_buffer_limits(high)": lambda chat, value: chat.set_write_buffer_limits(value),
    "set_write_buffer_limits(low)": lambda chat, value: chat.set_write_buffer_limits(low=value),
    "set_write_buffer_limits(high, 0)": lambda chat, value: chat.set_write_buffer_limits(value, 0),
    "set_idle_timeout": lambda chat, value: chat.set_idle_timeout(value),
    "set_connect_timeout": lambda chat, value: chat.set_connect_timeout(value),
}


def outcome(call):
    try:
        call()
    except Exception as exc:  # what each core raises is the point
        return "%s: %s" % (type(exc).__name__, exc)
    return "ok"


def setters():
    results, changed = {}, []
    for name, setter in SETTERS.items():
        for value in VALUES:
            chat = Chat(map={})
            chat.set_terminator(b"X")
            chat.max_frame = 100
            before = state(chat)
            result = outcome(lambda: setter(chat, value))
            after = state(chat)
            key = "%s(%s)" % (name, label(value))
            results[key] = [result, after]
            if result != "ok" and after != before:
                changed.append(key)
            # framing still works after whatever was accepted or refused
            if name in ("set_terminator", "terminator=") and result != "ok":
                chat._af_scanner.feed(chat, b"oneXtwoX")
                results[key].append(chat.frames)
    return results, changed


def buffer_sizes(use_poll):
    """ac_in_buffer_size / ac_out_buffer_size are read at each read/send."""
    results = {}
    for attribute in ("ac_in_buffer_size", "ac_out_buffer_size"):
        for value in VALUES:
            smap = {}
            left, right = socket.socketpair()
            if attribute == "ac_out_buffer_size":
                # only a socket-like object other than a plain socket is
                # written in ac_out_buffer_size pieces
                left = type("Sub", (socket.socket,), {})(left.family, left.type, fileno=left.detach())
            chat = Chat(left, smap)
            chat.set_terminator(b"\n")
            setattr(chat, attribute, value)
            right.sendall(b"ping\n")
            pushed = outcome(lambda: chat.push(b"pong\n"))
            for _ in range(3):
                asyncore.loop(0.01, use_poll, smap, count=1)
            right.setblocking(False)
            try:
                got = right.recv(100).decode("latin-1")
            except BlockingIOError:
                got = None
            results["%s=%s" % (attribute, label(value))] = [pushed, chat.frames, chat.errors, got]
            asyncore.close_all(smap)
            right.close()
    return results


def next_chunk_sizes():
    from asynframe._core import PushQueue

    results = {}
    for value in VALUES:
        queue = PushQueue()
        queue.push(b"0123456789")
        queue.consume(2)
        try:
            chunk = queue.next_chunk(value)
        except Exception as exc:
            chunk = "%s: %s" % (type(exc).__name__, exc)
        results["next_chunk(%s)" % label(value)] = repr(chunk)
    return results


set_results, changed = setters()
print(
    json.dumps(
        {
            "setters": set_results,
            "changed_on_error": changed,
            "buffers-select": buffer_sizes(False),
            "buffers-poll": buffer_sizes(True),
            "next_chunk": next_chunk_sizes(),
        }
    )
)
