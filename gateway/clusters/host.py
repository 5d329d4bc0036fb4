"""An upstream host: its address and weight, its connection pool, stats and health flags."""

import enum
from typing import Protocol

import attrs
import trio

from gateway.clusters.cluster_stats import HostStats
from gateway.clusters.pool_h1 import HostPool
from gateway.clusters.pool_h2 import H2HostPool
from gateway.config.model import Address


class HealthFlag(enum.Flag):
    """Why a host is not healthy (Envoy's Host::HealthFlag); no flag set means healthy."""

    NONE = 0
    FAILED_ACTIVE_HC = enum.auto()
    FAILED_OUTLIER_CHECK = enum.auto()


#: The flag names /clusters prints, as Envoy does (`health_flags::/failed_active_hc`).
HEALTH_FLAG_NAMES = {
    HealthFlag.FAILED_ACTIVE_HC: "/failed_active_hc",
    HealthFlag.FAILED_OUTLIER_CHECK: "/failed_outlier_check",
}


@attrs.define(eq=False)
class OutlierState:
    """What outlier detection remembers of one host."""

    consecutive_5xx: int = 0
    consecutive_gateway_failure: int = 0
    #: trio.current_time() at which an ejected host returns; None when not ejected.
    ejected_until: float | None = None
    #: Grows with each ejection (the ejection time's multiplier), shrinks while healthy.
    num_ejections: int = 0
    #: Ejections since the host joined its cluster (num_ejections shrinks; this does not).
    ejections_total: int = 0


@attrs.frozen
class HealthCheckResult:
    """A host's last active health check probe: when it ended (seconds since the epoch,
    for people and the dashboard) and why it failed (None: it passed)."""

    time: float
    failure: str | None


@attrs.define(eq=False)
class Host:
    address: Address
    weight: int
    pool: HostPool | H2HostPool
    stats: HostStats
    health_flags: HealthFlag = HealthFlag.NONE
    outlier: OutlierState = attrs.Factory(OutlierState)
    #: None until an active health check probed the host (or when none is configured).
    last_health_check: HealthCheckResult | None = None
    #: Set when the host leaves its cluster; its task drains the pool and ends.
    removed: trio.Event = attrs.Factory(trio.Event)
    #: The configured endpoint this host came from (a strict_dns name gives several).
    endpoint_index: int = 0

    def __str__(self) -> str:
        return str(self.address)

    @property
    def healthy(self) -> bool:
        return not self.health_flags

    def health_flag_names(self) -> str:
        if not self.health_flags:
            return "healthy"
        return "".join(
            name for flag, name in HEALTH_FLAG_NAMES.items() if flag in self.health_flags
        )


class HostSet(Protocol):
    """What health code needs of its cluster: the hosts, and a way to change their flags
    that makes the cluster rebuild its load balancer."""

    @property
    def hosts(self) -> list[Host]: ...

    def set_health_flag(self, host: Host, flag: HealthFlag, on: bool) -> None: ...
