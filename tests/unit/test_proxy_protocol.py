"""PROXY protocol headers, parsed and built, against the spec's own examples."""

import ipaddress
import struct

import pytest

from gateway.listeners.proxy_protocol import (
    V2_SIGNATURE,
    Peek,
    ProxyHeader,
    ProxyProtocolError,
    encode_v1,
    encode_v2,
    parse,
)


def test_v1_tcp4_and_what_follows_it_stays():
    data = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n"
    header = parse(data)
    assert header == ProxyHeader(
        47,
        (ipaddress.ip_address("192.168.0.1"), 56324),
        (ipaddress.ip_address("192.168.0.11"), 443),
    )
    assert data[header.length :].startswith(b"GET")


def test_v1_unknown_and_incomplete_and_bad():
    assert parse(b"PROXY UNKNOWN\r\n") == ProxyHeader(15)
    assert parse(b"PROXY TCP4 1.2.3.4 5.6") is Peek.NEED_DATA
    assert parse(b"PRO") is Peek.NEED_DATA
    for bad in (
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
        b"PROXY TCP4 ::1 ::1 1 2\r\n",
        # Both addresses are of the line's family (found by tests/fuzz).
        b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
        b"PROXY TCP6 ::1 1.2.3.4 1 2\r\n",
        # The spec's textual forms only: no IPv6 zone (it may hold any byte but a space,
        # and str() would give it back to logs, x-forwarded-for and upstream PROXY lines),
        # no sign, underscore or whitespace in a port.
        b"PROXY TCP6 fe80::1%\n,10.0.0.1 ::1 1 2\r\n",
        b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1_0 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 \t1 2\r\n",
        b"PROXY TCP9 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY " + b"x" * 120,
        b"GET / HTTP/1.1\r\n",
    ):
        with pytest.raises(ProxyProtocolError):
            parse(bad)


def test_v2_tcp6_with_a_tlv_and_local():
    body = (
        ipaddress.ip_address("2001:db8::1").packed
        + ipaddress.ip_address("2001:db8::2").packed
        + struct.pack("!HH", 4000, 443)
        + b"\x04\x00\x01x"  # a TLV (PP2_TYPE_NOOP) to skip
    )
    data = V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x21, len(body)) + body + b"\x16\x03"
    header = parse(data)
    assert isinstance(header, ProxyHeader)
    assert header.length == 16 + len(body)
    assert header.source == (ipaddress.ip_address("2001:db8::1"), 4000)
    local = V2_SIGNATURE + struct.pack("!BBH", 0x20, 0x00, 0)
    assert parse(local) == ProxyHeader(16)
    assert parse(data[:20]) is Peek.NEED_DATA
    with pytest.raises(ProxyProtocolError):
        parse(V2_SIGNATURE + struct.pack("!BBH", 0x31, 0x11, 0))


def test_encoders_round_trip():
    v4 = encode_v2(("203.0.113.7", 5555), ("10.0.0.1", 80))
    assert v4 == V2_SIGNATURE + bytes.fromhex(
        "2111000ccb007107 0a000001 15b3 0050".replace(" ", "")
    )
    assert encode_v1(("203.0.113.7", 5555), ("10.0.0.1", 80)) == (
        b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n"
    )
    assert encode_v1(("::1", 1), ("127.0.0.1", 2)) == b"PROXY UNKNOWN\r\n"
