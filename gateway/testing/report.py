"""The text report of a scenario run: summary, hosts, timeline, expectations, stats."""

from collections import Counter

from gateway.testing.engine import ScenarioResult
from gateway.testing.expectations import Check
from gateway.testing.timeline import Event

#: Timeline lines shown; the rest are counted ("... N more").
MAX_TIMELINE_LINES = 200


def _event_line(event: Event) -> str:
    where = f"cluster {event.cluster}: " if event.cluster else ""
    if event.kind == "log":
        text = event.detail
    elif event.host:
        text = f"{where}host {event.host} {event.kind}"
    else:
        text = f"{where}{event.detail} {event.kind} in the second before"
    return f"  {event.time:10.3f}s  {text}"


def render_report(result: ScenarioResult, checks: list[Check], *, all_stats: bool = False) -> str:
    scenario = result.scenario
    lines = [
        f"scenario {scenario.source}"
        + (f": {scenario.description}" if scenario.description else "")
    ]
    ratio = result.virtual_seconds / result.wall_seconds if result.wall_seconds else 0.0
    lines.append(
        f"  {result.virtual_seconds:.1f}s of virtual time in {result.wall_seconds:.2f}s "
        f"of wall time ({ratio:.1f}x), seed {scenario.seed}"
    )
    counts = Counter(o.result for o in result.outcomes)
    summary = ", ".join(f"{key}: {n}" for key, n in sorted(counts.items()))
    lines.append(
        f"  requests: {len(result.outcomes) + result.unfinished} sent, "
        f"{result.unfinished} unfinished; {summary or 'none answered'}"
    )
    lines.append("hosts:")
    for address, record in result.hosts.items():
        served = ", ".join(f"{status}: {n}" for status, n in sorted(record.served.items()))
        lines.append(
            f"  {address}  connections {record.connections}, refused {record.refused}, "
            f"served {{{served}}}, cut {record.cut}"
        )
    lines.append("timeline:")
    events = sorted(result.events, key=lambda e: e.time)
    lines += [_event_line(e) for e in events[:MAX_TIMELINE_LINES]]
    if len(events) > MAX_TIMELINE_LINES:
        lines.append(f"  ... {len(events) - MAX_TIMELINE_LINES} more")
    if not events:
        lines.append("  (nothing happened)")
    lines.append("stats:" if all_stats else "stats (non-zero):")
    lines += [
        f"  {name}: {value}" for name, value in sorted(result.stats.items()) if value or all_stats
    ]
    lines.append("expectations:")
    for check in checks:
        mark = "PASS" if check.passed else "FAIL"
        lines.append(f"  {mark}  {check.expectation}  (was {check.actual})")
    if not checks:
        lines.append("  (none)")
    passed = all(c.passed for c in checks)
    lines.append(f"{'PASSED' if passed else 'FAILED'}: {scenario.source}")
    return "\n".join(lines) + "\n"
