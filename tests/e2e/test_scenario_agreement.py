"""The scenario engine's proof (issue 23): one scenario run twice, in virtual time over
memory streams (`gateway test`), and on real sockets in real time (the whole gateway from
`open_gateway`, the same simulated hosts served by trio TCP servers, the same clients over
TCP). Both runs must agree on status counts, retries and the order of ejections.

The scenario keeps requests from overlapping (one every 50 ms, answered in a few), so the
load balancer sees the same sequence in both runs; its host changes fall between two
requests. The real run takes its 3 seconds; the virtual one a fraction of that.
"""

import collections
import random
import socket
from functools import partial

import trio

from gateway import loads_config, open_gateway
from gateway.io.byte_stream import TcpStream
from gateway.testing.behaviour import Phases
from gateway.testing.client import Outcome, SimulatedClient
from gateway.testing.engine import run_scenario
from gateway.testing.scenario import HostScript, Scenario, structure_scenario
from gateway.testing.simulated_config import simulated_config
from gateway.testing.simulation import endpoints
from gateway.testing.timeline import Event, recording_log
from gateway.testing.upstream_host import SimulatedHost


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def config_text(ports: list[int]) -> str:
    endpoints = ", ".join(f'"127.0.0.1:{port}"' for port in ports)
    return f"""
[listeners.edge]
address = "127.0.0.1:0"
virtual_hosts = ["api"]

[virtual_hosts.api]
domains = ["*"]

[[virtual_hosts.api.routes]]
match = {{ prefix = "/" }}
cluster = "api"
timeout = "5s"

[virtual_hosts.api.routes.retry_policy]
retry_on = ["5xx", "connect-failure"]
num_retries = 2
retry_back_off = {{ base_interval = "1ms", max_interval = "2ms" }}

[clusters.api]
endpoints = [{endpoints}]
connect_timeout = "1s"

[clusters.api.outlier_detection]
consecutive_5xx = 3
interval = "1s"
base_ejection_time = "60s"
max_ejection_percent = 100
"""


def scenario_for(ports: list[int]) -> Scenario:
    a, b, c, d = (f"127.0.0.1:{port}" for port in ports)
    return structure_scenario(
        {
            "duration": "3s",
            "seed": 3,
            "hosts": {
                a: {"latency": "2ms"},
                b: {"latency": "2ms", "at": [{"time": "1.025s", "status": 503}]},
                c: {"latency": "2ms", "at": [{"time": "2.025s", "status": 503}]},
                d: {"state": "down"},  # nothing listens: connections are refused
            },
            "clients": [{"rate": 20, "deadline": "2s", "requests": [{"path": "/x"}]}],
        },
        "agreement",
    )


async def run_on_sockets(
    config: str, scenario: Scenario
) -> tuple[list[Outcome], list[Event], dict[str, int]]:
    """The scenario with the real gateway on real sockets, in real time."""
    loaded = loads_config(config)
    outcomes: list[Outcome] = []
    events: list[Event] = []
    random.seed(scenario.seed)
    async with open_gateway(simulated_config(loaded)) as gw, trio.open_nursery() as nursery:
        start = trio.current_time()
        port = gw.listener_ports["edge"]
        with recording_log(start, events):
            for name, address in endpoints(loaded).items():
                script = scenario.hosts.get(name, HostScript())
                rng = random.Random(f"{scenario.seed}/{name}")
                host = SimulatedHost(address, Phases(script), rng, nursery, start)
                if script.state == "down":
                    continue

                async def serve(host: SimulatedHost, stream: trio.SocketStream) -> None:
                    await host.serve(TcpStream(stream))

                await nursery.start(
                    partial(trio.serve_tcp, partial(serve, host), address.port, host=address.host)
                )

            async def connect() -> TcpStream:
                return TcpStream(await trio.open_tcp_stream("127.0.0.1", port))

            end = start + scenario.duration
            rng = random.Random(f"{scenario.seed}/client/client")
            client = SimulatedClient(scenario.clients[0], connect, rng, start, end, outcomes)
            await client.run()
            client.close_idle()
        nursery.cancel_scope.cancel()
        stats = {s.name: s.value for s in gw.stats.select() if hasattr(s, "value")}
    return outcomes, events, stats


def summary(
    outcomes: list[Outcome], events: list[Event], stats: dict[str, int]
) -> dict[str, object]:
    return {
        "statuses": dict(collections.Counter(o.result for o in outcomes)),
        "retries": stats["cluster.api.upstream_rq_retry"],
        "ejections": [e.host for e in events if e.kind == "ejected"],
    }


def test_virtual_and_real_runs_agree():
    ports = free_ports(4)
    config, scenario = config_text(ports), scenario_for(ports)

    virtual = run_scenario(loads_config(config), scenario)
    real = trio.run(run_on_sockets, config, scenario)

    expected = summary(virtual.outcomes, virtual.events, virtual.stats)
    assert summary(*real) == expected
    # When, too: real time adds only the gateway's own milliseconds.
    virtual_times = [e.time for e in virtual.events if e.kind == "ejected"]
    real_times = [e.time for e in real[1] if e.kind == "ejected"]
    assert all(0 <= r - v < 0.1 for v, r in zip(virtual_times, real_times, strict=True))
    # And the scenario is worth agreeing on: the dead host, then the two that turned bad,
    # ejected in that order, retries that hid most of it from the clients.
    _, b, c, d = (f"127.0.0.1:{port}" for port in ports)
    assert expected["ejections"] == [d, b, c]
    assert expected["retries"] > 0
