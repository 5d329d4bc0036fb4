"""The gateway's latency at half its max rate (after the http1 table): h2load --h1 paced
per connection, so the figure is latency under a fixed offered load."""

import statistics
import tempfile
from pathlib import Path

from bench.load.h2load import run_paced_h1
from bench.services import Service
from bench.settings import Settings


def paced_latency(service: Service, rate: float, settings: Settings) -> dict[str, object]:
    """p50/p99 at a fixed request rate (half the measured max): h2load --h1 with --rps per
    connection, each request's time from its per-request log; median over rounds."""
    per_client = max(1, round(rate / settings.connections))
    offered = per_client * settings.connections
    print(
        f"\n== {service.name}: latency at half its max rate: h2load --h1 -c "
        f"{settings.connections} --rps {per_client} (= {offered:,} req/s offered), "
        f"{settings.rounds} x {settings.duration}s"
    )
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="gateway-paced-") as tmp:
        log = Path(tmp) / "requests.tsv"
        for _ in range(settings.rounds):
            code, error, times = run_paced_h1(
                service.port,
                connections=settings.connections,
                per_client=per_client,
                duration=settings.duration,
                log=log,
            )
            if code != 0:
                print(f"  h2load failed ({code}): {error}")
                return {"error": error}
            if not times:
                return {"error": "no successful request"}
            done = len(times) / settings.duration
            p50, p99 = times[len(times) // 2], times[min(len(times) - 1, len(times) * 99 // 100)]
            rounds.append({"rps": done, "p50_ms": p50, "p99_ms": p99})
            print(f"  {done:,.0f} req/s done, p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    result: dict[str, object] = {
        "target": service.name,
        "offered_rps": offered,
        **{k: statistics.median(r[k] for r in rounds) for k in ("rps", "p50_ms", "p99_ms")},
        "rounds": rounds,
    }
    print(
        f"  median: p50 {result['p50_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms "
        f"at {result['rps']:,.0f} req/s"
    )
    return result
