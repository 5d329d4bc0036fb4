"""Checks a scenario's `[expect]` against what happened: one `Check` per entry."""

import math
from collections.abc import Iterator

import attrs

from gateway.config.regex import compile_regex
from gateway.testing.bound import Bound
from gateway.testing.client import Outcome
from gateway.testing.result import ScenarioResult
from gateway.testing.scenario import LEFTOVER_KINDS, EventExpectation


@attrs.frozen
class Check:
    #: What was expected, as the scenario says it ("status 503 == 0").
    expectation: str
    #: What happened ("12").
    actual: str
    passed: bool


def percentile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank percentile `q` (0-100] of ascending values."""
    rank = max(math.ceil(q / 100 * len(sorted_values)), 1)
    return sorted_values[rank - 1]


def _seconds(value: float) -> str:
    return f"{value * 1000:.1f}ms" if value < 1 else f"{value:.3f}s"


def _count(expectation: str, bound: Bound, value: float) -> Check:
    return Check(f"{expectation} {bound.text}", f"{value:g}", bound.holds(value))


def check_expectations(result: ScenarioResult) -> list[Check]:
    return list(_checks(result))


def _checks(result: ScenarioResult) -> Iterator[Check]:
    expect = result.scenario.expect
    yield from _client_checks(result.outcomes, expect.status, expect.latency, "")
    for name, client in expect.clients.items():
        outcomes = [o for o in result.outcomes if o.client == name]
        yield from _client_checks(outcomes, client.status, client.latency, f"client {name}: ")
    for key, bound in expect.retries.items():
        if key == "total":
            value = sum(v for name, v in result.stats.items() if _is_retry_counter(name))
        else:
            attempts: dict[str, int] = {}
            for record in result.hosts.values():
                for tag, n in record.attempts.items():
                    attempts[tag] = attempts.get(tag, 0) + n
            value = max(attempts.values(), default=1) - 1
        yield _count(f"retries {key}", bound, value)
    for address, bound in expect.served_by.items():
        host = result.hosts.get(address)
        if host is None:
            yield Check(f"served_by {address} {bound.text}", "no such host", False)
        else:
            yield _count(f"served_by {address}", bound, sum(host.served.values()))
    for name, bound in expect.stats.items():
        stat = result.stats.get(name)
        if stat is None:
            yield Check(f"stat {name} {bound.text}", "no such stat", False)
        else:
            yield _count(f"stat {name}", bound, stat)
    if expect.ejection_order is not None:
        order = list(dict.fromkeys(e.host for e in result.events if e.kind == "ejected"))
        yield Check(
            f"ejection_order {expect.ejection_order}", str(order), order == expect.ejection_order
        )
    for pattern, bound in expect.access_log.items():
        what = f'access_log "{pattern}"'
        if result.access_log_lines is None:
            yield Check(f"{what} {bound.text}", "the config has no access log", False)
            continue
        regex = compile_regex(pattern)
        yield _count(what, bound, sum(1 for line in result.access_log_lines if regex.search(line)))
    for key, bound in expect.leftover_tasks.items():
        alive = result.leftover_tasks.get(LEFTOVER_KINDS[key], [])
        yield _count(f"leftover_tasks {key}", bound, len(alive))
    for event in expect.ejections:
        yield _event_check(result, event, "ejected", "ejections of")
    for event in expect.health:
        kind = "healthy" if event.healthy else "unhealthy"
        yield _event_check(result, event, kind, f"turned {kind}:")


def _client_checks(
    outcomes: list[Outcome],
    status: dict[str, Bound],
    latency: dict[str, Bound],
    prefix: str,
) -> Iterator[Check]:
    """The status and latency checks, over every client's outcomes or one's."""
    for key, bound in status.items():
        if key.endswith("xx") and len(key) == 3:
            count = sum(1 for o in outcomes if o.result[0] == key[0] and o.result.isdigit())
        else:
            count = sum(1 for o in outcomes if o.result == key)
        yield _count(f"{prefix}status {key}", bound, count)
    latencies = sorted(o.latency for o in outcomes if o.latency is not None)
    for key, bound in latency.items():
        what = f"{prefix}latency {key} {bound.text}"
        if not latencies:
            yield Check(what, "no request was answered", False)
            continue
        if key == "max":
            value = latencies[-1]
        elif key == "mean":
            value = sum(latencies) / len(latencies)
        else:
            value = percentile(latencies, float(key[1:]))
        yield Check(what, _seconds(value), bound.holds(value))


def _is_retry_counter(name: str) -> bool:
    return name.startswith("cluster.") and name.endswith(".upstream_rq_retry")


def _event_check(result: ScenarioResult, expected: EventExpectation, kind: str, what: str) -> Check:
    low, high = expected.between or (0.0, math.inf)
    times = [
        e.time
        for e in result.events
        if e.kind == kind and e.host == expected.host and low <= e.time <= high
    ]
    window = (
        f" between {expected.between[0]:g}s and {expected.between[1]:g}s"
        if expected.between
        else ""
    )
    at = f" (at {', '.join(f'{t:.3f}s' for t in times)})" if times else ""
    return Check(
        f"{what} {expected.host}{window} {expected.count.text}",
        f"{len(times)}{at}",
        expected.count.holds(len(times)),
    )
