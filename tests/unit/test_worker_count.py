"""`[server] workers`: "auto" (the default) is one worker process per CPU this process may
run on; a number is that many; anything else is an error naming `server.workers`. The TOML
text is what is under test, so no config builder."""

import os

import pytest

from gateway import loads_config
from gateway.config.model import Server
from gateway.server.supervisor import available_cpus, worker_count
from tests.unit.test_config import VALID, errors_of


def with_workers(value: str) -> str:
    return VALID.replace("[admin]", f"[server]\nworkers = {value}\n[admin]")


def test_the_default_is_auto():
    assert Server().workers == "auto"
    assert loads_config(VALID).server.workers == "auto"


def test_auto_is_the_cpus_this_process_may_run_on(monkeypatch):
    # A container's cpuset or `taskset -c 0,2` leaves 2 of the machine's 8 CPUs.
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 2}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert available_cpus() == 2
    assert worker_count(loads_config(VALID)) == 2
    assert worker_count(loads_config(with_workers('"auto"'))) == 2


def test_auto_on_one_cpu_is_one_process(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {3}, raising=False)
    assert worker_count(loads_config(VALID)) == 1


def test_without_affinity_auto_is_the_cpu_count(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert available_cpus() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # "undeterminable"
    assert available_cpus() == 1


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity here")
def test_the_default_on_this_machine():
    assert available_cpus() == len(os.sched_getaffinity(0))
    assert worker_count(loads_config(VALID)) == len(os.sched_getaffinity(0))


def test_a_number_is_that_many_whatever_the_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1, 2, 3}, raising=False)
    assert worker_count(loads_config(with_workers("1"))) == 1
    assert worker_count(loads_config(with_workers("6"))) == 6


@pytest.mark.parametrize("value", ["0", "-2", '"many"', '"Auto"', "true", "2.0", '"2"'])
def test_anything_else_is_an_error_naming_the_key(value):
    shown = {"true": "True", "2.0": "2.0"}.get(value, value.replace('"', "'"))
    assert errors_of(with_workers(value)) == [
        f"server.workers: expected a number of workers (1 to 1024) or 'auto', got {shown}"
    ]
