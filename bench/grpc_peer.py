"""gRPC load peer for bench/run.py: a grpcio echo server and a timed grpcio client.

Messages are raw bytes (generic handlers, no protobuf codegen), which is all a proxy sees.
Server and client run as separate processes so neither steals the other's GIL.

    python bench/grpc_peer.py serve --port P
    python bench/grpc_peer.py check  --target 127.0.0.1:P
    python bench/grpc_peer.py unary  --target 127.0.0.1:P --duration 5 --threads 4
    python bench/grpc_peer.py stream --target 127.0.0.1:P --messages 20000   # server-streaming
    python bench/grpc_peer.py bidi   --target 127.0.0.1:P --messages 20000

Client commands print one JSON object on stdout:
{"count": N, "seconds": S, "rate": N/S, "errors": E, "error_kinds": {description: n}}.
Only correct replies count; a wrong or missing reply is an error.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc

SERVICE = "bench.Echo"
UNARY = f"/{SERVICE}/Unary"
SERVER_STREAM = f"/{SERVICE}/ServerStream"
BIDI = f"/{SERVICE}/Bidi"
MAX_MESSAGE = 8 * 1024 * 1024
OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
]
CALL_TIMEOUT = 30.0
WARM_TRIES = 5


# --------------------------------------------------------------------------- server


def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


def server_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    """The request is b"COUNT:SIZE"; answers COUNT messages of SIZE bytes."""
    count, _, size = request.partition(b":")
    message = b"x" * int(size)
    for _ in range(int(count)):
        yield message


def bidi(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    yield from requests


def serve(port: int, workers: int) -> int:
    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if server.add_insecure_port(f"127.0.0.1:{port}") != port:
        print(f"could not bind 127.0.0.1:{port}", file=sys.stderr)
        return 1
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopped.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stopped.set())
    server.start()
    print(f"serving {SERVICE} on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    stopped.wait()
    server.stop(grace=1).wait()
    return 0


# --------------------------------------------------------------------------- client


class Tally:
    """Counts completed calls/messages and failures across client threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.errors = 0
        #: How often each distinct failure was seen, by description.
        self.kinds: dict[str, int] = {}

    def fail(self, exc: BaseException) -> None:
        kind = describe(exc)
        with self.lock:
            self.errors += 1
            self.kinds[kind] = self.kinds.get(kind, 0) + 1

    def report(self, seconds: float) -> dict[str, object]:
        return {
            "count": self.count,
            "seconds": seconds,
            "rate": self.count / seconds if seconds > 0 else 0.0,
            "errors": self.errors,
            "error_kinds": self.kinds,
        }


def describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError) and isinstance(exc, grpc.Call):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


def summary(reply: object) -> str:
    """A short, stable description of a wrong reply (stable so that kinds group)."""
    if isinstance(reply, bytes):
        return f"{len(reply)} bytes"
    return repr(reply)


def run_unary(channel: grpc.Channel, duration: float, threads: int, size: int) -> dict[str, object]:
    """`threads` threads making blocking unary calls on one channel for `duration` seconds."""
    call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(UNARY)
    payload = b"x" * size
    tally = Tally()
    # Connection set-up stays outside the timed window. A failed call here counts as an
    # error; only a target that fails every try is given up on.
    for _ in range(WARM_TRIES):
        try:
            call(payload, timeout=CALL_TIMEOUT)
            break
        except grpc.RpcError as exc:
            tally.fail(exc)
    else:
        return tally.report(0.0)
    deadline = time.monotonic() + duration

    def worker() -> None:
        done = 0
        while time.monotonic() < deadline:
            try:
                reply = call(payload, timeout=CALL_TIMEOUT)
            except grpc.RpcError as exc:
                tally.fail(exc)
                time.sleep(0.01)  # do not spin on a dead target
                continue
            if reply != payload:
                tally.fail(ValueError(f"echo mismatch: got {summary(reply)}"))
                continue
            done += 1
        with tally.lock:
            tally.count += done

    started = time.monotonic()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return tally.report(time.monotonic() - started)


def run_server_stream(channel: grpc.Channel, messages: int, size: int) -> dict[str, object]:
    """One server-streaming call answering `messages` messages of `size` bytes."""
    call: grpc.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(SERVER_STREAM)
    tally = Tally()
    started = time.monotonic()
    try:
        for _ in call(f"{messages}:{size}".encode(), timeout=CALL_TIMEOUT * 4):
            tally.count += 1
    except grpc.RpcError as exc:
        tally.fail(exc)
    if tally.count != messages and not tally.errors:
        tally.fail(ValueError(f"stream ended after {tally.count} of {messages} messages"))
    return tally.report(time.monotonic() - started)


def run_bidi(channel: grpc.Channel, messages: int, size: int) -> dict[str, object]:
    """One bidi call: `messages` messages sent, each echoed back; counts the echoes."""
    call: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(BIDI)
    payload = b"x" * size
    tally = Tally()
    started = time.monotonic()
    try:
        for reply in call(iter([payload] * messages), timeout=CALL_TIMEOUT * 4):
            if reply != payload:
                raise ValueError(f"echo mismatch: got {summary(reply)}")
            tally.count += 1
    except (grpc.RpcError, ValueError) as exc:
        tally.fail(exc)
    if tally.count != messages and not tally.errors:
        tally.fail(ValueError(f"stream ended after {tally.count} of {messages} messages"))
    return tally.report(time.monotonic() - started)


def check(channel: grpc.Channel) -> dict[str, object]:
    """The correctness gate: one echo of each kind, small."""
    tally = Tally()
    started = time.monotonic()
    try:
        unary_call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(UNARY)
        reply = unary_call(b"ping", timeout=10)
        if reply != b"ping":
            raise ValueError(f"unary echo returned {reply!r}")
        stream_call: grpc.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
            SERVER_STREAM
        )
        streamed = list(stream_call(b"3:4", timeout=10))
        if streamed != [b"xxxx"] * 3:
            raise ValueError(f"server stream returned {streamed!r}")
        bidi_call: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(BIDI)
        echoed = list(bidi_call(iter([b"a", b"bc"]), timeout=10))
        if echoed != [b"a", b"bc"]:
            raise ValueError(f"bidi returned {echoed!r}")
        tally.count = 3
    except (grpc.RpcError, ValueError) as exc:
        tally.fail(exc)
    return tally.report(time.monotonic() - started)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    server = sub.add_parser("serve", help="run the echo server until SIGTERM")
    server.add_argument("--port", type=int, required=True)
    server.add_argument("--workers", type=int, default=16, help="server thread pool size")
    for name in ("check", "unary", "stream", "bidi"):
        client = sub.add_parser(name)
        client.add_argument("--target", required=True, help="HOST:PORT")
        client.add_argument("--size", type=int, default=64, help="message bytes (default 64)")
        if name == "unary":
            client.add_argument("--duration", type=float, default=5.0)
            client.add_argument("--threads", type=int, default=4)
        if name in ("stream", "bidi"):
            client.add_argument("--messages", type=int, default=20_000)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "serve":
        return serve(args.port, args.workers)
    with grpc.insecure_channel(args.target, options=OPTIONS) as channel:
        if args.command == "check":
            report = check(channel)
        elif args.command == "unary":
            report = run_unary(channel, args.duration, args.threads, args.size)
        elif args.command == "stream":
            report = run_server_stream(channel, args.messages, args.size)
        else:
            report = run_bidi(channel, args.messages, args.size)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
