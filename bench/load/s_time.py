"""openssl s_time: full TLS handshakes per second from one client (no resumption)."""

import re
import subprocess
from pathlib import Path


def handshakes_per_second(port: int, ca: Path, seconds: int) -> float:
    out = subprocess.run(
        ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-CAfile", str(ca),
         "-time", str(seconds)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    m = re.search(r"(\d+) connections in (\d+) real seconds", out)
    assert m, out
    return int(m[1]) / int(m[2])
