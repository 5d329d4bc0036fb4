"""The cost of the byte-stream interface on plain TCP, and what fast_io's direct socket
calls save: micro-benchmarks of single calls over a socketpair, in one Trio run.

Every connection reaches the data path as a `ByteStream` (gateway/io/byte_stream.py); on
plain TCP that is a `TcpStream` holding a `trio.SocketStream` (which is final, so it is
held, not extended), and each of its verbs is one more coroutine around trio's. Writes
and reads that fast_io makes straight on the socket (`send_now`, `Receiver`) do not go
through it. Printed per call, best of `--repeat` interleaved batches:

- a 100-byte write: `send_now` (os.write), `TcpStream.send_all`, trio's `send_all` (the
  difference of the last two is the interface's cost on the generic path);
- one delegating coroutine layer alone, around a coroutine that does not suspend;
- the pool's check of an idle connection, on the socket and through the interface;
- the HTTP/1.1 pool's idle clock: `trio.current_time()` against `time.monotonic()`.

    PYTHONPATH=. python bench/byte_stream_cost.py [--number 20000] [--repeat 15]

from the checkout's root: the gateway is imported in-process, this checkout's rather than
an installed copy.
"""

import argparse
import os
import socket
import time
from collections.abc import Awaitable, Callable

import trio

from gateway.io.byte_stream import TcpStream

_PAYLOAD = b"x" * 100
#: Writes between two drains of the peer: well inside a socketpair's buffer.
_DRAIN_EVERY = 256


async def _batch(
    call: Callable[[], Awaitable[object]], drain: Callable[[], None], number: int
) -> float:
    """Seconds per call over one batch of `number` calls."""
    start = time.perf_counter()
    for i in range(number):
        await call()
        if i % _DRAIN_EVERY == 0:
            drain()
    took = time.perf_counter() - start
    drain()
    return took / number


class _Inner:
    async def send_all(self, data: bytes) -> None:
        return None


class _Layer:
    def __init__(self, inner: _Inner) -> None:
        self._inner = inner

    async def send_all(self, data: bytes) -> None:
        await self._inner.send_all(data)


def _drive(stream: _Inner | _Layer) -> None:
    coro = stream.send_all(_PAYLOAD)
    try:
        coro.send(None)
    except StopIteration:
        pass


def _sync_batch(call: Callable[[], object], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - start) / number


async def main(number: int, repeat: int) -> None:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    trio_stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    tcp = TcpStream(trio_stream)

    def drain() -> None:
        try:
            while os.read(theirs.fileno(), 1 << 20):
                pass
        except BlockingIOError:
            pass

    async def fast() -> None:
        assert tcp.send_now(_PAYLOAD) == len(_PAYLOAD)

    inner = _Inner()
    layer = _Layer(inner)
    writes: dict[str, Callable[[], Awaitable[object]]] = {
        "send_now (os.write, the fast path)": fast,
        "TcpStream.send_all (the interface)": lambda: tcp.send_all(_PAYLOAD),
        "trio.SocketStream.send_all (trio alone)": lambda: trio_stream.send_all(_PAYLOAD),
    }
    calls: dict[str, Callable[[], object]] = {
        "a coroutine that does not suspend": lambda: _drive(inner),
        "the same behind one delegating layer": lambda: _drive(layer),
        "socket.is_readable() (as before)": tcp.socket.is_readable,
        "TcpStream.is_readable() (the interface)": tcp.is_readable,
        "time.monotonic()": time.monotonic,
        "trio.current_time()": trio.current_time,
    }
    # Rounds interleave the variants, so noise from a busy machine hits them alike; each
    # keeps its best batch.
    best = dict.fromkeys([*writes, *calls], float("inf"))
    for _ in range(repeat):
        for name, write in writes.items():
            best[name] = min(best[name], await _batch(write, drain, number))
        for name, call in calls.items():
            best[name] = min(best[name], _sync_batch(call, number * 10))
    print(f"per call, best of {repeat} interleaved batches ({number} writes, {number * 10} calls):")
    for name, seconds in best.items():
        print(f"  {name:42} {seconds * 1e9:8,.0f} ns")
    tcp.close_now()
    theirs.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    trio.run(main, args.number, args.repeat)
