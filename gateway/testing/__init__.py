"""`gateway test`: an operator's own config run against scripted upstream hosts and
clients in virtual time (docs/testing.md).

- scenario.py: the scenario file's model and loader; bound.py: the expectation language
- behaviour.py, upstream_host.py, upstream_host_h2.py: simulated hosts (HTTP/1.1, HTTP/2);
  client.py, client_h2.py: simulated clients (HTTP/1.1, HTTP/2)
- memory_stream.py, memory_gateway.py, simulated_config.py: the gateway over memory
  streams, built by its own code from the operator's config
- simulation.py: the above together in one trio run; engine.py: a scenario's run in
  virtual time; timeline.py, expectations.py, report.py: what happened, checked, told
- command.py: the `gateway test` subcommand; plugin.py: the pytest plugin (pytest only)
"""

from gateway.testing.engine import run_scenario as run_scenario
from gateway.testing.expectations import Check as Check
from gateway.testing.expectations import check_expectations as check_expectations
from gateway.testing.report import render_report as render_report
from gateway.testing.result import ScenarioResult as ScenarioResult
from gateway.testing.scenario import HostScript as HostScript
from gateway.testing.scenario import Scenario as Scenario
from gateway.testing.scenario import load_scenario as load_scenario
from gateway.testing.scenario import structure_hosts as structure_hosts
from gateway.testing.scenario import structure_scenario as structure_scenario
from gateway.testing.simulation import Simulation as Simulation
from gateway.testing.simulation import open_simulation as open_simulation
