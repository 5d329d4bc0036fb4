"""The `floors` block that ends a run."""

import os

from bench.names import H2_UP
from bench.report import SectionReport
from bench.table import Row


def _row(report: SectionReport | None, target: str) -> Row | None:
    return next((r for r in report.rows if r["target"] == target), None) if report else None


def print_floors(reports: dict[str, SectionReport]) -> None:
    """Issue 10's performance floors, checked against this run's figures."""
    http1, http2 = reports.get("http1"), reports.get("http2")
    checks: list[tuple[str, float | None, str, bool | None]] = []

    def num(row: Row | None, key: str) -> float | None:
        value = row.get(key) if row else None
        return float(value) if isinstance(value, int | float) else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    gw, gw2 = _row(http1, "gateway"), _row(http1, "gateway-w2")
    checks.append(("HTTP/1.1 workers=1 >= 0.13x Envoy c1", num(gw, "rps_vs_envoy"), "x", None))
    mitm = ratio(num(gw, "rps"), num(_row(http1, "mitmproxy"), "rps"))
    checks.append(("HTTP/1.1 workers=1 >= 3.5x mitmproxy", mitm, "x", None))
    w2 = ratio(num(gw2, "rps"), num(gw, "rps")) if gw2 and not gw2["errors"] else None
    checks.append(("HTTP/1.1 workers=2 >= 1.5x workers=1 (no errors)", w2, "x", None))
    paced = http1.extra.get("paced") if http1 else None
    p99 = paced.get("p99_ms") if isinstance(paced, dict) else None
    checks.append(("p99 at half the max rate <= 3 ms", p99, " ms", None))
    h2_both = num(_row(http2, "gateway" + H2_UP), "rps_vs_envoy")
    checks.append(("HTTP/2 (h2c both sides) >= 0.10x Envoy", h2_both, "x", None))
    h2_down = num(_row(http2, "gateway"), "rps_vs_envoy")
    checks.append(("  (h2c downstream, HTTP/1.1 upstream)", h2_down, "x", None))
    limits = [0.13, 3.5, 1.5, 3.0, 0.10, 0.10]
    print(f"\nfloors (issue 10), {os.cpu_count()} cores:")
    for (label, value, unit, _), limit in zip(checks, limits, strict=True):
        if value is None:
            verdict, shown = "n/a", "-"
        else:
            met = value <= limit if unit == " ms" else value >= limit
            verdict, shown = ("met" if met else "NOT MET"), f"{value:.3f}{unit}"
        print(f"  {label:<42} {shown:>9}  {verdict}")
