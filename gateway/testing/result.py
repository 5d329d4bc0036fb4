"""What a scenario run saw: the clients' outcomes, the hosts' records, the timeline, the
stats and tasks at the end; what expectations are checked against and reports render."""

from typing import Any

import attrs

from gateway.testing.client import Outcome
from gateway.testing.scenario import Scenario
from gateway.testing.timeline import Event
from gateway.testing.upstream_host import HostRecord


@attrs.frozen
class TaskSnapshot:
    """One listener's connections and streams at a scenario's `task_snapshots` time, as
    `/tasks?listener=NAME` shows them (text), in `worker` when the run had several."""

    at: float
    listener: str
    text: str
    worker: int | None = None


@attrs.define
class ScenarioResult:
    scenario: Scenario
    outcomes: list[Outcome]
    #: Requests sent with no outcome (still in flight when the run ended).
    unfinished: int
    hosts: dict[str, HostRecord]
    events: list[Event]
    #: Every counter and gauge at the end, by Envoy name.
    stats: dict[str, int]
    virtual_seconds: float
    wall_seconds: float
    #: What of the config the run did not simulate (`simulation_notes`).
    notes: list[str] = attrs.Factory(list)
    #: The access log's lines, when the scenario checks them (None: the config has none).
    access_log_lines: list[str] | None = None
    task_snapshots: list[TaskSnapshot] = attrs.Factory(list)
    #: Downstream connections and request streams still alive at the end, as /tasks
    #: shows them (`Simulation.leftover_tasks`).
    leftover_tasks: dict[str, list[dict[str, Any]]] = attrs.Factory(dict)
    #: The gateway worker processes it ran as (`Scenario.workers`).
    workers: int = 1
