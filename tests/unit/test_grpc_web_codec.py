"""gRPC-Web's wire format (gateway/protocol/grpc_web.py) with bytes alone: content types,
the trailer frame, and base64 both ways cut at every possible place."""

import base64
import random
import struct

import pytest

from gateway.protocol.grpc_web import (
    Base64Decoder,
    Base64Encoder,
    MessageCursor,
    accepts_text,
    content_type,
    parse_content_type,
    trailer_frame,
)
from gateway.protocol.headers import HeaderMap


def frame(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("application/grpc-web", (False, "")),
        ("application/grpc-web+proto", (False, "+proto")),
        ("application/grpc-web-text", (True, "")),
        ("application/grpc-web-text+proto", (True, "+proto")),
        ("Application/GRPC-Web+Proto; charset=utf-8", (False, "+proto")),
        ("application/grpc-web+json", (False, "+json")),
        ("application/grpc", None),
        ("application/grpc+proto", None),
        ("application/grpc-webfoo", None),
        ("application/grpc-web-textual", None),
        ("application/grpc-web+", None),
        ("text/plain", None),
        (None, None),
    ],
)
def test_content_types(value, parsed):
    assert parse_content_type(value) == parsed


def test_accept_asks_for_text_and_the_answer_is_named_back():
    assert accepts_text("application/grpc-web-text")
    assert accepts_text("text/html, application/grpc-web-text+proto;q=0.9")
    assert not accepts_text("application/grpc-web+proto")
    assert not accepts_text("*/*")
    assert not accepts_text(None)
    assert content_type(True, "+proto") == "application/grpc-web-text+proto"
    assert content_type(False, "") == "application/grpc-web"


def test_trailer_frame():
    trailers = HeaderMap([("grpc-status", "3"), ("Grpc-Message", "bad%20input"), ("x-b", "é")])
    block = b"grpc-status:3\r\ngrpc-message:bad%20input\r\nx-b:\xe9\r\n"
    assert trailer_frame(trailers) == b"\x80" + struct.pack(">I", len(block)) + block
    assert trailer_frame(HeaderMap()) == b"\x80\x00\x00\x00\x00"


def body_of(messages: list[bytes]) -> bytes:
    """As grpc-web clients send `-text`: each frame base64-encoded (and padded) alone."""
    return b"".join(base64.b64encode(frame(m)) for m in messages)


MESSAGES = [b"", b"a", b"ab", b"abc", b"hello world", bytes(range(256))]


def test_decoder_takes_any_cut_of_a_body_padded_per_message():
    body = body_of(MESSAGES)
    expected = b"".join(frame(m) for m in MESSAGES)
    for cut in range(len(body) + 1):
        decoder = Base64Decoder()
        out = decoder.decode(body[:cut]) + decoder.decode(body[cut:])
        decoder.finish()
        assert out == expected, cut
    rng = random.Random(20)
    for _ in range(200):
        decoder = Base64Decoder()
        pos, out = 0, b""
        while pos < len(body):
            size = rng.randint(1, 9)
            out += decoder.decode(body[pos : pos + size])
            pos += size
        decoder.finish()
        assert out == expected


def test_decoder_carries_at_most_three_characters():
    decoder = Base64Decoder()
    assert decoder.decode(b"AAA") == b""
    assert decoder.decode(b"AAAAAA") == b"\x00" * 6  # one character left over
    with pytest.raises(ValueError):
        decoder.finish()


@pytest.mark.parametrize(
    "body",
    [b"AA*A", b"AAAA AAA", b"YQ=a", b"Y===", b"YQ==\nYQ==", b"=AAA"],
    ids=["stray-character", "whitespace", "padding-inside", "too-much-padding", "newline", "lead"],
)
def test_decoder_refuses_what_is_not_base64(body):
    decoder = Base64Decoder()
    with pytest.raises(ValueError):
        decoder.decode(body)
        decoder.finish()


def test_decoder_refuses_a_body_ending_mid_group():
    decoder = Base64Decoder()
    assert decoder.decode(b"YWJjZA") == b"abc"
    with pytest.raises(ValueError):
        decoder.finish()


def test_cursor_finds_every_message_end_however_the_body_is_cut():
    body = b"".join(frame(m) for m in MESSAGES)
    ends = set()
    pos = 0
    for m in MESSAGES:
        pos += 5 + len(m)
        ends.add(pos)
    for cut in range(1, len(body)):
        cursor = MessageCursor()
        assert cursor.advance(body[:cut]) == (cut in ends), cut
        assert cursor.advance(body[cut:])


def encode_in_pieces(body: bytes, sizes: list[int]) -> bytes:
    encoder, cursor = Base64Encoder(), MessageCursor()
    out = b""
    pos = i = 0
    while pos < len(body):
        piece = body[pos : pos + sizes[i % len(sizes)]]
        pos += len(piece)
        i += 1
        encoded = encoder.encode(piece, cursor.advance(piece))
        assert len(encoded) % 4 == 0
        out += encoded
    return out + encoder.encode(b"", True)


def decode_groups(text: bytes) -> bytes:
    return b"".join(base64.b64decode(text[i : i + 4]) for i in range(0, len(text), 4))


def test_encoder_stream_decodes_to_the_body_whatever_the_pieces():
    body = b"".join(frame(m) for m in MESSAGES)
    rng = random.Random(7)
    for _ in range(200):
        sizes = [rng.randint(1, 12) for _ in range(5)]
        assert decode_groups(encode_in_pieces(body, sizes)) == body


def test_encoder_carries_only_inside_a_message():
    encoder = Base64Encoder()
    # 4 bytes of a message not yet whole: 3 go out, 1 waits for the next chunk.
    assert encoder.encode(b"\x00\x00\x00\x00", False) == base64.b64encode(b"\x00\x00\x00")
    # The message's end: everything goes out, padded, so the client can deliver it now.
    assert encoder.encode(b"\x05abcde", True) == base64.b64encode(b"\x00\x05abcde")
    assert encoder.encode(b"", True) == b""


def test_a_whole_message_is_never_held_back():
    encoder, cursor = Base64Encoder(), MessageCursor()
    chunk = frame(b"0")  # 6 bytes: the kind a slow server stream sends, one at a time
    for _ in range(3):
        out = encoder.encode(chunk, cursor.advance(chunk))
        assert base64.b64decode(out) == chunk
