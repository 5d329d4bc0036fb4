"""The scenario engine's clock: jumps when nothing can run, its own sleepers woken in time
order among trio's deadlines, cancellable, and held while waiting for all tasks blocked."""

from collections.abc import Awaitable, Callable

import trio

from gateway.testing.virtual_clock import VirtualClock, sleep, sleep_until, wait_all_tasks_blocked


def run(main: Callable[[], Awaitable[None]]) -> None:
    trio.run(main, clock=VirtualClock())


def test_sleepers_and_trio_deadlines_wake_in_time_order_at_their_times() -> None:
    woke: list[tuple[str, float]] = []

    async def ours(name: str, at: float) -> None:
        await sleep_until(at)
        woke.append((name, trio.current_time()))

    async def trios(name: str, at: float) -> None:
        await trio.sleep_until(at)
        woke.append((name, trio.current_time()))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ours, "ours 3", 3.0)
            nursery.start_soon(trios, "trio 2", 2.0)
            nursery.start_soon(ours, "ours 1", 1.0)
            nursery.start_soon(trios, "trio 4", 4.0)
            nursery.start_soon(ours, "ours 1 again", 1.0)

    run(main)
    # In time order, each at its time (two at the same instant wake in one batch, which
    # trio runs in an order of its own).
    assert [at for _, at in woke] == [1.0, 1.0, 2.0, 3.0, 4.0]
    assert set(woke) == {
        ("ours 1", 1.0),
        ("ours 1 again", 1.0),
        ("trio 2", 2.0),
        ("ours 3", 3.0),
        ("trio 4", 4.0),
    }


def test_a_cancelled_sleeper_never_wakes_and_does_not_move_the_clock() -> None:
    async def main() -> None:
        with trio.move_on_after(5):
            await sleep(100)
        assert trio.current_time() == 5.0
        await sleep(1)
        # The cancelled sleeper's time (100) is not jumped to on the way.
        assert trio.current_time() == 6.0

    run(main)


def test_a_sleep_that_is_due_is_still_a_checkpoint() -> None:
    async def main() -> None:
        with trio.CancelScope() as scope:
            scope.cancel()
            await sleep(0)
            raise AssertionError("not a checkpoint")
        assert scope.cancelled_caught

    run(main)


def test_waiting_for_all_tasks_blocked_holds_the_clock() -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleep, 10)
            nursery.start_soon(trio.sleep, 20)
            await wait_all_tasks_blocked()
            # Both sleepers are blocked: the wait ended without either timer firing.
            assert trio.current_time() == 0.0
        assert trio.current_time() == 20.0

    run(main)
