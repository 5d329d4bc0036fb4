"""nginx: the HTTP upstream every proxy forwards to (and the `upstream-direct` row), one
worker answering every request with 200 "hello world"."""

import contextlib
from pathlib import Path

from bench.gates import check_hello
from bench.names import DIRECT
from bench.services import Service, free_port, start_checked

NGINX = "/usr/sbin/nginx"

_HELLO_LOCATION = """\
        location / {
            default_type text/plain;
            return 200 "hello world\\n";
        }"""


def nginx_conf(tmp: Path, port: int, h2_port: int, servers: str = "") -> str:
    """An HTTP/1.1 port and an h2c port; `servers`: more `server` blocks (tls.py's)."""
    temp_paths = "\n".join(
        f"    {kind}_temp_path {tmp}/nginx-{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp_paths}
    # (Also the requests per HTTP/2 connection: at 60k/s an h2c upstream connection would
    # otherwise get GOAWAY every few seconds, failing the streams in flight.)
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port};
        # Plaintext HTTP/2 with prior knowledge (h2c), for the http2 section's direct row.
        listen 127.0.0.1:{h2_port} http2;
{_HELLO_LOCATION}
    }}
{servers}}}
"""


def tls_server(port: int, cert: Path, key: Path) -> str:
    """A `server` that terminates TLS (1.2 and 1.3, no session resumption) and answers."""
    return f"""\
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets off;
        ssl_session_cache off;
{_HELLO_LOCATION}
    }}
"""


def nginx_argv(tmp: Path, conf: Path) -> list[str]:
    return [NGINX, "-p", str(tmp), "-e", "stderr", "-c", str(conf)]


def start_nginx(stack: contextlib.ExitStack, tmp: Path) -> tuple[Service, int]:
    """nginx with an HTTP/1.1 port (the proxies' upstream) and an h2c port; returns both."""
    port, h2_port = free_port(), free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_conf(tmp, port, h2_port))
    return start_checked(stack, tmp, DIRECT, nginx_argv(tmp, conf), port, check_hello), h2_port
