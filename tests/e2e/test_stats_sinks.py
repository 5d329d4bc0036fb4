"""`[[stats_sinks]]`: statsd and DogStatsD over UDP, to a real UDP receiver in the test:
counters as increases, gauges, histogram samples as timers, tags, datagrams within their
size; a sink nobody listens to costs a counter and nothing else; with workers, the
supervisor sends counters and gauges added up and each worker its own samples."""

import logging
import re
import socket
from collections.abc import Callable

import attrs
import httpx
import trio

from tests.admin_helpers import nodes as tree_nodes
from tests.admin_helpers import tasks
from tests.config_builder import proxy_config
from tests.helpers import admin_url, run_gateway, serving, start_upstream, url

_LINE = re.compile(r"^(?P<name>[^:]+):(?P<value>[^|]+)\|(?P<kind>c|g|ms)(?P<rest>.*)$")


@attrs.frozen
class Line:
    name: str
    value: float
    kind: str
    #: What follows the type: `|@RATE` and DogStatsD's `|#TAGS`.
    rest: str
    #: The sender's UDP port: one per gateway process.
    sender: int


@attrs.define
class UdpReceiver:
    """A statsd server that keeps every datagram and line it receives."""

    sock: trio.socket.SocketType
    datagrams: list[bytes] = attrs.Factory(list)
    lines: list[Line] = attrs.Factory(list)

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    async def run(self) -> None:
        while True:
            data, (_, sender) = await self.sock.recvfrom(65536)
            self.datagrams.append(data)
            for text in data.decode().split("\n"):
                m = _LINE.match(text)
                assert m, f"not a statsd line: {text!r}"
                value = float(m["value"])
                self.lines.append(Line(m["name"], value, m["kind"], m["rest"], sender))

    def values(self, name: str, kind: str) -> list[float]:
        return [x.value for x in self.lines if x.name == name and x.kind == kind]

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        with trio.fail_after(timeout):
            while not predicate():
                await trio.sleep(0.01)


async def start_receiver(nursery: trio.Nursery) -> UdpReceiver:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    receiver = UdpReceiver(sock)
    nursery.start_soon(receiver.run)
    return receiver


async def _get(gw_url: str, count: int) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(count):
            assert (await client.get(gw_url)).status_code == 200


async def test_statsd_counters_go_as_increases_with_gauges_and_timers(nursery):
    up = await start_upstream(nursery)
    receiver = await start_receiver(nursery)
    config = proxy_config(up.port)
    config.server(stats_flush_interval="50ms")
    config.stats_sink("statsd", receiver.port)
    rq_total = "envoy.cluster.backend.upstream_rq_total"
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        for _ in range(3):
            assert (await client.get(url(gw, "/a"))).status_code == 200
        await receiver.until(lambda: sum(receiver.values(rq_total, "c")) == 3)
        # Later flushes send it again, as 0: what was counted since, not the total.
        sent = len(receiver.values(rq_total, "c"))
        await receiver.until(lambda: len(receiver.values(rq_total, "c")) > sent + 1)
        assert set(receiver.values(rq_total, "c")[sent:]) == {0}
        for _ in range(2):
            assert (await client.get(url(gw, "/b"))).status_code == 200
        await receiver.until(lambda: sum(receiver.values(rq_total, "c")) == 5)
        assert max(receiver.values(rq_total, "c")) <= 3
        # The client's keep-alive connection is open: gauges carry values, not changes.
        cx_active = "envoy.cluster.backend.upstream_cx_active"
        await receiver.until(lambda: receiver.values(cx_active, "g")[-1:] == [1])
        assert receiver.values("envoy.http.edge.downstream_cx_active", "g")[-1] == 1
        # Every request's time, each a sample in milliseconds.
        for timer in (
            "envoy.cluster.backend.upstream_rq_time",
            "envoy.http.edge.downstream_rq_time",
        ):
            await receiver.until(lambda t=timer: len(receiver.values(t, "ms")) == 5)
            assert all(v >= 0 for v in receiver.values(timer, "ms"))
        tree = await tasks(client, gw)
        (flush,) = tree_nodes(tree, kind="stats flush")
        assert flush["name"] == "stats flush"
        assert flush["sinks"] == f"statsd 127.0.0.1:{receiver.port}"
        assert flush["flushes"] > 2 and flush["datagrams_dropped"] == 0
    # statsd's dotted names, no tags; lines packed into datagrams of at most 1432 bytes.
    assert all(x.rest == "" for x in receiver.lines)
    assert all(len(d) <= 1432 for d in receiver.datagrams)
    assert any(len(d.split(b"\n")) > 10 for d in receiver.datagrams)
    # An unused counter is never sent (as Envoy's "used" rule).
    assert not receiver.values("envoy.cluster.backend.upstream_rq_timeout", "c")


async def test_dog_statsd_sends_tag_extracted_names_with_tags(nursery):
    up = await start_upstream(nursery)
    receiver = await start_receiver(nursery)
    config = proxy_config(up.port)
    config.server(stats_flush_interval="50ms")
    config.stats_sink("dog_statsd", receiver.port, prefix="gw", max_bytes_per_datagram=300)
    async with run_gateway(config) as gw:
        await _get(url(gw, "/a"), 2)
        await receiver.until(lambda: len(receiver.values("gw.http.downstream_rq_time", "ms")) == 2)
        await receiver.until(lambda: sum(receiver.values("gw.cluster.upstream_rq_total", "c")) == 2)

    def tags(name: str) -> set[str]:
        return {x.rest for x in receiver.lines if x.name == name}

    assert tags("gw.cluster.upstream_rq_total") == {"|#envoy.cluster_name:backend"}
    assert tags("gw.http.downstream_rq_time") == {"|#envoy.http_conn_manager_prefix:edge"}
    assert tags("gw.listener.downstream_cx_total") == {"|#envoy.listener_name:edge"}
    assert all(len(d) <= 300 for d in receiver.datagrams)
    assert not any(x.name.startswith("envoy.") for x in receiver.lines)


async def test_a_sink_nobody_listens_to_costs_only_a_counter(nursery, caplog):
    up = await start_upstream(nursery)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    config = proxy_config(up.port)
    config.server(stats_flush_interval="20ms")
    config.stats_sink("statsd", dead)
    caplog.set_level(logging.WARNING, logger="gateway.stats")
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        dropped = "stats_sink.0.datagrams_dropped"
        for _ in range(20):
            assert (await client.get(url(gw, "/a"))).status_code == 200
            await trio.sleep(0.01)
        await receiver_gone_counted(gw, dropped)
        prom = (await client.get(admin_url(gw, "/stats?filter=^stats_sink"))).text
        assert "stats_sink.0.datagrams_dropped: " in prom
    # Said once, not at every flush.
    warnings = [r for r in caplog.records if r.name == "gateway.stats"]
    assert len(warnings) == 1, warnings
    assert "not logged again" in warnings[0].getMessage()


async def receiver_gone_counted(gw, dropped: str) -> None:
    """The port answers with ICMP port unreachable, which the connected socket reports on
    a later send: counted, and the flushes go on."""
    with trio.fail_after(5):
        while (gw.stats.value(dropped) or 0) < 3:
            await trio.sleep(0.02)


async def test_with_workers_the_supervisor_sends_the_sums_and_each_worker_its_samples(
    nursery, tmp_path
):
    up = await start_upstream(nursery)
    receiver = await start_receiver(nursery)
    config = proxy_config(up.port)
    config.server(workers=2, drain_timeout="3s", stats_flush_interval="100ms")
    config.stats_sink("statsd", receiver.port)
    path = tmp_path / "g.toml"
    path.write_text(config.toml())
    rq_total = "envoy.http.edge.downstream_rq_total"
    async with serving(path, "gateway.workers: gateway started") as served:
        target = f"http://127.0.0.1:{served.port}/a"
        for _ in range(24):  # a connection each: the kernel spreads them over the workers
            await _get(target, 1)
        await receiver.until(lambda: sum(receiver.values(rq_total, "c")) == 24, timeout=10)
        samples = "envoy.http.edge.downstream_rq_time"
        await receiver.until(lambda: len(receiver.values(samples, "ms")) == 24, timeout=10)
        workers = "envoy.server.workers_active"
        await receiver.until(lambda: receiver.values(workers, "g")[-1:] == [2])
        # One host per worker: the gauges are the workers' added up.
        assert receiver.values("envoy.cluster.backend.membership_total", "g")[-1] == 2
    # Counters and gauges come from one process, the supervisor; the samples from the
    # two workers, each its own.
    sums = {x.sender for x in receiver.lines if x.kind in ("c", "g")}
    timers = {x.sender for x in receiver.lines if x.kind == "ms"}
    assert len(sums) == 1 and len(timers) == 2 and not sums & timers
