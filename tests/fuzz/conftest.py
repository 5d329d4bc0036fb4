"""Hypothesis profiles for the fuzz tests: bounded in CI, as long as asked for on demand.

CI runs `fuzz-ci`: a fixed number of examples per test, and the whole directory stays
well under 30 s on two cores. `GATEWAY_FUZZ_EXAMPLES=100000 python -m pytest tests/fuzz`
runs `fuzz-long` with that many examples per test (docs/security.md, "Fuzzing").
Examples are drawn at random each run; a failure prints the minimal input and the
`@reproduce_failure` line that replays it.
"""

import os

from hypothesis import HealthCheck, settings

CI_EXAMPLES = 100

settings.register_profile(
    "fuzz-ci",
    max_examples=CI_EXAMPLES,
    # Deadlines are per example and real (see tests/fuzz/deadline.py), not hypothesis's:
    # its deadline reports slowness only after the example returns, never a hang.
    deadline=None,
    # The machine is shared: a slow first example is not a test's fault.
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
settings.register_profile(
    "fuzz-long",
    parent=settings.get_profile("fuzz-ci"),
    max_examples=int(os.environ.get("GATEWAY_FUZZ_EXAMPLES") or CI_EXAMPLES),
    print_blob=True,
)
settings.load_profile("fuzz-long" if os.environ.get("GATEWAY_FUZZ_EXAMPLES") else "fuzz-ci")
