"""What one idle connection costs the gateway (after the http1 table): its RSS before and
after opening many HTTP/1.1, then many h2c, connections that each served one request."""

import socket
import time

from bench.load.idle import open_idle_h1, open_idle_h2
from bench.procfs import rss_kib
from bench.services import Service


def idle_connection_rss(service: Service, count: int) -> dict[str, object]:
    """What one idle connection costs the process: RSS before and after opening `count`
    (each served one request, so it holds whatever a kept-alive connection keeps)."""
    print(f"\n== {service.name}: RSS per idle connection ({count:,} connections each)")
    result: dict[str, object] = {"target": service.name, "connections": count}
    for kind, opener in (("http1", open_idle_h1), ("http2", open_idle_h2)):
        time.sleep(0.5)
        before = rss_kib(service.proc.pid)
        socks: list[socket.socket] = []
        try:
            for _ in range(count):
                socks.append(opener(service.port))
            time.sleep(1.0)
            after = rss_kib(service.proc.pid)
        except OSError as exc:
            print(f"  {kind}: stopped after {len(socks)} connections: {exc!r}")
            result[kind] = {"error": repr(exc), "opened": len(socks)}
            continue
        finally:
            for sock in socks:
                sock.close()
        per = (after - before) / count
        result[kind] = {"rss_before_kib": before, "rss_after_kib": after, "kib_per_conn": per}
        label = "HTTP/1.1 keep-alive" if kind == "http1" else "HTTP/2 (h2c)"
        mib = f"{before / 1024:.1f} MiB -> {after / 1024:.1f} MiB"
        print(f"  {label:<20} {mib}: {per:.1f} KiB each")
    return result
