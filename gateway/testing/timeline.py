"""What happened during a scenario, in virtual time: the gateway's own log (ejections,
returns from ejection, health check transitions: exactly the lines an operator would read),
and, each second, what the clusters counted (retries, circuit breaker overflows, timeouts).

The log is read from the records the gateway emits, by their message templates: the
gateway is observed, not changed. The ejection and health check tests of
tests/unit/test_scenario_engine.py fail if a template changes under this module.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import attrs
import trio

from gateway.clusters.manager import ClusterManager

#: Log templates whose records become typed events: (logger, template) -> event kind.
#: The first two arguments of each are the cluster and the host.
_HOST_EVENTS = {
    (
        "gateway.outlier_detection",
        "cluster %s: ejecting host %s for %.1fs (consecutive %s, ejection #%d)",
    ): "ejected",
    ("gateway.outlier_detection", "cluster %s: host %s returns from ejection"): "returned",
}
_HEALTH_TEMPLATE = ("gateway.health_check", "cluster %s: host %s is now %s (%s health check %s)")

#: Cluster counters sampled each second, by what the timeline calls them.
_COUNTED = {
    "retries": "upstream_rq_retry",
    "retry overflows": "upstream_rq_retry_overflow",
    "pending overflows (circuit breaker)": "upstream_rq_pending_overflow",
    "connection overflows (circuit breaker)": "upstream_cx_overflow",
    "timeouts": "upstream_rq_timeout",
    "no healthy host": "upstream_cx_none_healthy",
}


@attrs.frozen
class Event:
    """At `time` (scenario seconds): `kind` ("ejected", "returned", "unhealthy",
    "healthy", "log", "reload", or a counted name) in `cluster`, of `host` if any."""

    time: float
    kind: str
    cluster: str = ""
    host: str = ""
    #: The log line, or the count in the second.
    detail: str = ""
    #: Which worker it happened in, when the scenario ran several (`workers`).
    worker: int | None = None


class _Recorder(logging.Handler):
    def __init__(self, start: float, events: list[Event]) -> None:
        super().__init__(logging.INFO)
        self._start = start
        self._events = events

    def emit(self, record: logging.LogRecord) -> None:
        try:
            now = trio.current_time() - self._start
        except RuntimeError:  # logged outside the run (at its end)
            return
        message = record.getMessage()
        key = (record.name, str(record.msg))
        args = record.args if isinstance(record.args, tuple) else ()
        if key in _HOST_EVENTS:
            kind = _HOST_EVENTS[key]
        elif key == _HEALTH_TEMPLATE:
            kind = str(args[2])
        else:
            self._events.append(Event(now, "log", detail=message))
            return
        self._events.append(Event(now, kind, str(args[0]), str(args[1]), message))


@contextmanager
def recording_log(start: float, events: list[Event]) -> Iterator[None]:
    """Records the gateway's log as events while the block runs, and keeps it off the
    process's own log (the report prints it, in virtual time)."""
    logger = logging.getLogger("gateway")
    recorder = _Recorder(start, events)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(recorder)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(level)
        logger.propagate = propagate


async def sample_counters(
    clusters: ClusterManager, start: float, events: list[Event], interval: float = 1.0
) -> None:
    """Each `interval`: what the clusters counted in it, as events; until cancelled."""
    last: dict[tuple[str, str], int] = {}
    at = start
    while True:
        at += interval
        await trio.sleep_until(at)
        for name, cluster in clusters.clusters.items():
            for kind, stat in _COUNTED.items():
                value = getattr(cluster.stats, stat).value
                before = last.get((name, stat), 0)
                if value < before:  # a reload replaced the cluster: its counts start over
                    before = 0
                if value > before:
                    events.append(Event(at - start, kind, name, detail=str(value - before)))
                last[name, stat] = value
