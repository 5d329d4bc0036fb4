"""Envoy v3 resources -> the gateway's own config model.

The TOML model stays the one in-memory truth; xDS is another source of it. Each resource
is parsed into the published Envoy message (xds-protos) by protobuf's JSON mapping, so
field names and types are Envoy's own, then mapped onto Listener, VirtualHost, Cluster
tables. A resource that sets a field the gateway cannot honour is refused (NACKed) with
that field named: silently ignoring a setting an operator relies on would be worse.
"""

from collections.abc import Iterable
from typing import Any

import attrs
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from gateway.config import model

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_CONFIGURATION = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER_LOAD_ASSIGNMENT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
MESSAGES: dict[str, type[Message]] = {
    CLUSTER: cluster_pb2.Cluster,
    LISTENER: listener_pb2.Listener,
    ROUTE_CONFIGURATION: route_pb2.RouteConfiguration,
    CLUSTER_LOAD_ASSIGNMENT: endpoint_pb2.ClusterLoadAssignment,
}
_EXTENSIONS = "type.googleapis.com/envoy.extensions.filters"
_HCM = f"{_EXTENSIONS}.network.http_connection_manager.v3.HttpConnectionManager"
_TCP_PROXY = f"{_EXTENSIONS}.network.tcp_proxy.v3.TcpProxy"
_ROUTER = f"{_EXTENSIONS}.http.router.v3.Router"
_LB_POLICIES = {
    cluster_pb2.Cluster.ROUND_ROBIN: "round_robin",
    cluster_pb2.Cluster.LEAST_REQUEST: "least_request",
    cluster_pb2.Cluster.RANDOM: "random",
    cluster_pb2.Cluster.RING_HASH: "ring_hash",
    cluster_pb2.Cluster.MAGLEV: "maglev",
}
_DISCOVERY = {
    cluster_pb2.Cluster.STATIC: "static",
    cluster_pb2.Cluster.STRICT_DNS: "strict_dns",
    cluster_pb2.Cluster.LOGICAL_DNS: "logical_dns",
    cluster_pb2.Cluster.EDS: "eds",
}


#: Messages that only appear inside `Any` fields; loaded so that the JSON mapping knows
#: their types.
_ANY_TYPES = (router_pb2.Router, http_protocol_options_pb2.HttpProtocolOptions)


class Unsupported(Exception):
    """A resource the gateway cannot honour; the message names the field (a NACK)."""


def parse(type_url: str, data: dict[str, Any]) -> Message:
    """A resource dict (its `@type` removed) as its Envoy message."""
    message = MESSAGES[type_url]()
    try:
        json_format.ParseDict(data, message)
    except json_format.ParseError as exc:
        raise Unsupported(str(exc)) from None
    return message


def _only(message: Message, allowed: Iterable[str], where: str) -> None:
    """Refuses any field set on `message` that is not in `allowed`."""
    allowed = set(allowed)
    for field, _ in message.ListFields():
        if field.name not in allowed:
            raise Unsupported(f"{where}.{field.name}: not supported by the gateway")


def _seconds(duration: Any) -> model.Duration:
    return model.Duration(duration.seconds + duration.nanos / 1e9)


def _address(socket_address: Any, where: str) -> model.Address:
    if socket_address.WhichOneof("port_specifier") != "port_value":
        raise Unsupported(f"{where}.socket_address.port_value: required")
    return model.Address(socket_address.address, socket_address.port_value)


# --- clusters and endpoints ---------------------------------------------------------------


def endpoints_of(assignment: Any, where: str) -> list[model.Endpoint]:
    _only(assignment, ("cluster_name", "endpoints"), where)
    endpoints = []
    for i, locality in enumerate(assignment.endpoints):
        _only(locality, ("lb_endpoints",), f"{where}.endpoints[{i}]")
        for j, lb in enumerate(locality.lb_endpoints):
            at = f"{where}.endpoints[{i}].lb_endpoints[{j}]"
            _only(lb, ("endpoint", "load_balancing_weight"), at)
            weight = lb.load_balancing_weight.value if lb.HasField("load_balancing_weight") else 1
            address = _address(lb.endpoint.address.socket_address, f"{at}.endpoint.address")
            endpoints.append(model.Endpoint(address, weight))
    return endpoints


def cluster(message: Any) -> tuple[str, model.Cluster]:
    where = f"Cluster {message.name!r}"
    _only(
        message,
        (
            "name",
            "type",
            "connect_timeout",
            "lb_policy",
            "load_assignment",
            "eds_cluster_config",
            "circuit_breakers",
            "outlier_detection",
            "health_checks",
            "common_lb_config",
            "dns_refresh_rate",
            "typed_extension_protocol_options",
            "http2_protocol_options",
        ),
        where,
    )
    kind = _DISCOVERY.get(message.type)
    if kind is None:
        raise Unsupported(f"{where}.type: {cluster_pb2.Cluster.DiscoveryType.Name(message.type)}")
    if message.lb_policy not in _LB_POLICIES:
        raise Unsupported(f"{where}.lb_policy: {message.lb_policy}")
    fields: dict[str, Any] = {
        "type": kind,
        "lb_policy": _LB_POLICIES[message.lb_policy],
        "endpoints": (
            endpoints_of(message.load_assignment, f"{where}.load_assignment")
            if kind != "eds"
            else []
        ),
    }
    if message.HasField("connect_timeout"):
        fields["connect_timeout"] = _seconds(message.connect_timeout)
    if message.HasField("dns_refresh_rate"):
        fields["dns_refresh_rate"] = _seconds(message.dns_refresh_rate)
    # HTTP/2 upstreams, the old way or the typed-extension way (gRPC clusters use either).
    if message.HasField("http2_protocol_options") or any(
        "HttpProtocolOptions" in key for key in message.typed_extension_protocol_options
    ):
        fields["protocol"] = "http2"
    if message.HasField("common_lb_config"):
        common = message.common_lb_config
        _only(common, ("healthy_panic_threshold",), f"{where}.common_lb_config")
        fields["healthy_panic_threshold"] = common.healthy_panic_threshold.value
    if message.HasField("circuit_breakers"):
        fields["circuit_breakers"] = _circuit_breakers(message.circuit_breakers, where)
    if message.HasField("outlier_detection"):
        fields["outlier_detection"] = _outlier_detection(message.outlier_detection, where)
    checks = [
        _health_check(hc, f"{where}.health_checks[{i}]")
        for i, hc in enumerate(message.health_checks)
    ]
    if checks:
        fields["health_checks"] = checks
    return message.name, model.Cluster(**fields)


def _circuit_breakers(breakers: Any, where: str) -> model.CircuitBreakers:
    if len(breakers.thresholds) != 1:
        raise Unsupported(f"{where}.circuit_breakers.thresholds: exactly one (default priority)")
    t = breakers.thresholds[0]
    _only(
        t,
        ("max_connections", "max_pending_requests", "max_requests", "max_retries"),
        f"{where}.circuit_breakers.thresholds[0]",
    )
    defaults = model.CircuitBreakers()
    return model.CircuitBreakers(
        **{
            name: getattr(t, name).value if t.HasField(name) else getattr(defaults, name)
            for name in ("max_connections", "max_pending_requests", "max_requests", "max_retries")
        }
    )


def _outlier_detection(od: Any, where: str) -> model.OutlierDetection:
    names = {
        "consecutive_5xx": int,
        "consecutive_gateway_failure": int,
        "enforcing_consecutive_5xx": int,
        "enforcing_consecutive_gateway_failure": int,
        "max_ejection_percent": int,
        "interval": _seconds,
        "base_ejection_time": _seconds,
        "max_ejection_time": _seconds,
    }
    _only(od, names, f"{where}.outlier_detection")
    values: dict[str, Any] = {}
    for name, convert in names.items():
        if od.HasField(name):
            value = getattr(od, name)
            values[name] = convert(value) if convert is _seconds else value.value
    return model.OutlierDetection(**values)


def _health_check(hc: Any, where: str) -> model.HealthCheck:
    _only(
        hc,
        (
            "timeout",
            "interval",
            "interval_jitter",
            "unhealthy_threshold",
            "healthy_threshold",
            "http_health_check",
            "tcp_health_check",
            "grpc_health_check",
        ),
        where,
    )
    values: dict[str, Any] = {
        "timeout": _seconds(hc.timeout),
        "interval": _seconds(hc.interval),
        "unhealthy_threshold": hc.unhealthy_threshold.value,
        "healthy_threshold": hc.healthy_threshold.value,
    }
    if hc.HasField("interval_jitter"):
        values["interval_jitter"] = _seconds(hc.interval_jitter)
    kind = hc.WhichOneof("health_checker")
    if kind == "http_health_check":
        http = hc.http_health_check
        _only(http, ("path", "host", "expected_statuses"), f"{where}.http_health_check")
        statuses = [s for r in http.expected_statuses for s in range(r.start, r.end)]
        values.update(type="http", path=http.path, host=http.host or None)
        values["expected_statuses"] = statuses or None
    elif kind == "tcp_health_check":
        tcp = hc.tcp_health_check
        _only(tcp, ("send", "receive"), f"{where}.tcp_health_check")
        values["type"] = "tcp"
        if tcp.HasField("send"):
            values["send"] = bytes.fromhex(tcp.send.text).decode()
        if tcp.receive:
            values["expect"] = bytes.fromhex(tcp.receive[0].text).decode()
    elif kind == "grpc_health_check":
        grpc = hc.grpc_health_check
        _only(grpc, ("service_name", "authority"), f"{where}.grpc_health_check")
        values.update(type="grpc", service_name=grpc.service_name, authority=grpc.authority or None)
    else:
        raise Unsupported(f"{where}: {kind or 'a health checker'} is not supported")
    return model.HealthCheck(**values)


# --- listeners ------------------------------------------------------------------------------


@attrs.frozen
class TranslatedListener:
    name: str
    listener: model.Listener
    #: The RDS route configuration it uses (None: inline routes, already translated).
    route_config_name: str | None
    inline_routes: list[tuple[str, model.VirtualHost]]


def listener(message: Any) -> TranslatedListener:
    where = f"Listener {message.name!r}"
    _only(message, ("name", "address", "filter_chains", "stat_prefix"), where)
    address = _address(message.address.socket_address, f"{where}.address")
    if len(message.filter_chains) != 1:
        raise Unsupported(f"{where}.filter_chains: exactly one chain is supported from xDS")
    chain = message.filter_chains[0]
    _only(chain, ("filters",), f"{where}.filter_chains[0]")
    if len(chain.filters) != 1:
        raise Unsupported(f"{where}.filter_chains[0].filters: exactly one network filter")
    network_filter = chain.filters[0]
    at = f"{where}.filter_chains[0].filters[0]"
    type_url = network_filter.typed_config.type_url
    if type_url == _TCP_PROXY:
        tcp = tcp_proxy_pb2.TcpProxy()
        network_filter.typed_config.Unpack(tcp)
        _only(tcp, ("stat_prefix", "cluster", "idle_timeout", "max_connect_attempts"), at)
        proxy: dict[str, Any] = {"type": "tcp_proxy", "cluster": tcp.cluster}
        if tcp.HasField("idle_timeout"):
            proxy["idle_timeout"] = _seconds(tcp.idle_timeout)
        chains = [model.FilterChain(filters=[model.TcpProxy(**proxy)])]
        return TranslatedListener(
            message.name, model.Listener(address=address, filter_chains=chains), None, []
        )
    if type_url != _HCM:
        raise Unsupported(f"{at}.typed_config: {type_url} is not supported")
    hcm = hcm_pb2.HttpConnectionManager()
    network_filter.typed_config.Unpack(hcm)
    at += ".typed_config"
    _only(hcm, ("stat_prefix", "rds", "route_config", "http_filters", "codec_type"), at)
    for i, http_filter in enumerate(hcm.http_filters):
        if http_filter.typed_config.type_url not in ("", _ROUTER):
            raise Unsupported(f"{at}.http_filters[{i}]: only the router filter is supported")
    route_name, inline = None, []
    if hcm.HasField("rds"):
        route_name = hcm.rds.route_config_name
    else:
        inline = route_configuration(hcm.route_config, prefix=f"{message.name}")
    names = [vhost_name for vhost_name, _ in inline]
    return TranslatedListener(
        message.name,
        model.Listener(address=address, virtual_hosts=names),
        route_name,
        inline,
    )


# --- routes ---------------------------------------------------------------------------------


def route_configuration_name(message: Any) -> str:
    """The name listeners' `rds.route_config_name` refers to a RouteConfiguration by."""
    name: str = message.name
    return name


def route_configuration(
    message: Any, prefix: str | None = None
) -> list[tuple[str, model.VirtualHost]]:
    """A RouteConfiguration's virtual hosts, named `ROUTE_CONFIG/VHOST`."""
    where = f"RouteConfiguration {message.name!r}"
    _only(message, ("name", "virtual_hosts"), where)
    owner = prefix or message.name
    return [
        (f"{owner}/{vh.name}", _virtual_host(vh, f"{where}.virtual_hosts[{i}]"))
        for i, vh in enumerate(message.virtual_hosts)
    ]


def _virtual_host(vh: Any, where: str) -> model.VirtualHost:
    _only(vh, ("name", "domains", "routes", "retry_policy"), where)
    routes = [_route(r, f"{where}.routes[{i}]", vh) for i, r in enumerate(vh.routes)]
    return model.VirtualHost(domains=list(vh.domains), routes=routes)


def _route(r: Any, where: str, vh: Any) -> model.Route:
    _only(r, ("name", "match", "route", "redirect", "direct_response"), where)
    fields: dict[str, Any] = {"match": _match(r.match, f"{where}.match")}
    action = r.WhichOneof("action")
    if action == "route":
        fields.update(_route_action(r.route, f"{where}.route"))
        policy = r.route.retry_policy if r.route.HasField("retry_policy") else vh.retry_policy
        if r.route.HasField("retry_policy") or vh.HasField("retry_policy"):
            fields["retry_policy"] = _retry_policy(policy, f"{where}.route.retry_policy")
    elif action == "redirect":
        red = r.redirect
        _only(
            red,
            (
                "https_redirect",
                "host_redirect",
                "path_redirect",
                "prefix_rewrite",
                "response_code",
                "strip_query",
            ),
            f"{where}.redirect",
        )
        codes: dict[int, model.RedirectCode] = {0: 301, 1: 302, 2: 303, 3: 307, 4: 308}
        fields["redirect"] = model.Redirect(
            https_redirect=red.https_redirect,
            host_redirect=red.host_redirect or None,
            path_redirect=red.path_redirect or None,
            prefix_rewrite=red.prefix_rewrite or None,
            strip_query=red.strip_query,
            response_code=codes[red.response_code],
        )
    elif action == "direct_response":
        direct = r.direct_response
        body = direct.body.inline_string if direct.HasField("body") else ""
        fields["direct_response"] = model.DirectResponse(status=direct.status, body=body)
    else:
        raise Unsupported(f"{where}: {action or 'an action'} is not supported")
    return model.Route(**fields)


def _match(m: Any, where: str) -> model.RouteMatch:
    _only(m, ("prefix", "path", "safe_regex", "case_sensitive", "headers", "grpc"), where)
    kind = m.WhichOneof("path_specifier")
    fields: dict[str, Any] = {}
    if kind == "safe_regex":
        fields["regex"] = m.safe_regex.regex
    elif kind in ("prefix", "path"):
        fields[kind] = getattr(m, kind)
    else:
        raise Unsupported(f"{where}: {kind or 'a path match'} is not supported")
    if m.HasField("case_sensitive"):
        fields["case_sensitive"] = m.case_sensitive.value
    fields["grpc"] = m.HasField("grpc")
    fields["headers"] = [
        _header_matcher(h, f"{where}.headers[{i}]") for i, h in enumerate(m.headers)
    ]
    return model.RouteMatch(**fields)


def _header_matcher(h: Any, where: str) -> model.HeaderMatcher:
    _only(h, ("name", "string_match", "present_match", "invert_match"), where)
    fields: dict[str, Any] = {"name": h.name, "invert_match": h.invert_match}
    if h.WhichOneof("header_match_specifier") == "present_match":
        fields["present"] = h.present_match
    elif h.HasField("string_match"):
        sm = h.string_match
        kind = sm.WhichOneof("match_pattern")
        if kind == "safe_regex":
            fields["regex"] = sm.safe_regex.regex
        elif kind in ("exact", "prefix", "suffix", "contains"):
            fields[kind] = getattr(sm, kind)
    return model.HeaderMatcher(**fields)


def _route_action(action: Any, where: str) -> dict[str, Any]:
    _only(
        action,
        (
            "cluster",
            "weighted_clusters",
            "timeout",
            "prefix_rewrite",
            "host_rewrite_literal",
            "retry_policy",
            "hash_policy",
            "max_grpc_timeout",
        ),
        where,
    )
    fields: dict[str, Any] = {}
    if action.WhichOneof("cluster_specifier") == "cluster":
        fields["cluster"] = action.cluster
    elif action.HasField("weighted_clusters"):
        fields["weighted_clusters"] = [
            model.WeightedCluster(w.name, w.weight.value) for w in action.weighted_clusters.clusters
        ]
    else:
        raise Unsupported(f"{where}: a cluster or weighted_clusters is required")
    if action.HasField("timeout"):
        fields["timeout"] = _seconds(action.timeout)
    if action.HasField("max_grpc_timeout"):
        fields["max_grpc_timeout"] = _seconds(action.max_grpc_timeout)
    if action.prefix_rewrite:
        fields["prefix_rewrite"] = action.prefix_rewrite
    if action.host_rewrite_literal:
        fields["host_rewrite"] = action.host_rewrite_literal
    policies = []
    for i, hp in enumerate(action.hash_policy):
        kind = hp.WhichOneof("policy_specifier")
        at = f"{where}.hash_policy[{i}]"
        if kind == "header":
            policies.append(model.HashPolicy(header=hp.header.header_name, terminal=hp.terminal))
        elif kind == "cookie":
            policies.append(model.HashPolicy(cookie=hp.cookie.name, terminal=hp.terminal))
        elif kind == "connection_properties" and hp.connection_properties.source_ip:
            policies.append(model.HashPolicy(source_ip=True, terminal=hp.terminal))
        else:
            raise Unsupported(f"{at}: {kind} is not supported")
    fields["hash_policy"] = policies
    return fields


def _retry_policy(policy: Any, where: str) -> model.RetryPolicy:
    _only(
        policy,
        ("retry_on", "num_retries", "per_try_timeout", "retriable_status_codes", "retry_back_off"),
        where,
    )
    conditions = [c.strip() for c in policy.retry_on.split(",") if c.strip()]
    allowed = set(model.RetryOn.__args__)  # type: ignore[attr-defined]
    for condition in conditions:
        if condition not in allowed:
            raise Unsupported(f"{where}.retry_on: {condition!r} is not supported")
    fields: dict[str, Any] = {
        "retry_on": conditions,
        "retriable_status_codes": list(policy.retriable_status_codes),
    }
    if policy.HasField("num_retries"):
        fields["num_retries"] = policy.num_retries.value
    if policy.HasField("per_try_timeout"):
        fields["per_try_timeout"] = _seconds(policy.per_try_timeout)
    if policy.HasField("retry_back_off"):
        back_off = policy.retry_back_off
        fields["retry_back_off"] = model.RetryBackOff(
            base_interval=_seconds(back_off.base_interval),
            max_interval=_seconds(back_off.max_interval)
            if back_off.HasField("max_interval")
            else None,
        )
    return model.RetryPolicy(**fields)
