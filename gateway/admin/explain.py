"""`GET /explain`: what the running gateway would do with one request, and why.

Envoy's nearest thing is router_check_tool, which reads a config file offline. This asks
the running gateway's own objects the questions the data path asks, with the data path's
code: the listener's filter chains (`select`), the TLS terminator's certificate choice, the
connection manager's path normalisation and edge headers, the route table (`domain_match`,
`RouteEntry.matches`; `mismatch` says why a route did not match), the router's rewrites and
header mutations, and the clusters' hosts as the load balancer sees them now (health
checks, outlier ejections, panic mode). Nothing is sent anywhere and nothing is counted.

What it cannot know it says: the HTTP filters run before the router and may answer
themselves (rbac, ext_authz, rate limits), so they are listed with their per-route
overrides, not run; a request id and a trace's span id are new on every request. Under a
supervisor of workers the answer is worker 0's (every worker runs the same config; the
health of hosts is each worker's own).

The answer is JSON (`explain_text.py` renders the text form): one key per stage in the
order a request meets them, and `verdict`, one line, where the request ends.
"""

from typing import Any

import attrs

from gateway.admin.explain_request import ExplainRequest
from gateway.admin.explain_text import render
from gateway.admin.explain_upstream import (
    Explanation,
    explain_route_action,
    explain_tcp_proxy,
    header_changes,
)
from gateway.admin.views import Query, Reply, redact
from gateway.config.load import unstructure_config
from gateway.config.model import Address, FilterChainMatch
from gateway.http.conn_manager import (
    HttpConnectionManager,
    mutate_request_headers,
    normalize_request_path,
)
from gateway.listeners.access_control import ConnectionLimitFilter, RbacFilter
from gateway.listeners.filter_chain import Dropped, FilterChain, HcmFilter, select
from gateway.listeners.listener import Listener
from gateway.listeners.network_filter import ConnectionInfo
from gateway.listeners.tcp_proxy import TcpProxyFilter
from gateway.observability.stream_info import StreamInfo
from gateway.protocol.headers import HeaderMap, RequestHead
from gateway.protocol.path_normalization import InvalidPath
from gateway.router.route_table import DomainMatch, RouteEntry
from gateway.server.gateway import Gateway


class ExplainError(ValueError):
    """The request cannot be explained as asked (no such listener): a one-line reason."""


def explain_view(gw: Gateway, query: Query) -> Reply:
    """`GET /explain`: JSON, or text with `?format=text`; a mistake in the question is a
    400 with one line saying what is wrong."""
    fmt = query.get("format", "json")
    try:
        if fmt not in ("json", "text"):
            raise ValueError(f"format= must be json or text, got {fmt!r}")
        result = explain(gw, ExplainRequest.from_query(query.pairs))
    except ValueError as exc:  # (ExplainError too)
        return Reply.text(f"explain: {exc}\n", 400)
    return Reply.text(render(result)) if fmt == "text" else Reply.json(result)


def explain(gw: Gateway, req: ExplainRequest) -> Explanation:
    out: Explanation = {"request": _describe_request(req)}
    if gw.worker is not None:
        out["worker"] = gw.worker.index
    listener = _choose_listener(gw, req, out)
    assert listener.port is not None
    info = req.connection_info(listener.port, listener.inspects_client_hello)
    chain = _choose_chain(listener, info, out)
    if chain is None:
        return out
    scheme = _transport(chain, req, info, out)
    if scheme is None:
        return out
    manager = _network_filters(chain, info, gw, out)
    if manager is None:
        return out
    head = req.head(scheme, _downstream_protocol(manager, out))
    before = HeaderMap(head.headers)
    if not _normalize_path(manager, head, out):
        return out
    stream_info = StreamInfo(stream_id=0, downstream_remote=req.peer)
    mutate_request_headers(head, stream_info, str(req.source))
    changes = header_changes(before, head.headers, "connection manager")
    entry = _route(manager, head, out)
    if entry is None:
        out["request_headers"] = {"changes": changes}
        return out
    out["http_filters"] = _http_filters(gw, manager, entry)
    explain_route_action(gw, manager.config, entry, head, str(req.source), changes, out)
    return out


def _describe_request(req: ExplainRequest) -> Explanation:
    return {
        "method": req.method,
        "url": req.url,
        "headers": [list(h) for h in req.headers],
        "source": req.peer + ("" if req.source_given else " (default: give source=IP:PORT)"),
        "server_name": req.server_name,
        "application_protocols": list(req.application_protocols),
    }


def _choose_listener(gw: Gateway, req: ExplainRequest, out: Explanation) -> Listener:
    listeners = {name: lst for name, lst in gw.listeners.items() if lst.port is not None}
    known = ", ".join(f"{name} (port {lst.port})" for name, lst in listeners.items()) or "none"
    if req.listener is not None:
        listener = listeners.get(req.listener)
        if listener is None:
            raise ExplainError(f"no listener named {req.listener!r}; listeners: {known}")
        why = "listener= names it"
    else:
        on_port = [lst for lst in listeners.values() if lst.port == req.port]
        if on_port:
            listener, why = on_port[0], f"bound to port {req.port}, the URL's"
        elif len(listeners) == 1:
            (listener,) = listeners.values()
            why = (
                f"the only listener (none is bound to the URL's port {req.port}, as behind "
                "a load balancer that maps ports)"
            )
        else:
            raise ExplainError(
                f"no listener is bound to port {req.port}: give listener=NAME; listeners: {known}"
            )
    assert listener.port is not None  # only bound listeners were candidates
    out["listener"] = {
        "name": listener.name,
        "address": str(Address(listener.config.address.host, listener.port)),
        "port": listener.port,
        "why": why,
    }
    if listener.config.proxy_protocol:
        out["listener"]["proxy_protocol"] = (
            "the client's address comes from the PROXY header: source= stands for it"
        )
    return listener


def _choose_chain(listener: Listener, info: ConnectionInfo, out: Explanation) -> FilterChain | None:
    dropped: list[Dropped] = []
    chain = select(listener.chains, info, dropped)
    step: Explanation = {}
    out["filter_chain"] = step
    if not listener.config.filter_chains and listener.config.default_filter_chain is None:
        step.update(name=listener.chains[0].name, why="the listener's one chain (its own keys)")
        return listener.chains[0]
    step["candidates"] = [
        {"name": d.chain.name, "result": _dropped_reason(d, info)} for d in dropped
    ]
    if chain is not None:
        step.update(name=chain.name, why=_chain_reason(chain.match, info))
        return chain
    if listener.default_chain is not None:
        step.update(name=listener.default_chain.name, why="no chain matches: default_filter_chain")
        return listener.default_chain
    step["name"] = None
    out["verdict"] = (
        f"connection closed: no filter chain matches "
        f"(listener.{listener.name}.no_filter_chain_match)"
    )
    return None


def _criterion_value(criterion: str, info: ConnectionInfo) -> str:
    """What the connection has for a filter_chain_match criterion."""
    values: dict[str, object] = {
        "destination_port": info.destination_port,
        "server_names": info.server_name,
        "transport_protocol": info.transport_protocol,
        "application_protocols": list(info.application_protocols),
        "source_prefix_ranges": str(info.source_ip),
    }
    value = values[criterion]
    return "none" if value in (None, []) else repr(value)


def _chain_reason(match: FilterChainMatch, info: ConnectionInfo) -> str:
    wanted = [
        f"{name} {getattr(match, name)!r} meets {_criterion_value(name, info)}"
        for name in (
            "destination_port",
            "server_names",
            "transport_protocol",
            "application_protocols",
            "source_prefix_ranges",
        )
        if getattr(match, name) not in (None, [])
    ]
    return "; ".join(wanted) if wanted else "it sets no criteria: any connection matches"


def _dropped_reason(dropped: Dropped, info: ConnectionInfo) -> str:
    if dropped.criterion == "tie":
        return "matches as well: the first chain listed wins"
    if dropped.matched:
        return f"{dropped.criterion}: another chain matches more specifically"
    wanted = getattr(dropped.chain.match, dropped.criterion)
    seen = _criterion_value(dropped.criterion, info)
    return f"{dropped.criterion} {wanted!r} does not match {seen}"


def _transport(
    chain: FilterChain, req: ExplainRequest, info: ConnectionInfo, out: Explanation
) -> str | None:
    """The scheme the connection manager would stamp on requests ("https" once TLS is
    terminated), or None when the connection cannot carry the request."""
    terminal = chain.filters[-1] if chain.filters else None
    if chain.tls is None:
        if req.scheme == "https" and isinstance(terminal, HcmFilter):
            out["verdict"] = (
                f"connection fails: filter chain {chain.name} does not terminate TLS, and "
                "the HTTP connection manager cannot read a TLS ClientHello as HTTP"
            )
            return None
        if req.scheme == "https":
            out["tls"] = {"terminated": False, "why": "the chain passes TLS through"}
        return "http"
    if req.scheme != "https":
        out["verdict"] = (
            f"connection fails: filter chain {chain.name} terminates TLS and an http:// "
            "client sends no ClientHello (the handshake fails)"
        )
        return None
    tls = chain.tls
    index = tls.certificate_for(info.server_name)
    # OpenSSL's server-side choice: the first of the server's protocols the client offers.
    alpn = next((p for p in tls.config.alpn_protocols if p in req.application_protocols), None)
    step: Explanation = {
        "terminated": True,
        "certificate": tls.config.certificates[index].certificate_chain,
        "certificate_names": tls.certificate_names(index),
        "alpn": alpn,
    }
    if tls.config.require_client_certificate:
        step["client_certificate"] = "required (mTLS): a client without one fails the handshake"
    out["tls"] = step
    return "https"


def _network_filters(
    chain: FilterChain, info: ConnectionInfo, gw: Gateway, out: Explanation
) -> HttpConnectionManager | None:
    """Each network filter's say on the connection; the HCM if the request reaches one."""
    steps: list[Explanation] = []
    out["network_filters"] = steps
    for network_filter in chain.filters:
        if isinstance(network_filter, RbacFilter):
            allowed = network_filter.allows(info.source_ip)
            verb = "allows" if allowed else "denies"
            steps.append({"name": "rbac", "result": f"{verb} source {info.source_ip}"})
            if not allowed:
                out["verdict"] = f"connection closed by rbac: source {info.source_ip} is denied"
                return None
        elif isinstance(network_filter, ConnectionLimitFilter):
            active = network_filter.stats.active_connections.value
            limit = network_filter.max_connections
            full = " (full now: a new connection is closed)" if active >= limit else ""
            steps.append({"name": "connection_limit", "result": f"{active} of {limit} open{full}"})
        elif isinstance(network_filter, TcpProxyFilter):
            cluster = network_filter.config.cluster
            steps.append({"name": "tcp_proxy", "result": f"to cluster {cluster}"})
            explain_tcp_proxy(gw, cluster, out)
            return None
        elif isinstance(network_filter, HcmFilter):
            manager = network_filter.manager
            steps.append({"name": "http_connection_manager", "stat_prefix": manager.name})
            return manager
    return None


def _downstream_protocol(manager: HttpConnectionManager, out: Explanation) -> str:
    """The request's HTTP version, as the HCM picks the codec."""
    alpn = out.get("tls", {}).get("alpn")
    codec = manager.config.codec
    if alpn == "h2":
        version, why = "2", "ALPN h2"
    elif alpn == "http/1.1":
        version, why = "1.1", "ALPN http/1.1"
    elif codec == "http2":
        version, why = "2", 'codec = "http2" (prior knowledge)'
    elif codec == "http1":
        version, why = "1.1", 'codec = "http1"'
    else:
        version = "1.1"
        why = "no ALPN: HTTP/1.1, or HTTP/2 for a client that opens with its preface (h2c)"
    out["downstream_protocol"] = {"protocol": f"HTTP/{version}", "why": why}
    return version


def _normalize_path(manager: HttpConnectionManager, head: RequestHead, out: Explanation) -> bool:
    """The path as the HCM normalises it before routing; False if it answers instead."""
    if not head.path.startswith("/"):
        return True
    try:
        normalized = normalize_request_path(manager.config, head.path)
    except InvalidPath as exc:
        out["verdict"] = f"400 (DPE): path normalization refuses the path: {exc}"
        return False
    if normalized.redirect:
        out["verdict"] = (
            f"307 to {normalized.path}: escaped slashes "
            "(path_with_escaped_slashes_action = unescape_and_redirect)"
        )
        return False
    if normalized.path != head.path:
        out["path_normalization"] = {"from": head.path, "to": normalized.path}
        head.path = normalized.path
    return True


def _domain_reason(found: DomainMatch, authority: str) -> str:
    if found.kind == "exact":
        ignored = " (the port is ignored)" if authority.lower() != found.pattern else ""
        return f"exact domain {found.pattern!r}{ignored}"
    if found.kind == "suffix":
        return f"wildcard domain {found.pattern!r} (no exact domain; longest suffix first)"
    if found.kind == "prefix":
        return f"wildcard domain {found.pattern!r} (no exact or suffix domain matches)"
    return "domain '*': no other domain matches"


def _route(
    manager: HttpConnectionManager, head: RequestHead, out: Explanation
) -> RouteEntry | None:
    """The virtual host and route, with each route before it and why it did not match."""
    table = manager.route_table
    found = table.domain_match(head.authority)
    no_route = f"404 (NR): http.{manager.name}.no_route"
    if found is None:
        out["virtual_host"] = None
        out["verdict"] = f"{no_route}: no virtual host has a domain for {head.authority!r}"
        return None
    vhost = found.virtual_host
    out["virtual_host"] = {
        "name": vhost.name,
        "domains": vhost.config.domains,
        "why": _domain_reason(found, head.authority),
    }
    routes: list[Explanation] = []
    out["routes"] = routes
    chosen = None
    for entry in vhost.routes:
        why = entry.mismatch(head)
        routes.append(
            {
                "name": entry.name,
                "match": _set_fields(entry.config.match),
                "result": why or "matched",
            }
        )
        if entry.matches(head):
            chosen = entry
            break
    # The table's own answer: explain follows the data path, never the other way round.
    assert chosen is table.route(head)
    if chosen is None:
        out["verdict"] = f"{no_route}: no route of virtual host {vhost.name} matches"
        return None
    remaining = len(vhost.routes) - len(routes)
    if remaining:
        out["routes_not_tried"] = remaining
    out["route"] = chosen.name
    return chosen


def _http_filters(gw: Gateway, manager: HttpConnectionManager, entry: RouteEntry) -> list[Any]:
    """The listener's HTTP filters as they run on this route: whether each is in the chain
    the connection manager built for the route (`filter_names_for`), and with which config
    (secrets redacted, as /config_dump shows them): the route's override wins over its
    virtual host's (RouteEntry.filter_override)."""
    configs = redact(unstructure_config(gw.config)["http_filters"])
    in_chain = set(manager.filter_names_for(entry))
    filters: list[Explanation] = []
    for name in manager.config.http_filters:
        config = dict(configs[name])
        item: Explanation = {"name": name, "type": config.pop("type")}
        found = entry.filter_override(name)
        by = f" by the {found[1].replace('_', ' ')}" if found is not None else ""
        if found is not None and found[0].disabled:
            item["status"] = f"disabled{by}"
        elif name not in in_chain:
            item["status"] = "left out: it has nothing to do on this route"
        elif found is None:
            item.update(status="runs", config=_non_empty(config))
        else:
            item["status"] = f"reconfigured{by}"
            item["config"] = redact(found[0].config)
        filters.append(item)
    filters.append({"name": "router", "type": "router", "status": "runs (always last)"})
    return filters


def _non_empty(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v not in (None, [], {})}


def _set_fields(obj: object) -> Explanation:
    """An attrs config object as data, without the fields left at their defaults."""
    fields: Explanation = attrs.asdict(
        obj,  # type: ignore[arg-type]
        filter=lambda a, v: v != a.default and v not in (None, [], {}),
    )
    return fields
