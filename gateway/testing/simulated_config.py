"""What the scenario engine changes in the operator's config before it runs it, and why.

Everything else (routes, filters, retries, outlier detection, health checks, circuit
breakers, load balancing, timeouts) runs as configured. docs/testing.md lists what is
simulated and what is not.
"""

import attrs

from gateway.config.model import (
    AccessLog,
    FilterChain,
    GatewayConfig,
    HttpConnectionManagerConfig,
    Listener,
)
from gateway.errors import ConfigError


def simulated_config(config: GatewayConfig, access_log: str | None = None) -> GatewayConfig:
    """The config as the engine runs it:

    - DNS clusters become static: each endpoint's name is one simulated host (no DNS is
      asked; a strict_dns name that resolves to several addresses is one host here).
    - TLS is dropped, upstream and on the listeners' chains: simulated hosts and clients
      speak cleartext (TLS's cost is not simulated; the files were checked when the
      config loaded).
    - Access logs go to `access_log` (a path), or are not written at all: a scenario's
      hundred thousand lines on standard output would bury its report, and formatting
      lines nobody reads would cost a twentieth of its time.
    - Admin, tracing, stats sinks, xDS and workers are not started (the engine builds only
      the clusters and listeners), so they need no change here.
    """
    errors = [
        f"clusters.{name}: type 'eds' needs an xDS source, which scenarios do not simulate"
        for name, cluster in config.clusters.items()
        if cluster.type == "eds"
    ]
    if errors:
        raise ConfigError(errors)
    clusters = {
        name: attrs.evolve(cluster, type="static", tls=None)
        for name, cluster in config.clusters.items()
    }
    listeners = {
        name: _simulated_listener(lst, access_log) for name, lst in config.listeners.items()
    }
    return attrs.evolve(config, clusters=clusters, listeners=listeners)


def _logs(logs: list[AccessLog], path: str | None) -> list[AccessLog]:
    return [attrs.evolve(log, path=path) for log in logs] if path is not None else []


def _simulated_chain(chain: FilterChain, path: str | None) -> FilterChain:
    filters = [
        attrs.evolve(f, access_log=_logs(f.access_log, path))
        if isinstance(f, HttpConnectionManagerConfig)
        else f
        for f in chain.filters
    ]
    return attrs.evolve(chain, filters=filters, tls=None)


def _simulated_listener(listener: Listener, path: str | None) -> Listener:
    default = listener.default_filter_chain
    return attrs.evolve(
        listener,
        access_log=_logs(listener.access_log, path),
        filter_chains=[_simulated_chain(c, path) for c in listener.filter_chains],
        default_filter_chain=_simulated_chain(default, path) if default is not None else None,
    )


def simulation_notes(config: GatewayConfig) -> list[str]:
    """What in this config a scenario does not run as it would on a server: the report
    prints it, so that a result is not read for more than it is."""
    notes = []
    for name, cluster in config.clusters.items():
        if cluster.type in ("strict_dns", "logical_dns"):
            notes.append(f"cluster {name}: no DNS is asked; each endpoint name is one host")
        if cluster.tls is not None:
            notes.append(f"cluster {name}: TLS to the hosts is left out (cleartext)")
    for name, listener in config.listeners.items():
        chains = [*listener.filter_chains, listener.default_filter_chain]
        if any(chain is not None and chain.tls is not None for chain in chains):
            notes.append(f"listener {name}: TLS is left out (the chains get cleartext)")
        if listener.protocol == "quic":
            notes.append(
                f"listener {name}: QUIC is not simulated; scenario clients reach its routes "
                "over HTTP/1.1 or HTTP/2 in memory"
            )
    return notes


def has_access_log(config: GatewayConfig) -> bool:
    """Whether any listener (or filter chain) of the config writes an access log."""
    for listener in config.listeners.values():
        if listener.access_log:
            return True
        chains = [*listener.filter_chains, listener.default_filter_chain]
        for chain in chains:
            if chain is None:
                continue
            for network_filter in chain.filters:
                if (
                    isinstance(network_filter, HttpConnectionManagerConfig)
                    and network_filter.access_log
                ):
                    return True
    return False
