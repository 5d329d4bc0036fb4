"""The scenario engine's clock: virtual time that jumps to the next deadline as soon as no
task can run, and the simulation's own sleeps.

trio's `MockClock(autojump_threshold=0)` jumps the same way, through a private hook of
trio's run loop, and reads `time.perf_counter()` on every `current_time()` to keep its
(unused here) real-time rate; a proxied request reads the clock about forty times. This
clock uses the `trio.abc.Clock` contract: trio asks it how long to sleep until the next
deadline only when no task is runnable, and the answer "none: it is now" moves the clock
there.

The simulated hosts and clients sleep a lot (a host's think time, a client's next send):
two sleeps per request. A trio sleep is a cancel scope whose deadline fires by raising
Cancelled through the sleeper's frames, which is most of what a simulated request costs
the scheduler. `sleep_until` here parks the task on the clock's own timer heap instead,
and the clock wakes it when it would otherwise jump past its time; to everything else
it is a sleep like trio's (cancellable, a checkpoint). The gateway itself is not changed:
its timeouts stay trio's cancel scopes.

`hold()` stops the jumps for a moment: `trio.testing.wait_all_tasks_blocked` wakes only
when the run loop would otherwise sleep, and with a clock that always jumps it would
never sleep, so it would see timers fire first.
"""

import heapq
import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import trio
import trio.testing

#: What the run loop is told to sleep while the clock is held or there is no deadline:
#: long (it wakes early for any task woken meanwhile), finite, as trio caps it anyway.
_IDLE = 86400.0


class VirtualClock(trio.abc.Clock):
    def __init__(self) -> None:
        self._now = 0.0
        self._held = 0
        #: Tasks in `sleep_until`: [time, order, task], the task None once cancelled.
        self._sleepers: list[list[Any]] = []
        self._order = itertools.count()

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        # Called only when no task is runnable: nothing can happen before the next
        # deadline or sleeper's time, so the clock moves there and wakes the sleepers due.
        if self._held:
            return _IDLE
        sleepers = self._sleepers
        while sleepers and sleepers[0][2] is None:
            heapq.heappop(sleepers)
        if sleepers and sleepers[0][0] <= deadline:
            self._now = max(self._now, sleepers[0][0])
            while sleepers and sleepers[0][0] <= self._now:
                task = heapq.heappop(sleepers)[2]
                if task is not None:
                    trio.lowlevel.reschedule(task)
            return 0.0
        if deadline == math.inf:
            return _IDLE
        self._now = max(self._now, deadline)
        return 0.0

    async def sleep_until(self, deadline: float) -> None:
        """`trio.sleep_until`, on the clock's own timer heap."""
        if deadline <= self._now:
            await trio.lowlevel.checkpoint()
            return
        entry = [deadline, next(self._order), trio.lowlevel.current_task()]
        heapq.heappush(self._sleepers, entry)

        def abort(_: object) -> trio.lowlevel.Abort:
            entry[2] = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

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


async def sleep_until(deadline: float) -> None:
    """`trio.sleep_until`, cheaper under a `VirtualClock` (the simulation's hosts and
    clients sleep with it; on real time, in the agreement test, it is trio's)."""
    clock = trio.lowlevel.current_clock()
    if isinstance(clock, VirtualClock):
        await clock.sleep_until(deadline)
    else:
        await trio.sleep_until(deadline)


async def sleep(seconds: float) -> None:
    """`trio.sleep`, as `sleep_until`."""
    await sleep_until(trio.current_time() + seconds)
