"""Small Trio helpers shared by the data path."""

from typing import NoReturn

import trio

#: What one read asks for: enough that a streaming body takes few trips through the loop.
RECEIVE_SIZE = 65536

#: What a stream raises when its peer reset or left, or it was closed under the reader:
#: on the data path all of them mean "this peer is gone".
PEER_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


async def receive_or_eof(stream: trio.abc.ReceiveStream) -> bytes:
    """The next bytes from `stream`; b"" once the peer closed, reset or went away."""
    try:
        return bytes(await stream.receive_some(RECEIVE_SIZE))
    except PEER_GONE:
        return b""


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (possibly nested) exception groups, or [exc] itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def raise_single(group: BaseExceptionGroup) -> NoReturn:
    """Re-raises the one exception that matters from an internal nursery's group.

    Nurseries are strict, so a task that failed arrives wrapped together with the
    Cancelled of its siblings. Internal nurseries should not leak groups to callers that
    catch specific errors: the first non-Cancelled error wins; a group of only Cancelled
    re-raises one Cancelled so the cancel scope that caused it can catch it.
    """
    found = leaves(group)
    for exc in found:
        if not isinstance(exc, trio.Cancelled):
            raise exc
    raise found[0]
