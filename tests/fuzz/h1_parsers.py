"""The HTTP/1.1 codecs on llhttp against the same codecs on h11 (`http1_parser`), and the
differences between the two that are on purpose.

`parsers_difference` compares what the codecs framed from one byte stream on each parser:
the messages (start line, headers, body bytes, trailers), where each ended, and whether the
stream was refused. Two transcripts agree when they are equal up to the point where one
parser refused a message the other read; that message must then match an allowance of the
parser that refused it. Each allowance is a predicate on the one message concerned (as
delimited by the parser that read it), so it cannot hide a difference in another.
"""

import re
from collections.abc import Mapping

from tests.fuzz.h1_drivers import ERROR, Transcript
from tests.fuzz.h1_oracle import (
    _OWS,
    Allowance,
    Delimited,
    _chunk_line_grammar,
    _chunked_with_trailing_whitespace,
    _comparable,
    _extension_method,
    _http10_interim,
    _transfer_encoding_trailer,
    delimit_responses,
)


def _number_past_64_bits(message: Delimited) -> bool:
    """llhttp refuses a Content-Length or chunk size that overflows its 64-bit counter; h11
    reads any (a body that long never ends)."""
    lengths = [v.strip(_OWS) for v in _field_lines(message, b"content-length")]
    sizes = [line.split(b";")[0].strip(_OWS) for line in message.chunk_lines]
    return any(len(v.lstrip(b"0")) > 19 for v in lengths) or any(
        len(s.lstrip(b"0")) > 16 for s in sizes
    )


def _field_lines(message: Delimited, name: bytes) -> list[bytes]:
    values = []
    for line in message.field_lines:
        field, colon, value = line.partition(b":")
        if colon and field.lower() == name:
            values.append(value)
    return values


def _request_line_spaces(message: Delimited) -> bool:
    """RFC 9112 3: a recipient MAY split a request line on runs of SP. llhttp does, h11 does
    not (the h11 parser refuses such a request with 400)."""
    return b"  " in message.start_line


#: Why the llhttp codec may refuse a request the h11 codec reads.
LLHTTP_REFUSES_REQUEST: dict[str, Allowance] = {
    # The finding the h11 parser lifts (test_codec_h1_findings.py): RFC 9110 9.1.
    "extension method": _extension_method,
    # RFC 9110 5.5: the whitespace is not part of the value; h11 frames it as chunked.
    "chunked with trailing whitespace": _chunked_with_trailing_whitespace,
    # h11 skips what follows a chunk size's `;`, and whitespace before its CRLF.
    "chunk line outside RFC 9112 grammar": _chunk_line_grammar,
    "number past 64 bits": _number_past_64_bits,
}

#: Why the h11 codec may refuse a request the llhttp codec reads.
H11_REFUSES_REQUEST: dict[str, Allowance] = {
    "runs of SP in the request line": _request_line_spaces,
}

#: Why the llhttp codec may refuse a response the h11 codec reads.
LLHTTP_REFUSES_RESPONSE: dict[str, Allowance] = {
    "chunked with trailing whitespace": _chunked_with_trailing_whitespace,
    "chunk line outside RFC 9112 grammar": _chunk_line_grammar,
    "number past 64 bits": _number_past_64_bits,
    # llhttp takes an HTTP/1.0 1xx for the connection's last message; h11 reads on.
    "HTTP/1.0 interim response": _http10_interim,
}

#: Why the h11 codec may refuse a response the llhttp codec reads.
H11_REFUSES_RESPONSE: dict[str, Allowance] = {
    # RFC 9110 6.5.1. The llhttp codec relays it: a known finding
    # (test_codec_h1_findings.py::test_a_transfer_encoding_trailer_is_not_relayed).
    "Transfer-Encoding trailer": _transfer_encoding_trailer,
}


def _request_at(data: bytes, index: int, ends: tuple[int, ...]) -> Delimited:
    """Request `index` of `data`, from where the one before it ended to its own end (in
    `ends`, or the end of the stream)."""
    start = ends[index - 1] if index else 0
    message = data[start : ends[index] if index < len(ends) else len(data)]
    lead = len(message) - len(message.lstrip(b"\r\n"))
    head_end = re.compile(rb"\r?\n\r?\n").search(message, lead)
    split = head_end.end() if head_end else len(message)
    return Delimited(start + lead, message[lead:split], message[split:])


def _refused(llhttp: Transcript, h11: Transcript) -> tuple[str, int, Transcript] | str | None:
    """None when the transcripts agree; else which parser refused which message (with the
    other's transcript, which delimits it), or a description of a difference in framing."""
    ours = [_comparable(m) for m in llhttp.messages]
    theirs = [_comparable(m) for m in h11.messages]
    same = 0
    while same < min(len(ours), len(theirs)) and ours[same] == theirs[same]:
        same += 1
    if same == len(ours) == len(theirs):
        if llhttp.end == h11.end or ERROR not in (llhttp.end, h11.end):
            return None
        return ("llhttp", same, h11) if llhttp.end == ERROR else ("h11", same, llhttp)
    if same == len(ours) and llhttp.end == ERROR:
        return "llhttp", same, h11
    if same == len(theirs) and h11.end == ERROR:
        return "h11", same, llhttp
    return f"message {same} framed differently:\n  llhttp {llhttp}\n  h11    {h11}"


def request_parsers_difference(data: bytes, llhttp: Transcript, h11: Transcript) -> str | None:
    """None if both codecs framed the requests in `data` alike, up to the allowances."""
    refused = _refused(llhttp, h11)
    if refused is None or isinstance(refused, str):
        return refused
    parser, index, reader = refused
    message = _request_at(data, index, reader.ends)
    allowances = LLHTTP_REFUSES_REQUEST if parser == "llhttp" else H11_REFUSES_REQUEST
    if any(applies(message) for applies in allowances.values()):
        return None
    return f"{parser} refused request {index} ({message}); the other read it"


def response_parsers_difference(data: bytes, llhttp: Transcript, h11: Transcript) -> str | None:
    """None if both codecs framed the response in `data` alike, up to the allowances (each
    tried on every head of the exchange, interim or final)."""
    refused = _refused(llhttp, h11)
    if refused is None or isinstance(refused, str):
        return refused
    parser = refused[0]
    allowances: Mapping[str, Allowance] = (
        LLHTTP_REFUSES_RESPONSE if parser == "llhttp" else H11_REFUSES_RESPONSE
    )
    if any(applies(d) for d in delimit_responses(data) for applies in allowances.values()):
        return None
    return f"{parser} refused the response; the other read it:\n  llhttp {llhttp}\n  h11 {h11}"
