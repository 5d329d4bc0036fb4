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
import shutil
import sys
import tempfile
from pathlib import Path

# Run as a script, Python puts bench/ first on the path; the package needs the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.certs import make_cert
from bench.load.s_time import handshakes_per_second
from bench.load.wrk import run_wrk
from bench.peers.gateway import gateway_argv, gateway_toml, tls_listener
from bench.peers.nginx import NGINX, nginx_argv, nginx_conf, tls_server
from bench.services import free_port, launch, wait_accepting


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
        files = make_cert(tmp)
        cert, key, ca_file = files.cert, files.key, files.ca
        plain, nginx_tls, gateway_port = free_port(), free_port(), free_port()
        conf = tmp / "nginx.conf"
        conf.write_text(nginx_conf(tmp, plain, free_port(), tls_server(nginx_tls, cert, key)))
        wait_accepting(launch(stack, tmp, "nginx", nginx_tls, nginx_argv(tmp, conf)), 10)
        conf = tmp / "gateway.toml"
        conf.write_text(gateway_toml(gateway_port, plain, listener=tls_listener(cert, key)))
        wait_accepting(launch(stack, tmp, "gateway", gateway_port, gateway_argv(conf)), 30)
        print(f"{'target':<10} {'handshakes/s':>13} {'HTTPS keep-alive req/s':>23}")
        for name, port in (("nginx", nginx_tls), ("gateway", gateway_port)):
            hs = handshakes_per_second(port, ca_file, args.seconds)
            wrk = run_wrk(
                port, threads=2, connections=args.connections, duration=args.seconds, scheme="https"
            )
            assert not wrk.errors, f"{name}: {wrk.error_note()}"
            print(f"{name:<10} {hs:>13.0f} {wrk.rps:>23.0f}")


if __name__ == "__main__":
    main()
