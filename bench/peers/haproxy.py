"""HAProxy: one thread, HTTP mode. The binary comes from --haproxy, $HAPROXY or sbin."""

import contextlib
import os
import shutil
from pathlib import Path

from bench.gates import check_hello
from bench.names import H2_UP
from bench.services import Service, free_port, start_checked


def find_haproxy(explicit: str | None) -> str | None:
    if explicit or os.environ.get("HAPROXY"):
        return explicit or os.environ["HAPROXY"]
    for path in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy"):
        if Path(path).is_file():
            return path
    return shutil.which("haproxy")


def haproxy_cfg(port: int, upstream_port: int, *, h2_upstream: bool = False) -> str:
    """One thread, HTTP mode, keep-alive on both sides (http-reuse always); h2c to the
    upstream with `h2_upstream`."""
    proto = " proto h2" if h2_upstream else ""
    return f"""\
global
    nbthread 1
    maxconn 4000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always
frontend edge
    bind 127.0.0.1:{port}
    default_backend upstream
backend upstream
    server nginx 127.0.0.1:{upstream_port}{proto}
"""


def start_haproxy(
    stack: contextlib.ExitStack,
    tmp: Path,
    upstream: int,
    binary: str,
    *,
    h2_upstream: bool = False,
) -> Service:
    port = free_port()
    name = "haproxy" + (H2_UP if h2_upstream else "")
    conf = tmp / f"{name}.cfg"
    conf.write_text(haproxy_cfg(port, upstream, h2_upstream=h2_upstream))
    argv = [binary, "-db", "-f", str(conf)]
    return start_checked(stack, tmp, name, argv, port, check_hello)
