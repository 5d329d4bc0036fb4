"""DNS discovery for strict_dns and logical_dns clusters: one task per endpoint name,
resolving it with Trio's resolver every `dns_refresh_rate`.

A failed or empty resolution is counted and logged and changes nothing: the cluster keeps
its last good hosts, which beats dropping a working upstream because DNS hiccupped.
"""

import logging
import socket
from collections.abc import Callable

import trio

from gateway.clusters.cluster_stats import ClusterStats
from gateway.config.model import Address
from gateway.observability.tasktree import annotate

log = logging.getLogger("gateway.dns")


class DnsResolver:
    def __init__(
        self,
        cluster_name: str,
        endpoint: Address,
        refresh_rate: float,
        stats: ClusterStats,
        on_resolved: Callable[[list[Address]], None],
    ) -> None:
        self._cluster_name = cluster_name
        self._endpoint = endpoint
        self._refresh_rate = refresh_rate
        self._stats = stats
        self._on_resolved = on_resolved
        self.name = f"dns {endpoint.host}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Resolves forever; reports started after the first attempt, good or bad."""
        last: list[str] = []
        annotate(
            "dns resolver",
            lambda: {"addresses": last},
            cluster=self._cluster_name,
            hostname=self._endpoint.host,
        )
        while True:
            addresses = await self._resolve()
            if addresses is not None:
                last = [str(a) for a in addresses]
                self._on_resolved(addresses)
            task_status.started()
            task_status = trio.TASK_STATUS_IGNORED
            await trio.sleep(self._refresh_rate)

    async def _resolve(self) -> list[Address] | None:
        stats, name, port = self._stats, self._endpoint.host, self._endpoint.port
        stats.update_attempt.inc()
        try:
            # A resolution must not outlive the next one's turn.
            with trio.fail_after(self._refresh_rate):
                infos = await trio.socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except (OSError, trio.TooSlowError) as exc:
            stats.update_failure.inc()
            log.warning("cluster %s: resolving %s failed: %s", self._cluster_name, name, exc)
            return None
        addresses: list[Address] = []
        for *_, sockaddr in infos:
            address = Address(str(sockaddr[0]), port)
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            stats.update_failure.inc()
            log.warning("cluster %s: %s resolved to no address", self._cluster_name, name)
            return None
        stats.update_success.inc()
        return addresses
