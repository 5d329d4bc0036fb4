"""Retries (Envoy's retry_policy): which failed attempts may be tried again, the back-off
between tries, and the request body kept so that a retry can send it again.

A retry is only ever decided before the response has started downstream: once the client
has seen a status line, the exchange is committed. Requests that are not idempotent are
retried only when the upstream cannot have seen them (a failed connect, a refused stream),
unless the policy says otherwise; gRPC calls follow the gRPC status conditions.
"""

import random
from typing import Protocol

import trio

from gateway.clusters.cluster import Cluster
from gateway.clusters.host import Host
from gateway.config.model import RetryPolicy
from gateway.errors import (
    GatewayError,
    UpstreamConnectError,
    UpstreamRefusedStream,
    UpstreamReset,
    UpstreamTimeout,
)
from gateway.protocol.headers import ResponseHead

#: Methods whose repetition is harmless (RFC 9110 9.2.2).
IDEMPOTENT_METHODS = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"))
#: retry_on names of gRPC statuses, read from the grpc-status of a trailers-only answer.
_GRPC_CONDITIONS = {
    "cancelled": "1",
    "deadline-exceeded": "4",
    "resource-exhausted": "8",
    "internal": "13",
    "unavailable": "14",
}
#: Failures the upstream cannot have acted on: safe to retry for any method.
_NEVER_SENT = {UpstreamConnectError: "connect-failure", UpstreamRefusedStream: "refused-stream"}


class RetryableResponse(Exception):
    """The upstream's answer is one the policy retries: drop it (and its connection or
    stream) and try again."""

    def __init__(self, head: ResponseHead) -> None:
        super().__init__(head.status)
        self.head = head
        self.status = head.status


class BodySource(Protocol):
    """Where an exchange reads the request body from: the stream itself, or (with a
    retry policy) a replay of the bytes read so far followed by the rest."""

    async def receive_body(self) -> bytes | None: ...

    def body_ready(self) -> bool:
        """Whether `receive_body()` would return without waiting for the client: the next
        chunk, or the body's end, is already here."""
        ...


class RequestBodyBuffer:
    """The request body as read so far, kept up to `limit` bytes for a retry to resend.
    Past the limit the body streams on unkept and the request can no longer be retried."""

    def __init__(self, source: BodySource, limit: int) -> None:
        self._source = source
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._complete = False
        self.overflowed = False

    def reader(self) -> "BufferedBodyReader":
        return BufferedBodyReader(self)

    async def read_more(self) -> bytes | None:
        if self._complete:
            return None
        chunk = await self._source.receive_body()
        if chunk is None:
            self._complete = True
        elif not self.overflowed:
            self._size += len(chunk)
            if self._size > self._limit:
                self.overflowed = True
                self._chunks = []
            else:
                self._chunks.append(chunk)
        return chunk

    def kept(self, index: int) -> bytes | None:
        return self._chunks[index] if index < len(self._chunks) else None

    def ready(self, index: int) -> bool:
        return index < len(self._chunks) or self._complete or self._source.body_ready()


class BufferedBodyReader:
    """One attempt's view of the body: the kept chunks first, then whatever is new."""

    def __init__(self, buffer: RequestBodyBuffer) -> None:
        self._buffer = buffer
        self._index = 0

    def body_ready(self) -> bool:
        return self._buffer.ready(self._index)

    async def receive_body(self) -> bytes | None:
        chunk = self._buffer.kept(self._index)
        if chunk is not None:
            self._index += 1
            return chunk
        chunk = await self._buffer.read_more()
        self._index += 1
        return chunk


def may_repeat(policy: RetryPolicy, method: str, is_grpc: bool) -> bool:
    """Whether a request may be sent again after the upstream may have acted on it (a
    reset, a timeout, a retriable answer); if not, only failures it cannot have seen
    (connect-failure, refused-stream) are retried."""
    return is_grpc or method in IDEMPOTENT_METHODS or policy.retry_non_idempotent


class RetryState:
    """One request's retries: what is left of the budget and which hosts were tried."""

    def __init__(
        self,
        policy: RetryPolicy,
        cluster: Cluster,
        method: str,
        is_grpc: bool,
        body: RequestBodyBuffer | None,
    ) -> None:
        self._policy = policy
        self._conditions = frozenset(policy.retry_on)
        self._cluster = cluster
        self._is_grpc = is_grpc
        self._may_repeat = may_repeat(policy, method, is_grpc)
        self.body = body
        self.attempt = 1
        self.tried: tuple[Host, ...] = ()
        self.per_try_timeout = policy.per_try_timeout
        self._holding_breaker = False
        #: The retry_on condition that made the last try fail over to the next one.
        self.reason = ""

    # -- decisions -----------------------------------------------------------------------

    def retries_response(self, head: ResponseHead) -> bool:
        """Whether to drop this upstream response and try again."""
        if not self._may_repeat:
            return False
        return self._take_retry(self._matches_response(head))

    def retries_error(self, exc: GatewayError) -> bool:
        """Whether to try again after an attempt failed with `exc` before responding."""
        return self._take_retry(self._matches_error(exc))

    def _matches_response(self, head: ResponseHead) -> str | None:
        """The retry_on condition the response meets, if any."""
        status, on = head.status, self._conditions
        if "5xx" in on and status >= 500:
            return "5xx"
        if "gateway-error" in on and status in (502, 503, 504):
            return "gateway-error"
        if "retriable-status-codes" in on and status in self._policy.retriable_status_codes:
            return "retriable-status-codes"
        # Only a trailers-only answer has its grpc-status in the head; one without it is
        # no gRPC condition (and must not match the HTTP conditions' missing names).
        if self._is_grpc and (grpc_status := head.headers.get("grpc-status")) is not None:
            return next((c for c in on if _GRPC_CONDITIONS.get(c) == grpc_status), None)
        return None

    def _matches_error(self, exc: GatewayError) -> str | None:
        """The retry_on condition the failure meets, if any."""
        for kind, condition in _NEVER_SENT.items():
            if isinstance(exc, kind):
                return self._first_of(condition, "5xx", "gateway-error", "reset")
        if not self._may_repeat:
            return None
        if isinstance(exc, UpstreamReset | UpstreamTimeout):
            return self._first_of("5xx", "gateway-error", "reset")
        return None

    def _first_of(self, *conditions: str) -> str | None:
        return next((c for c in conditions if c in self._conditions), None)

    def _take_retry(self, reason: str | None) -> bool:
        if reason is None:
            return False
        stats = self._cluster.stats
        if self.attempt > self._policy.num_retries:
            stats.upstream_rq_retry_limit_exceeded.inc()
            return False
        if self.body is not None and self.body.overflowed:
            return False
        if not self._holding_breaker:
            retries = self._cluster.resources.retries
            if not retries.can_create():
                stats.upstream_rq_retry_overflow.inc()
                return False
            retries.inc()
            self._holding_breaker = True
        stats.upstream_rq_retry.inc()
        self.reason = reason
        return True

    # -- between attempts ----------------------------------------------------------------

    async def back_off(self) -> None:
        """Sleeps before the next attempt: exponential with full jitter, as Envoy."""
        back_off = self._policy.retry_back_off
        cap = back_off.max_interval or back_off.base_interval * 10
        ceiling = min(cap, back_off.base_interval * (2 ** (self.attempt - 1)))
        self._cluster.stats.upstream_rq_retry_backoff_exponential.inc()
        self.attempt += 1
        await trio.sleep(random.uniform(0, ceiling))

    def finish(self, status: int) -> None:
        """The request is done (answered with `status`, 0 if it failed locally)."""
        if self._holding_breaker:
            self._cluster.resources.retries.dec()
            self._holding_breaker = False
            if 0 < status < 500:
                self._cluster.stats.upstream_rq_retry_success.inc()
