"""Which requests are traced: Envoy's decision, parent-based as OpenTelemetry's samplers are.

In order: a request carrying `x-client-trace-id` is traced (Envoy's client sampling, at
its default of 100%); one whose caller decided (the `traceparent` sampled flag, B3's
sampling state) follows that decision, so a trace is never recorded in pieces; the rest
are traced at random, `percentage` of them (Envoy's random_sampling, a percentage).
"""

import random


class Sampler:
    __slots__ = ("_percentage",)

    def __init__(self, percentage: float) -> None:
        self._percentage = percentage

    def sample(self, parent: bool | None, forced: bool) -> bool:
        """Whether to record spans for a request: `parent` is its caller's decision (None:
        none was made), `forced` says the client asked (x-client-trace-id)."""
        if forced:
            return True
        if parent is not None:
            return parent
        percentage = self._percentage
        return percentage >= 100 or (percentage > 0 and random.random() * 100 < percentage)
