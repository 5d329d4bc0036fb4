"""The cost of the live task tree: the gateway with task annotations on vs off.

Two gateways proxy to the same nginx, identical but for `[admin] task_tree` (both run the
admin endpoint, so only the annotations differ: the per-connection and per-stream
`annotate()` calls, their live-field closures and ids). wrk runs in interleaved rounds, so
machine noise hits both alike; HTTP/1.1 with keep-alive makes one stream task per request,
the case where per-stream work shows most.

    python bench/tasktree_cost.py [--rounds 3] [--duration 5] [--connections 16]
"""

import contextlib
import statistics
from pathlib import Path

from ab import interleaved_ab
from run import Service, check_hello, free_port, gateway_argv, gateway_toml, start_checked


def start(stack: contextlib.ExitStack, tmp: Path, name: str, upstream: int, tree: bool) -> Service:
    port = free_port()
    admin = f'[admin]\naddress = "127.0.0.1:0"\ntask_tree = {str(tree).lower()}\n\n'
    conf = tmp / f"{name}.toml"
    conf.write_text(admin + gateway_toml(port, upstream))
    return start_checked(stack, tmp, name, gateway_argv(conf), port, check_hello)


def main() -> None:
    settings, rps = interleaved_ab(
        __doc__.splitlines()[0],
        ("tree off", lambda stack, tmp, name, up: start(stack, tmp, "off", up, tree=False)),
        ("tree on", lambda stack, tmp, name, up: start(stack, tmp, "on", up, tree=True)),
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
