"""The cost of one route match (`RouteTable.route`), the per-request lookup that /explain
shares with the data path: /explain must not make it slower.

Three requests against one table of a few virtual hosts (exact, `*.suffix`, `*`): one whose
route is the first of its virtual host, one that passes four routes that do not match (a
prefix, an exact path, a regex, a header) before its own, and one on the default virtual
host with a port in its Host. Printed per call, best of `--repeat` interleaved batches.

    PYTHONPATH=. python bench/route_match_cost.py [--number 200000] [--repeat 15]

from the checkout's root: the gateway is imported in-process, this checkout's rather than
an installed copy. To compare with another revision, load its route_table.py beside this
one and alternate them in one process (what the numbers in bench/README.md did): on a
shared machine, runs of separate processes differ by more than the code does.
"""

import argparse
import functools
import time
from collections.abc import Callable

from gateway.config.load import loads_config
from gateway.protocol.headers import HeaderMap, RequestHead
from gateway.router.route_table import RouteTable

_CONFIG = """
[listeners.edge]
address = "127.0.0.1:0"
virtual_hosts = ["api", "wild", "default"]

[virtual_hosts.api]
domains = ["api.example.com"]
[[virtual_hosts.api.routes]]
match = { prefix = "/admin" }
cluster = "c"
[[virtual_hosts.api.routes]]
match = { path = "/v1/exact" }
cluster = "c"
[[virtual_hosts.api.routes]]
match = { regex = "/v[0-9]+/users/[0-9]+" }
cluster = "c"
[[virtual_hosts.api.routes]]
match = { prefix = "/v1", headers = [{ name = "x-canary", exact = "1" }] }
cluster = "c"
[[virtual_hosts.api.routes]]
match = { prefix = "/v1" }
cluster = "c"

[virtual_hosts.wild]
domains = ["*.example.org"]
[[virtual_hosts.wild.routes]]
match = { prefix = "/" }
cluster = "c"

[virtual_hosts.default]
domains = ["*"]
[[virtual_hosts.default.routes]]
match = { prefix = "/" }
cluster = "c"

[clusters.c]
endpoints = ["127.0.0.1:1"]
"""


def _request(authority: str, path: str) -> RequestHead:
    headers = HeaderMap([("host", authority), ("user-agent", "bench"), ("accept", "*/*")])
    return RequestHead("GET", path, authority, "http", headers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    config = loads_config(_CONFIG)
    table = RouteTable(config.listeners["edge"].virtual_hosts, config)
    cases: dict[str, Callable[[], object]] = {}
    for name, request in {
        "first route": _request("api.example.com", "/admin/x"),
        "fifth route": _request("api.example.com", "/v1/things?page=2"),
        "default vhost": _request("other.test:8080", "/"),
    }.items():
        assert table.route(request) is not None
        cases[name] = functools.partial(table.route, request)
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(args.repeat):
        for name, call in cases.items():
            start = time.perf_counter()
            for _ in range(args.number):
                call()
            best[name] = min(best[name], (time.perf_counter() - start) / args.number)
    for name, seconds in best.items():
        print(f"{name:>14}: {seconds * 1e9:7.1f} ns per match")


if __name__ == "__main__":
    main()
