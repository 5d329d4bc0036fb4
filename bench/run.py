"""Side-by-side benchmark: gateway vs Envoy, HAProxy, mitmproxy, over HTTP/1.1, HTTP/2, gRPC.

The run itself is bench/cli.py (`python -m bench` runs it too); see bench/README.md.
"""

import sys
from pathlib import Path

# Run as a script, Python puts bench/ first on the path; the package needs the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cli import run

if __name__ == "__main__":
    sys.exit(run())
