"""Which QUIC connection a datagram belongs to, and what to do with one that belongs to
none. No I/O: the listener asks, then sends or delivers.

A QUIC connection is known by its connection ids, not by the client's address, which may
change (a phone moving from Wi-Fi to mobile data, a NAT rebinding): every id the gateway
issued to a connection routes to it, and the connection tells the dispatcher as ids are
issued and retired. A datagram for no known id is answered only if it may start a
connection (an Initial packet of full size, RFC 9000 14.1), in a version we speak
(otherwise Version Negotiation); with `retry`, only once the client proved it owns its
address by echoing a token (RFC 9000 8.1.2), so a spoofed source costs the gateway one
small packet, not a TLS handshake. Anything else is dropped without an answer: a
reply to a datagram we cannot place would let anyone aim the gateway at a third party.
"""

import os
from typing import Generic, TypeVar

import attrs
from aioquic._buffer import Buffer
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE
from aioquic.quic.connection import NetworkAddress
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.retry import QuicRetryTokenHandler

Key = TypeVar("Key")


@attrs.frozen
class Deliver(Generic[Key]):
    connection: Key


@attrs.frozen
class Accept:
    """Start a connection for this datagram (then deliver it)."""

    original_destination_connection_id: bytes
    #: With retry: the id the Retry packet gave the client, which the handshake confirms.
    retry_source_connection_id: bytes | None


@attrs.frozen
class Reply:
    """Send this (Version Negotiation or Retry) back, and nothing else."""

    datagram: bytes
    kind: str


@attrs.frozen
class Drop:
    reason: str


class QuicDispatcher(Generic[Key]):
    def __init__(
        self, *, connection_id_length: int, supported_versions: list[int], retry: bool
    ) -> None:
        self._cid_length = connection_id_length
        self._versions = supported_versions
        self._retry = QuicRetryTokenHandler() if retry else None
        self._routes: dict[bytes, Key] = {}

    def __len__(self) -> int:
        return len(self._routes)

    def route(self, cid: bytes, connection: Key) -> None:
        self._routes[cid] = connection

    def unroute(self, cid: bytes, connection: Key) -> None:
        if self._routes.get(cid) is connection:
            del self._routes[cid]

    def classify(
        self, data: bytes, addr: NetworkAddress, now: float
    ) -> Deliver[Key] | Accept | Reply | Drop:
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=self._cid_length)
        except ValueError:
            return Drop("malformed")
        known = self._routes.get(header.destination_cid)
        if known is not None:
            return Deliver(known)
        if header.version is None:  # a short header for a connection we do not know
            return Drop("unknown connection")
        if header.packet_type == QuicPacketType.VERSION_NEGOTIATION:
            return Drop("version negotiation")  # never answered: no reflection loops
        if header.version not in self._versions:
            if len(data) < SMALLEST_MAX_DATAGRAM_SIZE:
                return Drop("unsupported version")  # too small to be worth an answer
            negotiation = encode_quic_version_negotiation(
                source_cid=header.destination_cid,
                destination_cid=header.source_cid,
                supported_versions=self._versions,
            )
            return Reply(negotiation, "version_negotiation")
        if header.packet_type != QuicPacketType.INITIAL or len(data) < SMALLEST_MAX_DATAGRAM_SIZE:
            return Drop("not a full-size Initial")
        if self._retry is None:
            return Accept(header.destination_cid, None)
        if not header.token:
            source_cid = os.urandom(self._cid_length)
            token = self._retry.create_token(
                address=addr,
                original_destination_connection_id=header.destination_cid,
                retry_source_connection_id=source_cid,
                now=now,
            )
            retry = encode_quic_retry(
                version=header.version,
                source_cid=source_cid,
                destination_cid=header.source_cid,
                original_destination_cid=header.destination_cid,
                retry_token=token,
            )
            return Reply(retry, "retry")
        try:
            original = self._retry.validate_token(
                address=addr, destination_cid=header.destination_cid, token=header.token, now=now
            )
        except ValueError:
            return Drop("invalid retry token")
        return Accept(original, header.destination_cid)
