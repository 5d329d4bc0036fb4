"""The scenario engine's proof (issue 23): one scenario run twice, in virtual time over
memory streams (`gateway test`), and on real sockets in real time (the whole gateway from
`open_gateway`, the same simulated hosts served by trio TCP servers, the same clients over
TCP). Both runs must agree on status counts, retries and the order of ejections, and,
within 0.1 s, on when the ejections happen and on the slowest request.

The scenarios keep the load balancer's sequence the same in both runs: requests come
every 50 ms, answered in a few, host changes and timeouts fall between two of them, never
on the same instant as another event. Each real run takes its 1.5 seconds; the virtual
one a fraction of that.
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


#: The route's retry policy of the first scenario: failures a host reports or a refused
#: connection, retried almost at once.
RETRY_ERRORS = """
[virtual_hosts.api.routes.retry_policy]
retry_on = ["5xx", "connect-failure"]
num_retries = 2
retry_back_off = { base_interval = "1ms", max_interval = "2ms" }
"""

#: The second's: an attempt cut by its per-try timeout is retried on another host.
RETRY_TIMEOUTS = """
[virtual_hosts.api.routes.retry_policy]
retry_on = ["5xx", "reset"]
num_retries = 1
per_try_timeout = "110ms"
retry_back_off = { base_interval = "1ms", max_interval = "2ms" }
"""


def config_text(ports: list[int], retry_policy: str = RETRY_ERRORS) -> str:
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

{retry_policy}
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
            "duration": "1.5s",
            "seed": 3,
            "hosts": {
                a: {"latency": "2ms"},
                b: {"latency": "2ms", "at": [{"time": "0.525s", "status": 503}]},
                c: {"latency": "2ms", "at": [{"time": "1.025s", "status": 503}]},
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


def agreed(config: str, scenario: Scenario) -> dict[str, object]:
    """Runs `scenario` both ways, checks that they agree, and returns what they agree on."""
    virtual = run_scenario(loads_config(config), scenario)
    real = trio.run(run_on_sockets, config, scenario)

    expected = summary(virtual.outcomes, virtual.events, virtual.stats)
    assert summary(*real) == expected
    # When, too: real time adds only the gateway's own milliseconds.
    virtual_times = [e.time for e in virtual.events if e.kind == "ejected"]
    real_times = [e.time for e in real[1] if e.kind == "ejected"]
    assert all(0 <= r - v < 0.1 for v, r in zip(virtual_times, real_times, strict=True))
    virtual_slowest = max(o.latency or 0 for o in virtual.outcomes)
    real_slowest = max(o.latency or 0 for o in real[0])
    assert 0 <= real_slowest - virtual_slowest < 0.1
    return expected


def test_virtual_and_real_runs_agree_on_failing_and_dead_hosts():
    ports = free_ports(4)
    expected = agreed(config_text(ports), scenario_for(ports))
    # And the scenario is worth agreeing on: the dead host, then the two that turned bad,
    # ejected in that order, retries that hid most of it from the clients.
    _, b, c, d = (f"127.0.0.1:{port}" for port in ports)
    assert expected["ejections"] == [d, b, c]
    assert expected["retries"] > 0


def test_virtual_and_real_runs_agree_on_per_try_timeouts():
    """A host that starts hanging: each attempt on it is cut by the per-try timeout and
    retried on another host, until outlier detection ejects it. (The timeout is not a
    multiple of the clients' 50 ms: a retry and a new request never fall on the same
    instant, whose order virtual time would have to guess.)"""
    ports = free_ports(3)
    a, b, c = (f"127.0.0.1:{port}" for port in ports)
    hang = {"latency": "2ms", "at": [{"time": "0.525s", "state": "hang"}]}
    scenario = structure_scenario(
        {
            "duration": "1.5s",
            "seed": 5,
            "hosts": {a: {"latency": "2ms"}, b: hang, c: {"latency": "2ms"}},
            "clients": [{"rate": 20, "deadline": "2s", "requests": [{"path": "/x"}]}],
        },
        "agreement",
    )
    expected = agreed(config_text(ports, RETRY_TIMEOUTS), scenario)
    assert expected == {"statuses": {"200": 30}, "retries": 3, "ejections": [b]}
