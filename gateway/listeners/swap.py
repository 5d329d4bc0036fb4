"""What a reload does with listeners, whether they serve sockets (`Gateway.reload`) or
in-memory connections (the scenario engine's `MemoryGateway.reload`): the new listeners
take the new connections, and the old ones' connections carry on or drain.
"""

from collections.abc import Awaitable, Callable

from gateway.config.model import GatewayConfig
from gateway.listeners.listener import Listener
from gateway.router.route_table import RouteTables


def same_socket(previous: Listener, listener: Listener) -> bool:
    """Whether a reloaded listener takes over its predecessor's socket: the same address
    and the same protocol (a TCP and a QUIC listener may share a port number, not a
    socket)."""
    old, new = previous.config, listener.config
    return old.address == new.address and old.protocol == new.protocol


async def swap_listeners(
    old: dict[str, Listener],
    new: dict[str, Listener],
    config: GatewayConfig,
    route_tables: RouteTables,
    drain: tuple[float, float],
    start: Callable[[Listener], Awaitable[None]],
) -> list[str]:
    """Starts each of `new` (bound already, unless it takes over its predecessor's
    socket); a predecessor with the same settings hands its connections over, which route
    their next requests by `config`; one whose settings changed, or that is gone, drains
    by `drain` (deadline, grace). Returns what changed."""
    changes = []
    deadline, grace = drain
    for name, listener in new.items():
        previous = old.get(name)
        if previous is not None and same_socket(previous, listener):
            listener.take_over(previous)
        await start(listener)
        if previous is None:
            changes.append(f"listener {name} added")
            continue
        # Old connections, draining or not, route their next requests the new way.
        previous.update_routes(config, route_tables)
        if previous.config == listener.config:
            listener.adopt(previous)
        else:
            previous.drain(deadline, grace)
            changes.append(f"listener {name} changed")
    for name in old.keys() - new.keys():
        old[name].drain(deadline, grace)
        changes.append(f"listener {name} removed")
    return changes
