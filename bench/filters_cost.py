"""The cost of HTTP filters: the gateway with no filters vs a chain of five, side by side.

Both gateways proxy to the same nginx; wrk runs in interleaved rounds (so machine noise hits
both alike). The chain is header_mutation, cors, rbac, local_ratelimit (a bucket too big to
empty) and fault (never firing): each runs on every request, none rejects it. The per-filter
cost is the extra time per request divided by five.

    python bench/filters_cost.py [--rounds 3] [--duration 5]
"""

import statistics
import sys
from pathlib import Path

# Run as a script, Python puts bench/ first on the path; the package needs the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ab import interleaved_ab
from bench.peers.gateway import ALL_HOSTS, gateway_toml

CHAIN = 'http_filters = ["mark", "cors", "rbac", "rate", "chaos"]'

FILTERS = """
[http_filters.mark]
type = "header_mutation"
request_headers_to_add = { "x-gateway" = "1" }
[http_filters.cors]
type = "cors"
allow_origins = ["https://app.example.com"]
[http_filters.rbac]
type = "rbac"
action = "deny"
[[http_filters.rbac.rules]]
path_prefixes = ["/admin"]
[http_filters.rate]
type = "local_ratelimit"
max_tokens = 1000000000
tokens_per_fill = 1000000000
[http_filters.chaos]
type = "fault"
abort = { http_status = 503, percentage = 0 }
"""


def chain_toml(port: int, upstream: int) -> str:
    return gateway_toml(port, upstream, listener=f"{ALL_HOSTS}\n{CHAIN}") + FILTERS


def main() -> None:
    settings, rps = interleaved_ab(
        __doc__.splitlines()[0],
        ("no filters", "bare", gateway_toml),
        ("5 filters", "chain", chain_toml),
    )
    bare, chain = statistics.median(rps["no filters"]), statistics.median(rps["5 filters"])
    per_filter_us = (1 / chain - 1 / bare) / 5 * 1e6
    print(
        f"wrk -c{settings.connections}, {settings.rounds} interleaved rounds x "
        f"{settings.duration}s, medians; one gateway process, nginx upstream"
    )
    print(f"  no filters: {bare:8,.0f} req/s")
    print(f"  5 filters:  {chain:8,.0f} req/s  ({chain / bare:.2f}x)")
    print(f"  cost per filter per request: {per_filter_us:.1f} us")


if __name__ == "__main__":
    main()
