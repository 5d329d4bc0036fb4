"""The scenario engine's clock: virtual time that jumps to the next deadline as soon as no
task can run.

trio's `MockClock(autojump_threshold=0)` does the same through a private hook of trio's
run loop, and reads `time.perf_counter()` on every `current_time()` to keep its (unused
here) real-time rate; a proxied request reads the clock about forty times. This clock
uses only the public `trio.abc.Clock` contract: trio asks it how long to sleep until the
next deadline only when no task is runnable, and the answer "none: it is now" moves the
clock there.

`hold()` stops the jumps for a moment: `trio.testing.wait_all_tasks_blocked` wakes only
when the run loop would otherwise sleep, and with a clock that always jumps it would
never sleep, so it would see timers fire first.
"""

import math
from collections.abc import Iterator
from contextlib import contextmanager

import trio
import trio.testing

#: What the run loop is told to sleep while the clock is held or there is no deadline:
#: long (it wakes early for any task woken meanwhile), finite, as trio caps it anyway.
_IDLE = 86400.0


class VirtualClock(trio.abc.Clock):
    def __init__(self) -> None:
        self._now = 0.0
        self._held = 0

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        # Called only when no task is runnable: nothing can happen before the deadline.
        if self._held or deadline == math.inf:
            return _IDLE
        if deadline > self._now:
            self._now = deadline
        return 0.0

    @contextmanager
    def hold(self) -> Iterator[None]:
        """While inside, time stands still and the run loop idles when nothing runs."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1


async def wait_all_tasks_blocked() -> None:
    """`trio.testing.wait_all_tasks_blocked`, with a `VirtualClock` (if it is trio's
    clock) held meanwhile, so that no timer fires first."""
    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, VirtualClock):
        await trio.testing.wait_all_tasks_blocked()
        return
    with clock.hold():
        await trio.testing.wait_all_tasks_blocked()
