"""The text report of a scenario run: summary, hosts, timeline, expectations, stats."""

from collections import Counter
from typing import Any

import attrs

from gateway.observability.tasktree import render_text
from gateway.testing.expectations import Check, percentile
from gateway.testing.result import ScenarioResult
from gateway.testing.timeline import Event

#: Timeline lines and leftover tasks shown; the rest are counted ("... N more").
MAX_TIMELINE_LINES = 200
MAX_LEFTOVER_TASKS = 20
#: Events whose detail is the line itself: the gateway's log, and the scenario's reloads.
_TOLD = ("log", "reload")


def _event_line(event: Event) -> str:
    worker = f"worker {event.worker}: " if event.worker is not None else ""
    where = f"cluster {event.cluster}: " if event.cluster else ""
    text = event.detail if event.kind in _TOLD else f"{where}host {event.host} {event.kind}"
    return f"  {event.time:10.3f}s  {worker}{text}"


def _timeline(events: list[Event]) -> list[tuple[float, str]]:
    """Host events and log lines one a line; counts of consecutive seconds (retries,
    overflows, ...) as one line per run of them, since a storm lasts many seconds."""
    lines: list[tuple[float, str]] = []
    runs: dict[tuple[str, str], list[Event]] = {}

    def close(key: tuple[str, str]) -> None:
        run = runs.pop(key)
        total = sum(int(e.detail) for e in run)
        peak = max(int(e.detail) for e in run)
        start = run[0].time - 1
        span = f"{start:.0f}s-{run[-1].time:.0f}s"
        lines.append(
            (
                start,
                f"  {start:10.3f}s  cluster {key[0]}: {total} {key[1]} in "
                f"{span} (at most {peak} in a second)",
            )
        )

    for event in sorted(events, key=lambda e: e.time):
        if event.kind in _TOLD or event.host:
            lines.append((event.time, _event_line(event)))
            continue
        key = (event.cluster, event.kind)
        run = runs.get(key)
        if run is not None and event.time - run[-1].time > 1.0 + 1e-9:
            close(key)
        runs.setdefault(key, []).append(event)
    for key in list(runs):
        close(key)
    return sorted(lines, key=lambda line: line[0])


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
        + (f", {result.workers} workers" if result.workers > 1 else "")
    )
    counts = Counter(o.result for o in result.outcomes)
    summary = ", ".join(f"{key}: {n}" for key, n in sorted(counts.items()))
    lines.append(
        f"  requests: {len(result.outcomes) + result.unfinished} sent, "
        f"{result.unfinished} unfinished; {summary or 'none answered'}"
    )
    lines += [f"  note: {note}" for note in result.notes]
    lines.append("hosts:")
    for address, record in result.hosts.items():
        served = ", ".join(f"{status}: {n}" for status, n in sorted(record.served.items()))
        lines.append(
            f"  {address}  connections {record.connections}, refused {record.refused}, "
            f"served {{{served}}}, cut {record.cut}"
        )
    lines.append("timeline:")
    timeline = [line for _, line in _timeline(result.events)]
    lines += timeline[:MAX_TIMELINE_LINES]
    if len(timeline) > MAX_TIMELINE_LINES:
        lines.append(f"  ... {len(timeline) - MAX_TIMELINE_LINES} more")
    if not timeline:
        lines.append("  (nothing happened)")
    for snapshot in result.task_snapshots:
        where = f" in worker {snapshot.worker}" if snapshot.worker is not None else ""
        lines.append(
            f"tasks at {snapshot.at:.3f}s{where} "
            f"(as /tasks?listener={snapshot.listener} shows them):"
        )
        lines += [f"  {line}" for line in snapshot.text.splitlines()]
    lines.append("tasks alive at the end (as /tasks shows them):")
    alive = [node for nodes in result.leftover_tasks.values() for node in nodes]
    lines += [render_text(node, "  ") for node in alive[:MAX_LEFTOVER_TASKS]]
    if len(alive) > MAX_LEFTOVER_TASKS:
        lines.append(f"  ... {len(alive) - MAX_LEFTOVER_TASKS} more")
    if not alive:
        lines.append("  (no connection or stream outlived its client)")
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


def report_data(result: ScenarioResult, checks: list[Check]) -> dict[str, Any]:
    """The report as plain data (`gateway test --json`): the same parts, unabridged, with
    times in seconds."""
    scenario = result.scenario
    latencies = sorted(o.latency for o in result.outcomes if o.latency is not None)
    return {
        "scenario": scenario.source,
        "description": scenario.description,
        "seed": scenario.seed,
        "workers": result.workers,
        "passed": all(c.passed for c in checks),
        "virtual_seconds": result.virtual_seconds,
        "wall_seconds": result.wall_seconds,
        "notes": result.notes,
        "outcomes": dict(sorted(Counter(o.result for o in result.outcomes).items())),
        "unfinished": result.unfinished,
        "latency": {
            key: percentile(latencies, q) for key, q in (("p50", 50), ("p99", 99), ("max", 100))
        }
        if latencies
        else {},
        "hosts": {
            address: {
                "connections": record.connections,
                "refused": record.refused,
                "served": {str(status): n for status, n in sorted(record.served.items())},
                "cut": record.cut,
            }
            for address, record in result.hosts.items()
        },
        "timeline": [attrs.asdict(e) for e in sorted(result.events, key=lambda e: e.time)],
        "task_snapshots": [
            {"time": s.at, "listener": s.listener, "worker": s.worker, "tasks": s.text}
            for s in result.task_snapshots
        ],
        "leftover_tasks": result.leftover_tasks,
        "stats": dict(sorted(result.stats.items())),
        "expectations": [
            {"expectation": c.expectation, "actual": c.actual, "passed": c.passed} for c in checks
        ],
    }
