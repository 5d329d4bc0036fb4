"""One `[[stats_sinks]]` entry: a UDP socket to a statsd server or DogStatsD agent.

Sending never waits: the socket is non-blocking and each datagram is one `send` call, so a
flush costs the event loop its formatting and a few syscalls, whatever the receiver does. A
datagram the kernel does not take (its buffer is full, the network is unreachable, or
nothing listens: the socket is connected, so the ICMP answer comes back as
ECONNREFUSED on a later send) is dropped and counted in `stats_sink.INDEX.datagrams_dropped`;
the log says so once for each reason. (A send that works proves nothing: with nobody
listening every other one works, so there is no "working again" to log.)
"""

import logging
import socket
from collections.abc import Iterable

import attrs
import trio

from gateway.config.model import StatsSink
from gateway.observability.stats import Counter, StatsStore, create_stats, describe
from gateway.observability.statsd import StatsdFormat, datagrams

log = logging.getLogger("gateway.stats")


@attrs.define
class SinkStats:
    datagrams_sent: Counter
    datagrams_dropped: Counter


describe(
    "stats_sink",
    {
        "datagrams_sent": "Datagrams the stats sink sent.",
        "datagrams_dropped": "Datagrams the stats sink could not send (no receiver, full "
        "buffer, address not resolved).",
    },
)


class UdpSink:
    def __init__(self, config: StatsSink, index: int, store: StatsStore) -> None:
        self.config = config
        self.format = StatsdFormat(config.prefix, tagged=config.type == "dog_statsd")
        scope = store.scope(f"stats_sink.{index}", "stats_sink", {"envoy_stats_sink": str(index)})
        self.stats = create_stats(SinkStats, scope)
        self._socket: socket.socket | None = None
        #: The reasons of failed sends logged already.
        self._reported: set[str] = set()

    def __str__(self) -> str:
        return f"{self.config.type} {self.config.address}"

    async def connect(self) -> None:
        """Resolves the address and connects the socket, unless done already. A name that
        does not resolve is tried again at the next flush (a metrics agent's DNS name
        must not keep the gateway from serving); its datagrams are dropped meanwhile."""
        if self._socket is not None:
            return
        address = self.config.address
        try:
            infos = await trio.socket.getaddrinfo(
                address.host, address.port, type=socket.SOCK_DGRAM
            )
            family, kind, proto, _, sockaddr = infos[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            self._report(exc)
            return
        try:
            sock.setblocking(False)
            sock.connect(sockaddr)  # UDP: no handshake, it only fixes the peer
        except OSError as exc:
            sock.close()
            self._report(exc)
            return
        self._socket = sock

    def send(self, lines: Iterable[str]) -> None:
        for datagram in datagrams(lines, self.config.max_bytes_per_datagram):
            if self._socket is None:
                self.stats.datagrams_dropped.inc()
                continue
            try:
                self._socket.send(datagram)
            except OSError as exc:  # BlockingIOError included: never wait for the receiver
                self.stats.datagrams_dropped.inc()
                self._report(exc)
            else:
                self.stats.datagrams_sent.inc()

    def _report(self, exc: OSError) -> None:
        reason = exc.strerror or str(exc)
        if reason not in self._reported:
            self._reported.add(reason)
            log.warning(
                "stats sink %s: %s; dropping stats (counted in %s, not logged again)",
                self,
                reason,
                self.stats.datagrams_dropped.name,
            )

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
