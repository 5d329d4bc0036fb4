"""mitmproxy (mitmdump) in reverse mode. It pins h11/h2 versions the gateway cannot use, so
it usually lives in its own venv: --mitmdump, $MITMDUMP, beside this Python, or PATH."""

import contextlib
import os
import shutil
import sys
from pathlib import Path

from bench.gates import check_hello
from bench.services import Service, free_port, start_checked


def find_mitmdump(explicit: str | None) -> str | None:
    if explicit or os.environ.get("MITMDUMP"):
        return explicit or os.environ["MITMDUMP"]
    beside_python = Path(sys.executable).parent / "mitmdump"
    return str(beside_python) if beside_python.is_file() else shutil.which("mitmdump")


def start_mitmproxy(stack: contextlib.ExitStack, tmp: Path, upstream: int, binary: str) -> Service:
    port = free_port()
    argv = [
        *(binary, "--mode", f"reverse:http://127.0.0.1:{upstream}"),
        *("--listen-host", "127.0.0.1", "--listen-port", str(port)),
        "-q",  # no flow printing; mitmdump keeps no flows unless told to (-w)
        *("--set", f"confdir={tmp / 'mitmproxy-conf'}"),  # CA files out of ~/.mitmproxy
    ]
    return start_checked(stack, tmp, "mitmproxy", argv, port, check_hello)
