"""The HTTP/1.1 codecs on their two parsers (`http1_parser`: llhttp, h11), fed the same bytes.

Differential: both must frame each stream of requests (and each response) alike: the same
messages, the same body bytes, the same boundaries, the same refusals, up to the
differences h1_parsers lists (each on purpose, and documented in docs/configuration.md).
Each codec on each parser also answers to h11 itself as an oracle, and frames a stream the
same whatever the reads (test_codec_h1.py).
"""

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.h1_drivers import codec_requests, codec_response
from tests.fuzz.h1_parsers import request_parsers_difference, response_parsers_difference
from tests.fuzz.h1_strategies import request_streams, response_streams
from tests.fuzz.test_codec_h1 import bytewise

_methods = st.sampled_from(["GET", "HEAD", "POST"])


@given(request_streams())
def test_requests_are_framed_alike_on_both_parsers(data: bytes) -> None:
    reads = bytewise(data)
    llhttp = codec_requests(reads, parser="llhttp")
    h11 = codec_requests(reads, parser="h11")
    difference = request_parsers_difference(data, llhttp, h11)
    assert difference is None, difference


@given(response_streams(), _methods, st.booleans())
def test_responses_are_framed_alike_on_both_parsers(
    data: bytes, method: str, upgrade: bool
) -> None:
    llhttp = codec_response(method, [data], upgrade=upgrade, parser="llhttp")
    h11 = codec_response(method, [data], upgrade=upgrade, parser="h11")
    difference = response_parsers_difference(data, llhttp, h11)
    assert difference is None, difference
