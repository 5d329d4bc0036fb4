"""Each section's set of servers: the upstream, the gateway, and the optional peers that
are installed and start (the others get a SKIP line and no row)."""

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.certs import make_cert
from bench.peers.envoy import start_envoy, start_envoy_grpc, start_envoy_h3
from bench.peers.gateway import (
    start_gateway,
    start_gateway_grpc,
    start_gateway_h3,
    start_gateway_workers,
)
from bench.peers.grpc_echo import start_grpc_echo
from bench.peers.haproxy import start_haproxy
from bench.peers.mitmproxy import start_mitmproxy
from bench.peers.nginx import start_nginx
from bench.services import PeerUnavailable, Service
from bench.tools import INSTALL_HINTS


def start_optional(
    name: str, binary: str | None, start: Callable[[str], Service]
) -> Service | None:
    """Starts a peer, or explains why it is left out of the table."""
    if binary is None:
        print(f"SKIP {name}: not found. Install: {INSTALL_HINTS[name]}")
        return None
    try:
        return start(binary)
    except (PeerUnavailable, OSError) as exc:
        print(f"SKIP {name}: could not start/verify it ({exc}). Install: {INSTALL_HINTS[name]}")
        return None


@dataclass
class HttpPeers:
    nginx: Service
    h2_port: int
    proxies: list[Service]  # gateway first, then the optional peers that started
    #: The same proxies talking h2c to nginx's h2c port (the http2 section's floor table).
    h2_proxies: list[Service] = field(default_factory=list)


def start_http_peers(
    stack: contextlib.ExitStack,
    tmp: Path,
    envoy: str | None,
    mitmdump: str | None,
    haproxy: str | None,
    *,
    http2: bool,
) -> HttpPeers:
    """nginx and the proxies; with `http2`, also each proxy again with h2c to nginx."""
    nginx, h2_port = start_nginx(stack, tmp)
    gateway = start_gateway(stack, tmp, nginx.port)
    upstream = nginx.port
    optional = [
        start_gateway_workers(stack, tmp, upstream, 2),
        start_optional("envoy", envoy, lambda b: start_envoy(stack, tmp, upstream, b)),
        start_optional("envoy", envoy, lambda b: start_envoy(stack, tmp, upstream, b, 2)),
        start_optional("haproxy", haproxy, lambda b: start_haproxy(stack, tmp, upstream, b)),
        start_optional("mitmproxy", mitmdump, lambda b: start_mitmproxy(stack, tmp, upstream, b)),
    ]
    proxies = [gateway, *(s for s in optional if s is not None)]
    h2_proxies: list[Service] = []
    if http2:
        h2_optional = [
            start_optional(
                "envoy", envoy, lambda b: start_envoy(stack, tmp, h2_port, b, h2_upstream=True)
            ),
            start_optional(
                "haproxy",
                haproxy,
                lambda b: start_haproxy(stack, tmp, h2_port, b, h2_upstream=True),
            ),
        ]
        h2_gateway = start_gateway(stack, tmp, h2_port, h2_upstream=True)
        h2_proxies = [h2_gateway, *(s for s in h2_optional if s is not None)]
    for service in (nginx, *proxies, *h2_proxies):
        print(f"ok   {service.name:<16} 127.0.0.1:{service.port}  GET / -> 200 'hello world'")
    return HttpPeers(nginx, h2_port, proxies, h2_proxies)


@dataclass
class GrpcPeers:
    server: Service
    proxies: list[Service]  # gateway first, then Envoy if it started


def start_grpc_peers(stack: contextlib.ExitStack, tmp: Path, envoy: str | None) -> GrpcPeers:
    server = start_grpc_echo(stack, tmp)
    gateway = start_gateway_grpc(stack, tmp, server.port)
    optional = start_optional(
        "envoy", envoy, lambda b: start_envoy_grpc(stack, tmp, server.port, b)
    )
    proxies = [gateway, *([optional] if optional else [])]
    for service in (server, *proxies):
        print(f"ok   {service.name:<16} 127.0.0.1:{service.port}  gRPC unary/stream/bidi echo")
    return GrpcPeers(server, proxies)


@dataclass
class H3Peers:
    nginx: Service
    proxies: list[Service]  # those that started and answer HTTP/3: the gateway, Envoy
    #: Why the gateway is not among them, if it failed (a row marked FAILED).
    gateway_failure: str | None = None


def start_h3_peers(stack: contextlib.ExitStack, tmp: Path, envoy: str | None) -> H3Peers:
    """nginx (HTTP/1.1), and the gateway and Envoy with a QUIC listener in front of it."""
    nginx, _h2_port = start_nginx(stack, tmp)
    files = make_cert(tmp)
    proxies: list[Service] = []
    failure = None
    try:
        proxies.append(start_gateway_h3(stack, tmp, nginx.port, files.cert, files.key))
    except (PeerUnavailable, OSError) as exc:
        failure = f"gateway-h3 did not start or answer HTTP/3: {exc}"
    envoy_h3 = start_optional(
        "envoy",
        envoy,
        lambda b: start_envoy_h3(stack, tmp, nginx.port, b, files.cert, files.key),
    )
    proxies += [envoy_h3] if envoy_h3 else []
    for service in proxies:
        print(f"ok   {service.name:<16} 127.0.0.1:{service.port}/udp  HTTP/3 GET / -> 200")
    return H3Peers(nginx, proxies, failure)
