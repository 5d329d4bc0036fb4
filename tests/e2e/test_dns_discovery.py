"""strict_dns and logical_dns clusters.

Names are resolved through Trio's resolver, as the gateway always does. To make a name's
answer change during a test, the test installs a Trio hostname resolver (Trio's documented
hook) that answers for `*.test` names from a table; other names use the system resolver.
The traffic itself is real: two upstreams on the same port, one on 127.0.0.1, one on ::1.
"""

import socket

import httpx
import pytest
import trio

from tests.cluster_helpers import Backend
from tests.config_builder import proxy_config
from tests.helpers import eventually, run_gateway, url


class TableResolver(trio.abc.HostnameResolver):
    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        self.failing = False

    async def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):  # type: ignore[no-untyped-def]
        name = host.decode() if isinstance(host, bytes) else host
        if name not in self.answers:
            return await trio.to_thread.run_sync(
                socket.getaddrinfo, host, port, family, type, proto, flags
            )
        if self.failing:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        out = []
        for ip in self.answers[name]:
            fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
            addr = (ip, int(port), 0, 0) if fam == socket.AF_INET6 else (ip, int(port))
            out.append((fam, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", addr))
        return out

    async def getnameinfo(self, sockaddr, flags):  # type: ignore[no-untyped-def]
        raise NotImplementedError


@pytest.fixture
async def dns():
    resolver = TableResolver()
    trio.socket.set_custom_hostname_resolver(resolver)
    yield resolver
    trio.socket.set_custom_hostname_resolver(None)


async def twin_backends(nursery: trio.Nursery) -> tuple[Backend, Backend]:
    v4 = Backend("v4")
    await v4.start(nursery)
    v6 = Backend("v6", port=v4.port, host="::1")
    await v6.start(nursery)
    return v4, v6


DNS_CLUSTER = {"type": "strict_dns", "dns_refresh_rate": "50ms"}


async def test_strict_dns_with_the_system_resolver(nursery):
    backend = Backend("b")
    await backend.start(nursery)
    config = proxy_config(f"localhost:{backend.port}", cluster=DNS_CLUSTER)
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        assert (await client.get(url(gw, "/"))).json()["server"] == "b"
        assert [str(h) for h in gw.clusters.get("backend").hosts] == [f"127.0.0.1:{backend.port}"]
        assert gw.stats.value("cluster.backend.update_success") >= 1


async def test_strict_dns_follows_the_answers(nursery, dns):
    v4, _ = await twin_backends(nursery)
    dns.answers["api.test"] = ["127.0.0.1"]
    config = proxy_config(f"api.test:{v4.port}", cluster=DNS_CLUSTER)
    async with run_gateway(config) as gw, httpx.AsyncClient(timeout=5) as client:
        cluster = gw.clusters.get("backend")
        assert (await client.get(url(gw, "/"))).json()["server"] == "v4"

        dns.answers["api.test"] = ["127.0.0.1", "::1"]
        await eventually(lambda: len(cluster.hosts) == 2)
        servers = {(await client.get(url(gw, "/"))).json()["server"] for _ in range(4)}
        assert servers == {"v4", "v6"}

        # v4 leaves while a request is in flight on it: that request still completes.
        v4_host = next(h for h in cluster.hosts if h.address.host == "127.0.0.1")
        v4.delay = 0.3
        results: list[str] = []

        async def get() -> None:
            results.append((await client.get(url(gw, "/"))).json()["server"])

        async with trio.open_nursery() as n:
            n.start_soon(get)
            n.start_soon(get)
            await eventually(lambda: v4_host.stats.rq_active == 1)
            dns.answers["api.test"] = ["::1"]
            await eventually(lambda: len(cluster.hosts) == 1)
            assert v4_host.stats.rq_active == 1
        assert sorted(results) == ["v4", "v6"]
        await eventually(lambda: v4_host.pool.drained.is_set())
        servers = {(await client.get(url(gw, "/"))).json()["server"] for _ in range(4)}
        assert servers == {"v6"}
        # None -> [v4] -> [v4, v6] -> [v6]
        assert gw.stats.value("cluster.backend.membership_change") == 3

        # DNS fails: the last good answer stays.
        failures = gw.stats.value("cluster.backend.update_failure")
        dns.failing = True
        await eventually(lambda: gw.stats.value("cluster.backend.update_failure") > failures)
        assert [h.address.host for h in cluster.hosts] == ["::1"]
        assert (await client.get(url(gw, "/"))).json()["server"] == "v6"


async def test_logical_dns_connects_to_the_latest_address(nursery, dns):
    v4, _ = await twin_backends(nursery)
    dns.answers["api.test"] = ["127.0.0.1"]
    cluster = {"type": "logical_dns", "dns_refresh_rate": "50ms", "idle_timeout": "50ms"}
    config = proxy_config(f"api.test:{v4.port}", cluster=cluster)
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        assert (await client.get(url(gw, "/"))).json()["server"] == "v4"
        dns.answers["api.test"] = ["::1", "127.0.0.1"]
        host = gw.clusters.get("backend").hosts[0]
        await eventually(lambda: host.pool.address.host == "::1")
        await trio.sleep(0.1)  # the pooled connection to v4 expires
        assert (await client.get(url(gw, "/"))).json()["server"] == "v6"
        assert len(gw.clusters.get("backend").hosts) == 1
