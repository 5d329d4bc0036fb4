"""gRPC message counting by length prefix (protocol/grpc.py FrameCounter) and call paths,
fed bytes alone."""

import itertools
import random

import pytest

from gateway.protocol.grpc import FrameCounter, frame, service_and_method

MESSAGES = [b"", b"a", b"x" * 300, b"", b"y" * 70_000, b"z" * 4]
BODY = b"".join(frame(m) for m in MESSAGES)


def count_in_chunks(chunks: list[bytes]) -> tuple[int, list[int]]:
    counter = FrameCounter()
    found = [counter.inspect(chunk) for chunk in chunks]
    assert sum(found) == counter.count
    return counter.count, found


def test_whole_body_in_one_chunk():
    assert count_in_chunks([BODY]) == (len(MESSAGES), [len(MESSAGES)])


def test_byte_by_byte():
    count, found = count_in_chunks([BODY[i : i + 1] for i in range(len(BODY))])
    assert count == len(MESSAGES)
    # Each message counts at the byte that completes its prefix.
    ends, offset = [], 0
    for message in MESSAGES:
        ends.append(offset + 4)
        offset += 5 + len(message)
    assert [i for i, n in enumerate(found) if n] == ends


@pytest.mark.parametrize("cut", range(1, 16))
def test_every_split_of_the_first_messages(cut):
    # Prefixes cut anywhere (inside the 5 bytes, at their end, inside a message).
    count, _ = count_in_chunks([BODY[:cut], BODY[cut:]])
    assert count == len(MESSAGES)


def test_random_chunkings():
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(BODY)), rng.randint(1, 20)))
        chunks = [BODY[a:b] for a, b in itertools.pairwise([0, *cuts, len(BODY)])]
        assert count_in_chunks(chunks)[0] == len(MESSAGES)


def test_a_partial_message_at_the_end_counts_once_its_prefix_is_whole():
    counter = FrameCounter()
    assert counter.inspect(frame(b"abc")[:4]) == 0
    assert counter.inspect(frame(b"abc")[4:6]) == 1
    assert counter.inspect(b"") == 0 and counter.count == 1


def test_skipping_a_large_message_is_per_chunk_not_per_byte():
    # A 4 GiB - 1 message declared: its bytes are skipped, never held.
    counter = FrameCounter()
    assert counter.inspect(b"\x00\xff\xff\xff\xff" + b"." * 1000) == 1
    for _ in range(100):
        assert counter.inspect(b"." * 65536) == 0
    assert counter.count == 1


@pytest.mark.parametrize(
    ("path", "names"),
    [
        ("/test.Echo/Unary", ("test.Echo", "Unary")),
        ("/grpc.health.v1.Health/Check", ("grpc.health.v1.Health", "Check")),
        ("/Svc/M", ("Svc", "M")),
        ("/test.Echo/", None),
        ("//Unary", None),
        ("/test.Echo", None),
        ("/a/b/c", None),
        ("test.Echo/Unary", None),
        ("/", None),
    ],
)
def test_service_and_method(path, names):
    assert service_and_method(path) == names
