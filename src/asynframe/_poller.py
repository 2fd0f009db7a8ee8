"""Persistent readiness registrations for one asyncore socket map.

asyncore rebuilds its select()/poll() sets from every channel on every
iteration: O(all sockets) Python calls per wakeup, and select() refuses
descriptors past 1,023.  A ``MapPoller`` keeps one epoll (or ``selectors``)
registration per channel across iterations and re-asks a channel for its
interest only when that can have changed:

* channels whose ``readable``/``writable`` are the stock ones of
  ``dispatcher``, ``dispatcher_with_send`` or ``async_chat`` report changes
  themselves (``touch``) and are re-checked after they handled an event;
* channels that override a predicate, and foreign objects put in the map,
  are polled every iteration exactly as asyncore does.

Events are dispatched to the object that was registered when the wait
returned, and only if the map still holds that very object at that
descriptor: a descriptor closed and reused within one iteration never
reaches the wrong channel.

The ready list is delivered by ``MapPoller._dispatch_generic`` (asyncore's
read/write/_exception/readwrite per event) or, with the compiled core on
epoll, by ``asynframe._loop_c.dispatch``: the same deliveries, but stock
``async_chat`` channels are read, scanned and flushed in C (see
docs/performance.md).  ``LOOP_IMPLEMENTATION`` says which is active.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from . import _backends, _core, _events
from ._events import BUFFERED, ERR, HUP, IN, OUT, PRI
from ._events import to_poll_flags as _to_poll_flags
from ._timers import LoopTimers, TimerHandle, Wakeup, check_delay, monotonic

_get_ident = threading.get_ident


Backend = _backends.Backend

# How a channel's interest is computed: a function of the channel for the
# stock predicates, None for "ask readable()/writable() every iteration".
InterestFn = Optional[Callable[[Any], int]]
_interest_cache: Dict[type, InterestFn] = {}
# Filled by asyncore/asynchat: {(readable function, writable function): interest}
STOCK_INTEREST: Dict[Tuple[Any, Any], Callable[[Any], int]] = {}
# Filled by asyncore: (handle_expt, handle_expt_event) pairs that only log.
# A channel that keeps such a pair does not wait for urgent data: EPOLLPRI
# is level-triggered, so one MSG_OOB byte that nobody consumes would wake
# the loop on every iteration for as long as the peer stays connected.
STOCK_EXPT: Set[Tuple[Any, Any]] = set()


# what _dispatch_generic leaves in place of an event once it is settled
# (its references go then, as the compiled twin drops them)
_SETTLED: Tuple[int, Any, int, int] = (-1, None, 0, 0)


def wants_urgent(obj: Any) -> bool:
    """Whether *obj* handles urgent data itself (overrides handle_expt*)."""
    attrs = getattr(obj, "__dict__", None)
    if attrs and ("handle_expt" in attrs or "handle_expt_event" in attrs):
        return True
    cls = type(obj)
    return (getattr(cls, "handle_expt", None), getattr(cls, "handle_expt_event", None)) not in STOCK_EXPT


def interest_fn(obj: Any) -> InterestFn:
    cls = type(obj)
    try:
        return _interest_cache[cls]
    except KeyError:
        pass
    fn = STOCK_INTEREST.get((getattr(cls, "readable", None), getattr(cls, "writable", None)))
    _interest_cache[cls] = fn
    return fn


def interest_fn_of(obj: Any) -> InterestFn:
    """``interest_fn``, but None for an object with predicates set on the
    instance (``chan.writable = ...``): asyncore calls those as well."""
    fn = interest_fn(obj)
    if fn is not None:
        attrs = getattr(obj, "__dict__", None)
        if attrs and ("readable" in attrs or "writable" in attrs):
            return None
    return fn


def polled_interest(obj: Any) -> int:
    """asyncore's own rule: ask the predicates; listeners are never writable."""
    mask = 0
    # after the end of file (async_chat.drain_on_eof) the socket stays
    # readable for good: waiting for it would spin
    if obj.readable() and not getattr(obj, "_af_eof", False):
        mask = IN
    if obj.writable() and not obj.accepting:
        mask |= OUT
    return mask


class MapPoller:
    """The registrations of one socket map (see the module docstring)."""

    def __init__(self, socket_map: Dict[Any, Any]) -> None:
        self.map = socket_map
        self.backend = Backend()
        # the compiled dispatch's receive area for this loop (_loop_c), made
        # on its first read
        self.read_area: Any = None
        # fd -> [object, registered mask (0: not in the backend), interest fn]
        self.known: Dict[Any, List[Any]] = {}
        # objects asked for their predicates every iteration
        self.polled: Dict[Any, Any] = {}
        # objects whose interest may have changed since it was registered
        self.dirty: Dict[Any, Any] = {}
        # descriptors epoll refuses (regular files): always ready, as select says
        self.always_ready: Dict[Any, Any] = {}
        # TLS channels with decrypted input the descriptor will not announce
        # again: read at the next iteration (refilled as interest is evaluated)
        self.buffered: Dict[Any, Any] = {}
        self.expected_len = -1
        # entries with a non-zero mask in the backend
        self.registered = 0
        # True once an object that is no dispatcher was found in the map: the
        # code managing those writes the map directly (del + add in one
        # iteration keeps its size), so the map is compared in full each time
        self.has_foreign = False
        # debug counters: wakeups, and channels whose interest was evaluated
        # (tests assert the latter grows with activity, not with map size)
        self.iterations = 0
        self.interest_checks = 0
        # handler invocations (a read, write, urgent or poll-style readwrite
        # event delivered to one channel): by the compiled fast path, and by
        # asyncore's read/write/_exception/readwrite
        self.fast_dispatches = 0
        self.generic_dispatches = 0
        # collect_incoming_data calls the compiled loop made unnecessary: the
        # method only handed the chunk to _collect_incoming_data, and the core
        # appended it itself (asynframe._callback_shapes)
        self.collects_in_core = 0
        # call_later/call_soon_threadsafe state, created on first use
        # (asynframe._timers); the wakeup descriptor is registered with the
        # backend only, never put in the map nor counted in ``registered``
        self.timers: Optional[LoopTimers] = None
        self.wakeup_fd = -1
        # the thread polling this map: set by every iteration, cleared when
        # asyncore.loop() returns; calls from other threads are handed to it
        self.loop_thread: Optional[int] = None

    # -- timers ------------------------------------------------------------------
    def get_timers(self) -> LoopTimers:
        timers = self.timers
        if timers is None:
            with _lock:
                timers = self.timers
                if timers is None:
                    timers = self.timers = LoopTimers()
        return timers

    def ensure_wakeup(self) -> LoopTimers:
        """The timers, with a wakeup descriptor registered (any thread)."""
        timers = self.get_timers()
        if timers.wakeup is None:
            with _lock:
                if timers.wakeup is None:
                    wakeup = Wakeup()
                    try:
                        self.backend.register(wakeup.fileno(), IN)
                    except BaseException:
                        wakeup.close()
                        raise
                    self.wakeup_fd = wakeup.fileno()
                    timers.wakeup = wakeup
        return timers

    def reset_timers(self) -> None:
        """Cancel all timers and close the wakeup descriptor (close_all)."""
        with _lock:
            timers = self.timers
            if timers is None:
                return
            timers.clear()
            wakeup = timers.wakeup
            if wakeup is not None:
                timers.wakeup = None
                fd = self.wakeup_fd
                self.wakeup_fd = -1
                try:
                    self.backend.unregister(fd)
                except (OSError, ValueError, KeyError):
                    pass
                wakeup.close()

    def has_pending_timers(self) -> bool:
        timers = self.timers
        return timers is not None and timers.pending()

    # -- membership ----------------------------------------------------------
    def added(self, fd: Any, obj: Any) -> None:
        """``map[fd] = obj`` happened (add_channel)."""
        # The map grew by one unless *fd* was in it already; only a size
        # that disagrees means changes behind our back (a full _resync per
        # accepted connection would make serving N clients O(N**2)).
        was_there = fd in self.known or fd in self.dirty
        self.dirty[fd] = obj
        if self.expected_len >= 0 and len(self.map) == self.expected_len + (not was_there):
            self.expected_len = len(self.map)
        else:
            self.expected_len = -1

    def removed(self, fd: Any, obj: Any) -> None:
        """``del map[fd]`` happened (del_channel): drop the registration now,
        before the descriptor is closed and its number reused."""
        entry = self.known.get(fd)
        if entry is not None and entry[0] is obj:
            self._forget(fd, entry)
        self.dirty.pop(fd, None)
        self.polled.pop(fd, None)
        # del_channel deletes map[fd] right after this call
        if self.expected_len == len(self.map) and fd in self.map:
            self.expected_len -= 1
        else:
            self.expected_len = -1
        if getattr(obj, "_af_poller", None) is self:
            obj._af_poller = None

    def touch(self, obj: Any) -> None:
        """A stock channel's interest may have changed (push, connect, ...)."""
        fd = getattr(obj, "_fileno", None)
        if fd is not None:
            self.dirty[fd] = obj

    def _forget(self, fd: Any, entry: List[Any]) -> None:
        del self.known[fd]
        self.always_ready.pop(fd, None)
        if entry[1]:
            self.registered -= 1
            try:
                self.backend.unregister(fd)
            except (OSError, ValueError, KeyError):
                pass  # already closed: the kernel dropped it

    def _resync(self) -> None:
        """Full comparison with the map: after changes made behind our back."""
        socket_map = self.map
        for fd, entry in list(self.known.items()):
            if socket_map.get(fd) is not entry[0]:
                self._forget(fd, entry)
                self.polled.pop(fd, None)
        for fd, obj in list(socket_map.items()):
            known = self.known.get(fd)
            if known is None or known[0] is not obj:
                self.dirty[fd] = obj
        self.expected_len = len(socket_map)

    # -- interest --------------------------------------------------------------
    def _update(self, fd: Any, obj: Any, mask: int) -> None:
        tls = getattr(obj, "_af_tls", None)
        if tls is not None:
            # the handshake, the ciphertext backlog and buffered input decide too
            mask = tls.interest(obj, mask)
            if mask & BUFFERED:
                mask &= ~BUFFERED
                self.buffered[fd] = obj
        if mask & IN and getattr(obj, "_af_accept_paused", False):
            # a listener out of descriptors: see dispatcher._af_pause_accepting
            mask &= ~IN
        if mask and self.backend.supports_pri and wants_urgent(obj):
            mask |= PRI
        entry = self.known.get(fd)
        if entry is not None and entry[0] is not obj:
            self._forget(fd, entry)
            entry = None
        if entry is None:
            entry = self.known[fd] = [obj, 0, None]
            try:
                obj._af_poller = self
            except AttributeError:
                pass
        if entry[1] == mask:
            return
        backend = self.backend
        try:
            if not mask:
                backend.unregister(fd)
            elif entry[1]:
                backend.modify(fd, mask)
            else:
                backend.register(fd, mask)
        except FileExistsError:
            # the number was registered by a socket closed without del_channel
            backend.modify(fd, mask)
        except FileNotFoundError:
            # closed and reopened behind our back: the kernel forgot it
            if mask:
                backend.register(fd, mask)
        except PermissionError:
            # epoll refuses regular files; select calls them always ready
            self.always_ready[fd] = obj
        except (OSError, ValueError, TypeError):
            if mask:
                raise
        self.registered += bool(mask) - bool(entry[1])
        entry[1] = mask

    def _refresh(self) -> None:
        socket_map = self.map
        if self.has_foreign or len(socket_map) != self.expected_len:
            self._resync()
        self.iterations += 1
        self.interest_checks += len(self.dirty) + len(self.polled)
        if self.dirty:
            dirty = self.dirty
            self.dirty = {}
            for fd, obj in dirty.items():
                if socket_map.get(fd) is not obj:
                    continue
                fn = interest_fn_of(obj)
                if fn is None:
                    self.polled[fd] = obj
                    if not hasattr(type(obj), "_af_poller"):
                        self.has_foreign = True
                    continue
                self.polled.pop(fd, None)
                self._update(fd, obj, fn(obj))
        for fd, obj in list(self.polled.items()):
            if socket_map.get(fd) is not obj:
                del self.polled[fd]
                continue
            self._update(fd, obj, polled_interest(obj))

    # -- one iteration -----------------------------------------------------------
    def poll_once(self, timeout: Optional[float], poll_semantics: bool) -> None:
        """Wait up to *timeout* seconds and dispatch what is ready.

        *poll_semantics* selects asyncore.poll2's event handling (hang-up and
        error conditions call handle_close) over asyncore.poll's (they show
        up as readable/writable, as select() reports them).
        """
        self.loop_thread = _get_ident()
        self._refresh()
        timers = self.timers
        if timers is not None:
            timeout = timers.clamp(timeout)
        buffered = self.buffered
        if not self.registered and not self.always_ready and self.wakeup_fd < 0 and not buffered:
            # asyncore sleeps when nothing is waited on, rather than spinning
            if timers is not None:
                if timeout:
                    timers.sleep(timeout)
                timers.run()
            elif timeout:
                time.sleep(timeout)
            return
        if self.always_ready or buffered:
            self._wait_dispatch(0, poll_semantics, buffered, timers)
        elif _fast is not None and type(self.backend) is _backends.EpollBackend:
            # the same wait and dispatch, with the ready list kept in C
            wakeup_fd = self.wakeup_fd if timers is not None else -1
            _fast.wait_dispatch(self, self.backend.fileno(), timeout, poll_semantics, wakeup_fd, timers)
        else:
            self._wait_dispatch(timeout, poll_semantics, buffered, timers)
        if timers is not None:
            timers.run()

    def _wait_dispatch(
        self, timeout: Optional[float], poll_semantics: bool, buffered: Dict[Any, Any], timers: Any
    ) -> None:
        """Wait on the backend, then dispatch what is ready (with TLS layers'
        held input and the timers' wakeup descriptor taken into account)."""
        events = self.backend.poll(timeout)
        if buffered:
            # input decrypted and held inside a TLS layer: a read event of its own
            self.buffered = {}
            known = self.known
            merged = dict(events)
            for fd, obj in buffered.items():
                entry = known.get(fd)
                if entry is not None and entry[0] is obj and entry[1] & IN:
                    merged[fd] = merged.get(fd, 0) | IN
            events = list(merged.items())
        if self.wakeup_fd >= 0 and timers is not None:
            wakeup_fd = self.wakeup_fd
            for fd, _flags in events:
                if fd == wakeup_fd:
                    timers.drain()
                    break
        if _fast is not None and not self.always_ready:
            _fast.dispatch(self, events, poll_semantics)
        else:
            self._dispatch_generic(events, poll_semantics)

    def _dispatch_generic(self, events: List[Tuple[int, int]], poll_semantics: bool) -> None:
        """Deliver the events of one wait (the pure twin of ``_loop_c.dispatch``)."""
        read, write, _exception, readwrite = (_events.read, _events.write, _events.exception, _events.readwrite)
        known = self.known
        ready: List[Tuple[int, Any, int, int]] = []
        for fd, flags in events:
            entry = known.get(fd)
            if entry is not None:
                ready.append((fd, entry[0], flags, entry[1]))
        for fd, obj in self.always_ready.items():
            entry = known.get(fd)
            if entry is not None:
                ready.append((fd, obj, entry[1] & (IN | OUT), entry[1]))
        socket_map = self.map
        dirty = self.dirty
        # each event's references go once it is settled (the compiled twin
        # drops them there too, and asyncore's loop rebinds its obj)
        if poll_semantics:
            for index, (fd, obj, flags, _registered) in enumerate(ready):
                ready[index] = _SETTLED
                if socket_map.get(fd) is not obj:
                    continue
                self.generic_dispatches += 1
                readwrite(obj, _to_poll_flags(flags))
                if socket_map.get(fd) is obj:
                    dirty[fd] = obj
        else:
            # asyncore.poll(): all reads, then all writes, then exceptions
            for fd, obj, flags, registered in ready:
                if flags & (IN | ERR | HUP) and registered & IN and socket_map.get(fd) is obj:
                    self.generic_dispatches += 1
                    read(obj)
            for fd, obj, flags, registered in ready:
                if flags & (OUT | ERR | HUP) and registered & OUT and socket_map.get(fd) is obj:
                    self.generic_dispatches += 1
                    write(obj)
            for fd, obj, flags, _registered in ready:
                if flags & PRI and socket_map.get(fd) is obj:
                    self.generic_dispatches += 1
                    _exception(obj)
            for index, (fd, obj, _flags, _registered) in enumerate(ready):
                ready[index] = _SETTLED
                # a channel closed meanwhile must not hide a new one that
                # got its descriptor number in this same iteration
                if socket_map.get(fd) is obj:
                    dirty[fd] = obj

    def close(self) -> None:
        self.reset_timers()
        for fd, entry in list(self.known.items()):
            obj = entry[0]
            if getattr(obj, "_af_poller", None) is self:
                obj._af_poller = None
        self.known.clear()
        self.polled.clear()
        self.dirty.clear()
        self.buffered.clear()
        self.backend.close()


# The compiled dispatch (asynframe._loop_c) once enable_fast_path() bound it;
# None: MapPoller._dispatch_generic delivers every event.
_fast: Any = None
#: "c" when ready lists are dispatched by the compiled loop, else "python".
LOOP_IMPLEMENTATION = "python"


def compiled_loop() -> Any:
    """The compiled loop module (asynframe._loop_c) if it can serve, else None.

    Only with the compiled core (the loop's C code calls the core's C-level
    API; ``ASYNFRAME_NO_EXTENSIONS=1`` therefore turns both off) and on epoll.
    """
    if _core.IMPLEMENTATION != "c" or Backend is not _backends.EpollBackend:
        return None
    try:
        from . import _loop_c
    except ImportError:  # an install built before the loop had its extension
        return None
    return _loop_c


def enable_fast_path(chat_class: type) -> None:
    """Let stock *chat_class* channels skip Python event dispatch (asynchat calls
    this once, after defining async_chat).  A no-op where ``compiled_loop()``
    is None."""
    global _fast, LOOP_IMPLEMENTATION
    loop_c = compiled_loop()
    if loop_c is None:
        return
    loop_c.configure(chat_class, socket.socket)
    _fast = loop_c
    LOOP_IMPLEMENTATION = "c"


# Guards creating and dropping pollers, timers and wakeup descriptors, which
# call_soon_threadsafe may do from any thread.
_lock = threading.RLock()

# Pollers by map identity.  The default socket_map's poller lives as long as
# the process; pollers of custom maps are dropped when their map is found
# empty after a loop, or when more than _MAX_CUSTOM maps are in use.
_pollers: Dict[int, MapPoller] = {}
_MAX_CUSTOM = 16


def call_later(
    socket_map: Dict[Any, Any], delay: float, callback: Callable[..., Any], args: Tuple[Any, ...]
) -> TimerHandle:
    """Schedule ``callback(*args)`` on the loop of *socket_map* (asyncore.call_later)."""
    when = check_delay(delay)
    if not callable(callback):
        raise TypeError("callback must be callable, not %s" % type(callback).__name__)
    poller = poller_for(socket_map)
    assert poller is not None
    return poller.get_timers().call_at(monotonic() + when, callback, args)


def call_soon_threadsafe(socket_map: Dict[Any, Any], callback: Callable[..., Any], args: Tuple[Any, ...]) -> None:
    """Have the loop of *socket_map* call ``callback(*args)`` (asyncore.call_soon_threadsafe)."""
    if not callable(callback):
        raise TypeError("callback must be callable, not %s" % type(callback).__name__)
    with _lock:
        # under the lock: the loop thread may drop an idle poller meanwhile
        poller = poller_for(socket_map)
        assert poller is not None
        timers = poller.ensure_wakeup()
        timers.call_soon_threadsafe(callback, args)


def off_loop_thread(channel: Any) -> bool:
    """True when *channel*'s map is being polled by a thread other than this one.

    Then a call that changes the channel (push, close, ...) is handed to the
    loop's thread with ``call_soon_threadsafe`` instead of racing it.
    """
    poller = channel._af_poller
    if poller is None:
        return False
    owner = poller.loop_thread
    return owner is not None and owner != _get_ident()


def poller_for(socket_map: Dict[Any, Any], create: bool = True) -> Optional[MapPoller]:
    poller = _pollers.get(id(socket_map))
    if poller is not None and poller.map is socket_map:
        return poller
    if not create:
        return None
    with _lock:
        poller = _pollers.get(id(socket_map))
        if poller is not None:
            if poller.map is socket_map:
                return poller  # another thread made it meanwhile
            _drop(id(socket_map))  # a dead map's id was reused
        if len(_pollers) > _MAX_CUSTOM:
            # pollers holding timers keep them, and a loop running in another
            # thread keeps its poller: those are not dropped
            idle = [key for key, p in _pollers.items() if not p.has_pending_timers() and p.loop_thread is None]
            for key in idle[: len(_pollers) - _MAX_CUSTOM]:
                _drop(key)
        poller = _pollers[id(socket_map)] = MapPoller(socket_map)
        return poller


def _drop(key: int) -> None:
    with _lock:
        poller = _pollers.pop(key, None)
        if poller is not None:
            poller.close()


def release(socket_map: Dict[Any, Any], keep: Optional[Dict[Any, Any]] = None) -> None:
    """Forget the poller of *socket_map* if it is empty (and not *keep*)."""
    if socket_map is keep or socket_map:
        return
    with _lock:
        poller = _pollers.get(id(socket_map))
        if poller is not None and poller.map is socket_map and not poller.has_pending_timers():
            _drop(id(socket_map))


__all__ = [
    "MapPoller",
    "poller_for",
    "release",
    "enable_fast_path",
    "LOOP_IMPLEMENTATION",
    "STOCK_INTEREST",
    "STOCK_EXPT",
    "wants_urgent",
    "IN",
    "OUT",
    "PRI",
]
