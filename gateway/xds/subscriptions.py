"""Subscriptions: what a control-plane source (REST or ADS) keeps per resource type.

Each type is its own subscription, applied or refused on its own as Envoy does: the
accepted version and resources, the update being considered (`pending`), and the last
refused one, which is tried again once another type's update was taken (an endpoint
update may have been waiting for its cluster).
"""

import attrs

from gateway.xds import translate
from gateway.xds.compose import Composed, Resource, XdsState

#: The order updates are asked for: clusters (and their endpoints) before what routes
#: to them.
TYPE_ORDER = (
    translate.CLUSTER,
    translate.CLUSTER_LOAD_ASSIGNMENT,
    translate.LISTENER,
    translate.ROUTE_CONFIGURATION,
)
#: google.rpc.Code INVALID_ARGUMENT, what Envoy puts in a NACK's error_detail.
INVALID_ARGUMENT = 3


@attrs.define
class Subscription:
    """One resource type: what was accepted, what is being considered, what was refused."""

    accepted_version: str = ""
    accepted: list[Resource] = attrs.Factory(list)
    nonce: str = ""
    pending: tuple[str, list[Resource]] | None = None
    #: The last version refused, kept to be tried again with the next round's news (a
    #: whole update is refused for one bad part; its other parts may be fine).
    refused: tuple[str, list[Resource]] | None = None
    #: How many updates had been taken when it was refused.
    refused_at: int = 0
    error: str | None = None


class SubscribedState(XdsState):
    """The per-type bookkeeping of a control-plane source."""

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.subscriptions = {type_url: Subscription() for type_url in TYPE_ORDER}
        #: Updates taken so far.
        self.accepted_count = 0

    def current_resources(self) -> list[Resource]:
        resources = []
        for sub in self.subscriptions.values():
            resources += sub.pending[1] if sub.pending is not None else sub.accepted
        return resources

    def accept(self, composed: Composed) -> None:
        for sub in self.subscriptions.values():
            if sub.pending is not None:
                sub.accepted_version, sub.accepted = sub.pending
                sub.pending, sub.refused, sub.error = None, None, None
        self.accepted_count += 1
        super().accept(composed)

    def reject(self, errors: list[str]) -> None:
        super().reject(errors)
        for sub in self.subscriptions.values():
            if sub.pending is not None:
                sub.refused, sub.refused_at = sub.pending, self.accepted_count
                sub.error = self.last_error
                sub.pending = None

    def offer(self, type_url: str, version: str, resources: list[Resource]) -> bool:
        """A control plane's answer for one type; True if it is news (now pending)."""
        sub = self.subscriptions[type_url]
        refused = sub.refused[0] if sub.refused is not None else None
        if version in (sub.accepted_version, refused):
            return self.retry_refused(type_url)
        sub.pending = (version, resources)
        return True

    def retry_refused(self, type_url: str) -> bool:
        """Makes a refused update pending again if anything was taken since."""
        sub = self.subscriptions[type_url]
        if sub.refused is not None and sub.refused_at < self.accepted_count:
            sub.pending = sub.refused
            return True
        return False

    def error_detail(self, type_url: str) -> dict[str, object] | None:
        """What the next request for this type says of the last refusal (a NACK)."""
        error = self.subscriptions[type_url].error
        if error is None:
            return None
        return {"code": INVALID_ARGUMENT, "message": error, "details": []}
