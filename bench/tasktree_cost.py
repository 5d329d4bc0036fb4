"""The cost of the live task tree: the gateway with task annotations on vs off.

Two gateways proxy to the same nginx, identical but for `[admin] task_tree` (both run the
admin endpoint, so only the annotations differ: the per-connection and per-stream
`annotate()` calls, their live-field closures and ids). wrk runs in interleaved rounds, so
machine noise hits both alike; HTTP/1.1 with keep-alive makes one stream task per request,
the case where per-stream work shows most.

    python bench/tasktree_cost.py [--rounds 3] [--duration 5] [--connections 16]
"""

import statistics
import sys
from collections.abc import Callable
from pathlib import Path

# Run as a script, Python puts bench/ first on the path; the package needs the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ab import interleaved_ab
from bench.peers.gateway import gateway_toml


def with_task_tree(tree: bool) -> Callable[[int, int], str]:
    """Both gateways run the admin endpoint; `[admin] task_tree` is the difference."""
    admin = f'[admin]\naddress = "127.0.0.1:0"\ntask_tree = {str(tree).lower()}\n\n'
    return lambda port, upstream: admin + gateway_toml(port, upstream)


def main() -> None:
    settings, rps = interleaved_ab(
        __doc__.splitlines()[0],
        ("tree off", "off", with_task_tree(False)),
        ("tree on", "on", with_task_tree(True)),
    )
    off, on = statistics.median(rps["tree off"]), statistics.median(rps["tree on"])
    per_request_us = (1 / on - 1 / off) * 1e6
    print(
        f"wrk -c{settings.connections}, {settings.rounds} interleaved rounds x "
        f"{settings.duration}s, medians; one gateway process each, nginx upstream"
    )
    for name, samples in rps.items():
        print(
            f"  {name}: {statistics.median(samples):8,.0f} req/s  rounds: "
            + ", ".join(f"{s:,.0f}" for s in samples)
        )
    cost = (1 - on / off) * 100
    print(f"  on/off: {on / off:.3f}  (cost {cost:+.1f}%, {per_request_us:+.1f} us/request)")


if __name__ == "__main__":
    main()
