"""Outlier detection: passive health from the results of real requests (Envoy's
outlier_detection, consecutive-errors flavours).

The router reports every attempt's result. A host whose errors in a row reach a threshold
is ejected: it leaves the load balancer for base_ejection_time times the number of times
it has been ejected (capped), then returns on its own. A timer task, one per cluster,
brings hosts back and lets the multiplier of a host that stays healthy shrink again.
"""

import logging
import random

import attrs
import trio

from gateway.clusters.host import HealthFlag, Host, HostSet
from gateway.config.model import OutlierDetection
from gateway.observability.stats import Counter, Gauge, Scope, create_stats, describe
from gateway.observability.tasktree import annotate

log = logging.getLogger("gateway.outlier_detection")

#: Upstream statuses that count as gateway failures, as Envoy's consecutive_gateway_failure.
_GATEWAY_FAILURES = frozenset((502, 503, 504))


@attrs.define
class OutlierStats:
    ejections_active: Gauge
    ejections_total: Counter
    ejections_enforced_total: Counter
    ejections_overflow: Counter
    ejections_detected_consecutive_5xx: Counter
    ejections_enforced_consecutive_5xx: Counter
    ejections_detected_consecutive_gateway_failure: Counter
    ejections_enforced_consecutive_gateway_failure: Counter


describe(
    "cluster.outlier_detection",
    {
        "ejections_active": "Hosts ejected now.",
        "ejections_total": "Ejections made.",
        "ejections_enforced_total": "Ejections made (as ejections_total).",
        "ejections_overflow": "Ejections not made: max_ejection_percent were out.",
        "ejections_detected_consecutive_5xx": "Hosts whose run of 5xx reached consecutive_5xx.",
        "ejections_enforced_consecutive_5xx": "Hosts ejected for consecutive 5xx.",
        "ejections_detected_consecutive_gateway_failure": "Hosts whose run of gateway "
        "failures reached consecutive_gateway_failure.",
        "ejections_enforced_consecutive_gateway_failure": "Hosts ejected for consecutive "
        "gateway failures.",
    },
)


class OutlierDetector:
    def __init__(
        self,
        config: OutlierDetection,
        cluster_name: str,
        hosts: HostSet,
        scope: Scope,
    ) -> None:
        self._config = config
        self._cluster = cluster_name
        self._hosts = hosts
        self.stats = create_stats(OutlierStats, scope.child("outlier_detection"))

    def report_status(self, host: Host, status: int) -> None:
        """An upstream response head arrived with `status`."""
        state = host.outlier
        if status < 500:
            state.consecutive_5xx = 0
            state.consecutive_gateway_failure = 0
            return
        state.consecutive_5xx += 1
        if status in _GATEWAY_FAILURES:
            state.consecutive_gateway_failure += 1
        else:
            state.consecutive_gateway_failure = 0
        self._check(host)

    def report_local_failure(self, host: Host) -> None:
        """The attempt failed before a response: connect failure, reset or timeout. It
        counts as a 5xx and as a gateway failure."""
        state = host.outlier
        state.consecutive_5xx += 1
        state.consecutive_gateway_failure += 1
        self._check(host)

    def _check(self, host: Host) -> None:
        config, state, stats = self._config, host.outlier, self.stats
        if state.consecutive_5xx >= config.consecutive_5xx:
            state.consecutive_5xx = 0
            stats.ejections_detected_consecutive_5xx.inc()
            if _enforced(config.enforcing_consecutive_5xx) and self._eject(host, "5xx"):
                stats.ejections_enforced_consecutive_5xx.inc()
        if state.consecutive_gateway_failure >= config.consecutive_gateway_failure:
            state.consecutive_gateway_failure = 0
            stats.ejections_detected_consecutive_gateway_failure.inc()
            if _enforced(config.enforcing_consecutive_gateway_failure) and self._eject(
                host, "gateway failure"
            ):
                stats.ejections_enforced_consecutive_gateway_failure.inc()

    def _eject(self, host: Host, reason: str) -> bool:
        if HealthFlag.FAILED_OUTLIER_CHECK in host.health_flags:
            return False
        hosts = self._hosts.hosts
        ejected = sum(1 for h in hosts if HealthFlag.FAILED_OUTLIER_CHECK in h.health_flags)
        # As Envoy: at least one host may always be ejected, whatever the percentage.
        if ejected and (ejected + 1) * 100 > self._config.max_ejection_percent * len(hosts):
            self.stats.ejections_overflow.inc()
            return False
        state, config = host.outlier, self._config
        state.num_ejections += 1
        state.ejections_total += 1
        duration = min(
            config.base_ejection_time * state.num_ejections,
            max(config.base_ejection_time, config.max_ejection_time),
        )
        state.ejected_until = trio.current_time() + duration
        self.stats.ejections_total.inc()
        self.stats.ejections_enforced_total.inc()
        self.stats.ejections_active.inc()
        log.warning(
            "cluster %s: ejecting host %s for %.1fs (consecutive %s, ejection #%d)",
            self._cluster,
            host,
            duration,
            reason,
            state.num_ejections,
        )
        self._hosts.set_health_flag(host, HealthFlag.FAILED_OUTLIER_CHECK, True)
        return True

    async def run(self) -> None:
        """Every `interval`: return hosts whose ejection is over, and shrink the ejection
        multiplier of hosts that were not ejected during the interval."""
        annotate("outlier detector", cluster=self._cluster)
        while True:
            await trio.sleep(self._config.interval)
            now = trio.current_time()
            for host in self._hosts.hosts:
                state = host.outlier
                if state.ejected_until is None:
                    state.num_ejections = max(state.num_ejections - 1, 0)
                elif now >= state.ejected_until:
                    self.uneject(host)
                    log.warning("cluster %s: host %s returns from ejection", self._cluster, host)

    def uneject(self, host: Host) -> None:
        """Ends an ejection (its time is over, or the host left the cluster)."""
        if host.outlier.ejected_until is None:
            return
        host.outlier.ejected_until = None
        host.outlier.consecutive_5xx = host.outlier.consecutive_gateway_failure = 0
        self.stats.ejections_active.dec()
        self._hosts.set_health_flag(host, HealthFlag.FAILED_OUTLIER_CHECK, False)


def _enforced(percent: int) -> bool:
    return percent >= 100 or random.randrange(100) < percent
