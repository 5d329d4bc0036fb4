"""The overload manager (Envoy's): a cap on downstream connections, and actions that shed
load as the process's resident memory nears a limit. One per process (per worker), for
the process's whole life: a reload re-configures it, so every listener generation sees
the same count and the same actions.

Two resources, watched two ways:

- Downstream connections are counted where they are accepted (`listeners/listener.py`):
  the count is exact and the cap is checked per accept, so a flood past
  `max_downstream_connections` is refused connection by connection, each closed at once.
- The resident set size is read by the resource monitor, a task in the gateway's nursery,
  every `refresh_interval`: one `pread` of /proc/self/statm on a descriptor kept open.
  Each action is active while RSS >= its threshold times `max_rss` (Envoy's threshold
  trigger: scale_percent is 0 or 100).

The data path never asks the OS anything. Each action is an `OverloadActionState` whose
`active` flag only the monitor sets; where an action applies, the code reads that flag:
the accept loops (stop_accepting_connections), the HTTP/1.1 and HTTP/2 response paths
(disable_http_keepalive), the start of each stream (stop_accepting_requests).
"""

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from typing import Any, get_args

import attrs
import trio

from gateway.config.model import Overload, OverloadActionName
from gateway.observability.stats import Counter, Gauge, StatsStore, create_stats, describe
from gateway.observability.tasktree import annotate

log = logging.getLogger("gateway.overload")

_STATM = "/proc/self/statm"
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@attrs.define
class ActionStats:
    """`overload.envoy.overload_actions.NAME.*`, Envoy's."""

    active: Gauge
    scale_percent: Gauge


@attrs.define
class RssMonitorStats:
    """`overload.rss.*`, named as Envoy's resource monitors' stats."""

    #: RSS as a percentage of max_rss.
    pressure: Gauge
    #: Reads of the RSS that failed (no /proc: not Linux).
    failed_updates: Counter


for _action in get_args(OverloadActionName):
    describe(
        f"overload.envoy.overload_actions.{_action}",
        {
            "active": f"1 while the overload action {_action} is active, else 0.",
            "scale_percent": f"100 while the overload action {_action} is active, else 0.",
        },
    )
describe(
    "overload.rss",
    {
        "pressure": "The last RSS read, as a percentage of max_rss.",
        "failed_updates": "RSS reads that failed.",
    },
)
describe("server", {"memory_physical_size": "The process's RSS in bytes at the last read."})


class OverloadActionState:
    """One overload action. `active` is the one thing the data path reads."""

    __slots__ = ("_ended", "_interrupt", "_stats", "active", "name", "threshold")

    def __init__(self, name: OverloadActionName, store: StatsStore) -> None:
        self.name = f"envoy.overload_actions.{name}"
        self.active = False
        #: The fraction of max_rss from which the action is active; None: not configured.
        self.threshold: float | None = None
        prefix = f"overload.{self.name}"
        self._stats = create_stats(ActionStats, store.scope(prefix, prefix))
        self._ended = trio.Event()
        self._ended.set()
        #: Cancelled when the action begins (see `interrupting`).
        self._interrupt: set[trio.CancelScope] = set()

    def set(self, active: bool) -> None:
        if active == self.active:
            return
        self.active = active
        self._stats.active.value = int(active)
        self._stats.scale_percent.value = 100 if active else 0
        if active:
            self._ended = trio.Event()
            for scope in self._interrupt:
                scope.cancel()
        else:
            self._ended.set()

    @contextlib.contextmanager
    def interrupting(self) -> Iterator[None]:
        """Runs the body until the action begins (at once if it is active)."""
        with trio.CancelScope() as scope:
            if self.active:
                scope.cancel()
            self._interrupt.add(scope)
            try:
                yield
            finally:
                self._interrupt.discard(scope)

    async def wait_inactive(self) -> None:
        """Returns once the action is (or is already) no longer active."""
        await self._ended.wait()


class OverloadManager:
    def __init__(self, config: Overload, store: StatsStore) -> None:
        self.stop_accepting_connections = OverloadActionState("stop_accepting_connections", store)
        self.disable_http_keepalive = OverloadActionState("disable_http_keepalive", store)
        self.stop_accepting_requests = OverloadActionState("stop_accepting_requests", store)
        self._actions: dict[OverloadActionName, OverloadActionState] = {
            "stop_accepting_connections": self.stop_accepting_connections,
            "disable_http_keepalive": self.disable_http_keepalive,
            "stop_accepting_requests": self.stop_accepting_requests,
        }
        #: Open downstream connections of every listener; the listeners keep it.
        self.downstream_cx_active = 0
        self.max_downstream_connections: float = math.inf
        #: The last RSS read, in bytes (None before the first read).
        self.rss: int | None = None
        self._rss_stats = create_stats(RssMonitorStats, store.scope("overload.rss", "overload.rss"))
        #: Envoy's name for the process's physical memory; set by the monitor.
        self._memory = store.scope("server", "server").gauge("memory_physical_size")
        self._monitoring = False
        #: The monitor's sleep between reads: cancelled to read at once (a reload).
        self._wake: trio.CancelScope | None = None
        self.configure(config)

    def configure(self, config: Overload) -> None:
        """Takes a (reloaded) `[overload]`; a running monitor reads the RSS again at once."""
        self.config = config
        self.max_downstream_connections = config.max_downstream_connections or math.inf
        thresholds = {a.name: a.threshold for a in config.actions}
        for name, action in self._actions.items():
            action.threshold = thresholds.get(name) if config.max_rss is not None else None
        if self._wake is not None:
            self._wake.cancel()

    def start(self, nursery: trio.Nursery) -> None:
        """Starts the resource monitor if `max_rss` asks for one and none runs."""
        if self.config.max_rss is not None and not self._monitoring:
            self._monitoring = True
            nursery.start_soon(self._monitor, name="resource monitor")

    async def _monitor(self) -> None:
        annotate("resource monitor", live=self.task_fields)
        try:
            fd = os.open(_STATM, os.O_RDONLY)
        except OSError as exc:
            self._rss_stats.failed_updates.inc()
            log.error("overload: cannot read RSS from %s (%s); no actions", _STATM, exc)
            self._monitoring = False
            return
        try:
            while self.config.max_rss is not None:
                self._update(fd, self.config.max_rss)
                with trio.move_on_after(self.config.refresh_interval) as self._wake:
                    await trio.sleep_forever()
        finally:
            self._wake = None
            self._monitoring = False
            os.close(fd)
            for action in self._actions.values():
                action.set(False)

    def _update(self, fd: int, max_rss: int) -> None:
        try:
            rss = int(os.pread(fd, 128, 0).split()[1]) * _PAGE_SIZE
        except (OSError, IndexError, ValueError):
            self._rss_stats.failed_updates.inc()
            return  # the actions keep their state, as Envoy's on a failed update
        self.rss = self._memory.value = rss
        pressure = rss / max_rss
        self._rss_stats.pressure.value = round(pressure * 100)
        for action in self._actions.values():
            active = action.threshold is not None and pressure >= action.threshold
            if active != action.active:
                log.warning(
                    "overload: %s %s (RSS %d of max_rss %d)",
                    action.name,
                    "active" if active else "ended",
                    rss,
                    max_rss,
                )
            action.set(active)

    @property
    def active_actions(self) -> list[str]:
        return [a.name for a in self._actions.values() if a.active]

    def task_fields(self) -> dict[str, object]:
        """What /tasks shows on the resource monitor."""
        active = self.active_actions
        return {
            "state": "overloaded: " + ", ".join(active) if active else "normal",
            "rss": self.rss,
            "max_rss": self.config.max_rss,
            "downstream_cx_active": self.downstream_cx_active,
        }

    def describe(self) -> dict[str, Any]:
        """The `overload` of /server_info."""
        cap = self.config.max_downstream_connections
        return {
            "max_downstream_connections": cap,
            "downstream_cx_active": self.downstream_cx_active,
            "max_rss": self.config.max_rss,
            "rss": self.rss,
            "refresh_interval": self.config.refresh_interval,
            "actions": {
                a.name: {"threshold": a.threshold, "active": a.active}
                for a in self._actions.values()
                if a.threshold is not None
            },
        }
