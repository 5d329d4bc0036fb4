"""Process-wide state that filters and the admin endpoint share."""

import attrs


@attrs.define
class ServerState:
    #: Set when the gateway starts draining (SIGTERM, /quitquitquit).
    draining: bool = False
    #: Set by POST /healthcheck/fail, cleared by POST /healthcheck/ok (as in Envoy): the
    #: health_check filter then fails, so load balancers stop sending traffic.
    healthcheck_failed: bool = False
