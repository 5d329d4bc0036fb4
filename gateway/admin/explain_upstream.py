"""/explain from the route on: the route's action (cluster, weighted clusters, redirect,
direct response, CONNECT), the upgrade, timeout, retry and hash policies in force, the
clusters' hosts as the load balancer sees them now, and the headers the request and the
response gain and lose on the way.

The request head is the one the connection manager made (explain.py); the router's own
functions rewrite it here (`prepare_upstream_request`, `upgrade_request`), so the headers
shown are the ones the upstream would get.
"""

from typing import Any

import attrs
import trio

from gateway.clusters.host import Host
from gateway.config.model import HttpConnectionManagerOptions, Route
from gateway.protocol import grpc
from gateway.protocol.headers import HeaderMap, RequestHead
from gateway.router.retry import may_repeat
from gateway.router.route_table import RouteEntry
from gateway.router.router import (
    allowed_upgrades,
    prepare_upstream_request,
    redirect_location,
    request_hash,
    upgrade_request,
    upstream_timeout,
)
from gateway.server.gateway import Gateway

Explanation = dict[str, Any]

#: Headers whose value the gateway makes anew for every request: what /explain shows is
#: one sample.
_FRESH = {"x-request-id", "traceparent", "sec-websocket-key"}


def explain_route_action(
    gw: Gateway,
    listener: HttpConnectionManagerOptions,
    entry: RouteEntry,
    head: RequestHead,
    downstream_ip: str,
    changes: list[Explanation],
    out: Explanation,
) -> None:
    """What the router does with the request on `entry`; `changes` are the header changes
    so far (the connection manager's), `out` the explanation to complete: the action and
    what it leads to, then the headers both ways, then the verdict."""
    request_headers: Explanation = {"changes": changes}
    verdict = _act(gw, listener, entry, head, downstream_ip, request_headers, out)
    out["request_headers"] = request_headers
    out["response_headers"] = _response_headers(entry, proxied="clusters" in out)
    out["verdict"] = verdict


def _act(
    gw: Gateway,
    listener: HttpConnectionManagerOptions,
    entry: RouteEntry,
    head: RequestHead,
    downstream_ip: str,
    request_headers: Explanation,
    out: Explanation,
) -> str:
    """The route's action and what follows from it, in `out`; returns the verdict."""
    route = entry.config
    if route.direct_response is not None:
        response = route.direct_response
        out["action"] = {
            "type": "direct_response",
            "status": response.status,
            "body_bytes": len(response.body.encode()),
        }
        return f"direct response {response.status} from the gateway"
    if route.redirect is not None:
        location = redirect_location(route.redirect, route, head)
        code = route.redirect.response_code
        out["action"] = {"type": "redirect", "response_code": code, "location": location}
        return f"redirect {code} to {location}"
    names = _cluster_names(route)
    if route.match.connect_matcher:
        out["action"] = {"type": "connect", "cluster": names[0]}
        out["clusters"] = [describe_cluster(gw, names[0], None)]
        return (
            f"CONNECT terminated: a TCP connection to a host of cluster {names[0]}, "
            f"then 200 and the bytes both ways ({_hosts_summary(out['clusters'])})"
        )
    tunnel = _upgrade(listener, route, head, out)
    if tunnel is None:
        return f"403: the route does not allow the {head.upgrade} upgrade"
    out["action"] = _action(route)
    before = HeaderMap(head.headers)
    prepare_upstream_request(head, entry)
    if tunnel:
        upgrade_request(head)
    is_grpc = grpc.is_grpc_request(head)
    timeout = upstream_timeout(route, head, is_grpc)
    # Set by the router on each attempt, once a connection is borrowed.
    if route.retry_policy is not None:
        head.headers.set("x-envoy-attempt-count", "1")
    if is_grpc and timeout != float("inf"):
        head.headers.set("grpc-timeout", grpc.format_timeout(timeout))
    request_headers["changes"] += [
        {**c, "by": _changed_by(c["name"], entry)}
        for c in header_changes(before, head.headers, "router")
    ]
    request_headers["upstream"] = {
        "method": head.method,
        "path": head.path,
        "authority": head.authority,
        "headers": [list(h) for h in head.headers],
    }
    out["timeout"] = _timeout(route, timeout, is_grpc)
    if route.retry_policy is not None:
        out["retry_policy"] = _retry_policy(route, head.method, is_grpc)
    hash_key = None
    if route.hash_policy:
        hash_key = request_hash(route.hash_policy, head.headers, downstream_ip)
        out["hash_policy"] = _hash_policy(route, head, downstream_ip, hash_key)
    out["clusters"] = [describe_cluster(gw, name, hash_key) for name in names]
    return _verdict(out["clusters"], tunnel)


def explain_tcp_proxy(gw: Gateway, cluster: str, out: Explanation) -> None:
    out["clusters"] = [describe_cluster(gw, cluster, None)]
    out["verdict"] = (
        f"tcp_proxy: the bytes go to a host of cluster {cluster}, not parsed as HTTP "
        f"({_hosts_summary(out['clusters'])})"
    )


def _cluster_names(route: Route) -> list[str]:
    if route.cluster is not None:
        return [route.cluster]
    assert route.weighted_clusters is not None
    return [w.name for w in route.weighted_clusters]


def _action(route: Route) -> Explanation:
    if route.cluster is not None:
        action: Explanation = {"type": "cluster", "cluster": route.cluster}
    else:
        assert route.weighted_clusters is not None
        total = sum(w.weight for w in route.weighted_clusters) or 1
        action = {
            "type": "weighted_clusters",
            "clusters": [
                {"name": w.name, "weight": w.weight, "share": f"{100 * w.weight / total:.0f}%"}
                for w in route.weighted_clusters
            ],
        }
    rewrites = {"prefix_rewrite": route.prefix_rewrite, "host_rewrite": route.host_rewrite}
    action.update({k: v for k, v in rewrites.items() if v is not None})
    return action


def _upgrade(
    listener: HttpConnectionManagerOptions, route: Route, head: RequestHead, out: Explanation
) -> bool | None:
    """Whether the request becomes a tunnel; None if the router refuses it (403)."""
    if head.upgrade is None:
        return False
    allowed = allowed_upgrades(route, listener)
    if head.upgrade in allowed:
        out["upgrade"] = {"protocol": head.upgrade, "result": "tunnelled (HTTP/1.1 upstream)"}
        return True
    if head.multiplexed or listener.upgrade_not_allowed == "reject":
        out["upgrade"] = {"protocol": head.upgrade, "result": "refused"}
        return None
    out["upgrade"] = {
        "protocol": head.upgrade,
        "result": "not allowed here: forwarded as an ordinary request, without Upgrade",
    }
    head.upgrade = None
    return False


def _changed_by(name: str, entry: RouteEntry) -> str:
    """Which configured part of the router changed a request header."""
    route, vhost = entry.config, entry.virtual_host
    if name in route.request_headers_to_add or name in route.request_headers_to_remove:
        return "route"
    if name in vhost.request_headers_to_add or name in vhost.request_headers_to_remove:
        return "virtual host"
    if name == "x-envoy-original-path":
        return "route prefix_rewrite"
    if name == "expect":
        return "router (it answers 100-continue itself)"
    return "router"


def _response_headers(entry: RouteEntry, proxied: bool) -> Explanation:
    """The response header mutations of the virtual host, then the route (which wins)."""
    route, vhost = entry.config, entry.virtual_host
    step: Explanation = {
        "remove": [
            {"name": name, "by": by}
            for by, part in (("virtual host", vhost), ("route", route))
            for name in part.response_headers_to_remove
        ],
        "add": [
            {"name": name, "value": value, "by": by}
            for by, part in (("virtual host", vhost), ("route", route))
            for name, value in part.response_headers_to_add.items()
        ],
    }
    if proxied:
        step["router"] = (
            "drops the upstream's hop-by-hop headers and adds x-envoy-upstream-service-time"
        )
    return step


def _timeout(route: Route, timeout: float, is_grpc: bool) -> Explanation:
    step: Explanation = {"route": seconds(route.timeout), "upstream": seconds(timeout)}
    if is_grpc:
        step["grpc"] = "the smaller of the route timeout and the client's grpc-timeout" + (
            f", capped at max_grpc_timeout {route.max_grpc_timeout:g}s"
            if route.max_grpc_timeout
            else ""
        )
    return step


def _retry_policy(route: Route, method: str, is_grpc: bool) -> Explanation:
    policy = route.retry_policy
    assert policy is not None
    step: Explanation = {
        "retry_on": list(policy.retry_on),
        "num_retries": policy.num_retries,
        "per_try_timeout": seconds(policy.per_try_timeout),
        "retry_back_off": attrs.asdict(policy.retry_back_off),
    }
    if policy.retriable_status_codes:
        step["retriable_status_codes"] = policy.retriable_status_codes
    if not may_repeat(policy, method, is_grpc):
        step["note"] = (
            f"{method} is not idempotent: retried only when the upstream cannot have seen "
            "it (connect-failure, refused-stream); retry_non_idempotent lifts that"
        )
    return step


def _hash_policy(
    route: Route, head: RequestHead, downstream_ip: str, hash_key: int | None
) -> Explanation:
    inputs: list[Explanation] = []
    for policy in route.hash_policy:
        for kind in ("header", "cookie"):
            name = getattr(policy, kind)
            if name is not None:
                inputs.append({kind: name})
        if policy.source_ip:
            inputs.append({"source_ip": downstream_ip})
        inputs[-1]["terminal"] = policy.terminal
    return {
        "policies": inputs,
        "hash": f"{hash_key:016x}" if hash_key is not None else None,
        "note": None
        if hash_key is not None
        else "no input present: hash-based balancers pick at random",
    }


def describe_cluster(gw: Gateway, name: str, hash_key: int | None) -> Explanation:
    """The cluster and every host: its weight, health, and whether the load balancer may
    pick it now."""
    cluster = gw.clusters.clusters.get(name)
    if cluster is None:
        return {"name": name, "error": "no such cluster (503, flag NC)"}
    config = cluster.config
    usable, panic = cluster.usable_hosts()
    step: Explanation = {
        "name": name,
        "lb_policy": config.lb_policy,
        "protocol": config.protocol,
        "hosts": [_describe_host(host, host in usable) for host in cluster.hosts],
        "can_be_picked": len(usable),
    }
    if panic:
        step["panic"] = (
            f"fewer than healthy_panic_threshold ({config.healthy_panic_threshold:g}%) of "
            "the hosts are healthy: the load balancer uses all of them"
        )
    if config.health_checks:
        step["health_checks"] = [
            f"{check.type} every {check.interval:g}s (unhealthy after "
            f"{check.unhealthy_threshold}, healthy after {check.healthy_threshold})"
            for check in config.health_checks
        ]
    if config.outlier_detection is not None:
        detection = config.outlier_detection
        step["outlier_detection"] = (
            f"ejects after {detection.consecutive_5xx} consecutive 5xx or "
            f"{detection.consecutive_gateway_failure} gateway failures, "
            f"for {detection.base_ejection_time:g}s times the ejections"
        )
    if not cluster.resources.requests.can_create():
        step["circuit_breaker"] = "max_requests reached now: a request gets 503 (UO)"
    if hash_key is not None:
        picked = cluster.hash_pick(hash_key)
        step["hash_picks"] = str(picked) if picked is not None else None
    return step


def _describe_host(host: Host, can_be_picked: bool) -> Explanation:
    pool = host.pool.statistics()
    item: Explanation = {
        "address": str(host),
        "weight": host.weight,
        "health": host.health_flag_names(),
        "can_be_picked": can_be_picked,
        "rq_active": host.stats.rq_active,
        "connections": {"open": pool.open, "idle": pool.idle},
    }
    outlier = host.outlier
    if outlier.ejected_until is not None:
        left = max(outlier.ejected_until - trio.current_time(), 0.0)
        item["ejected"] = f"for {left:.1f}s more (ejection #{outlier.num_ejections})"
    return item


def _hosts_summary(clusters: list[Explanation]) -> str:
    parts = []
    for cluster in clusters:
        if "error" in cluster:
            parts.append(f"cluster {cluster['name']}: {cluster['error']}")
        else:
            total = len(cluster["hosts"])
            parts.append(
                f"{cluster['can_be_picked']} of {total} hosts of {cluster['name']} can be picked"
            )
    return "; ".join(parts)


def _verdict(clusters: list[Explanation], tunnel: bool) -> str:
    usable = [c for c in clusters if "error" not in c and c["can_be_picked"]]
    names = " or ".join(c["name"] for c in clusters)
    if not usable:
        return f"503 (UH or NC): no host to pick in cluster {names} ({_hosts_summary(clusters)})"
    what = "tunnelled" if tunnel else "proxied"
    return f"{what} to cluster {names} ({_hosts_summary(clusters)})"


def header_changes(before: HeaderMap, after: HeaderMap, by: str) -> list[Explanation]:
    """What changed between two header maps, header by header: removed, added, replaced."""
    old: dict[str, list[str]] = {}
    new: dict[str, list[str]] = {}
    for name, value in before:
        old.setdefault(name, []).append(value)
    for name, value in after:
        new.setdefault(name, []).append(value)
    changes: list[Explanation] = []
    for name in [*old, *(n for n in new if n not in old)]:
        was, now = old.get(name), new.get(name)
        if was == now:
            continue
        change: Explanation = {"name": name}
        if now is None:
            change.update(action="removed", was=", ".join(was or ()))
        elif was is None:
            change.update(action="added", value=", ".join(now))
        else:
            change.update(action="replaced", value=", ".join(now), was=", ".join(was))
        change["by"] = by
        if name in _FRESH and now is not None:
            change["note"] = "new for every request"
        changes.append(change)
    return changes


def seconds(value: float) -> str:
    """A duration as the config writes it; 0 and infinity are no limit."""
    return "none" if value in (0, float("inf")) else f"{value:g}s"
