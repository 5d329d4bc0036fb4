"""/explain's answer as text (`?format=text`, and what `gateway explain` prints): the
stages in the order a request meets them, one or a few lines each, the verdict last."""

import json
from typing import Any

Explanation = dict[str, Any]

_WIDTH = 16


def _line(label: str, text: str) -> str:
    return f"{label:<{_WIDTH}}{text}"


def render(out: Explanation) -> str:
    lines = _request(out["request"])
    if "worker" in out:
        worker = f"{out['worker']} (each worker checks the health of its hosts itself)"
        lines.append(_line("worker", worker))
    listener = out["listener"]
    lines.append(
        _line("listener", f"{listener['name']} ({listener['address']}): {listener['why']}")
    )
    if "proxy_protocol" in listener:
        lines.append(_line("", listener["proxy_protocol"]))
    lines += _filter_chain(out.get("filter_chain"))
    if (tls := out.get("tls")) is not None:
        lines.append(_line("tls", _tls(tls)))
    if filters := out.get("network_filters"):
        described = [
            f"{f['name']} ({f['stat_prefix']})"
            if "stat_prefix" in f
            else f"{f['name']}: {f['result']}"
            for f in filters
        ]
        lines.append(_line("network filters", "; ".join(described)))
    if (protocol := out.get("downstream_protocol")) is not None:
        lines.append(_line("protocol", f"{protocol['protocol']}: {protocol['why']}"))
    if (path := out.get("path_normalization")) is not None:
        lines.append(_line("path", f"{path['from']} -> {path['to']} (normalized)"))
    lines += _routing(out)
    for item in out.get("http_filters", ()):
        lines.append(_line("", f"  {item['name']} ({item['type']})".ljust(34) + item["status"]))
        if item.get("config"):
            lines.append(_line("", f"    {_compact(item['config'])}"))
    lines += _action(out)
    for cluster in out.get("clusters", ()):
        lines += _cluster(cluster)
    lines += _headers(out)
    lines.append(_line("verdict", out.get("verdict", "-")))
    return "\n".join(lines) + "\n"


def _compact(data: dict[str, Any]) -> str:
    """A config table on one line, as TOML's inline tables read: `prefix = "/v1"`."""
    return ", ".join(f"{k} = {json.dumps(v)}" for k, v in data.items())


def _request(request: Explanation) -> list[str]:
    lines = [f"{request['method']} {request['url']}"]
    details = [f"from {request['source']}"]
    if request["server_name"]:
        details.append(f"SNI {request['server_name']}")
    if request["application_protocols"]:
        details.append(f"ALPN {', '.join(request['application_protocols'])}")
    lines.append("  " + "; ".join(details))
    lines += [f"  {name}: {value}" for name, value in request["headers"]]
    return lines


def _filter_chain(step: Explanation | None) -> list[str]:
    if step is None:
        return []
    lines = []
    if step["name"] is not None:
        lines.append(_line("filter chain", f"{step['name']}: {step['why']}"))
    else:
        lines.append(_line("filter chain", "none matches"))
    for candidate in step.get("candidates", ()):
        lines.append(_line("", f"  not {candidate['name']}: {candidate['result']}"))
    return lines


def _tls(tls: Explanation) -> str:
    if not tls["terminated"]:
        return str(tls["why"])
    names = ", ".join(tls["certificate_names"])
    text = f"terminated: certificate {tls['certificate']} ({names}); ALPN {tls['alpn'] or 'none'}"
    if "client_certificate" in tls:
        text += f"; client certificate {tls['client_certificate']}"
    return text


def _routing(out: Explanation) -> list[str]:
    lines = []
    if "virtual_host" in out:
        vhost = out["virtual_host"]
        text = "none" if vhost is None else f"{vhost['name']}: {vhost['why']}"
        lines.append(_line("virtual host", text))
    if "routes" in out:
        lines.append(_line("routes", "(in order; the first that matches wins)"))
        for route in out["routes"]:
            result = f"  {route['name']:<14}{route['result']}"
            lines.append(_line("", f"{result:<70} {_compact(route['match'])}"))
        if out.get("routes_not_tried"):
            lines.append(_line("", f"  ({out['routes_not_tried']} more after it, not tried)"))
    if "http_filters" in out:
        lines.append(_line("http filters", "(in order; explain lists them, it does not run them)"))
    return lines


def _action(out: Explanation) -> list[str]:
    lines = []
    if (action := out.get("action")) is not None:
        kind = action["type"]
        if kind == "cluster":
            text = f"cluster {action['cluster']}"
        elif kind == "weighted_clusters":
            shares = ", ".join(f"{c['name']} {c['share']}" for c in action["clusters"])
            text = f"weighted clusters: {shares} (picked per request)"
        elif kind == "redirect":
            text = f"redirect {action['response_code']} to {action['location']}"
        elif kind == "direct_response":
            text = f"direct response {action['status']} ({action['body_bytes']} bytes)"
        else:
            text = f"CONNECT to cluster {action['cluster']}"
        for key in ("prefix_rewrite", "host_rewrite"):
            if key in action:
                text += f"; {key} {action[key]!r}"
        lines.append(_line("action", text))
    if (upgrade := out.get("upgrade")) is not None:
        lines.append(_line("upgrade", f"{upgrade['protocol']}: {upgrade['result']}"))
    if (timeout := out.get("timeout")) is not None:
        text = f"route {timeout['route']}, upstream exchange {timeout['upstream']}"
        lines.append(
            _line("timeout", text + (f" ({timeout['grpc']})" if "grpc" in timeout else ""))
        )
    if (retry := out.get("retry_policy")) is not None:
        text = (
            f"retry_on {', '.join(retry['retry_on'])}; {retry['num_retries']} retries; "
            f"per try {retry['per_try_timeout']}"
        )
        lines.append(_line("retry policy", text))
        if "note" in retry:
            lines.append(_line("", retry["note"]))
    if (hashing := out.get("hash_policy")) is not None:
        inputs = ", ".join(
            " ".join(f"{k} {v}" for k, v in p.items() if k != "terminal")
            + (" (terminal)" if p["terminal"] else "")
            for p in hashing["policies"]
        )
        lines.append(_line("hash policy", f"{inputs} -> {hashing['hash'] or hashing['note']}"))
    return lines


def _cluster(cluster: Explanation) -> list[str]:
    if "error" in cluster:
        return [_line("cluster", f"{cluster['name']}: {cluster['error']}")]
    total = len(cluster["hosts"])
    lines = [
        _line(
            "cluster",
            f"{cluster['name']} ({cluster['lb_policy']}, {cluster['protocol']}): "
            f"{cluster['can_be_picked']} of {total} hosts can be picked",
        )
    ]
    for host in cluster["hosts"]:
        state = "can be picked" if host["can_be_picked"] else "cannot be picked"
        ejected = f"  ejected {host['ejected']}" if "ejected" in host else ""
        lines.append(
            _line(
                "",
                f"  {host['address']:<22} weight {host['weight']:<4} {host['health']:<36}"
                f"{state}{ejected}",
            )
        )
    for key in ("panic", "circuit_breaker", "outlier_detection"):
        if key in cluster:
            lines.append(_line("", f"  {key.replace('_', ' ')}: {cluster[key]}"))
    for check in cluster.get("health_checks", ()):
        lines.append(_line("", f"  health check: {check}"))
    if "hash_picks" in cluster:
        lines.append(_line("", f"  the request's hash picks {cluster['hash_picks']}"))
    return lines


_SIGNS = {"added": "+", "removed": "-", "replaced": "~"}


def _headers(out: Explanation) -> list[str]:
    lines = []
    if (request := out.get("request_headers")) is not None:
        upstream = request.get("upstream")
        to = (
            f"as the upstream gets it: {upstream['method']} {upstream['path']}, "
            f"authority {upstream['authority']}"
            if upstream
            else "as the filters get it"
        )
        lines.append(_line("request headers", to))
        for change in request["changes"]:
            value = change.get("value", change.get("was", ""))
            if change["action"] == "replaced":
                value = f"{change['was']} -> {change['value']}"
            note = f"; {change['note']}" if "note" in change else ""
            text = f"  {_SIGNS[change['action']]} {change['name']}: {value}"
            lines.append(_line("", f"{text:<60} {change['by']}{note}"))
    response = out.get("response_headers")
    if response and (response["remove"] or response["add"] or "router" in response):
        lines.append(_line("response headers", ""))
        for item in response["remove"]:
            lines.append(_line("", f"  - {item['name']:<56} {item['by']}"))
        for item in response["add"]:
            lines.append(_line("", f"  + {item['name'] + ': ' + item['value']:<56} {item['by']}"))
        if "router" in response:
            lines.append(_line("", f"  the router {response['router']}"))
    return lines
