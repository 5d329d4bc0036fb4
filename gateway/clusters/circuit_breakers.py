"""Circuit breakers: a cluster's counted resources and their limits (Envoy's
ResourceManager). Code that takes a resource checks `can_create()` first and overflows at
once if not, so load beyond a limit is shed with a 503 instead of queueing without bound."""

from gateway.config.model import CircuitBreakers
from gateway.observability.stats import Gauge, Scope, describe

#: The counted resources: (stat name part, limit).
_RESOURCES = (
    ("cx", "max_connections"),
    ("rq_pending", "max_pending_requests"),
    ("rq", "max_requests"),
    ("rq_retry", "max_retries"),
)
describe(
    "cluster.circuit_breakers.default",
    {
        **{f"{name}_open": f"1 while {limit} is reached, else 0." for name, limit in _RESOURCES},
        **{f"remaining_{name}": f"How much of {limit} is left." for name, limit in _RESOURCES},
    },
)


class Resource:
    """One counted resource. The `*_open` gauge is 1 while the breaker is tripped, and
    `remaining_*` says how much is left, as Envoy publishes them."""

    __slots__ = ("_open", "_remaining", "count", "limit")

    def __init__(self, limit: int, open_gauge: Gauge, remaining: Gauge) -> None:
        self.count = 0
        self.limit = limit
        self._open = open_gauge
        self._remaining = remaining
        remaining.value = limit

    def can_create(self) -> bool:
        return self.count < self.limit

    def inc(self) -> None:
        self.count += 1
        self._changed()

    def dec(self) -> None:
        self.count -= 1
        self._changed()

    def _changed(self) -> None:
        self._remaining.value = max(self.limit - self.count, 0)
        self._open.value = 1 if self.count >= self.limit else 0


class ResourceManager:
    def __init__(self, config: CircuitBreakers, scope: Scope) -> None:
        def resource(limit: int, name: str) -> Resource:
            return Resource(
                limit,
                scope.gauge(f"circuit_breakers.default.{name}_open"),
                scope.gauge(f"circuit_breakers.default.remaining_{name}"),
            )

        self.connections = resource(config.max_connections, "cx")
        self.pending_requests = resource(config.max_pending_requests, "rq_pending")
        self.requests = resource(config.max_requests, "rq")
        self.retries = resource(config.max_retries, "rq_retry")
