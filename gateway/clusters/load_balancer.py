"""Load balancers: pure host selection over a fixed host list, no I/O.

A cluster builds a new balancer whenever its set of usable hosts changes (a health flag
flips, DNS changes the hosts); `choose` is then the hot path and does as little as it can.
Hash-based balancers (ring_hash, maglev) take the request's hash; without one they pick at
random, as Envoy does.
"""

import bisect
import hashlib
import itertools
import random
from collections.abc import Generator, Sequence
from typing import Protocol, TypeVar, cast

from gateway.clusters.host import Host
from gateway.config.model import Cluster as ClusterConfig

T = TypeVar("T")


def hash64(data: bytes) -> int:
    """A stable 64-bit hash (the same on every worker and every run, unlike hash())."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


class LoadBalancer(Protocol):
    def choose(self, hash_key: int | None) -> Host | None: ...


class NoHosts:
    def choose(self, hash_key: int | None) -> Host | None:
        return None


class RoundRobin:
    """Each host in turn; with unequal weights, nginx's smooth weighted round robin (a
    host of weight 3 among weights 1 gets 3 picks in 5, spread out, not in a burst)."""

    def __init__(self, hosts: Sequence[Host], start: int) -> None:
        self._hosts = list(hosts)
        self._next = start
        self._weights = [h.weight for h in hosts]
        self._weighted = len(set(self._weights)) > 1
        self._current = [0] * len(hosts)
        self._total = sum(self._weights)

    @property
    def position(self) -> int:
        """Where the next pick starts, carried over when the balancer is rebuilt."""
        return self._next

    def choose(self, hash_key: int | None) -> Host | None:
        if not self._weighted:
            host = self._hosts[self._next % len(self._hosts)]
            self._next += 1
            return host
        current, best = self._current, 0
        for i, weight in enumerate(self._weights):
            current[i] += weight
            if current[i] > current[best]:
                best = i
        current[best] -= self._total
        return self._hosts[best]


class Random:
    def __init__(self, hosts: Sequence[Host]) -> None:
        self._hosts = list(hosts)
        self._cumulative = list(itertools.accumulate(h.weight for h in hosts))

    def choose(self, hash_key: int | None) -> Host | None:
        return random.choices(self._hosts, cum_weights=self._cumulative)[0]


class LeastRequest:
    """Power of `choice_count` choices: sample that many hosts (distinct ones when weights
    are equal, by weight otherwise), keep the one with the fewest active requests per unit
    of weight."""

    def __init__(self, hosts: Sequence[Host], choice_count: int) -> None:
        self._hosts = list(hosts)
        self._cumulative = list(itertools.accumulate(h.weight for h in hosts))
        self._weighted = len({h.weight for h in hosts}) > 1
        self._choices = min(choice_count, len(hosts))

    def choose(self, hash_key: int | None) -> Host | None:
        if self._weighted:
            candidates = random.choices(self._hosts, cum_weights=self._cumulative, k=self._choices)
        else:
            candidates = random.sample(self._hosts, self._choices)
        return min(candidates, key=lambda h: (h.stats.rq_active + 1) / h.weight)


#: Units of table work (ring points, maglev slots) between two yields of a sliced build:
#: about a millisecond of Python.
_SLICE = 1024


def finish(build: Generator[None, None, T]) -> T:
    """Runs a sliced build to its end at once."""
    while True:
        try:
            next(build)
        except StopIteration as done:
            return cast(T, done.value)


class RingHash:
    """Consistent hashing on a ring (Ketama): each host owns points in proportion to its
    weight; a key goes to the first point at or after its hash. A host that leaves gives
    its points' keys to the next points; every other key stays where it was."""

    def __init__(
        self, hosts: Sequence[Host], total_weight: int, minimum_size: int, maximum_size: int
    ) -> None:
        self._hashes, self._owners = finish(_ring(hosts, total_weight, minimum_size, maximum_size))

    @classmethod
    def built(cls, hashes: list[int], owners: list[Host]) -> "RingHash":
        ring = cls.__new__(cls)
        ring._hashes, ring._owners = hashes, owners
        return ring

    def choose(self, hash_key: int | None) -> Host | None:
        key = hash_key if hash_key is not None else random.getrandbits(64)
        i = bisect.bisect_left(self._hashes, key)
        return self._owners[i if i < len(self._owners) else 0]


def _ring(
    hosts: Sequence[Host], total_weight: int, minimum_size: int, maximum_size: int
) -> Generator[None, None, tuple[list[int], list[Host]]]:
    # Points per unit of weight come from the weight of *all* the cluster's hosts, not
    # just the usable ones: a host failing a health check then takes only its own
    # points off the ring, and no other key moves.
    scale = max(minimum_size / total_weight, 1 / min(h.weight for h in hosts))
    scale = min(scale, maximum_size / total_weight)
    points: list[tuple[int, int]] = []
    for index, host in enumerate(hosts):
        name = str(host.address).encode()
        for replica in range(max(1, round(host.weight * scale))):
            points.append((hash64(name + b"_" + str(replica).encode()), index))
            if not len(points) % _SLICE:
                yield
    points.sort()
    return [p[0] for p in points], [hosts[p[1]] for p in points]


class Maglev:
    """Maglev hashing (Google's paper, weighted as Envoy does): a lookup table of prime
    size filled by each host walking its own permutation of the slots, so hosts get equal
    (weighted) shares and a host leaving moves few keys other than its own."""

    def __init__(self, hosts: Sequence[Host], table_size: int) -> None:
        self._table = finish(_maglev_table(hosts, table_size))

    @classmethod
    def built(cls, table: list[Host]) -> "Maglev":
        maglev = cls.__new__(cls)
        maglev._table = table
        return maglev

    def choose(self, hash_key: int | None) -> Host | None:
        key = hash_key if hash_key is not None else random.getrandbits(64)
        return self._table[key % len(self._table)]


def _maglev_table(hosts: Sequence[Host], size: int) -> Generator[None, None, list[Host]]:
    walks = []
    for host in hosts:
        name = str(host.address).encode()
        offset = hash64(name) % size
        skip = hash64(name + b"#skip") % (size - 1) + 1
        walks.append([offset, skip, 0])
    max_weight = max(h.weight for h in hosts)
    table: list[int] = [-1] * size
    filled = 0
    # Each round a host claims a slot only while its claims lag its weight's share:
    # integer weights, so the table ends up proportional to them.
    claims = [0.0] * len(hosts)
    for round_ in itertools.count(1):
        for i, host in enumerate(hosts):
            if claims[i] + 1 > round_ * host.weight / max_weight:
                continue
            walk = walks[i]
            offset, skip, step = walk
            slot = (offset + skip * step) % size
            while table[slot] >= 0:
                step += 1
                slot = (offset + skip * step) % size
            walk[2] = step + 1
            table[slot] = i
            claims[i] += 1
            filled += 1
            if filled == size:
                return [hosts[i] for i in table]
            if not filled % _SLICE:
                yield
    raise AssertionError("unreachable: the table fills")


def create_load_balancer(
    config: ClusterConfig,
    hosts: Sequence[Host],
    all_hosts: Sequence[Host],
    previous: LoadBalancer | None,
) -> LoadBalancer:
    """The cluster's policy over `hosts`, the ones usable now among `all_hosts`."""
    return finish(build_load_balancer(config, hosts, all_hosts, previous))


def build_load_balancer(
    config: ClusterConfig,
    hosts: Sequence[Host],
    all_hosts: Sequence[Host],
    previous: LoadBalancer | None,
) -> Generator[None, None, LoadBalancer]:
    """`create_load_balancer` in slices: the ring and maglev tables (tens of milliseconds
    of Python for the larger sizes) yield every `_SLICE` units of work, so the event loop
    can serve other requests in between."""
    if not hosts:
        return NoHosts()
    policy = config.lb_policy
    if policy == "round_robin":
        # Keep the rotation going rather than send the next request to the first host again.
        start = previous.position if isinstance(previous, RoundRobin) else random.randrange(1 << 16)
        return RoundRobin(hosts, start)
    if policy == "random":
        return Random(hosts)
    if policy == "least_request":
        if len(hosts) == 1:
            return RoundRobin(hosts, 0)
        return LeastRequest(hosts, config.least_request.choice_count)
    if policy == "ring_hash":
        ring = config.ring_hash
        total = sum(h.weight for h in all_hosts)
        hashes, owners = yield from _ring(
            hosts, total, ring.minimum_ring_size, ring.maximum_ring_size
        )
        return RingHash.built(hashes, owners)
    assert policy == "maglev"
    return Maglev.built((yield from _maglev_table(hosts, config.maglev.table_size)))


def combine_hashes(values: Sequence[bytes]) -> int | None:
    """One request hash from the values of several hash policies (Envoy's rotate-xor)."""
    result: int | None = None
    for value in values:
        h = hash64(value)
        result = h if result is None else (((result << 1) | (result >> 63)) & (2**64 - 1)) ^ h
    return result
