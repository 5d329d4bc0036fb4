"""The second pass over a structured config: what types alone cannot check.

Names must refer to tables that exist, each route has exactly one action and one path
match, and no two listeners share an address. (Regexes are checked as fields, where they
are structured: `gateway.config.regex`.) Every problem is returned, each with its TOML path, so
an operator fixes a config in one go.
"""

import ipaddress

import attrs

from gateway.config.model import (
    DEFAULT_OVERLOAD_ACTIONS,
    RATE_LIMIT_ACTIONS,
    TERMINAL_NETWORK_FILTERS,
    Address,
    Cluster,
    FilterChain,
    FilterChainMatch,
    GatewayConfig,
    GrpcService,
    HeaderMatcher,
    HttpConnectionManagerConfig,
    HttpConnectionManagerOptions,
    Listener,
    Overload,
    RateLimit,
    RateLimitAction,
    Route,
    TcpProxy,
    VirtualHost,
    is_loopback,
)
from gateway.config.tls_context import check_certificate, check_downstream, check_upstream

_NO_VHOST = VirtualHost(domains=[])
_ROUTE_ACTIONS = ("cluster", "weighted_clusters", "redirect", "direct_response")
_PATH_MATCHES = ("prefix", "path", "regex")
_HEADER_MATCHES = ("exact", "prefix", "suffix", "contains", "regex", "present")


def _check_header_matcher(m: HeaderMatcher, where: str, errors: list[str]) -> None:
    kinds = [k for k in _HEADER_MATCHES if getattr(m, k) is not None]
    if len(kinds) > 1:
        errors.append(f"{where}: set at most one of {', '.join(_HEADER_MATCHES)}, got {kinds}")


def check_grpc_service(
    service: GrpcService, key: str, config: GatewayConfig
) -> list[tuple[str, str]]:
    """A filter's gRPC service (`key` in its table): the cluster exists and speaks HTTP/2.
    Errors as (key path, message), for the filter's `check`."""
    cluster = config.clusters.get(service.cluster)
    if cluster is None:
        return [(f"{key}.cluster", f"no cluster named '{service.cluster}'")]
    if cluster.protocol != "http2":
        return [(f"{key}.cluster", f"'{service.cluster}' must be an http2 cluster (gRPC)")]
    return []


def _check_rate_limit_action(action: RateLimitAction, where: str, errors: list[str]) -> None:
    """One action: one kind, with what it needs (Envoy's proto rules: keys and values not
    empty, at least one header matcher)."""
    kinds = [k for k in RATE_LIMIT_ACTIONS if getattr(action, k) is not None]
    if len(kinds) != 1:
        errors.append(
            f"{where}: set exactly one of {', '.join(RATE_LIMIT_ACTIONS)}"
            + (f", got {', '.join(kinds)}" if kinds else "")
        )
    empty = "must not be empty"
    headers = action.request_headers
    if headers is not None and not (headers.header_name and headers.descriptor_key):
        errors.append(f"{where}.request_headers: header_name and descriptor_key {empty}")
    generic = action.generic_key
    if generic is not None and not (generic.descriptor_value and generic.descriptor_key):
        errors.append(f"{where}.generic_key: descriptor_value and descriptor_key {empty}")
    match = action.header_value_match
    if match is None:
        return
    if not (match.descriptor_value and match.descriptor_key):
        errors.append(f"{where}.header_value_match: descriptor_value and descriptor_key {empty}")
    if not match.headers:
        errors.append(f"{where}.header_value_match.headers: needs at least one matcher")
    for k, header in enumerate(match.headers):
        _check_header_matcher(header, f"{where}.header_value_match.headers[{k}]", errors)


def _check_rate_limits(limits: list[RateLimit], where: str, errors: list[str]) -> None:
    """A route's or virtual host's `rate_limits`."""
    for i, limit in enumerate(limits):
        at = f"{where}.rate_limits[{i}]"
        if not limit.actions:
            errors.append(f"{at}.actions: needs at least one action")
        for j, action in enumerate(limit.actions):
            _check_rate_limit_action(action, f"{at}.actions[{j}]", errors)


def _check_route(route: Route, where: str, config: GatewayConfig, errors: list[str]) -> None:
    actions = [a for a in _ROUTE_ACTIONS if getattr(route, a) is not None]
    if len(actions) != 1:
        errors.append(
            f"{where}: set exactly one action of {', '.join(_ROUTE_ACTIONS)}"
            + (f", got {', '.join(actions)}" if actions else "")
        )
    match = route.match
    kinds = [k for k in _PATH_MATCHES if getattr(match, k) is not None]
    if len(kinds) + match.connect_matcher != 1:
        errors.append(f"{where}.match: set exactly one of prefix, path, regex, connect_matcher")
    for i, header in enumerate(match.headers):
        _check_header_matcher(header, f"{where}.match.headers[{i}]", errors)
    for i, param in enumerate(match.query_parameters):
        kinds = [k for k in ("exact", "regex", "present") if getattr(param, k) is not None]
        if len(kinds) > 1:
            errors.append(
                f"{where}.match.query_parameters[{i}]: set at most one of exact, regex, "
                f"present, got {kinds}"
            )
    if route.cluster is not None and route.cluster not in config.clusters:
        errors.append(f"{where}.cluster: no cluster named '{route.cluster}'")
    for name in [route.cluster, *(w.name for w in route.weighted_clusters or [])]:
        cluster = config.clusters.get(name) if name is not None else None
        if cluster is not None and cluster.proxy_protocol is not None:
            errors.append(
                f"{where}: cluster '{name}' sends the PROXY protocol, which only tcp_proxy "
                "can do (a pooled HTTP connection carries many clients' requests)"
            )
    if route.weighted_clusters is not None:
        if not route.weighted_clusters or sum(w.weight for w in route.weighted_clusters) <= 0:
            errors.append(f"{where}.weighted_clusters: needs at least one positive weight")
        for i, wc in enumerate(route.weighted_clusters):
            if wc.name not in config.clusters:
                errors.append(f"{where}.weighted_clusters[{i}].name: no cluster named '{wc.name}'")
    d = route.direct_response
    if d is not None and d.body and (d.status in (204, 304) or d.status < 200):
        errors.append(f"{where}.direct_response: status {d.status} cannot have a body")
    if route.prefix_rewrite is not None and match.prefix is None:
        errors.append(f"{where}.prefix_rewrite: only allowed with a prefix match")
    redirect = route.redirect
    if redirect is not None and redirect.prefix_rewrite is not None and match.prefix is None:
        errors.append(f"{where}.redirect.prefix_rewrite: only allowed with a prefix match")
    for i, policy in enumerate(route.hash_policy):
        sources = [s for s in ("header", "cookie") if getattr(policy, s) is not None]
        sources += ["source_ip"] if policy.source_ip else []
        if len(sources) != 1:
            errors.append(f"{where}.hash_policy[{i}]: set exactly one of header, cookie, source_ip")
    _check_rate_limits(route.rate_limits, where, errors)
    retry = route.retry_policy
    if retry is not None:
        if not retry.retry_on:
            errors.append(f"{where}.retry_policy.retry_on: needs at least one condition")
        if "retriable-status-codes" in retry.retry_on and not retry.retriable_status_codes:
            errors.append(
                f"{where}.retry_policy.retriable_status_codes: needed by "
                "retry_on 'retriable-status-codes'"
            )
        back_off = retry.retry_back_off
        if back_off.max_interval is not None and back_off.max_interval < back_off.base_interval:
            errors.append(
                f"{where}.retry_policy.retry_back_off.max_interval: less than base_interval"
            )


#: Which health check keys belong to which check type.
_HEALTH_CHECK_KEYS = {
    "http": ("path", "host", "expected_statuses"),
    "tcp": ("send", "expect"),
    "grpc": ("service_name", "authority"),
}


def _is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, int(n**0.5) + 1))


def _check_cluster(cluster: Cluster, where: str, errors: list[str]) -> None:
    if cluster.type == "eds" and cluster.endpoints:
        errors.append(f"{where}.endpoints: an eds cluster's hosts come from xDS, not the file")
    if cluster.type == "logical_dns" and len(cluster.endpoints) != 1:
        errors.append(f"{where}.endpoints: a logical_dns cluster has exactly one endpoint")
    ring = cluster.ring_hash
    if ring.minimum_ring_size > ring.maximum_ring_size:
        errors.append(f"{where}.ring_hash: minimum_ring_size is above maximum_ring_size")
    if not _is_prime(cluster.maglev.table_size):
        errors.append(
            f"{where}.maglev.table_size: must be a prime, got {cluster.maglev.table_size}"
        )
    if len(cluster.health_checks) > 1:
        errors.append(f"{where}.health_checks: at most one health check per cluster (as Envoy)")
    for i, check in enumerate(cluster.health_checks):
        at = f"{where}.health_checks[{i}]"
        for kind, keys in _HEALTH_CHECK_KEYS.items():
            if kind == check.type:
                continue
            for key in keys:
                if getattr(check, key) is not None:
                    errors.append(f"{at}.{key}: only for type '{kind}' checks")
        if check.type == "http" and (check.path is None or not check.path.startswith("/")):
            errors.append(f"{at}.path: an http check needs a path starting with '/'")
        if check.type == "grpc" and cluster.protocol != "http2":
            errors.append(f"{at}.type: a grpc check needs an http2 cluster")
        if check.type == "tcp" and check.expect is not None and check.send is None:
            errors.append(f"{at}.expect: needs send")
        for status in check.expected_statuses or ():
            if not 100 <= status <= 599:
                errors.append(f"{at}.expected_statuses: {status} is not an HTTP status")


def _check_hcm(
    hcm: Listener | HttpConnectionManagerConfig,
    where: str,
    config: GatewayConfig,
    errors: list[str],
) -> None:
    """An HTTP connection manager's references: a single-chain listener's, or a chain's."""
    if not hcm.virtual_hosts:
        errors.append(f"{where}.virtual_hosts: needs at least one virtual host")
    for i, vh in enumerate(hcm.virtual_hosts):
        if vh not in config.virtual_hosts:
            errors.append(f"{where}.virtual_hosts[{i}]: no virtual host named '{vh}'")
    for i, f in enumerate(hcm.http_filters):
        if f not in config.http_filters:
            errors.append(f"{where}.http_filters[{i}]: no http filter named '{f}'")
    # As Envoy rejects a route configuration in which two virtual hosts claim a domain.
    claimed: dict[str, str] = {}
    for vh in hcm.virtual_hosts:
        for domain in config.virtual_hosts[vh].domains if vh in config.virtual_hosts else ():
            owner = claimed.setdefault(domain.lower(), vh)
            if owner != vh:
                errors.append(
                    f"{where}.virtual_hosts: domain '{domain}' is in both "
                    f"virtual_hosts.{owner} and virtual_hosts.{vh}"
                )


def http_connection_managers(
    config: GatewayConfig,
) -> list[Listener | HttpConnectionManagerConfig]:
    """Every HTTP connection manager: single-chain listeners and chains' HCM filters."""
    return [hcm for _, hcm in _named_http_connection_managers(config)]


def _named_http_connection_managers(
    config: GatewayConfig,
) -> list[tuple[str, Listener | HttpConnectionManagerConfig]]:
    """`http_connection_managers`, each with its TOML path."""
    found: list[tuple[str, Listener | HttpConnectionManagerConfig]] = []
    for name, listener in config.listeners.items():
        chains = {
            f"listeners.{name}.filter_chains[{i}]": c for i, c in enumerate(listener.filter_chains)
        }
        if listener.default_filter_chain is not None:
            chains[f"listeners.{name}.default_filter_chain"] = listener.default_filter_chain
        if not chains:
            found.append((f"listeners.{name}", listener))
        found += [
            (f"{where}.filters[{i}]", f)
            for where, c in chains.items()
            for i, f in enumerate(c.filters)
            if isinstance(f, HttpConnectionManagerConfig)
        ]
    return found


def _check_quic_listener(listener: Listener, where: str, errors: list[str]) -> None:
    """A QUIC listener runs its own HTTP keys over the one certificate in `quic`."""
    if listener.filter_chains or listener.default_filter_chain is not None:
        errors.append(
            f"{where}.filter_chains: a QUIC listener has no filter chains; its HTTP keys "
            "are its own, its certificate in quic.certificates"
        )
    if listener.proxy_protocol:
        errors.append(f"{where}.proxy_protocol: not supported on a QUIC listener")
    certificates = listener.quic.certificates
    if len(certificates) != 1:
        errors.append(
            f"{where}.quic.certificates: a QUIC listener needs exactly one certificate, "
            f"got {len(certificates)}"
        )
    for i, cert in enumerate(certificates):
        errors += check_certificate(cert, f"{where}.quic.certificates[{i}]")


#: The single-chain listener's HTTP keys, which filter chains replace.
_LISTENER_HTTP_KEYS = [
    a for a in attrs.fields(HttpConnectionManagerConfig) if a.name not in ("type", "stat_prefix")
]


#: Their defaults, built once: attrs types a Factory default as the value it makes, so an
#: instance is how to read them typed.
_LISTENER_HTTP_DEFAULTS = HttpConnectionManagerOptions()


def _match_key(m: FilterChainMatch) -> tuple[object, ...]:
    return (
        m.destination_port,
        tuple(m.server_names),
        m.transport_protocol,
        tuple(m.application_protocols),
        tuple(m.source_prefix_ranges),
    )


def _check_filter_chains(
    listener: Listener, where: str, config: GatewayConfig, errors: list[str]
) -> None:
    set_keys = [
        a.name
        for a in _LISTENER_HTTP_KEYS
        if getattr(listener, a.name) != getattr(_LISTENER_HTTP_DEFAULTS, a.name)
    ]
    if set_keys:
        errors.append(
            f"{where}: with filter_chains, HTTP settings belong in each chain's "
            f"http_connection_manager filter, got {', '.join(set_keys)}"
        )
    seen: dict[tuple[object, ...], str] = {}
    for i, chain in enumerate(listener.filter_chains):
        chain_where = f"{where}.filter_chains[{i}]"
        _check_filter_chain(chain, chain_where, config, errors)
        # As Envoy refuses two chains with the same matching rules.
        key = _match_key(chain.filter_chain_match)
        if key in seen:
            errors.append(f"{chain_where}.filter_chain_match: the same as {seen[key]}'s")
        seen.setdefault(key, f"filter_chains[{i}]")
    if listener.default_filter_chain is not None:
        default_where = f"{where}.default_filter_chain"
        _check_filter_chain(listener.default_filter_chain, default_where, config, errors)


def _check_filter_chain(
    chain: FilterChain, where: str, config: GatewayConfig, errors: list[str]
) -> None:
    if not chain.filters:
        errors.append(
            f"{where}.filters: needs a terminal filter, {' or '.join(TERMINAL_NETWORK_FILTERS)}"
        )
    for i, network_filter in enumerate(chain.filters):
        at = f"{where}.filters[{i}]"
        last = i == len(chain.filters) - 1
        terminal = network_filter.type in TERMINAL_NETWORK_FILTERS
        if terminal and not last:
            errors.append(f"{at}: {network_filter.type} must be the chain's last filter")
        elif last and not terminal:
            errors.append(
                f"{at}: the last filter must be {' or '.join(TERMINAL_NETWORK_FILTERS)}, "
                f"got {network_filter.type}"
            )
        if isinstance(network_filter, HttpConnectionManagerConfig):
            _check_hcm(network_filter, at, config, errors)
        elif isinstance(network_filter, TcpProxy) and network_filter.cluster not in config.clusters:
            errors.append(f"{at}.cluster: no cluster named '{network_filter.cluster}'")
    for i, name in enumerate(chain.filter_chain_match.server_names):
        if "*" in name and (not name.startswith("*.") or "*" in name[1:]):
            errors.append(
                f"{where}.filter_chain_match.server_names[{i}]: '{name}' must be a name or "
                "'*.suffix'"
            )
    tls = chain.tls
    if tls is None:
        return
    if chain.filter_chain_match.transport_protocol == "raw_buffer":
        errors.append(f"{where}.tls: a chain matching raw_buffer connections cannot terminate TLS")
    if not tls.certificates:
        errors.append(f"{where}.tls.certificates: needs at least one certificate")
    if tls.require_client_certificate and tls.trusted_ca is None:
        errors.append(f"{where}.tls.require_client_certificate: needs trusted_ca")
    errors += check_downstream(tls, f"{where}.tls")


def _same_host(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a.lower() == b.lower()


def _reaches(endpoint: Address, admin: Address) -> bool:
    """Whether connecting to `endpoint` reaches an admin endpoint bound to `admin`."""
    if admin.port == 0 or endpoint.port != admin.port:
        return False
    host, own = endpoint.host, admin.host
    if _same_host(host, own):
        return True
    if own in ("0.0.0.0", "::"):  # every address of this host, loopback among them
        return is_loopback(host)
    return "localhost" in (host.lower(), own.lower()) and is_loopback(host) and is_loopback(own)


def _check_admin_loop(config: GatewayConfig, errors: list[str]) -> None:
    """No cluster may send requests to the admin endpoint: a route to it would give every
    client the admin's powers (and the admin's own checks would see a local caller)."""
    if config.admin is None:
        return
    admin = config.admin.address
    for name, cluster in config.clusters.items():
        for i, endpoint in enumerate(cluster.endpoints):
            if _reaches(endpoint.address, admin):
                errors.append(
                    f"clusters.{name}.endpoints[{i}]: {endpoint.address} is the admin "
                    f"endpoint (admin.address = '{admin}'); proxying to it would let any "
                    "client drive the admin endpoint"
                )


def _check_upstream_tls(config: GatewayConfig, errors: list[str]) -> None:
    for name, cluster in config.clusters.items():
        if cluster.tls is not None:
            errors += check_upstream(cluster.tls, f"clusters.{name}.tls")


def _check_tunnel_clusters(config: GatewayConfig, errors: list[str]) -> None:
    """A route that may tunnel (by its own `upgrade` or its listener's) needs http1
    clusters: upgrades go upstream as HTTP/1.1 Upgrade requests."""
    seen: set[str] = set()
    for listener in http_connection_managers(config):
        for vname in listener.virtual_hosts:
            for i, route in enumerate(config.virtual_hosts.get(vname, _NO_VHOST).routes):
                upgrades = route.upgrade if route.upgrade is not None else listener.upgrade
                names = [route.cluster] if route.cluster else []
                names += [w.name for w in route.weighted_clusters or []]
                for name in names:
                    cluster = config.clusters.get(name)
                    where = f"virtual_hosts.{vname}.routes[{i}]"
                    if upgrades and cluster is not None and cluster.protocol != "http1":
                        message = (
                            f"{where}: allows upgrades (WebSocket), which need an http1 "
                            f"cluster; '{name}' is {cluster.protocol}"
                        )
                        if message not in seen:
                            seen.add(message)
                            errors.append(message)


def _check_overload(overload: Overload, errors: list[str]) -> None:
    if overload.max_rss is None and overload.actions != list(DEFAULT_OVERLOAD_ACTIONS):
        errors.append("overload.actions: the thresholds are fractions of max_rss, which is unset")
    seen: dict[str, int] = {}
    for i, action in enumerate(overload.actions):
        first = seen.setdefault(action.name, i)
        if first != i:
            errors.append(
                f"overload.actions[{i}].name: '{action.name}' is already at actions[{first}]"
            )


def validate(config: GatewayConfig) -> list[str]:
    errors: list[str] = []
    seen_addresses: dict[tuple[str, int, str], str] = {}
    for name, listener in config.listeners.items():
        where = f"listeners.{name}"
        # TCP and UDP ports are separate: HTTP/3 usually shares the HTTPS port number.
        key = (listener.address.host, listener.address.port, listener.protocol)
        if listener.address.port and key in seen_addresses:
            errors.append(
                f"{where}.address: {listener.address} is also used by "
                f"listeners.{seen_addresses[key]}"
            )
        seen_addresses[key] = name
        if listener.protocol == "quic":
            _check_quic_listener(listener, where, errors)
        if listener.filter_chains or listener.default_filter_chain is not None:
            _check_filter_chains(listener, where, config, errors)
        else:
            _check_hcm(listener, where, config, errors)
    for where, hcm in _named_http_connection_managers(config):
        target = hcm.advertise_http3
        if target is not None and getattr(config.listeners.get(target), "protocol", "") != "quic":
            errors.append(
                f"{where}.advertise_http3: no listener named '{target}' with protocol = \"quic\""
            )
    _check_tunnel_clusters(config, errors)
    for name, http_filter in config.http_filters.items():
        remote = getattr(http_filter.config, "remote_jwks", None)
        cluster = getattr(remote or http_filter.config, "cluster", None)
        if isinstance(cluster, str) and cluster not in config.clusters:
            errors.append(f"http_filters.{name}.cluster: no cluster named '{cluster}'")
    for name, vhost in config.virtual_hosts.items():
        where = f"virtual_hosts.{name}"
        if not vhost.domains:
            errors.append(f"{where}.domains: needs at least one domain")
        for i, domain in enumerate(vhost.domains):
            if (domain != "*" and "*" in domain.strip("*")) or domain.count("*") > 1:
                errors.append(
                    f"{where}.domains[{i}]: '{domain}' may use one '*' only at the start or the end"
                )
        _check_rate_limits(vhost.rate_limits, where, errors)
        for i, route in enumerate(vhost.routes):
            _check_route(route, f"{where}.routes[{i}]", config, errors)
    for name, cluster in config.clusters.items():
        _check_cluster(cluster, f"clusters.{name}", errors)
    _check_upstream_tls(config, errors)
    _check_admin_loop(config, errors)
    _check_overload(config.overload, errors)
    dynamic = config.dynamic
    sources = [k for k in ("path", "rest", "ads") if getattr(dynamic, k) is not None]
    if len(sources) > 1:
        errors.append(f"dynamic: set one of path, rest, ads, got {', '.join(sources)}")
    for kind in ("rest", "ads"):
        source = getattr(dynamic, kind)
        if source is None:
            continue
        cluster = config.clusters.get(source.cluster)
        if cluster is None:
            errors.append(f"dynamic.{kind}.cluster: no cluster named '{source.cluster}'")
        elif kind == "ads" and cluster.protocol != "http2":
            errors.append(
                f"dynamic.ads.cluster: '{source.cluster}' must be an http2 cluster (gRPC)"
            )
    _check_tracing(config, errors)
    return errors


def _check_tracing(config: GatewayConfig, errors: list[str]) -> None:
    tracing = config.tracing
    if tracing is None:
        return
    cluster = config.clusters.get(tracing.collector_cluster)
    if cluster is None:
        errors.append(f"tracing.collector_cluster: no cluster named '{tracing.collector_cluster}'")
    elif tracing.protocol == "grpc" and cluster.protocol != "http2":
        errors.append(
            f"tracing.collector_cluster: '{tracing.collector_cluster}' must be an http2 "
            'cluster for protocol = "grpc"'
        )
    if not tracing.path.startswith("/"):
        errors.append(f"tracing.path: must start with '/', got '{tracing.path}'")
    if tracing.max_export_batch_size > tracing.max_cache_size:
        errors.append("tracing.max_export_batch_size: more than max_cache_size")
