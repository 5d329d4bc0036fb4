"""Load balancers: pure host selection, no I/O. Each cluster owns one instance."""

from collections.abc import Sequence
from typing import Protocol, TypeVar

H = TypeVar("H")


class LoadBalancer(Protocol[H]):
    def choose(self, hosts: Sequence[H]) -> H | None: ...


class RoundRobin:
    """Each host in turn (Envoy's round_robin with equal weights)."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def choose(self, hosts: Sequence[H]) -> H | None:
        if not hosts:
            return None
        host = hosts[self._next % len(hosts)]
        self._next += 1
        return host
