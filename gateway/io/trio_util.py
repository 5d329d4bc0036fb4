"""Small Trio helpers shared by the data path."""

from typing import NoReturn

import trio

from gateway.io.byte_stream import ByteStream

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


#: What a lingering close reads and throws away at most, before it closes anyway.
_LINGER_MAX_BYTES = 1 << 20


async def close_after_linger(stream: ByteStream, linger: float) -> None:
    """Closes a connection so the peer can read what was sent last (RFC 9112 9.6): a
    socket closed with unread bytes in it sends a TCP reset, which may destroy the answer
    (a 431, a GOAWAY) before the peer reads it. So: half-close, read and discard until the
    peer closes too, `linger` seconds or 1 MiB at most, then close. A peer that closed
    first costs one read."""
    try:
        await stream.send_eof()
        with trio.move_on_after(linger):
            discarded = 0
            while discarded < _LINGER_MAX_BYTES:
                data = await stream.receive_some(RECEIVE_SIZE)
                if not data:
                    break
                discarded += len(data)
    except PEER_GONE:
        pass  # the peer reset it already: nothing left to protect
    finally:
        stream.close_now()


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

    It keeps its own context, not the group (which holds it), and no local here names it
    once raised: either would be a reference cycle through its traceback, holding every
    frame it passed (and the connection they belong to) until the cyclic GC runs.
    """
    found = leaves(group)
    exc = next((e for e in found if not isinstance(e, trio.Cancelled)), found[0])
    context = exc.__context__
    del found, group
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context
