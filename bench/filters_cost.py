"""The cost of HTTP filters: the gateway with no filters vs a chain of five, side by side.

Both gateways proxy to the same nginx; wrk runs in interleaved rounds (so machine noise hits
both alike). The chain is header_mutation, cors, rbac, local_ratelimit (a bucket too big to
empty) and fault (never firing): each runs on every request, none rejects it. The per-filter
cost is the extra time per request divided by five.

    python bench/filters_cost.py [--rounds 3] [--duration 5]
"""

import contextlib
import statistics
from pathlib import Path

from ab import interleaved_ab
from run import Service, check_hello, free_port, gateway_argv, gateway_toml, start_checked

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


def start(stack: contextlib.ExitStack, tmp: Path, name: str, upstream: int, chain: bool) -> Service:
    port = free_port()
    text = gateway_toml(port, upstream)
    if chain:
        text = text.replace(
            'virtual_hosts = ["all"]',
            'virtual_hosts = ["all"]\nhttp_filters = ["mark", "cors", "rbac", "rate", "chaos"]',
        )
        text += FILTERS
    conf = tmp / f"{name}.toml"
    conf.write_text(text)
    return start_checked(stack, tmp, name, gateway_argv(conf), port, check_hello)


def main() -> None:
    settings, rps = interleaved_ab(
        __doc__.splitlines()[0],
        ("no filters", lambda stack, tmp, name, up: start(stack, tmp, "bare", up, chain=False)),
        ("5 filters", lambda stack, tmp, name, up: start(stack, tmp, "chain", up, chain=True)),
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
