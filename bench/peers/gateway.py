"""The gateway under test: `python -m gateway serve` from a generated TOML config, from this
checkout (or the one a caller names), with no access log and no admin."""

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

from bench.gates import check_hello
from bench.load.grpc_client import check_grpc
from bench.load.h3_client import check_hello_h3
from bench.names import H2_UP
from bench.services import (
    REPO_DIR,
    PeerUnavailable,
    Service,
    free_port,
    free_udp_port,
    start_checked,
    start_probed,
)

#: The listener's keys in the single-chain form: every host, no filters.
ALL_HOSTS = 'virtual_hosts = ["all"]'


def gateway_toml(
    port: int,
    upstream_port: int,
    workers: int = 1,
    *,
    h2_upstream: bool = False,
    listener: str = ALL_HOSTS,
    cluster: str = "",
) -> str:
    """HTTP/1.1 and h2c downstream on one port (codec "auto"), HTTP/1.1 to nginx (h2c with
    `h2_upstream`); `[server] workers` always, as the default ("auto") is one per core:
    with workers > 1, worker processes sharing the port via SO_REUSEPORT. `listener` is
    the listener's keys after its address (filter chains instead, in tls.py), `cluster`
    more keys for the cluster."""
    server = f"[server]\nworkers = {workers}\n\n"
    protocol = '\nprotocol = "http2"' if h2_upstream else ""
    more = f"\n{cluster}" if cluster else ""
    return f"""\
{server}[listeners.edge]
address = "127.0.0.1:{port}"
{listener}

[virtual_hosts.all]
domains = ["*"]

[[virtual_hosts.all.routes]]
match = {{ prefix = "/" }}
cluster = "upstream"

[clusters.upstream]
endpoints = ["127.0.0.1:{upstream_port}"]{protocol}{more}
"""


def tls_listener(cert: Path, key: Path) -> str:
    """The listener's keys for gateway_toml: one filter chain terminating TLS with `cert`,
    offering HTTP/1.1."""
    return f"""\
[[listeners.edge.filter_chains]]
tls = {{ certificates = [{{ certificate_chain = "{cert}", private_key = "{key}" }}],
        alpn_protocols = ["http/1.1"] }}
filters = [{{ type = "http_connection_manager", virtual_hosts = ["all"] }}]"""


def quic_listener(cert: Path, key: Path) -> str:
    """The listener's keys for gateway_toml: HTTP/3 on UDP, QUIC's own TLS with `cert`."""
    return f"""\
protocol = "quic"
virtual_hosts = ["all"]
quic = {{ certificates = [{{ certificate_chain = "{cert}", private_key = "{key}" }}] }}"""


def gateway_grpc_toml(port: int, upstream_port: int) -> str:
    """gRPC route to an h2c cluster; no route timeout (the client's grpc-timeout applies);
    one process, as the rows it is compared with."""
    return f"""\
[server]
workers = 1

[listeners.grpc]
address = "127.0.0.1:{port}"
virtual_hosts = ["grpc"]

[virtual_hosts.grpc]
domains = ["*"]

[[virtual_hosts.grpc.routes]]
match = {{ prefix = "/", grpc = true }}
cluster = "grpc"
timeout = "0s"

[clusters.grpc]
endpoints = ["127.0.0.1:{upstream_port}"]
protocol = "http2"
"""


def gateway_argv(conf: Path, profile: str | None = None) -> list[str]:
    """`python -m gateway serve`; with `profile` (a path, from $GATEWAY_BENCH_CPROFILE) under
    cProfile, which writes its stats there when the gateway exits (SIGTERM)."""
    prefix = ["-m", "cProfile", "-o", profile] if profile else []
    return [sys.executable, *prefix, "-m", "gateway", "serve", str(conf), "--log-level", "warning"]


def start_configured(
    stack: contextlib.ExitStack,
    tmp: Path,
    name: str,
    config: Callable[[int], str],
    *,
    gate: Callable[[Service], None] = check_hello,
    profile: str | None = None,
    source: Path = REPO_DIR,
) -> Service:
    """A gateway on a free port, from `config(port)` written to NAME.toml, once it passes
    `gate`."""
    port = free_port()
    conf = tmp / f"{name}.toml"
    conf.write_text(config(port))
    argv = gateway_argv(conf, profile)
    return start_checked(stack, tmp, name, argv, port, gate, source=source)


def start_gateway(
    stack: contextlib.ExitStack,
    tmp: Path,
    upstream: int,
    workers: int = 1,
    *,
    h2_upstream: bool = False,
) -> Service:
    name = "gateway" if workers == 1 else f"gateway-w{workers}"
    name += H2_UP if h2_upstream else ""
    profile = os.environ.get("GATEWAY_BENCH_CPROFILE") if workers == 1 else None
    return start_configured(
        stack,
        tmp,
        name,
        lambda port: gateway_toml(port, upstream, workers, h2_upstream=h2_upstream),
        profile=profile,
    )


def start_gateway_workers(
    stack: contextlib.ExitStack, tmp: Path, upstream: int, workers: int
) -> Service | None:
    """The gateway with `[server] workers = N`, or None (SKIP) if this gateway does not
    have worker processes yet (it rejects the key) or they fail to start."""
    try:
        return start_gateway(stack, tmp, upstream, workers)
    except (PeerUnavailable, OSError) as exc:
        first = str(exc).strip().splitlines()
        print(f"SKIP gateway-w{workers}: `[server] workers = {workers}` did not start ({first[0]})")
        return None


def start_gateway_grpc(stack: contextlib.ExitStack, tmp: Path, upstream: int) -> Service:
    return start_configured(
        stack,
        tmp,
        "gateway-grpc",
        lambda port: gateway_grpc_toml(port, upstream),
        gate=check_grpc,
        profile=os.environ.get("GATEWAY_BENCH_CPROFILE"),
    )


def start_gateway_h3(
    stack: contextlib.ExitStack, tmp: Path, upstream: int, cert: Path, key: Path
) -> Service:
    """One gateway process with a QUIC listener (quic_listener), once a GET over HTTP/3
    passes."""
    port = free_udp_port()
    conf = tmp / "gateway-h3.toml"
    conf.write_text(gateway_toml(port, upstream, listener=quic_listener(cert, key)))
    argv = gateway_argv(conf, os.environ.get("GATEWAY_BENCH_CPROFILE"))
    return start_probed(stack, tmp, "gateway-h3", argv, port, check_hello_h3)
