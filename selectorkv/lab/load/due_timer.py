"""A wake-up at a due time, to the microsecond, that a selector can wait on.

# design

An open-loop generator sleeps in its selector until the next request is
due. ``epoll_wait`` takes its timeout in whole milliseconds, and Python
rounds it *up* (``selectors.EpollSelector``; ``select.epoll.poll``), so a
request due 0.2 ms from now went out 1 ms from now: 0.8 ms late, and since
its latency counts from its due time, 0.8 ms that the server never spent.
Against the lab's known-latency target this added 0.8 ms to the p50 of
every light run (docs/lab.md, the calibration); wrk2 has the same flaw
(its timers are whole milliseconds too).

A timerfd (Linux) is a file descriptor that becomes readable at a given
CLOCK_MONOTONIC time, to the nanosecond plus the kernel's timer slack (50 us
by default). Registered in the same selector as the sockets, it wakes the
loop on time while the loop still sees every answer as it arrives.
``time.monotonic()`` is CLOCK_MONOTONIC on Linux, so due times need no
conversion. Python 3.13 has ``os.timerfd_create``; the lab runs on 3.11
too, so the two calls go through ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time

CLOCK_MONOTONIC = time.CLOCK_MONOTONIC
TFD_TIMER_ABSTIME = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class DueTimer:
    """``fileno()`` becomes readable at the time last given to ``arm``."""

    def __init__(self) -> None:
        fd: int = _libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd = fd
        self.armed = 0.0  # the monotonic time it is set to ring at; 0: disarmed
        self._spec = _Itimerspec()

    def fileno(self) -> int:
        return self.fd

    def arm(self, at: float) -> None:
        """Ring at monotonic time ``at`` (now, if it is past)."""
        if at == self.armed:
            return  # the usual case: the same request is still the next one due
        seconds = int(at)  # never 0: the monotonic clock counts from boot
        self._spec.it_value.tv_sec = seconds
        self._spec.it_value.tv_nsec = int((at - seconds) * 1e9)
        if _libc.timerfd_settime(self.fd, TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) < 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")
        self.armed = at

    def clear(self) -> None:
        """Consume a ring (the fd stays readable until read)."""
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass
        self.armed = 0.0

    def close(self) -> None:
        os.close(self.fd)
