"""Active health checking: one task per host, probing it every interval.

A probe opens its own connection, with the cluster's TLS if it has any (never a pooled
one: a health check must not take a slot from requests, nor be fooled by a connection that
happens to be alive) and speaks HTTP/1.1 (`GET path`, status must be expected), raw TCP
(connect, optionally send bytes and expect bytes back) or gRPC
(grpc.health.v1.Health/Check over HTTP/2, answer must be SERVING).

Hosts start unhealthy (FAILED_ACTIVE_HC) and the first successful probe makes them healthy,
as in Envoy, so a host is never used before it was seen to work. After that it takes
`unhealthy_threshold` failures in a row to fail it and `healthy_threshold` successes in a
row to bring it back. Every change of state is logged and counted.
"""

import logging
import random
import time

import attrs
import trio

from gateway.clusters.grpc_unary import GrpcCallFailed, exchange_unary
from gateway.clusters.host import HealthCheckResult, HealthFlag, Host, HostSet
from gateway.clusters.transport_socket import UpstreamConnector, connect_upstream
from gateway.clusters.upstream_h1 import UpstreamConnection
from gateway.clusters.upstream_h2 import H2UpstreamConnection
from gateway.config.model import Cluster, HealthCheck
from gateway.errors import GatewayError, UpstreamReset
from gateway.io.byte_stream import ByteStream
from gateway.io.trio_util import RECEIVE_SIZE
from gateway.observability.stats import Counter, Scope, create_stats, describe
from gateway.observability.tasktree import annotate
from gateway.protocol import grpc
from gateway.protocol.events import ResponseHeaders
from gateway.protocol.headers import HeaderMap, RequestHead

log = logging.getLogger("gateway.health_check")

#: grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING
_SERVING = 1
#: A HealthCheckResponse is a status and nothing else: a few bytes.
_MAX_ANSWER = 1024


@attrs.define
class HealthCheckStats:
    attempt: Counter
    success: Counter
    failure: Counter
    #: Failures to connect, or a connection lost mid-probe (also counted in `failure`).
    network_failure: Counter
    #: Hosts that changed from healthy to unhealthy or back.
    changed: Counter

    @classmethod
    def create(cls, scope: Scope) -> "HealthCheckStats":
        return create_stats(cls, scope.child("health_check"))


describe(
    "cluster.health_check",
    {
        "attempt": "Health check probes started.",
        "success": "Probes passed.",
        "failure": "Probes failed, for any reason.",
        "network_failure": "Probes that could not connect or lost their connection.",
        "changed": "Hosts that changed from healthy to unhealthy or back.",
    },
)


class ProbeFailed(Exception):
    """The host answered, but not as a healthy host does."""


class HealthChecker:
    """Probes one host with one check and sets or clears its FAILED_ACTIVE_HC flag."""

    def __init__(
        self,
        cluster_name: str,
        config: Cluster,
        check: HealthCheck,
        host: Host,
        hosts: HostSet,
        stats: HealthCheckStats,
        connector: UpstreamConnector,
    ) -> None:
        self._cluster_name = cluster_name
        self._connector = connector
        self.config = config
        self._check = check
        self.host = host
        self.hosts = hosts
        self._stats = stats
        self._successes = 0
        self._failures = 0
        self._first = True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Probes forever; reports started after the first probe, so a cluster starts with
        every host's health known."""
        check = self._check
        state = "probing"

        def last_result() -> str:
            last = self.host.last_health_check
            return "-" if last is None else last.failure or "ok"

        annotate(
            "health checker",
            lambda: {
                "state": state,
                "last_result": last_result(),
                "health": self.host.health_flag_names(),
            },
            cluster=self._cluster_name,
            upstream_host=str(self.host),
            check=check.type,
        )
        while True:
            state = "probing"
            reason = await self._probe_once()
            self.host.last_health_check = HealthCheckResult(time.time(), reason)
            self._record(reason)
            if self._first:
                self._first = False
                task_status.started()
            state = "waiting for the next probe"
            await trio.sleep(check.interval + random.uniform(0, check.interval_jitter))

    async def _probe_once(self) -> str | None:
        """None if the host is healthy, else why not."""
        self._stats.attempt.inc()
        address = self.host.address
        try:
            with trio.fail_after(self._check.timeout):
                alpn = _PROBE_ALPN[self._check.type]
                stream = await connect_upstream(self._connector, address, self.config, alpn=alpn)
                async with stream:
                    await _PROBES[self._check.type](stream, self._check, self)
        except trio.TooSlowError:
            return f"timed out after {self._check.timeout:g}s"
        except ProbeFailed as exc:
            return str(exc)
        except (OSError, trio.BrokenResourceError, GatewayError) as exc:
            self._stats.network_failure.inc()
            return f"network failure: {exc}"
        return None

    def _record(self, reason: str | None) -> None:
        host, check = self.host, self._check
        failed = HealthFlag.FAILED_ACTIVE_HC in host.health_flags
        if reason is None:
            self._stats.success.inc()
            self._failures = 0
            self._successes += 1
            if failed and (self._first or self._successes >= check.healthy_threshold):
                self._change(healthy=True, reason="passed")
        else:
            self._stats.failure.inc()
            self._successes = 0
            self._failures += 1
            if not failed and self._failures >= check.unhealthy_threshold:
                self._change(healthy=False, reason=reason)
            elif self._first:
                log.warning(
                    "cluster %s: host %s failed its first health check: %s",
                    self._cluster_name,
                    host,
                    reason,
                )

    def _change(self, *, healthy: bool, reason: str) -> None:
        self._stats.changed.inc()
        log.warning(
            "cluster %s: host %s is now %s (%s health check %s)",
            self._cluster_name,
            self.host,
            "healthy" if healthy else "unhealthy",
            self._check.type,
            reason,
        )
        self.hosts.set_health_flag(self.host, HealthFlag.FAILED_ACTIVE_HC, not healthy)

    @property
    def authority(self) -> str:
        """The Host / :authority of a probe: the configured one, else the cluster's name."""
        check = self._check
        return check.host or check.authority or self._cluster_name


async def _probe_http(stream: ByteStream, check: HealthCheck, checker: HealthChecker) -> None:
    conn = UpstreamConnection(
        stream,
        str(checker.host),
        max_header_bytes=64 * 1024,
        parser=checker.config.http1_parser,
    )
    headers = HeaderMap([("user-agent", "gateway-health-check"), ("connection", "close")])
    assert check.path is not None
    await conn.send_request_head(
        RequestHead("GET", check.path, checker.authority, "http", headers), end_stream=True
    )
    event = await conn.receive_event()
    if not isinstance(event, ResponseHeaders):
        raise ProbeFailed("connection closed before a response")
    expected = check.expected_statuses or [200]
    if event.head.status not in expected:
        raise ProbeFailed(f"status {event.head.status}")


async def _probe_tcp(stream: ByteStream, check: HealthCheck, checker: HealthChecker) -> None:
    if check.send is None:
        return  # connecting was the check
    await stream.send_all(check.send.encode())
    if check.expect is None:
        return
    expect, received = check.expect.encode(), b""
    while expect not in received:
        data = await stream.receive_some(RECEIVE_SIZE)
        if not data:
            raise ProbeFailed(f"closed without sending {check.expect!r}")
        received = received[-len(expect) :] + data


async def _probe_grpc(stream: ByteStream, check: HealthCheck, checker: HealthChecker) -> None:
    failure: str | None = None
    async with trio.open_nursery() as nursery:
        conn = H2UpstreamConnection(stream, str(checker.host), checker.config, lambda: None)
        nursery.start_soon(conn.run, name=f"h2 health check {checker.host}")
        head = grpc.call_head("/grpc.health.v1.Health/Check", checker.authority)
        request = _health_check_request(check.service_name or "")
        answer = b""
        try:
            answer = await exchange_unary(conn.open_stream(), head, request, _MAX_ANSWER)
        except GrpcCallFailed as exc:
            failure = f"grpc-status {exc.code}: {exc.message}"
        except UpstreamReset:
            failure = "stream reset before an answer"
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise ProbeFailed(failure)
    if _serving_status(answer) != _SERVING:
        raise ProbeFailed("not SERVING")


_PROBES = {"http": _probe_http, "tcp": _probe_tcp, "grpc": _probe_grpc}
#: What a probe offers in ALPN when the cluster has TLS: the protocol it speaks.
_PROBE_ALPN = {"http": ["http/1.1"], "tcp": [], "grpc": ["h2"]}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _health_check_request(service: str) -> bytes:
    """HealthCheckRequest{service}: field 1, length-delimited. Two protobuf rules are all
    this message needs, so no protobuf runtime is pulled in for it."""
    name = service.encode()
    return b"\x0a" + _varint(len(name)) + name if name else b""


def _serving_status(message: bytes) -> int | None:
    """HealthCheckResponse.status (field 1, varint), or None if absent."""
    if len(message) >= 2 and message[0] == 0x08:
        value, shift = 0, 0
        for byte in message[1:]:
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value
    return None
