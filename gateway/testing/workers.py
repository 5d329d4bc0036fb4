"""A scenario run as a gateway of several worker processes serves it (`workers = N`).

A gateway with `[server] workers` runs that many processes, each with the whole config,
its own clusters, outlier detection, circuit breakers and rate limit buckets, and the
kernel (SO_REUSEPORT) spreads client connections over them. So does a scenario with
`workers`: each worker is a trio run of its own, in a process of its own (both cores
work, as the gateway's workers would), with its share of the clients' requests, against
hosts scripted alike; what they saw is added up as the supervisor adds up its workers'
stats. One worker runs in the caller's process.
"""

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

import attrs

from gateway.testing.result import ScenarioResult
from gateway.testing.upstream_host import HostRecord

_Key = TypeVar("_Key")

#: Runs worker `index` of `count`, its access log going to the path given (or nowhere).
Worker = Callable[[int, int, str | None], ScenarioResult]


def run_workers(worker: Worker, access_logs: list[str | None]) -> list[ScenarioResult]:
    """One run per access log entry (a worker each), in parallel processes if several."""
    count = len(access_logs)
    if count == 1:
        return [worker(0, 1, access_logs[0])]
    # fork: a worker starts with the modules and the config already loaded.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(count, mp_context=context) as pool:
        runs = [pool.submit(worker, i, count, log) for i, log in enumerate(access_logs)]
        return [run.result() for run in runs]


def merge_results(results: list[ScenarioResult]) -> ScenarioResult:
    """The workers' results as one: outcomes and the timeline in time order (events
    labelled with their worker), host records and stats added up."""
    if len(results) == 1:
        return results[0]
    hosts: dict[str, HostRecord] = {}
    for result in results:
        for address, record in result.hosts.items():
            hosts[address] = _add_records(hosts[address], record) if address in hosts else record
    stats: dict[str, int] = {}
    for result in results:
        for name, value in result.stats.items():
            stats[name] = stats.get(name, 0) + value
    return ScenarioResult(
        results[0].scenario,
        sorted(
            (outcome for result in results for outcome in result.outcomes),
            key=lambda o: (o.sent_at, o.client, o.tag),
        ),
        sum(result.unfinished for result in results),
        hosts,
        sorted(
            (attrs.evolve(e, worker=i) for i, result in enumerate(results) for e in result.events),
            key=lambda e: e.time,
        ),
        stats,
        virtual_seconds=max(result.virtual_seconds for result in results),
        wall_seconds=0.0,
        task_snapshots=[
            attrs.evolve(snapshot, worker=i)
            for i, result in enumerate(results)
            for snapshot in result.task_snapshots
        ],
        leftover_tasks={
            kind: [node for result in results for node in result.leftover_tasks.get(kind, [])]
            for kind in results[0].leftover_tasks
        },
        workers=len(results),
    )


def _add_records(a: HostRecord, b: HostRecord) -> HostRecord:
    return HostRecord(
        a.connections + b.connections,
        a.refused + b.refused,
        _add_counts(a.served, b.served),
        a.cut + b.cut,
        _add_counts(a.attempts, b.attempts),
    )


def _add_counts(a: dict[_Key, int], b: dict[_Key, int]) -> dict[_Key, int]:
    total = dict(a)
    for key, count in b.items():
        total[key] = total.get(key, 0) + count
    return total
