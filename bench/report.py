"""A section's summary rows (medians, ratios to a reference row) and what the section hands
on (summary rows, every sample) to the floors and the JSON file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.logs import report_logs
from bench.measure import Result, S
from bench.services import Service
from bench.table import Row


@dataclass
class SectionReport:
    rows: list[Row]
    samples: dict[str, list[dict[str, object]]]
    failed: bool
    #: http1: the paced-latency and idle-memory figures.
    extra: dict[str, object] = field(default_factory=dict)


def ratio_to(results: list[Result[S]], name: str) -> Callable[[Result[S], str], float | None]:
    """ratio(result, attr): result's median divided by the named target's (None if absent)."""
    ref = next((r for r in results if r.name == name and r.samples), None)

    def ratio(result: Result[S], attr: str) -> float | None:
        mine = result.median(attr)
        theirs = ref.median(attr) if ref else None
        return mine / theirs if mine is not None and theirs else None

    return ratio


def outcome(result: Result[S]) -> Row:
    """The columns every summary row ends with."""
    return {
        "errors": sum(s.errors for s in result.samples),
        "rounds": len(result.samples),
        "failure": result.failure,
    }


def report_section(
    title: str,
    results: list[Result[S]],
    rows: list[Row],
    table: str,
    services: list[Service],
    offsets: dict[Path, int],
) -> SectionReport:
    print(f"\n{title}\n{table}")
    report_logs(title.split(":")[0], services, offsets)
    return SectionReport(
        rows,
        {r.name: [asdict(s) for s in r.samples] for r in results},
        any(r.failure is not None for r in results),
    )
