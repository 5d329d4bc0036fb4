"""The one way tests make a gateway config: Python data in, TOML text out (tomli-w).

The tables mirror the TOML schema of docs/configuration.md key for key, so a test reads
like the file it configures, and a tweak is a dict edit, not a string substitution:

    config = proxy_config(up.port, listener={"upgrade": ["websocket"]})
    config.cluster("backend", protocol="http2")
    config.table("overload", max_downstream_connections=6)
    async with run_gateway(config) as gw: ...

Tests whose subject is the TOML text itself (the loader's error messages, docs examples,
`gateway validate`) keep their text inline instead.
"""

from collections.abc import Iterable, Mapping
from typing import Any

import tomli_w

#: A TOML table (or inline table) as Python data.
Table = dict[str, Any]


def local(port: int) -> str:
    """The loopback address of `port`, as endpoints and listeners write it."""
    return f"127.0.0.1:{port}"


def _endpoint(value: int | str | Table) -> str | Table:
    """An endpoint entry: a port on loopback, a "host:port", or a table (`address`, `weight`)."""
    return local(value) if isinstance(value, int) else value


def route(prefix: str = "/", **keys: Any) -> Table:
    """A `[[virtual_hosts.NAME.routes]]` entry: `prefix` stands for `match = { prefix }`
    unless `match` is given; the other keys (the action, timeouts, policies) as written."""
    return {"match": {"prefix": prefix}, **keys} if "match" not in keys else keys


class ConfigBuilder:
    """A whole gateway config as nested tables; every method returns the table it made or
    found, for further edits. `[admin]` is on a free loopback port unless `admin` is false."""

    def __init__(self, *, admin: bool = True) -> None:
        self.tables: Table = {"admin": {"address": local(0)}} if admin else {}

    def table(self, *path: str, **keys: Any) -> Table:
        """The table at `path` ("overload", or "listeners", "edge", "http2"), made if
        missing, with `keys` set in it: the way to any table without a method of its own."""
        node = self.tables
        for name in path:
            node = node.setdefault(name, {})
        node.update(keys)
        return node

    def server(self, **keys: Any) -> Table:
        return self.table("server", **keys)

    def listener(self, name: str = "edge", **keys: Any) -> Table:
        """`[listeners.NAME]`, on a free loopback port unless `address` says otherwise."""
        listener = self.table("listeners", name)
        listener.setdefault("address", local(0))
        listener.update(keys)
        return listener

    def filter_chain(self, listener: str = "edge", **keys: Any) -> Table:
        """Appends a `[[listeners.NAME.filter_chains]]` entry to the listener."""
        chain = dict(keys)
        self.listener(listener).setdefault("filter_chains", []).append(chain)
        return chain

    def virtual_host(self, name: str = "main", *routes: Table, **keys: Any) -> Table:
        """`[virtual_hosts.NAME]` for every domain unless `domains` says otherwise;
        `routes` are appended after any it has."""
        vhost = self.table("virtual_hosts", name)
        vhost.setdefault("domains", ["*"])
        vhost.setdefault("routes", []).extend(routes)
        vhost.update(keys)
        return vhost

    def routes(self, vhost: str = "main") -> list[Table]:
        """The virtual host's routes, in order, to edit in place."""
        routes: list[Table] = self.virtual_host(vhost)["routes"]
        return routes

    def cluster(self, name: str = "backend", *endpoints: int | str | Table, **keys: Any) -> Table:
        """`[clusters.NAME]`; `endpoints` (ports on loopback, "host:port" or tables), when
        given, replace the ones it has."""
        cluster = self.table("clusters", name)
        if endpoints or "endpoints" not in cluster:
            cluster["endpoints"] = [_endpoint(e) for e in endpoints]
        cluster.update(keys)
        return cluster

    def http_filter(self, name: str, type: str, **config: Any) -> Table:
        """`[http_filters.NAME]`: the filter's `type` and its own keys."""
        return self.table("http_filters", name, type=type, **config)

    def stats_sink(self, type: str, port: int, **keys: Any) -> Table:
        """Appends a `[[stats_sinks]]` entry sending to `port` on loopback."""
        sink = {"type": type, "address": local(port), **keys}
        self.tables.setdefault("stats_sinks", []).append(sink)
        return sink

    def toml(self) -> str:
        return tomli_w.dumps(self.tables)


def proxy_config(
    *endpoints: int | str | Table,
    listener: Table | None = None,
    http_filters: Mapping[str, Table] | None = None,
    routes: Iterable[Table] = (),
    catch_all: Table | None = None,
    cluster: Table | None = None,
) -> ConfigBuilder:
    """The config most tests need: listener `edge` runs `http_filters` (`[http_filters.*]`
    tables, in this order) and serves virtual host `main` (every domain), whose `routes`
    come before a catch-all route (with `catch_all`'s keys) to cluster `backend` at
    `endpoints`. `listener` and `cluster` add keys to their tables. Draining and
    connecting have short deadlines, so a test that fails does so quickly."""
    config = ConfigBuilder()
    config.server(drain_timeout="2s")
    chain = {"http_filters": list(http_filters)} if http_filters else {}
    config.listener("edge", **{"virtual_hosts": ["main"], **chain, **(listener or {})})
    for name, table in (http_filters or {}).items():
        config.table("http_filters", name, **table)
    config.virtual_host("main", *routes, route(**{"cluster": "backend", **(catch_all or {})}))
    config.cluster("backend", *endpoints, **{"connect_timeout": "1s", **(cluster or {})})
    return config
