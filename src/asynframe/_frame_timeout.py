"""The frame timeout: a bound on how long one frame may take to arrive whole.

An idle timeout restarts at every byte, so a peer that trickles one byte
every second keeps a connection (and, with ``max_frame``, up to that many
bytes of buffer) for hours.  ``set_frame_timeout(seconds)`` closes the
channel when a frame's first byte arrived more than *seconds* ago and its
terminator still has not: the clock starts with the frame, not with the
last byte, so trickling cannot extend it.

The host class (``async_chat``, ``aio.ChatProtocol``) keeps its scanner in
``_af_scanner`` (the core's ``frame_count`` and ``partial_size`` tell when a
frame starts and ends), calls ``_af_frame_check(frames_before)`` after each
read, and provides ``_af_call_later(delay, callback)`` on its own loop.
The cost is one timer entry per channel with a frame in progress, and one
attribute test per read when the timeout is off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from ._timers import check_delay


class FrameTimeout:
    """Mixin: ``set_frame_timeout``/``handle_frame_timeout`` for a framing channel."""

    _af_scanner: Any
    _af_frame_timeout: Optional[float] = None
    _af_frame_timer: Any = None

    if TYPE_CHECKING:
        # provided by the host class: dispatcher's (ChannelTimers) for
        # async_chat, the running asyncio loop's for aio.ChatProtocol
        def _af_call_later(self, delay: float, callback: Any) -> Any: ...

    def set_frame_timeout(self, seconds: Optional[float]) -> None:
        """Close the channel when a frame is not complete *seconds* after its first byte.

        ``handle_frame_timeout()`` is called then (by default it logs and
        closes).  ``None`` turns it off (the default).  Only framed input
        counts: with no terminator (``None``, ``0``) nothing is a frame.
        TypeError for a non-number, ValueError unless finite and positive;
        the setting is unchanged then.
        """
        if seconds is not None:
            seconds = check_delay(seconds, "frame timeout")
            if seconds <= 0:
                raise ValueError("frame timeout must be positive, got %r" % (seconds,))
        self._af_frame_timeout = seconds
        self._af_cancel_frame_timer()
        if seconds is not None:
            # a frame already in progress is timed from now
            self._af_frame_check(None)

    def get_frame_timeout(self) -> Optional[float]:
        """The frame timeout in seconds, or None."""
        return self._af_frame_timeout

    def handle_frame_timeout(self) -> None:
        """A frame stayed incomplete past the frame timeout (the host logs and closes)."""
        raise NotImplementedError  # provided by the host class

    def _af_frame_timeout_message(self) -> str:
        return "closing %r: a frame has been incomplete for more than %g s (%d bytes so far)" % (
            self,
            self._af_frame_timeout or 0.0,
            self._af_scanner.partial_size,
        )

    def _af_frame_check(self, frames_before: Optional[int]) -> None:
        # After a read: a frame in progress needs a timer that started with
        # it.  It started in this read if none was timed before, or if a
        # frame was completed in this read (the rest is a new one).
        scanner = self._af_scanner
        if not scanner.partial_size or not scanner.terminator:
            self._af_cancel_frame_timer()
            return
        if self._af_frame_timer is None or scanner.frame_count != frames_before:
            self._af_cancel_frame_timer()
            timeout = self._af_frame_timeout
            assert timeout is not None
            self._af_frame_timer = self._af_call_later(timeout, self._af_frame_expired)

    def _af_frame_expired(self) -> None:
        self._af_frame_timer = None
        scanner = self._af_scanner
        # buffers discarded meanwhile, or the channel closed: nothing to time
        if scanner.partial_size and scanner.terminator and self._af_frame_timeout is not None:
            self.handle_frame_timeout()

    def _af_cancel_frame_timer(self) -> None:
        timer = self._af_frame_timer
        if timer is not None:
            self._af_frame_timer = None
            timer.cancel()
