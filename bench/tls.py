"""TLS at the edge: handshakes per second and HTTPS keep-alive throughput, gateway vs nginx.

    python bench/tls.py [--seconds 5] [--connections 32]

Both terminate TLS with the same certificate (a trustme CA, made at run time) on the same
machine. nginx answers `200 hello world` itself; the gateway terminates TLS in a filter
chain and proxies to that nginx over cleartext HTTP/1.1, so its row includes a proxy hop,
as in bench/run.py. Handshakes: `openssl s_time -new` (one client, a full handshake per
connection, TLS 1.3, no resumption). Throughput: `wrk` over HTTPS keep-alive connections.
"""

import argparse
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import trustme
from run import NGINX, free_port, launch, nginx_conf, wait_accepting


def nginx_tls_conf(tmp: Path, plain: int, tls: int, cert: Path, key: Path) -> str:
    conf = nginx_conf(tmp, plain, free_port())
    server = f"""    server {{
        listen 127.0.0.1:{tls} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets off;
        ssl_session_cache off;
        location / {{
            default_type text/plain;
            return 200 "hello world\\n";
        }}
    }}
}}
"""
    return conf.rstrip().removesuffix("}") + server


def gateway_toml(port: int, upstream: int, cert: Path, key: Path) -> str:
    return f"""
[listeners.edge]
address = "127.0.0.1:{port}"
[[listeners.edge.filter_chains]]
tls = {{ certificates = [{{ certificate_chain = "{cert}", private_key = "{key}" }}],
        alpn_protocols = ["http/1.1"] }}
filters = [{{ type = "http_connection_manager", virtual_hosts = ["all"] }}]
[virtual_hosts.all]
domains = ["*"]
[[virtual_hosts.all.routes]]
match = {{ prefix = "/" }}
cluster = "nginx"
[clusters.nginx]
endpoints = ["127.0.0.1:{upstream}"]
"""


def handshakes_per_second(port: int, ca: Path, seconds: int) -> float:
    out = subprocess.run(
        ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-CAfile", str(ca),
         "-time", str(seconds)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    m = re.search(r"(\d+) connections in (\d+) real seconds", out)
    assert m, out
    return int(m[1]) / int(m[2])


def wrk_rps(port: int, seconds: int, connections: int) -> float:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", f"https://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert m and "Non-2xx" not in out, out
    return float(m[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    for tool in (NGINX, "openssl", "wrk"):
        if shutil.which(tool) is None:
            sys.exit(f"SKIP: {tool} not found (apt-get install nginx-light openssl wrk)")
    with tempfile.TemporaryDirectory() as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        ca = trustme.CA()
        leaf = ca.issue_cert("localhost", "127.0.0.1")
        cert, key, ca_file = tmp / "cert.pem", tmp / "key.pem", tmp / "ca.pem"
        cert.write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        ca.cert_pem.write_to_path(str(ca_file))
        plain, nginx_tls, gateway_port = free_port(), free_port(), free_port()
        (tmp / "nginx.conf").write_text(nginx_tls_conf(tmp, plain, nginx_tls, cert, key))
        argv = [NGINX, "-p", str(tmp), "-e", "stderr", "-c", str(tmp / "nginx.conf")]
        wait_accepting(launch(stack, tmp, "nginx", nginx_tls, argv), 10)
        (tmp / "gateway.toml").write_text(gateway_toml(gateway_port, plain, cert, key))
        argv = [sys.executable, "-m", "gateway", "serve", str(tmp / "gateway.toml")]
        wait_accepting(launch(stack, tmp, "gateway", gateway_port, argv), 30)
        print(f"{'target':<10} {'handshakes/s':>13} {'HTTPS keep-alive req/s':>23}")
        for name, port in (("nginx", nginx_tls), ("gateway", gateway_port)):
            hs = handshakes_per_second(port, ca_file, args.seconds)
            rps = wrk_rps(port, args.seconds, args.connections)
            print(f"{name:<10} {hs:>13.0f} {rps:>23.0f}")


if __name__ == "__main__":
    main()
