"""Watching config files for changes: the config file (`[server] watch = true`, in a
single gateway or a supervisor of workers) and an xDS resource directory (`[dynamic] path`)
are polled the same way."""

import hashlib
from collections.abc import Awaitable, Callable

import trio

from gateway.config.files import MAX_CONFIG_BYTES, UnreadableFile, read_file

#: How often a watched file or directory is looked at.
WATCH_INTERVAL = 1.0


def file_signature(path: str) -> bytes | None:
    """What the watcher compares: the file's bytes (mtimes can be too coarse to tell two
    quick saves apart); None if it cannot be read right now."""
    try:
        return hashlib.sha256(read_file(path, MAX_CONFIG_BYTES)).digest()
    except UnreadableFile:
        return None


async def watch(
    signature: Callable[[], bytes | None],
    last: bytes | None,
    on_change: Callable[[], Awaitable[None]],
) -> None:
    """Every WATCH_INTERVAL, calls `on_change` if `signature()` differs from the last one
    seen (`last`: what was loaded). None means "cannot tell right now" (a file being
    rewritten): it is looked at again next time. `signature` reads files: it runs in a
    worker thread."""
    while True:
        await trio.sleep(WATCH_INTERVAL)
        now = await trio.to_thread.run_sync(signature)
        if now is None or now == last:
            continue
        last = now
        await on_change()
