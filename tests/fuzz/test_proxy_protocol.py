"""The PROXY protocol parser on any bytes, on hostile v1 lines and v2 blocks, and round
trips through the encoders.

`parse` must answer every input with a header, NEED_DATA or ProxyProtocolError, never
another exception; a header it reads must say what the spec's grammar says (checked
against a reference parser for v1), must not depend on the bytes after it, and must be
waited for only while it can still fit in what the listener peeks (bounded reads).
"""

import ipaddress
import re
import struct
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from gateway.listeners.proxy_protocol import (
    V2_SIGNATURE,
    Peek,
    ProxyHeader,
    ProxyProtocolError,
    encode_v1,
    encode_v2,
    parse,
)

#: The most a header can take: v2's fixed part and the largest length it can declare.
MAX_HEADER = 16 + 0xFFFF


def parse_or_error(data: bytes) -> ProxyHeader | Peek | ProxyProtocolError:
    try:
        return parse(data)
    except ProxyProtocolError as exc:
        return exc


# -- generated inputs ------------------------------------------------------------------------

_v4 = st.ip_addresses(v=4).map(lambda a: str(a).encode())
_v6 = st.ip_addresses(v=6).map(lambda a: str(a).encode())
_ports = st.integers(0, 65535).map(lambda p: str(p).encode())
#: What may replace each part of a v1 line.
_ODD = {
    "space": [b"  ", b"\t", b""],
    "protocol": [b"tcp4", b"TCP5", b"", b"UNKNOWN"],
    "family": [],  # the other family's address
    "address": [b"1.2.3.4%x", b"fe80::1%eth0", b"fe80::1%\n,1.2.3.4", b"::1%\r", b"01.2.3.4"],
    "port": [b"+1", b"1_0", b"\t1", b"1\t", b"\x0b1", b"65536", b"-1", b"-0", b"01", b"0x1"],
    "end": [b"\n", b"\r", b"", b" \r\n"],
}
_ODD["address"] += [b"1.2.3", b"::ffff:1.2.3.4", b"", b"1.2.3.4.", b"[::1]", b"localhost"]
_ODD["port"] += [b"", b"1e3", "\u0661".encode(), b"99999"]


@st.composite
def v1_lines(draw: st.DrawFn) -> bytes:
    """A v1 line, well formed but for a few parts (or none) drawn odd."""
    odd = draw(st.frozensets(st.sampled_from(sorted(_ODD)), max_size=2))

    def part(name: str, valid: st.SearchStrategy[bytes]) -> bytes:
        if name in odd and _ODD[name] and draw(st.booleans()):
            return draw(st.sampled_from(_ODD[name]))
        return draw(valid)

    version = draw(st.sampled_from([4, 6]))
    ours, theirs = (_v4, _v6) if version == 4 else (_v6, _v4)
    protocol = part("protocol", st.just(b"TCP%d" % version))
    fields = [protocol]
    for _ in range(2):
        fields.append(part("address", theirs if "family" in odd else ours))
    fields += [part("port", _ports), part("port", _ports)]
    line = b"PROXY" + b"".join(part("space", st.just(b" ")) + f for f in fields)
    return line + part("end", st.just(b"\r\n")) + draw(st.binary(max_size=8))


@st.composite
def v2_blocks(draw: st.DrawFn) -> bytes:
    """A v2 header: signature, version/command, family, length and address block, each
    mostly valid; the length may disagree with the block."""
    ver_cmd = draw(st.sampled_from([0x21, 0x21, 0x20, 0x11, 0x22, 0x2F, 0x31, 0x00]))
    family = draw(st.sampled_from([0x11, 0x21, 0x11, 0x21, 0x12, 0x22, 0x31, 0x00, 0x13, 0xFF]))
    size = {0x11: 12, 0x12: 12, 0x21: 36, 0x22: 36, 0x31: 216}.get(family, 0)
    block = draw(st.binary(min_size=size, max_size=size)) + draw(st.binary(max_size=24))
    length = len(block) + draw(st.sampled_from([0, 0, 0, 0, -1, 1, -size, 0xFFFF]))
    length = min(max(length, 0), 0xFFFF)
    header = V2_SIGNATURE + struct.pack("!BBH", ver_cmd, family, length) + block
    return header + draw(st.binary(max_size=8))


headers = v1_lines() | v2_blocks()
inputs = st.one_of(
    st.binary(max_size=64),
    st.binary(max_size=32).map(lambda b: V2_SIGNATURE[: len(b) % 13] + b),
    headers,
)


# -- the reference for v1 ----------------------------------------------------------------------

_V1 = re.compile(rb"PROXY (TCP4|TCP6) ([0-9A-Fa-f:.]+) ([0-9A-Fa-f:.]+) ([0-9]{1,5}) ([0-9]{1,5})")


def reference_v1(line: bytes) -> ProxyHeader | None:
    """A v1 TCP line read strictly by the spec (section 2.1): single spaces, the family's
    textual addresses (no zone), decimal ports 0-65535; None if it is not one."""
    m = _V1.fullmatch(line)
    if m is None:
        return None
    try:
        src, dst = ipaddress.ip_address(m[2].decode()), ipaddress.ip_address(m[3].decode())
    except ValueError:
        return None
    version = 4 if m[1] == b"TCP4" else 6
    sport, dport = int(m[4]), int(m[5])
    if src.version != version or dst.version != version or max(sport, dport) > 65535:
        return None
    return ProxyHeader(len(line) + 2, (src, sport), (dst, dport))


# -- properties --------------------------------------------------------------------------------


@given(inputs)
def test_any_bytes_give_a_header_need_data_or_the_error(data: bytes) -> None:
    result = parse_or_error(data)
    assert isinstance(result, ProxyHeader | Peek | ProxyProtocolError)
    if not isinstance(result, ProxyHeader):
        return
    assert 0 < result.length <= min(len(data), MAX_HEADER)
    assert (result.source is None) == (result.destination is None)
    if result.source is not None and result.destination is not None:
        (src, sport), (dst, dport) = result.source, result.destination
        assert src.version == dst.version and 0 <= sport <= 65535 and 0 <= dport <= 65535
    if data.startswith(b"PROXY ") and not data.startswith(b"PROXY UNKNOWN"):
        # Every v1 header read is one the spec's grammar reads, with the same values.
        assert result == reference_v1(data[: result.length - 2]), data


@given(headers)
def test_a_header_is_read_the_same_without_what_follows_and_waited_for_before(
    data: bytes,
) -> None:
    result = parse_or_error(data)
    if not isinstance(result, ProxyHeader):
        return
    assert parse(data[: result.length]) == result
    for cut in {0, 1, 6, 15, 16, result.length // 2, result.length - 1}:
        if cut < result.length:
            assert parse(data[:cut]) is Peek.NEED_DATA, cut


@given(inputs)
def test_need_data_only_while_a_header_can_still_fit(data: bytes) -> None:
    """The listener peeks at most MAX_HEADER bytes: a parser still waiting once that many
    have arrived would wait until the listener's timeout for nothing."""
    if parse_or_error(data) is Peek.NEED_DATA:
        assert parse_or_error(data + b"\x00" * MAX_HEADER) is not Peek.NEED_DATA


_endpoints = st.tuples(st.ip_addresses(), st.integers(0, 65535))


@given(_endpoints, _endpoints, st.sampled_from([encode_v1, encode_v2]), st.binary(max_size=16))
def test_encoded_headers_parse_back(
    source: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int],
    destination: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int],
    encode: Callable[[tuple[str, int], tuple[str, int]], bytes],
    after: bytes,
) -> None:
    wire = encode((str(source[0]), source[1]), (str(destination[0]), destination[1]))
    header = parse(wire + after)
    assert isinstance(header, ProxyHeader) and header.length == len(wire)
    if source[0].version == destination[0].version:
        assert (header.source, header.destination) == (source, destination)
    else:  # one family per header: the balancer's own addresses stand
        assert header.source is None and header.destination is None
