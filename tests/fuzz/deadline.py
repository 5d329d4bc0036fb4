"""A real per-example deadline: a hang fails the example instead of stalling the run.

Hypothesis's own `deadline` measures an example after it returns, so it never ends one
that does not. SIGALRM interrupts the main thread's Python code (a loop in the config
checks, say) at the next bytecode boundary; pytest runs sync tests in the main thread.
"""

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class ExampleTimedOut(Exception):
    """The example ran past its deadline: a hang, or work that grows without bound."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: FrameType | None) -> None:
        raise ExampleTimedOut(f"no result within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
