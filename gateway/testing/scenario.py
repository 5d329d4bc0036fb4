"""A scenario file (TOML): what the upstream hosts do over time, what the clients send, and
what the operator expects to happen. docs/testing.md describes every key.

Loaded as the config is (`gateway.config.load`): strict types, units in the types, unknown
keys refused, every error at once and named by its TOML path.
"""

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs

from gateway.config.load import load_toml, make_converter, parse_address, structure_toml
from gateway.config.model import ByteSize, Duration
from gateway.config.regex import check_regex
from gateway.errors import ConfigError
from gateway.testing.bound import Bound, parse_bound

#: What a host does with a connection: "up" serves; "down" refuses new connections and
#: cuts the open ones (a crashed process); "hang" reads requests and never answers; "reset"
#: sends the response head and half the body, then closes the connection.
HostState = Literal["up", "down", "hang", "reset"]


#: Defaults (the config's units are NewTypes: a call each, made once here).
_NO_TIME = Duration(0.0)
_NO_BYTES = ByteSize(0)
_ONE_MS = Duration(0.001)
_ONE_SECOND = Duration(1.0)
_SMALL_MESSAGE = ByteSize(32)
#: HTTP/2's initial stream window: what a simulated HTTP/2 client sends without waiting.
_H2_WINDOW = 65535


def _one_of(instance: object, names: tuple[str, ...], what: str) -> None:
    given = [n for n in names if getattr(instance, n) is not None]
    if len(given) != 1:
        raise ValueError(f"{what}: give exactly one of {', '.join(names)}, got {given or 'none'}")


@attrs.frozen
class Latency:
    """How long a host thinks before answering: `"20ms"` (fixed), or one seeded
    distribution: `{ uniform = ["10ms", "50ms"] }`, `{ exponential = "20ms" }` (the mean),
    `{ lognormal = "20ms", sigma = 0.5 }` (the median, and the spread of its logarithm)."""

    fixed: Duration | None = None
    uniform: tuple[Duration, Duration] | None = None
    exponential: Duration | None = None
    lognormal: Duration | None = None
    sigma: float = attrs.field(default=0.5, validator=attrs.validators.ge(0.0))

    def __attrs_post_init__(self) -> None:
        _one_of(self, ("fixed", "uniform", "exponential", "lognormal"), "latency")
        if self.uniform is not None and self.uniform[0] > self.uniform[1]:
            raise ValueError(f"latency: uniform needs [low, high], got {list(self.uniform)}")


@attrs.frozen
class StatusMix:
    """The statuses a host answers with, by weight: `status = 503`, or
    `status = { "200" = 9, "503" = 1 }`."""

    weights: tuple[tuple[int, float], ...]


@attrs.frozen
class HostChange:
    """`[[hosts."ADDRESS".at]]`: from `time` on, the host behaves with these settings (the
    ones not given stay as they were)."""

    time: Duration
    state: HostState | None = None
    latency: Latency | None = None
    connect_latency: Duration | None = None
    status: StatusMix | None = None
    body_size: ByteSize | None = None


@attrs.frozen
class HostScript:
    """`[hosts."ADDRESS"]`: a simulated upstream host at a cluster endpoint's address. An
    endpoint with no script is a host that answers 200 at once."""

    state: HostState = "up"
    latency: Latency = Latency(fixed=_NO_TIME)
    #: How long a connection takes to be established (a slow network, or a SYN queue).
    connect_latency: Duration = _NO_TIME
    status: StatusMix = StatusMix(((200, 1.0),))
    #: The response body's size.
    body_size: ByteSize = _NO_BYTES
    at: list[HostChange] = attrs.Factory(list)


@attrs.frozen
class WebSocketSession:
    """`websocket = { messages = 10, interval = "1s", size = 32 }`: after the upgrade, the
    client sends `messages` messages of `size` bytes, `interval` apart, each to be echoed
    back whole by the host through the gateway's tunnel."""

    messages: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    interval: Duration = _ONE_SECOND
    size: ByteSize = _SMALL_MESSAGE


@attrs.frozen
class GrpcStream:
    """`grpc_stream = { messages = 10, interval = "1s", size = 32 }`: a server-streaming
    gRPC call: after its think time the host sends `messages` messages of `size` bytes,
    `interval` apart, then its status in trailers (a "reset" host resets the stream
    halfway through them)."""

    messages: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    interval: Duration = _ONE_SECOND
    size: ByteSize = _SMALL_MESSAGE


@attrs.frozen
class RequestSpec:
    """`[[clients.requests]]`: one kind of request in a client's mix, picked by weight."""

    method: str = "GET"
    path: str = "/"
    authority: str = "example.com"
    headers: dict[str, str] = attrs.Factory(dict)
    body_size: ByteSize = _NO_BYTES
    weight: float = attrs.field(default=1.0, validator=attrs.validators.gt(0.0))
    #: A unary gRPC call (POST, application/grpc, one message of body_size): its outcome
    #: is its grpc-status ("grpc-0", "grpc-14"). HTTP/2 clients only.
    grpc: bool = False
    #: A server-streaming gRPC call instead: its outcome is its grpc-status, or "reset" if
    #: the stream was cut. HTTP/2 clients only.
    grpc_stream: GrpcStream | None = None
    #: A WebSocket session (an HTTP/1.1 upgrade, then echoed messages): its outcome is
    #: "101" if every message came back, "reset" if the tunnel broke, or the status of
    #: a refused upgrade. HTTP/1.1 clients only.
    websocket: WebSocketSession | None = None

    def __attrs_post_init__(self) -> None:
        if self.grpc and self.grpc_stream is not None:
            raise ValueError("a request is a unary gRPC call (grpc) or a stream (grpc_stream)")


@attrs.frozen
class ClientScript:
    """`[[clients]]`: HTTP/1.1 clients on one listener, with keep-alive. Either open loop,
    `rate` requests a second whatever the answers take (a connection per request in
    flight), or closed loop, `concurrency` connections each sending its next request when
    the last one is answered."""

    name: str = "client"
    #: The listener it connects to; the config's only one if it has one.
    listener: str | None = None
    #: "http1": keep-alive connections, one request at a time each; "http2" (h2c prior
    #: knowledge): one connection, every request a stream of it.
    protocol: Literal["http1", "http2"] = "http1"
    #: The SNI its connections would offer: chooses a listener's filter chain by
    #: server_names (TLS itself is not simulated).
    server_name: str | None = None
    rate: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0.0))
    )
    concurrency: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    start: Duration = _NO_TIME
    #: How long it sends for; by default until the scenario's end.
    duration: Duration | None = None
    #: The client gives up on a request after this long (counted as "timeout").
    deadline: Duration | None = None
    #: Closed loop: the wait between an answer and the next request on the connection.
    #: Never 0: a route the gateway answers itself takes no virtual time, so a client that
    #: did not wait would send forever without the clock moving.
    think_time: Duration = attrs.field(default=_ONE_MS, validator=attrs.validators.gt(_NO_TIME))
    requests: list[RequestSpec] = attrs.Factory(lambda: [RequestSpec()])

    def __attrs_post_init__(self) -> None:
        _one_of(self, ("rate", "concurrency"), f"client {self.name}")
        if not self.requests:
            raise ValueError(f"client {self.name}: requests is empty")
        if self.protocol != "http1" and any(r.websocket for r in self.requests):
            raise ValueError(f'client {self.name}: WebSocket sessions need protocol = "http1"')
        if self.protocol != "http2" and any(r.grpc or r.grpc_stream for r in self.requests):
            raise ValueError(f'client {self.name}: gRPC calls need protocol = "http2"')
        if self.protocol == "http2" and any(r.body_size > _H2_WINDOW for r in self.requests):
            raise ValueError(
                f"client {self.name}: an HTTP/2 client's bodies fit its first window "
                f"({_H2_WINDOW} bytes)"
            )


@attrs.frozen
class EventExpectation:
    """`[[expect.ejections]]`, `[[expect.health]]`: how many times `host` was ejected (or
    turned unhealthy, with `healthy = false`; healthy again, with true) in the window."""

    host: str
    #: [from, to] in scenario time; the whole run by default.
    between: tuple[Duration, Duration] | None = None
    count: Bound = attrs.Factory(lambda: parse_bound(">= 1"))
    #: For health changes only: which way it changed.
    healthy: bool = False


@attrs.frozen
class ClientExpectations:
    """`[expect.clients.NAME]`: `status` and `latency` over one client's requests."""

    status: dict[str, Bound] = attrs.Factory(dict)
    latency: dict[str, Bound] = attrs.Factory(dict)


@attrs.frozen
class Expectations:
    """`[expect]`: each entry is checked, and reported, on its own."""

    #: Client-seen outcomes by key: a status ("503"), a class ("5xx"), "timeout" (the
    #: client's deadline passed), "reset" (the connection closed with no response).
    status: dict[str, Bound] = attrs.Factory(dict)
    #: Client-seen virtual latency of answered requests: "p50", "p99", "p99.9", "max".
    latency: dict[str, Bound] = attrs.Factory(dict)
    #: "total" (the clusters' upstream_rq_retry), "max_per_request" (attempts that reached
    #: a host for one request, less one).
    retries: dict[str, Bound] = attrs.Factory(dict)
    #: The same two, per client (by its name).
    clients: dict[str, ClientExpectations] = attrs.Factory(dict)
    #: Requests each host answered (a host's address).
    served_by: dict[str, Bound] = attrs.Factory(dict)
    #: Counters and gauges by their Envoy names, at the end.
    stats: dict[str, Bound] = attrs.Factory(dict)
    ejections: list[EventExpectation] = attrs.Factory(list)
    health: list[EventExpectation] = attrs.Factory(list)
    #: Every host ejected, in the order of its first ejection (an exact list).
    ejection_order: list[str] | None = None
    #: Access log lines (in the config's own formats) an RE2 pattern finds, counted.
    access_log: dict[str, Bound] = attrs.Factory(dict)
    #: Tasks alive at the end, once the clients closed their connections: "streams"
    #: (requests), "connections" (downstream). Anything but 0 outlived its request.
    leftover_tasks: dict[str, Bound] = attrs.Factory(dict)


@attrs.frozen
class Reload:
    """`[[reloads]]`: at `time`, the gateway takes the config file `config` (a path from
    the scenario file's directory) as a hot reload (SIGHUP, `POST /reload`) takes it:
    changed clusters replaced, listeners swapped, requests in flight carried on or
    drained by the new config's drain timeout."""

    time: Duration
    config: str


@attrs.frozen
class Scenario:
    duration: Duration
    seed: int = 0
    description: str = ""
    #: By address ("127.0.0.1:8080"); every cluster endpoint of the config is a host.
    hosts: dict[str, HostScript] = attrs.Factory(dict)
    clients: list[ClientScript] = attrs.Factory(list)
    expect: Expectations = Expectations()
    #: When to take a /tasks snapshot of each listener's connections and streams, for the
    #: report (what the gateway was doing at the worst moment of a storm, say).
    task_snapshots: list[Duration] = attrs.Factory(list)
    #: Hot reloads during the run, in time order (a deploy).
    reloads: list[Reload] = attrs.Factory(list)
    #: The gateway's worker processes (`[server] workers`), each with its share of the
    #: clients' connections and its own outlier detection, breakers and rate limits;
    #: each runs in a process of its own (docs/testing.md).
    workers: int = attrs.field(default=1, validator=attrs.validators.in_(range(1, 65)))
    #: Where it was loaded from, for the report.
    source: str = attrs.field(default="<scenario>", eq=False)


_PERCENTILE_KEYS = ("max", "mean")
#: `[expect.leftover_tasks]` keys, and the /tasks kind each counts.
LEFTOVER_KINDS = {"streams": "stream", "connections": "connection"}


def _make_converter() -> cattrs.Converter:
    converter = make_converter()
    latency_table = converter.gen_structure_attrs_fromdict(Latency)

    def structure_latency(value: object, t: type) -> Latency:
        if isinstance(value, str):
            return latency_table({"fixed": value}, t)
        if not isinstance(value, dict):
            raise ValueError(f"expected a duration or a table, got {value!r}")
        return latency_table(value, t)

    def structure_status(value: object, _: type) -> StatusMix:
        if isinstance(value, int) and not isinstance(value, bool):
            return StatusMix(((_status(value), 1.0),))
        if not isinstance(value, dict) or not value:
            raise ValueError(
                f'expected a status or a table {{ "200" = 9, "503" = 1 }}, got {value!r}'
            )
        mix = []
        for key, weight in value.items():
            if not key.isdigit() or isinstance(weight, bool) or not isinstance(weight, int | float):
                raise ValueError(f"expected status = weight pairs, got {key!r} = {weight!r}")
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(f"weight of {key} must be a finite number >= 0, got {weight!r}")
            mix.append((_status(int(key)), float(weight)))
        if not sum(w for _, w in mix):
            raise ValueError("the weights add up to 0")
        return StatusMix(tuple(mix))

    def structure_bound(value: object, _: type) -> Bound:
        return parse_bound(value)

    converter.register_structure_hook(Latency, structure_latency)
    converter.register_structure_hook(StatusMix, structure_status)
    converter.register_structure_hook(Bound, structure_bound)
    return converter


def _status(code: int) -> int:
    if not 200 <= code <= 599:
        raise ValueError(f"expected a final status 200-599, got {code}")
    return code


_converter = _make_converter()


def structure_scenario(data: dict[str, Any], source: str) -> Scenario:
    """A Scenario from parsed TOML; ConfigError listing every problem by TOML path."""
    scenario = structure_toml(data, Scenario, _converter)
    errors: list[str] = []
    hosts = {}
    for address, script in scenario.hosts.items():
        try:
            hosts[str(parse_address(address))] = script
        except ValueError as exc:
            errors.append(f'hosts."{address}": {exc}')
        times = [change.time for change in script.at]
        if times != sorted(times):
            errors.append(f'hosts."{address}".at: changes must be in time order, got {times}')
    latency_tables = {"expect.latency": scenario.expect.latency} | {
        f"expect.clients.{name}.latency": client.latency
        for name, client in scenario.expect.clients.items()
    }
    for where, table in latency_tables.items():
        for key in table:
            if key not in _PERCENTILE_KEYS and not _is_percentile(key):
                errors.append(f"{where}.{key}: expected p50, p99, p99.9, ..., max or mean")
    for pattern in scenario.expect.access_log:
        if (problem := check_regex(pattern)) is not None:
            errors.append(f'expect.access_log."{pattern}": {problem}')
    for key in scenario.expect.leftover_tasks:
        if key not in LEFTOVER_KINDS:
            errors.append(f"expect.leftover_tasks.{key}: expected streams or connections")
    for i, at in enumerate(scenario.task_snapshots):
        if at > scenario.duration:
            errors.append(f"task_snapshots[{i}]: {at:g}s is after the scenario's end")
    for i, reload in enumerate(scenario.reloads):
        if reload.time > scenario.duration:
            errors.append(f"reloads[{i}].time: {reload.time:g}s is after the scenario's end")
    times = [reload.time for reload in scenario.reloads]
    if times != sorted(times):
        errors.append(f"reloads: must be in time order, got {times}")
    names = [client.name for client in scenario.clients]
    for name in scenario.expect.clients:
        if name not in names:
            errors.append(f"expect.clients.{name}: no client is named {name!r}")
    if len(set(names)) != len(names):
        errors.append(f"clients: names must differ, got {names}")
    if not scenario.clients:
        errors.append("clients: a scenario needs at least one client")
    if errors:
        raise ConfigError([f"{source}: {e}" for e in errors])
    return attrs.evolve(scenario, hosts=hosts, source=source)


def structure_hosts(data: Mapping[str, Any], source: str = "hosts") -> dict[str, HostScript]:
    """Host scripts by address from plain data (a test's own), as a scenario's `[hosts]`;
    ConfigError naming the path of each problem. (Structured as the hosts of a minimal
    scenario, so that they get the same checks: addresses, changes in time order.)"""
    return structure_scenario(
        {"duration": "1s", "hosts": dict(data), "clients": [{"rate": 1}]}, source
    ).hosts


def _is_percentile(key: str) -> bool:
    try:
        return key.startswith("p") and 0 < float(key[1:]) < 100
    except ValueError:
        return False


def load_scenario(path: str | Path) -> Scenario:
    """Reads a scenario file; ConfigError. Its reloads' config paths are taken from the
    file's directory."""
    try:
        scenario = structure_scenario(load_toml(path), str(path))
    except ConfigError as exc:
        source = str(path)
        raise ConfigError(
            [e if e.startswith(source) else f"{source}: {e}" for e in exc.errors]
        ) from None
    here = Path(path).parent
    reloads = [attrs.evolve(r, config=str(here / r.config)) for r in scenario.reloads]
    return attrs.evolve(scenario, reloads=reloads)
