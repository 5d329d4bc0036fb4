"""Files a config names (the config itself, certificates, keys, key sets, xDS resources),
read so that no path can hang the gateway or make it read without end.

A plain `open()` of a FIFO waits for a writer forever, a directory or a file under /proc
(`/proc/kmsg`) can block or never end, and a device can be endless (`/dev/zero`). So, as
Envoy's `Filesystem::illegalPath` does, paths that resolve under /proc, /sys or /dev are
refused; the file is opened without blocking, must be a regular file, and is read up to a
size cap. (A file swapped between this check and a later open by path, as the ssl module
does, is not defended against: whoever can do that can rewrite the config too.)
"""

import os
import stat

#: PEM certificates, keys and CA bundles (a system bundle of ~150 CAs is ~220 KB).
MAX_PEM_BYTES = 1 << 20
#: A config file, or one file of xDS resources.
MAX_CONFIG_BYTES = 8 << 20

_KERNEL_TREES = ("/proc", "/sys", "/dev")


class UnreadableFile(ValueError):
    """A file a config names cannot be read safely; the message says why."""


def _open(path: str, max_bytes: int) -> int:
    if "\0" in path:
        raise UnreadableFile(f"cannot read {path!r}: the path contains a NUL byte")
    real = os.path.realpath(path)
    if any(real == tree or real.startswith(tree + "/") for tree in _KERNEL_TREES):
        raise UnreadableFile(
            f"cannot read {path}: {real} is a kernel or device file, not a file on disk"
        )
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise UnreadableFile(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile(
                f"cannot read {path}: not a regular file (a directory, FIFO, socket or device)"
            )
        if info.st_size > max_bytes:
            raise UnreadableFile(
                f"cannot read {path}: {info.st_size} bytes, more than the limit of {max_bytes}"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_file(path: str, max_bytes: int) -> None:
    """Raises UnreadableFile unless `path` is a regular file of at most `max_bytes`, for
    readers that open the path themselves (the ssl module)."""
    os.close(_open(path, max_bytes))


def read_file(path: str, max_bytes: int) -> bytes:
    """The content of `path`, a regular file of at most `max_bytes`; raises UnreadableFile."""
    fd = _open(path, max_bytes)
    try:
        chunks = []
        size = 0
        # Bounded even if the file grows while it is read.
        while size <= max_bytes and (chunk := os.read(fd, max_bytes + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise UnreadableFile(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if size > max_bytes:
        raise UnreadableFile(f"cannot read {path}: more than the limit of {max_bytes} bytes")
    return b"".join(chunks)
